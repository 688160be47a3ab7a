//! `cargo xtask train-all`: train NoProp-DT, -CT and -FM on MNIST with the
//! same data and seed, evaluate each, and write a comparison report.
//!
//! Thin by design: it builds the `noprop` binary (release) and runs it:
//!
//! 1. `cargo build --release -p noprop-train` (`--features cuda` into
//!    `target/cuda` for `--device cuda`), unless `--noprop BIN` is given;
//! 2. per variant: `noprop train ... --out OUT/<variant>`, then
//!    `noprop eval --checkpoint OUT/<variant>/last.safetensors --json` and
//!    `noprop info --checkpoint ... --json`, their stdout saved as
//!    `eval.json` and `info.json` in the run directory (for CT also
//!    `noprop info --variant ct --config OUT/ct/config.toml --json`, the
//!    untrained model's schedule, as `info-initial.json`);
//! 3. `noprop compare --runs OUT/<variant>... --out OUT`, which writes
//!    `report.md`, `report.json` and the plots and prints the summary table.
//!
//! Presets (`--epochs` and `--train-limit` override them):
//!
//! | preset | data | epochs | for |
//! |---|---|---|---|
//! | default | all 60,000 train / 10,000 test images ([`DEFAULT_PLAN`]) | DT 1, CT 3, FM 3 | this 2-core CPU, about 15 minutes |
//! | `--quick` | 5,000 train / 1,000 test images | 1 | trying it out: a few minutes |
//! | `--preset paper` | full MNIST, `configs/paper-mnist-<v>.toml` | 100 | a GPU |
//!
//! Outside the paper preset, CT and FM infer with 100 ODE steps
//! ([`FAST_INFERENCE_STEPS`]) instead of the paper's 1000, and on the CPU
//! DT trains its blocks concurrently (`--set dt.parallel_blocks=true`, the
//! same algorithm with per-block random streams; see noprop-dt's
//! `parallel.rs`), about 1.3x faster on 2 cores.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

/// The variants, in report order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Variant {
    Dt,
    Ct,
    Fm,
}

impl Variant {
    pub fn name(self) -> &'static str {
        match self {
            Variant::Dt => "dt",
            Variant::Ct => "ct",
            Variant::Fm => "fm",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Preset {
    /// Sized for this 2-core CPU: about 15 minutes in all.
    Default,
    /// The paper's recipe: full MNIST, 100 epochs (for a GPU).
    Paper,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Device {
    Cpu,
    Cuda,
}

impl Device {
    fn name(self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
        }
    }
}

/// Arguments of `cargo xtask train-all`.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainAllArgs {
    /// Output directory: one run directory per variant, and the report.
    #[arg(long, default_value = "runs/compare", value_name = "DIR")]
    pub out: PathBuf,
    /// Epochs for every variant (default: the preset's).
    #[arg(long, value_name = "N")]
    pub epochs: Option<usize>,
    /// Variants to train, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "dt,ct,fm")]
    pub variants: Vec<Variant>,
    /// A few minutes: 5,000 training images, 1,000 test images, 1 epoch.
    #[arg(long, conflicts_with = "preset")]
    pub quick: bool,
    /// Training recipe.
    #[arg(long, value_enum, default_value = "default")]
    pub preset: Preset,
    /// Where to train (cuda builds `noprop` with `--features cuda`).
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: Device,
    /// Train on the first N training images (default: the preset's).
    #[arg(long, value_name = "N")]
    pub train_limit: Option<usize>,
    /// Evaluate on the first N test images (default: the preset's).
    #[arg(long, value_name = "N")]
    pub test_limit: Option<usize>,
    /// Seed of every run.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Use this `noprop` binary instead of building one.
    #[arg(long, value_name = "BIN")]
    pub noprop: Option<PathBuf>,
    /// Print the commands without running them.
    #[arg(long)]
    pub dry_run: bool,
}

/// What the default preset trains on this 2-core CPU, per variant:
/// (variant, training images (None: all 60,000), epochs). Every variant sees
/// the whole training set and is tested on all 10,000 test images after
/// every epoch. DT steps its T = 10 blocks on every batch, so one DT epoch
/// costs about as much as ten CT or FM epochs: DT gets 1 epoch, CT and FM 3.
/// The committed run (docs/results/, README "## Results") gives the
/// measured times on this machine.
pub const DEFAULT_PLAN: [(Variant, Option<usize>, usize); 3] = [
    (Variant::Dt, None, 1),
    (Variant::Ct, None, 3),
    (Variant::Fm, None, 3),
];

/// ODE steps of CT and FM inference outside the paper preset (per-epoch and
/// final evaluation). The variants default to the paper's 1000; the spec's
/// reference measured 100 Euler steps within 0.25 points of 1000, at a
/// tenth of the cost.
const FAST_INFERENCE_STEPS: usize = 100;

/// Points of the CT schedule grid asked of `noprop info` (a smooth curve).
const SCHEDULE_GRID: usize = 101;

/// `--quick` sizes.
const QUICK_TRAIN_LIMIT: usize = 5_000;
const QUICK_TEST_LIMIT: usize = 1_000;

/// The settings of one variant's run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSettings {
    pub variant: Variant,
    pub epochs: usize,
    pub train_limit: Option<usize>,
    pub test_limit: Option<usize>,
    /// A preset config file passed as `--config`.
    pub config: Option<PathBuf>,
    /// ODE steps of inference (CT, FM); None: the variant's default.
    pub inference_steps: Option<usize>,
    /// DT trains its blocks concurrently (`dt.parallel_blocks`): outside the
    /// paper preset, on the CPU.
    pub parallel_blocks: bool,
}

