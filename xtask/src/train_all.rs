//! `cargo xtask train-all`: train every registered variant on MNIST with
//! the same data and seed, evaluate each, and write a comparison report.
//!
//! Thin by design, and it knows no variant: it builds the `noprop` binary
//! (release), asks it for the variants (`noprop info --list --json`) and
//! runs it with each variant's preset file:
//!
//! 1. `cargo build --release -p noprop-train` (`--features cuda` into
//!    `target/cuda` for `--device cuda`), unless `--noprop BIN` is given;
//! 2. per variant: `noprop train --config <preset> ... --out OUT/<variant>`,
//!    then `noprop eval --checkpoint OUT/<variant>/last.safetensors --json`
//!    (the final model with the run's own inference settings) and
//!    `noprop info --checkpoint ... --json`, saved as `eval.json` and
//!    `info.json` in the run directory, and `noprop info --variant <v>
//!    --config OUT/<v>/config.toml --json` (the untrained model, for the
//!    starting point of a learned schedule) as `info-initial.json`;
//! 3. `noprop compare --force --runs OUT/<variant>... --out OUT`, which writes
//!    `report.md`, `report.json` and the plots and prints the summary table.
//!
//! Presets (`--epochs`, `--train-limit`, `--test-limit` override them):
//!
//! | preset | files | for |
//! |---|---|---|
//! | default | `configs/default/<variant>.toml`: all 60,000 train / 10,000 test images, DT 1 epoch, CT and FM 3 | this 2-core CPU, about 15 minutes |
//! | `--quick` | the default files, 1 epoch of 5,000 train / 1,000 test images | trying it out: a few minutes |
//! | `--preset paper` | `configs/paper-mnist-<variant>.toml`: 100 epochs | a GPU |
//!
//! The default DT preset trains the blocks of a minibatch concurrently on
//! the CPU's threads, which a GPU does not support: use `--preset paper`
//! with `--device cuda`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::process::{self, cargo_program, describe};
use crate::{absolute, workspace_root};

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
    pub fn name(self) -> &'static str {
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
    /// Variants to train, comma-separated (default: every variant, in the
    /// order `noprop info --list` gives).
    #[arg(long, value_delimiter = ',')]
    pub variants: Option<Vec<String>>,
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

/// `--quick` sizes.
/// What `--quick` numbers are, printed and put at the top of its report:
/// after 40 steps CT and FM are at 15-30%, which reads as broken.
const QUICK_CAVEAT: &str = "--quick is a smoke test of the pipeline (1 epoch on 5,000 training \
    images, 40 steps): its accuracies say nothing of the methods (CT and FM are far from \
    trained after 40 steps). `cargo xtask train-all` (about 15 minutes here) trains on all the \
    data; `cargo xtask reproduce` gives the paper's comparison.";
const QUICK_TRAIN_LIMIT: usize = 5_000;
const QUICK_TEST_LIMIT: usize = 1_000;

/// Points of a learned schedule's grid asked of `noprop info` (a smooth
/// curve).
const SCHEDULE_GRID: usize = 101;

/// The settings of one variant's run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSettings {
    pub variant: String,
    /// The preset file passed as `--config`.
    pub config: PathBuf,
    /// Epochs, when not the preset's.
    pub epochs: Option<usize>,
    pub train_limit: Option<usize>,
    pub test_limit: Option<usize>,
}