/// Resolves each requested variant's settings from the preset and flags.
pub fn run_settings(args: &TrainAllArgs, workspace: &Path) -> Result<Vec<RunSettings>> {
    if args.variants.is_empty() {
        bail!("--variants needs at least one of dt, ct, fm");
    }
    if args.epochs == Some(0) {
        bail!("--epochs must be at least 1");
    }
    if args.train_limit == Some(0) || args.test_limit == Some(0) {
        bail!("--train-limit and --test-limit must be at least 1");
    }
    let mut seen = Vec::new();
    let mut settings = Vec::new();
    for &variant in &args.variants {
        if seen.contains(&variant) {
            bail!("--variants lists {} twice", variant.name());
        }
        seen.push(variant);
        let (train_limit, test_limit, epochs, config) = if args.quick {
            (Some(QUICK_TRAIN_LIMIT), Some(QUICK_TEST_LIMIT), 1, None)
        } else {
            match args.preset {
                Preset::Default => {
                    let (_, limit, epochs) = DEFAULT_PLAN
                        .iter()
                        .find(|(v, _, _)| *v == variant)
                        .copied()
                        .expect("DEFAULT_PLAN lists every variant");
                    (limit, None, epochs, None)
                }
                Preset::Paper => {
                    let config = workspace
                        .join("configs")
                        .join(format!("paper-mnist-{}.toml", variant.name()));
                    if !config.is_file() {
                        bail!(
                            "--preset paper needs {} (the paper's settings for {})",
                            config.display(),
                            variant.name()
                        );
                    }
                    (None, None, 100, Some(config))
                }
            }
        };
        let uses_ode = matches!(variant, Variant::Ct | Variant::Fm);
        let inference_steps =
            (uses_ode && args.preset != Preset::Paper).then_some(FAST_INFERENCE_STEPS);
        settings.push(RunSettings {
            variant,
            epochs: args.epochs.unwrap_or(epochs),
            train_limit: args.train_limit.or(train_limit),
            test_limit: args.test_limit.or(test_limit),
            config,
            inference_steps,
            parallel_blocks: variant == Variant::Dt
                && args.preset != Preset::Paper
                && args.device == Device::Cpu,
        });
    }
    Ok(settings)
}

/// One step of the plan: a command, and where its stdout goes (None: the
/// terminal).
#[derive(Debug)]
pub struct Step {
    pub command: Command,
    pub stdout_to: Option<PathBuf>,
}