/// Resolves each variant's settings from the preset and flags. `variants`
/// are the names to train, in order.
pub fn run_settings(
    args: &TrainAllArgs,
    variants: &[String],
    workspace: &Path,
) -> Result<Vec<RunSettings>> {
    if variants.is_empty() {
        bail!("--variants needs at least one variant");
    }
    if args.epochs == Some(0) {
        bail!("--epochs must be at least 1");
    }
    if args.train_limit == Some(0) || args.test_limit == Some(0) {
        bail!("--train-limit and --test-limit must be at least 1");
    }
    let mut settings: Vec<RunSettings> = Vec::new();
    for variant in variants {
        if settings.iter().any(|s| &s.variant == variant) {
            bail!("--variants lists {variant} twice");
        }
        let config = match args.preset {
            Preset::Default => workspace
                .join("configs")
                .join("default")
                .join(format!("{variant}.toml")),
            Preset::Paper => workspace
                .join("configs")
                .join(format!("paper-mnist-{variant}.toml")),
        };
        if !config.is_file() {
            bail!(
                "no preset for {variant}: {} does not exist (every variant has one; see configs/)",
                config.display()
            );
        }
        let (epochs, train_limit, test_limit) = if args.quick {
            (Some(1), Some(QUICK_TRAIN_LIMIT), Some(QUICK_TEST_LIMIT))
        } else {
            (None, None, None)
        };
        settings.push(RunSettings {
            variant: variant.clone(),
            config,
            epochs: args.epochs.or(epochs),
            train_limit: args.train_limit.or(train_limit),
            test_limit: args.test_limit.or(test_limit),
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

/// The commands `train-all` runs, in order, for `variants`.
pub fn plan(
    args: &TrainAllArgs,
    variants: &[String],
    workspace: &Path,
    noprop: &Path,
) -> Result<Vec<Step>> {
    let settings = run_settings(args, variants, workspace)?;
    let out = absolute(&args.out, workspace);
    let mut steps = Vec::new();
    let mut run_dirs = Vec::new();
    let saved = |command: Command, to: PathBuf| Step {
        command,
        stdout_to: Some(to),
    };
    for s in &settings {
        let run_dir = out.join(&s.variant);
        let mut train = Command::new(noprop);
        train
            .arg("train")
            .arg("--config")
            .arg(&s.config)
            .arg("--seed")
            .arg(args.seed.to_string());
        if let Some(n) = s.epochs {
            train.arg("--epochs").arg(n.to_string());
        }
        train.arg("--device").arg(args.device.name());
        if let Some(n) = s.train_limit {
            train.arg("--train-limit").arg(n.to_string());
        }
        if let Some(n) = s.test_limit {
            train.arg("--test-limit").arg(n.to_string());
        }
        train.arg("--out").arg(&run_dir);
        steps.push(Step {
            command: train,
            stdout_to: None,
        });

        // The final model, evaluated once more on its own (with the run's
        // inference settings): the report's test accuracy and inference time.
        let checkpoint = run_dir.join("last.safetensors");
        let mut eval = Command::new(noprop);
        eval.arg("eval").arg("--checkpoint").arg(&checkpoint);
        if let Some(n) = s.test_limit {
            eval.arg("--test-limit").arg(n.to_string());
        }
        eval.arg("--json");
        steps.push(saved(eval, run_dir.join("eval.json")));
        steps.extend(info_steps(noprop, &run_dir, &s.variant));
        run_dirs.push(run_dir);
    }
    let mut compare = Command::new(noprop);
    // The report belongs to this job's directory: rewritten on every run.
    compare
        .arg("compare")
        .arg("--force")
        .arg("--runs")
        .args(&run_dirs);
    compare
        .arg("--out")
        .arg(&out)
        .arg("--note")
        .arg(command_line(args));
    if args.quick {
        compare.arg("--caveat").arg(QUICK_CAVEAT);
    }
    steps.push(Step {
        command: compare,
        stdout_to: None,
    });
    Ok(steps)
}

/// `noprop info` of the trained checkpoint in `run_dir` and of the same
/// model before training (where a learned schedule started), saved as
/// `info.json` and `info-initial.json` for the report's plots.
pub fn info_steps(noprop: &Path, run_dir: &Path, variant: &str) -> Vec<Step> {
    let mut info = Command::new(noprop);
    info.arg("info")
        .arg("--checkpoint")
        .arg(run_dir.join("last.safetensors"))
        .arg("--grid")
        .arg(SCHEDULE_GRID.to_string())
        .arg("--json");
    let mut initial = Command::new(noprop);
    initial
        .arg("info")
        .arg("--variant")
        .arg(variant)
        .arg("--config")
        .arg(run_dir.join("config.toml"))
        .arg("--grid")
        .arg(SCHEDULE_GRID.to_string())
        .arg("--json");
    vec![
        Step {
            command: info,
            stdout_to: Some(run_dir.join("info.json")),
        },
        Step {
            command: initial,
            stdout_to: Some(run_dir.join("info-initial.json")),
        },
    ]
}

/// A registered variant, as `noprop info --list --json` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    pub name: String,
    /// Whether its inference integrates an ODE (then `--steps` applies).
    pub integrates_ode: bool,
}

/// The registered variants, from `noprop info --list --json`.
pub fn registered(noprop: &Path) -> Result<Vec<Registered>> {
    let stdout = process::output(Command::new(noprop).args(["info", "--list", "--json"]))?;
    let list: Vec<serde_json::Value> = serde_json::from_str(&stdout)
        .context("`noprop info --list --json` did not print a JSON list")?;
    list.iter()
        .map(|v| {
            let name = v
                .get("name")
                .and_then(serde_json::Value::as_str)
                .map(String::from)
                .context("`noprop info --list --json`: an entry has no name")?;
            let integrates_ode = v
                .get("integrates_ode")
                .and_then(serde_json::Value::as_bool)
                .with_context(|| {
                    format!("`noprop info --list --json`: {name} has no integrates_ode")
                })?;
            Ok(Registered {
                name,
                integrates_ode,
            })
        })
        .collect()
}

fn registered_variants(noprop: &Path) -> Result<Vec<String>> {
    Ok(registered(noprop)?.into_iter().map(|v| v.name).collect())
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
    if let Some(variants) = &args.variants {
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

/// Builds the release `noprop` binary and returns its path.
pub fn build_noprop(workspace: &Path, device: Device, dry_run: bool) -> Result<PathBuf> {
    let mut build = Command::new(cargo_program());
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
    if dry_run {
        eprintln!("xtask: {}", describe(&build));
    } else {
        let built = process::run(&mut build);
        if device == Device::Cuda {
            built.context(
                "building the CUDA noprop failed: it needs the CUDA toolkit (see docs/cuda.md), or pass --noprop BIN",
            )?;
        } else {
            built.context("building noprop failed")?;
        }
    }
    Ok(target_dir.join("release").join("noprop"))
}

/// The `noprop` binary a task drives: `given` (`--noprop BIN`, which must
/// exist unless `dry_run`), else the release build ([`build_noprop`]).
pub fn noprop_binary(
    given: Option<&Path>,
    workspace: &Path,
    device: Device,
    dry_run: bool,
) -> Result<PathBuf> {
    match given {
        Some(bin) => {
            if !bin.is_file() && !dry_run {
                bail!("--noprop {}: no such file", bin.display());
            }
            Ok(bin.to_path_buf())
        }
        None => build_noprop(workspace, device, dry_run),
    }
}

/// Runs one step; errors name the command.
pub fn run_step(step: &mut Step) -> Result<()> {
    match &step.stdout_to {
        None => process::run(&mut step.command).map(drop),
        Some(path) => process::run_to_file(&mut step.command, path),
    }
}

/// Runs `cargo xtask train-all`.
pub fn run(args: &TrainAllArgs) -> Result<()> {
    let start = Instant::now();
    let workspace = workspace_root();
    // Settings errors before the (long) build, where the variants are known.
    if let Some(variants) = &args.variants {
        run_settings(args, variants, &workspace)?;
    }
    let noprop = noprop_binary(
        args.noprop.as_deref(),
        &workspace,
        args.device,
        args.dry_run,
    )?;
    let variants = match &args.variants {
        Some(v) => v.clone(),
        None => registered_variants(&noprop)?,
    };
    let out = absolute(&args.out, &workspace);
    let mut steps = plan(args, &variants, &workspace, &noprop)?;
    if args.dry_run {
        for step in &steps {
            match &step.stdout_to {
                Some(path) => println!("{} > {}", describe(&step.command), path.display()),
                None => println!("{}", describe(&step.command)),
            }
        }
        return Ok(());
    }
    for variant in &variants {
        let run_dir = out.join(variant);
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
    if args.quick {
        eprintln!("xtask: {QUICK_CAVEAT}");
    }
    for step in &mut steps {
        run_step(step)?;
    }
    eprintln!(
        "xtask: train-all finished in {:.1} min; report: {}",
        start.elapsed().as_secs_f64() / 60.0,
        out.join("report.md").display()
    );
    if args.quick {
        eprintln!("xtask: {QUICK_CAVEAT}");
    }
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

    /// A workspace with preset files for the made-up variants `alpha` and
    /// `beta` (train-all knows no variant by name).
    struct Workspace(PathBuf);

    impl Workspace {
        fn new(tag: &str) -> Self {
            let ws = std::env::temp_dir().join(format!("xtask-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&ws);
            std::fs::create_dir_all(ws.join("configs/default")).unwrap();
            for v in ["alpha", "beta"] {
                std::fs::write(ws.join(format!("configs/default/{v}.toml")), "").unwrap();
            }
            std::fs::write(ws.join("configs/paper-mnist-alpha.toml"), "").unwrap();
            Self(ws)
        }
    }

    impl Drop for Workspace {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn default_plan_trains_evaluates_and_compares_every_variant() {
        let ws = Workspace::new("default");
        let w = ws.0.display().to_string();
        let args = parse(&[]);
        let steps = plan(
            &args,
            &names(&["alpha", "beta"]),
            &ws.0,
            Path::new("/bin/noprop"),
        )
        .unwrap();
        let lines = lines(&steps);
        // 4 commands per variant, then compare.
        assert_eq!(lines.len(), 9);
        assert_eq!(
            lines[0],
            format!("/bin/noprop train --config {w}/configs/default/alpha.toml --seed 0 --device cpu --out {w}/runs/compare/alpha")
        );
        assert_eq!(
            lines[1],
            format!("/bin/noprop eval --checkpoint {w}/runs/compare/alpha/last.safetensors --json")
        );
        assert_eq!(
            lines[2],
            format!("/bin/noprop info --checkpoint {w}/runs/compare/alpha/last.safetensors --grid 101 --json")
        );
        assert_eq!(
            lines[3],
            format!("/bin/noprop info --variant alpha --config {w}/runs/compare/alpha/config.toml --grid 101 --json")
        );
        assert_eq!(
            steps[1].stdout_to.as_deref(),
            Some(ws.0.join("runs/compare/alpha/eval.json").as_path())
        );
        assert_eq!(
            steps[3].stdout_to.as_deref(),
            Some(ws.0.join("runs/compare/alpha/info-initial.json").as_path())
        );
        assert_eq!(
            lines[8],
            format!("/bin/noprop compare --force --runs {w}/runs/compare/alpha {w}/runs/compare/beta --out {w}/runs/compare --note 'cargo xtask train-all'")
        );
    }

    #[test]
    fn quick_and_overrides() {
        let ws = Workspace::new("quick");
        let w = ws.0.display().to_string();
        let args = parse(&[
            "--quick",
            "--variants",
            "beta,alpha",
            "--epochs",
            "2",
            "--seed",
            "7",
            "--out",
            "/tmp/x",
        ]);
        let variants = args.variants.clone().unwrap();
        let steps = plan(&args, &variants, &ws.0, Path::new("noprop")).unwrap();
        let lines = lines(&steps);
        assert_eq!(lines.len(), 9);
        assert_eq!(
            lines[0],
            format!("noprop train --config {w}/configs/default/beta.toml --seed 7 --epochs 2 --device cpu --train-limit 5000 --test-limit 1000 --out /tmp/x/beta")
        );
        assert_eq!(
            lines[1],
            "noprop eval --checkpoint /tmp/x/beta/last.safetensors --test-limit 1000 --json"
        );
        assert!(lines[4].contains("default/alpha.toml"));
        assert!(lines[8].contains(
            "--note 'cargo xtask train-all --out /tmp/x --quick --variants beta,alpha --epochs 2 --seed 7' --caveat '--quick is a smoke test"
        ));
    }

    #[test]
    fn paper_preset_uses_the_config_files() {
        let ws = Workspace::new("paper");
        let args = parse(&["--preset", "paper", "--device", "cuda"]);
        let err = plan(&args, &names(&["beta"]), &ws.0, Path::new("noprop")).unwrap_err();
        assert!(err.to_string().contains("paper-mnist-beta.toml"), "{err}");
        let steps = plan(&args, &names(&["alpha"]), &ws.0, Path::new("noprop")).unwrap();
        let train = describe(&steps[0].command);
        assert!(
            train.contains("paper-mnist-alpha.toml --seed 0 --device cuda --out"),
            "{train}"
        );
    }

    #[test]
    fn bad_arguments_are_rejected() {
        let ws = Workspace::new("bad");
        let both = names(&["alpha", "beta"]);
        for bad in [vec!["--epochs", "0"], vec!["--train-limit", "0"]] {
            assert!(run_settings(&parse(&bad), &both, &ws.0).is_err(), "{bad:?}");
        }
        assert!(run_settings(&parse(&[]), &names(&["alpha", "alpha"]), &ws.0).is_err());
        assert!(run_settings(&parse(&[]), &names(&["gamma"]), &ws.0).is_err());
        assert!(run_settings(&parse(&[]), &[], &ws.0).is_err());
        assert!(Wrapper::try_parse_from(["x", "--quick", "--preset", "paper"]).is_err());
        assert!(Wrapper::try_parse_from(["x", "--device", "tpu"]).is_err());
    }
}