/// The commands `train-all` runs, in order.
pub fn plan(args: &TrainAllArgs, workspace: &Path, noprop: &Path) -> Result<Vec<Step>> {
    let settings = run_settings(args, workspace)?;
    let out = absolute(&args.out, workspace);
    let mut steps = Vec::new();
    let mut run_dirs = Vec::new();
    for s in &settings {
        let run_dir = out.join(s.variant.name());
        let mut train = Command::new(noprop);
        train.arg("train").arg("--variant").arg(s.variant.name());
        if let Some(config) = &s.config {
            train.arg("--config").arg(config);
        }
        train
            .arg("--seed")
            .arg(args.seed.to_string())
            .arg("--epochs")
            .arg(s.epochs.to_string())
            .arg("--device")
            .arg(args.device.name());
        if let Some(n) = s.train_limit {
            train.arg("--train-limit").arg(n.to_string());
        }
        if let Some(n) = s.test_limit {
            train.arg("--test-limit").arg(n.to_string());
        }
        if let Some(steps) = s.inference_steps {
            train.arg("--set").arg(format!("eval.steps={steps}"));
        }
        if s.parallel_blocks {
            train.arg("--set").arg("dt.parallel_blocks=true");
        }
        train.arg("--out").arg(&run_dir);
        steps.push(Step {
            command: train,
            stdout_to: None,
        });

        // The final model, evaluated once more on its own: the report's
        // test accuracy and inference time.
        let checkpoint = run_dir.join("last.safetensors");
        let mut eval = Command::new(noprop);
        eval.arg("eval").arg("--checkpoint").arg(&checkpoint);
        if let Some(n) = s.test_limit {
            eval.arg("--test-limit").arg(n.to_string());
        }
        if let Some(steps) = s.inference_steps {
            eval.arg("--steps").arg(steps.to_string());
        }
        eval.arg("--json");
        steps.push(Step {
            command: eval,
            stdout_to: Some(run_dir.join("eval.json")),
        });
        let mut info = Command::new(noprop);
        info.arg("info")
            .arg("--checkpoint")
            .arg(&checkpoint)
            .arg("--grid")
            .arg(SCHEDULE_GRID.to_string())
            .arg("--json");
        steps.push(Step {
            command: info,
            stdout_to: Some(run_dir.join("info.json")),
        });
        if s.variant == Variant::Ct {
            // The same model before training, for the learned schedule's
            // starting point.
            let mut initial = Command::new(noprop);
            initial
                .arg("info")
                .arg("--variant")
                .arg("ct")
                .arg("--config")
                .arg(run_dir.join("config.toml"))
                .arg("--grid")
                .arg(SCHEDULE_GRID.to_string())
                .arg("--json");
            steps.push(Step {
                command: initial,
                stdout_to: Some(run_dir.join("info-initial.json")),
            });
        }
        run_dirs.push(run_dir);
    }
    let mut compare = Command::new(noprop);
    compare.arg("compare").arg("--runs").args(&run_dirs);
    compare
        .arg("--out")
        .arg(&out)
        .arg("--note")
        .arg(command_line(args));
    steps.push(Step {
        command: compare,
        stdout_to: None,
    });
    Ok(steps)
}

/// The `cargo xtask train-all ...` line that reproduces this run, for the
/// report.
pub fn command_line(args: &TrainAllArgs) -> String {
    let mut line = String::from("cargo xtask train-all");
    if args.out != Path::new("runs/compare") {
        let _ = write!(line, " --out {}", args.out.display());
    }
    if args.quick {
        line.push_str(" --quick");
    }
    if args.preset == Preset::Paper {
        line.push_str(" --preset paper");
    }
    let variants: Vec<&str> = args.variants.iter().map(|v| v.name()).collect();
    if variants != ["dt", "ct", "fm"] {
        let _ = write!(line, " --variants {}", variants.join(","));
    }
    if let Some(n) = args.epochs {
        let _ = write!(line, " --epochs {n}");
    }
    if let Some(n) = args.train_limit {
        let _ = write!(line, " --train-limit {n}");
    }
    if let Some(n) = args.test_limit {
        let _ = write!(line, " --test-limit {n}");
    }
    if args.seed != 0 {
        let _ = write!(line, " --seed {}", args.seed);
    }
    if args.device == Device::Cuda {
        line.push_str(" --device cuda");
    }
    line
}

/// The workspace root (xtask lives one level below it).
fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map_or_else(|| manifest_dir.to_path_buf(), Path::to_path_buf)
}

fn absolute(path: &Path, base: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

/// A command as a shell-like line.
fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|a| {
            let a = a.to_string_lossy();
            if a.is_empty() || a.contains(char::is_whitespace) {
                format!("'{a}'")
            } else {
                a.into_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Builds the release `noprop` binary and returns its path.
fn build_noprop(workspace: &Path, device: Device, dry_run: bool) -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut build = Command::new(cargo);
    build.current_dir(workspace).args([
        "build",
        "--release",
        "-p",
        "noprop-train",
        "--bin",
        "noprop",
    ]);
    let target_dir = match device {
        Device::Cpu => std::env::var_os("CARGO_TARGET_DIR").map_or_else(
            || workspace.join("target"),
            |d| absolute(Path::new(&d), workspace),
        ),
        // Its own target dir, so the CPU build in target/ stays valid.
        Device::Cuda => {
            let dir = workspace.join("target").join("cuda");
            build
                .arg("--features")
                .arg("cuda")
                .env("CARGO_TARGET_DIR", &dir);
            dir
        }
    };
    eprintln!("xtask: {}", describe(&build));
    if !dry_run {
        let status = build
            .status()
            .with_context(|| format!("could not start `{}`", describe(&build)))?;
        if !status.success() {
            let hint = if device == Device::Cuda {
                " (a CUDA build needs the CUDA toolkit: see docs/cuda.md, or pass --noprop BIN)"
            } else {
                ""
            };
            bail!("building noprop failed ({status}){hint}");
        }
    }
    Ok(target_dir.join("release").join("noprop"))
}

/// Runs one step; errors name the command.
fn run_step(step: &mut Step) -> Result<()> {
    let line = describe(&step.command);
    match &step.stdout_to {
        None => {
            eprintln!("xtask: {line}");
            let status = step
                .command
                .status()
                .with_context(|| format!("could not start `{line}`"))?;
            if !status.success() {
                bail!("`{line}` failed ({status})");
            }
        }
        Some(path) => {
            eprintln!("xtask: {line} > {}", path.display());
            let output = step
                .command
                .stdin(Stdio::null())
                .stderr(Stdio::inherit())
                .output()
                .with_context(|| format!("could not start `{line}`"))?;
            if !output.status.success() {
                bail!("`{line}` failed ({})", output.status);
            }
            std::fs::write(path, &output.stdout)
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(())
}

/// Runs `cargo xtask train-all`.
pub fn run(args: &TrainAllArgs) -> Result<()> {
    let start = Instant::now();
    let workspace = workspace_root();
    // Settings errors before the (long) build.
    run_settings(args, &workspace)?;
    let noprop = match &args.noprop {
        Some(bin) => {
            if !bin.is_file() && !args.dry_run {
                bail!("--noprop {}: no such file", bin.display());
            }
            bin.clone()
        }
        None => build_noprop(&workspace, args.device, args.dry_run)?,
    };
    let out = absolute(&args.out, &workspace);
    let mut steps = plan(args, &workspace, &noprop)?;
    if args.dry_run {
        for step in &steps {
            match &step.stdout_to {
                Some(path) => println!("{} > {}", describe(&step.command), path.display()),
                None => println!("{}", describe(&step.command)),
            }
        }
        return Ok(());
    }
    for variant in &args.variants {
        let run_dir = out.join(variant.name());
        // A previous run in the same place would be appended to or refused:
        // start afresh, but only over something that is a run directory.
        if run_dir.join("config.toml").is_file() || run_dir.join("metrics.jsonl").is_file() {
            eprintln!("xtask: replacing the previous run in {}", run_dir.display());
            std::fs::remove_dir_all(&run_dir)
                .with_context(|| format!("removing {}", run_dir.display()))?;
        } else if run_dir.exists() && std::fs::read_dir(&run_dir)?.next().is_some() {
            bail!(
                "{} exists and is not a run directory: choose another --out",
                run_dir.display()
            );
        }
    }
    for step in &mut steps {
        run_step(step)?;
    }
    eprintln!(
        "xtask: train-all finished in {:.1} min; report: {}",
        start.elapsed().as_secs_f64() / 60.0,
        out.join("report.md").display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: TrainAllArgs,
    }

    fn parse(line: &[&str]) -> TrainAllArgs {
        Wrapper::try_parse_from(std::iter::once("train-all").chain(line.iter().copied()))
            .unwrap()
            .args
    }

    fn lines(steps: &[Step]) -> Vec<String> {
        steps.iter().map(|s| describe(&s.command)).collect()
    }

    #[test]
    fn default_plan_trains_evaluates_and_compares_every_variant() {
        let args = parse(&[]);
        let ws = Path::new("/ws");
        let steps = plan(&args, ws, Path::new("/bin/noprop")).unwrap();
        let lines = lines(&steps);
        // 3 commands per variant (4 for CT), then compare.
        assert_eq!(lines.len(), 11);
        assert_eq!(
            lines[0],
            "/bin/noprop train --variant dt --seed 0 --epochs 1 --device cpu --set dt.parallel_blocks=true --out /ws/runs/compare/dt"
        );
        assert_eq!(
            lines[1],
            "/bin/noprop eval --checkpoint /ws/runs/compare/dt/last.safetensors --json"
        );
        assert_eq!(
            lines[2],
            "/bin/noprop info --checkpoint /ws/runs/compare/dt/last.safetensors --grid 101 --json"
        );
        assert_eq!(
            steps[1].stdout_to.as_deref(),
            Some(Path::new("/ws/runs/compare/dt/eval.json"))
        );
        assert_eq!(
            steps[2].stdout_to.as_deref(),
            Some(Path::new("/ws/runs/compare/dt/info.json"))
        );
        assert_eq!(
            lines[3],
            "/bin/noprop train --variant ct --seed 0 --epochs 3 --device cpu --set eval.steps=100 --out /ws/runs/compare/ct"
        );
        assert_eq!(
            lines[4],
            "/bin/noprop eval --checkpoint /ws/runs/compare/ct/last.safetensors --steps 100 --json"
        );
        assert_eq!(
            lines[6],
            "/bin/noprop info --variant ct --config /ws/runs/compare/ct/config.toml --grid 101 --json"
        );
        assert_eq!(
            steps[6].stdout_to.as_deref(),
            Some(Path::new("/ws/runs/compare/ct/info-initial.json"))
        );
        assert_eq!(
            lines[10],
            "/bin/noprop compare --runs /ws/runs/compare/dt /ws/runs/compare/ct /ws/runs/compare/fm --out /ws/runs/compare --note 'cargo xtask train-all'"
        );
    }

    #[test]
    fn quick_and_overrides() {
        let args = parse(&[
            "--quick",
            "--variants",
            "fm,dt",
            "--epochs",
            "2",
            "--seed",
            "7",
            "--out",
            "/tmp/x",
        ]);
        let steps = plan(&args, Path::new("/ws"), Path::new("noprop")).unwrap();
        let lines = lines(&steps);
        assert_eq!(lines.len(), 7);
        assert_eq!(
            lines[0],
            "noprop train --variant fm --seed 7 --epochs 2 --device cpu --train-limit 5000 --test-limit 1000 --set eval.steps=100 --out /tmp/x/fm"
        );
        assert_eq!(
            lines[1],
            "noprop eval --checkpoint /tmp/x/fm/last.safetensors --test-limit 1000 --steps 100 --json"
        );
        assert!(lines[3].starts_with("noprop train --variant dt "));
        assert!(lines[6].ends_with(
            "--note 'cargo xtask train-all --out /tmp/x --quick --variants fm,dt --epochs 2 --seed 7'"
        ));
    }

    #[test]
    fn paper_preset_uses_the_config_files() {
        let ws = std::env::temp_dir().join(format!("xtask-train-all-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&ws);
        std::fs::create_dir_all(&ws).unwrap();
        let args = parse(&["--preset", "paper", "--variants", "ct", "--device", "cuda"]);
        let err = plan(&args, &ws, Path::new("noprop")).unwrap_err();
        assert!(err.to_string().contains("paper-mnist-ct.toml"), "{err}");
        std::fs::create_dir(ws.join("configs")).unwrap();
        std::fs::write(ws.join("configs/paper-mnist-ct.toml"), "").unwrap();
        let steps = plan(&args, &ws, Path::new("noprop")).unwrap();
        std::fs::remove_dir_all(&ws).unwrap();
        let train = describe(&steps[0].command);
        assert!(train.contains("--config "), "{train}");
        assert!(
            train.contains("paper-mnist-ct.toml --seed 0 --epochs 100 --device cuda --out"),
            "{train}"
        );
    }

    #[test]
    fn bad_arguments_are_rejected() {
        let ws = Path::new("/ws");
        for bad in [
            vec!["--epochs", "0"],
            vec!["--train-limit", "0"],
            vec!["--variants", "dt,dt"],
        ] {
            assert!(run_settings(&parse(&bad), ws).is_err(), "{bad:?}");
        }
        assert!(Wrapper::try_parse_from(["x", "--variants", "xx"]).is_err());
        assert!(Wrapper::try_parse_from(["x", "--quick", "--preset", "paper"]).is_err());
        assert!(Wrapper::try_parse_from(["x", "--device", "tpu"]).is_err());
    }
}
