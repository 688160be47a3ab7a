//! `cargo xtask reproduce`: the paper's MNIST comparison on this machine.
//! Trains every registered variant for several seeds, evaluates each final
//! checkpoint with the paper's protocol, and writes a table over the seeds
//! and a `noprop compare` report.
//!
//! For every variant v and seed s, in `OUT/<v>-s<s>/`:
//!
//! 1. `noprop train --config configs/reproduce/<v>.toml --seed s --out RUN`
//!    (niced; the preset holds the recipe and the epoch count), or
//!    `noprop train --resume RUN --epochs E` when an earlier invocation was
//!    interrupted (training resumes bitwise), or nothing when the run is
//!    complete;
//! 2. the paper's protocol on `last.safetensors` (the final model, never a
//!    checkpoint chosen on test accuracy): `noprop eval --runs 5 --json`
//!    (five single stochastic runs, their mean and standard deviation, and
//!    their ensemble under its own name), with `--steps 1000` for the
//!    variants that integrate an ODE, saved as `eval.json`; for the others
//!    also `--deterministic` (no injected noise) as `eval-deterministic.json`;
//!    and `noprop info` of the checkpoint and of the untrained model, as
//!    `train-all` saves them;
//! 3. `OUT/reproduce.md` and `OUT/reproduce.json`, the table over seeds
//!    (rewritten after every run, so an interrupted job leaves the table of
//!    what is finished), and at the end `noprop compare` over every run.
//!
//! Each finished step stays finished: a second invocation with the same
//! arguments skips complete runs and evaluations (an evaluation counts when
//! its file is newer than the checkpoint), resumes a partial run, and
//! prints how long the rest should take, from the epochs measured so far.
//! `--status` prints that and the table without running anything.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::process::{self, describe, niced};
use crate::stats::median;
use crate::train_all::{info_steps, noprop_binary, registered, run_step, Device, Registered, Step};
use crate::{absolute, workspace_root};

/// Arguments of `cargo xtask reproduce`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReproduceArgs {
    /// Output directory: one run directory per variant and seed, the table
    /// and the report.
    #[arg(long, default_value = "runs/reproduce", value_name = "DIR")]
    pub out: PathBuf,
    /// Variants, comma-separated (default: every registered variant).
    #[arg(long, value_delimiter = ',')]
    pub variants: Option<Vec<String>>,
    /// Seeds, comma-separated: one run per variant and seed.
    #[arg(long, value_delimiter = ',', default_value = "0,1,2")]
    pub seeds: Vec<u64>,
    /// Epochs of every run (default: each preset's).
    #[arg(long, value_name = "N")]
    pub epochs: Option<usize>,
    /// Train on the first N training images (a smoke test of the pipeline).
    #[arg(long, value_name = "N")]
    pub train_limit: Option<usize>,
    /// Evaluate on the first N test images.
    #[arg(long, value_name = "N")]
    pub test_limit: Option<usize>,
    /// Single stochastic inference runs per final checkpoint (the paper: 5).
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub runs: usize,
    /// ODE steps of the final evaluation of CT and FM (the paper: 1000).
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub steps: usize,
    /// Where to train (cuda builds `noprop` with `--features cuda`).
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: Device,
    /// Use this `noprop` binary instead of building one.
    #[arg(long, value_name = "BIN")]
    pub noprop: Option<PathBuf>,
    /// Print what is done, what is left and the table; run nothing.
    #[arg(long)]
    pub status: bool,
    /// Print the commands of what is left without running them.
    #[arg(long)]
    pub dry_run: bool,
}

/// The preset of `variant`.
fn preset(workspace: &Path, variant: &str) -> PathBuf {
    workspace
        .join("configs")
        .join("reproduce")
        .join(format!("{variant}.toml"))
}

/// The file of the paper's protocol (mean of single runs, ensemble).
const EVAL_FILE: &str = "eval.json";
/// The file of deterministic inference (variants without an ODE).
const DETERMINISTIC_FILE: &str = "eval-deterministic.json";

/// Where one run stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    /// Nothing trained yet (`force`: a failed start left a run directory
    /// without a checkpoint, which `noprop train` would refuse).
    Fresh { force: bool },
    /// Interrupted after `epochs_done` complete epochs.
    Partial { epochs_done: usize },
    /// Trained to the planned epochs, not yet (or no longer) evaluated.
    Trained,
    /// Trained and evaluated.
    Done,
}

/// Non-empty lines of `RUN/metrics.jsonl`: the completed epochs.
fn metrics_lines(run_dir: &Path) -> Result<Vec<Value>> {
    let path = run_dir.join("metrics.jsonl");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l)
                .with_context(|| format!("{} line {}: not JSON", path.display(), i + 1))
        })
        .collect()
}

fn read_json(path: &Path) -> Result<Option<Value>> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .with_context(|| format!("{}: not JSON", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Where the run in `run_dir` stands, for `epochs` planned epochs and the
/// evaluation files `eval_files`.
pub fn stage(run_dir: &Path, epochs: usize, eval_files: &[&str]) -> Result<Stage> {
    if !run_dir.exists() {
        return Ok(Stage::Fresh { force: false });
    }
    let done = metrics_lines(run_dir)?.len();
    let checkpoint = run_dir.join("last.safetensors");
    if !checkpoint.is_file() {
        if done > 0 {
            bail!(
                "{} records {done} epoch(s) in metrics.jsonl but has no last.safetensors to resume from: remove it to start that run again",
                run_dir.display()
            );
        }
        let only_a_failed_start = std::fs::read_dir(run_dir)
            .with_context(|| format!("reading {}", run_dir.display()))?
            .filter_map(|e| e.ok())
            .all(|e| {
                let name = e.file_name();
                name == "config.toml" || name == ".lock"
            });
        if !only_a_failed_start {
            bail!(
                "{} exists and is not a run directory of this reproduction: choose another --out",
                run_dir.display()
            );
        }
        return Ok(Stage::Fresh {
            force: run_dir.join("config.toml").is_file(),
        });
    }
    if done > epochs {
        bail!(
            "{} already holds {done} epochs, more than the {epochs} planned: choose another --out or --epochs",
            run_dir.display()
        );
    }
    let completed = read_json(&run_dir.join("summary.json"))?
        .is_some_and(|s| s["status"] == "completed" && s["epochs"].as_u64() == Some(epochs as u64));
    if done < epochs || !completed {
        return Ok(Stage::Partial { epochs_done: done });
    }
    let trained_at = modified(&checkpoint);
    let evaluated = eval_files.iter().all(|f| {
        let at = modified(&run_dir.join(f));
        at.is_some() && at >= trained_at
    });
    Ok(if evaluated {
        Stage::Done
    } else {
        Stage::Trained
    })
}

/// One run of the reproduction.
#[derive(Debug, Clone)]
pub struct RunPlan {
    pub variant: Registered,
    pub seed: u64,
    pub epochs: usize,
    pub dir: PathBuf,
    pub preset: PathBuf,
}

impl RunPlan {
    fn eval_files(&self) -> Vec<&'static str> {
        if self.variant.integrates_ode {
            vec![EVAL_FILE]
        } else {
            vec![EVAL_FILE, DETERMINISTIC_FILE]
        }
    }

    pub fn stage(&self) -> Result<Stage> {
        stage(&self.dir, self.epochs, &self.eval_files())
    }
}

/// Epochs of a preset file: its top-level `epochs` key.
fn preset_epochs(path: &Path) -> Result<usize> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "reading {} (every variant has a reproduction preset in configs/reproduce/)",
            path.display()
        )
    })?;
    let line = text
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with('['))
        .find_map(|l| {
            let (key, value) = l.split_once('=')?;
            (key.trim() == "epochs")
                .then(|| value.split('#').next().unwrap_or("").trim().to_owned())
        })
        .with_context(|| format!("{}: no top-level `epochs = N`", path.display()))?;
    line.parse()
        .with_context(|| format!("{}: epochs = {line} is not a count", path.display()))
}

/// The runs for `variants` x `args.seeds`, variant by variant.
pub fn plan_runs(
    args: &ReproduceArgs,
    variants: &[Registered],
    workspace: &Path,
) -> Result<Vec<RunPlan>> {
    if variants.is_empty() {
        bail!("--variants needs at least one variant");
    }
    if args.seeds.is_empty() {
        bail!("--seeds needs at least one seed");
    }
    for (i, s) in args.seeds.iter().enumerate() {
        if args.seeds[..i].contains(s) {
            bail!("--seeds lists {s} twice");
        }
    }
    if args.epochs == Some(0) || args.runs == 0 || args.steps == 0 {
        bail!("--epochs, --runs and --steps must be at least 1");
    }
    if args.train_limit == Some(0) || args.test_limit == Some(0) {
        bail!("--train-limit and --test-limit must be at least 1");
    }
    let out = absolute(&args.out, workspace);
    let mut runs = Vec::new();
    for (i, v) in variants.iter().enumerate() {
        if variants[..i].iter().any(|w| w.name == v.name) {
            bail!("--variants lists {} twice", v.name);
        }
        let preset = preset(workspace, &v.name);
        let epochs = match args.epochs {
            Some(n) => n,
            None => preset_epochs(&preset)?,
        };
        for &seed in &args.seeds {
            runs.push(RunPlan {
                variant: v.clone(),
                seed,
                epochs,
                dir: out.join(format!("{}-s{seed}", v.name)),
                preset: preset.clone(),
            });
        }
    }
    Ok(runs)
}

/// The commands that bring `run` from `stage` to done.
pub fn run_steps(args: &ReproduceArgs, run: &RunPlan, stage: &Stage, noprop: &Path) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut train = niced(noprop);
    train.arg("train");
    match stage {
        Stage::Fresh { force } => {
            train
                .arg("--config")
                .arg(&run.preset)
                .arg("--seed")
                .arg(run.seed.to_string())
                .arg("--epochs")
                .arg(run.epochs.to_string())
                .arg("--device")
                .arg(args.device.name());
            if let Some(n) = args.train_limit {
                train.arg("--train-limit").arg(n.to_string());
            }
            if let Some(n) = args.test_limit {
                train.arg("--test-limit").arg(n.to_string());
            }
            train.arg("--out").arg(&run.dir);
            if *force {
                train.arg("--force");
            }
        }
        Stage::Partial { .. } => {
            train
                .arg("--resume")
                .arg(&run.dir)
                .arg("--epochs")
                .arg(run.epochs.to_string());
        }
        Stage::Trained | Stage::Done => {}
    }
    if matches!(stage, Stage::Fresh { .. } | Stage::Partial { .. }) {
        steps.push(Step {
            command: train,
            stdout_to: None,
        });
    }
    if *stage == Stage::Done {
        return steps;
    }
    let checkpoint = run.dir.join("last.safetensors");
    let eval = |deterministic: bool| {
        let mut eval = niced(noprop);
        eval.arg("eval").arg("--checkpoint").arg(&checkpoint);
        if deterministic {
            eval.arg("--deterministic");
        } else {
            eval.arg("--runs").arg(args.runs.to_string());
        }
        if run.variant.integrates_ode {
            eval.arg("--steps").arg(args.steps.to_string());
        }
        if let Some(n) = args.test_limit {
            eval.arg("--test-limit").arg(n.to_string());
        }
        eval.arg("--device").arg(args.device.name()).arg("--json");
        eval
    };
    steps.push(Step {
        command: eval(false),
        stdout_to: Some(run.dir.join(EVAL_FILE)),
    });
    if !run.variant.integrates_ode {
        steps.push(Step {
            command: eval(true),
            stdout_to: Some(run.dir.join(DETERMINISTIC_FILE)),
        });
    }
    steps.extend(info_steps(noprop, &run.dir, &run.variant.name));
    steps
}

/// Seconds one epoch of `variant` took (training, training accuracy and
/// the per-epoch evaluation), the median over every epoch measured in
/// `runs`; None before the first epoch.
fn seconds_per_epoch(runs: &[RunPlan], variant: &str) -> Result<Option<f64>> {
    let mut seconds = Vec::new();
    for run in runs.iter().filter(|r| r.variant.name == variant) {
        for line in metrics_lines(&run.dir)? {
            let part = |key: &str| line[key].as_f64().unwrap_or(0.0);
            seconds.push(
                part("train_seconds") + part("train_accuracy_seconds") + part("eval_seconds"),
            );
        }
    }
    Ok((!seconds.is_empty()).then(|| median(&seconds)))
}

/// Seconds the final evaluation of `variant` took (the mean of the
/// finished ones); None before the first.
fn seconds_per_evaluation(runs: &[RunPlan], variant: &str) -> Result<Option<f64>> {
    let mut seconds = Vec::new();
    for run in runs.iter().filter(|r| r.variant.name == variant) {
        let mut total = 0.0;
        let mut found = false;
        for file in run.eval_files() {
            if let Some(eval) = read_json(&run.dir.join(file))? {
                total += eval["seconds"].as_f64().unwrap_or(0.0);
                found = true;
            }
        }
        if found {
            seconds.push(total);
        }
    }
    Ok((!seconds.is_empty()).then(|| seconds.iter().sum::<f64>() / seconds.len() as f64))
}

/// What is done and what is left, with an estimate of the time left.
pub fn progress(runs: &[RunPlan]) -> Result<String> {
    let mut done = 0;
    let mut left = 0.0;
    let mut epochs_left = 0;
    let mut unknown: Vec<&str> = Vec::new();
    let mut lines = String::new();
    // Per variant, once: each estimate reads every run's files of it.
    let mut estimates: BTreeMap<&str, (Option<f64>, Option<f64>)> = BTreeMap::new();
    for run in runs {
        let name = run.variant.name.as_str();
        if !estimates.contains_key(name) {
            let estimate = (
                seconds_per_epoch(runs, name)?,
                seconds_per_evaluation(runs, name)?,
            );
            estimates.insert(name, estimate);
        }
    }
    for run in runs {
        let stage = run.stage()?;
        let (epochs_done, evaluate) = match &stage {
            Stage::Fresh { .. } => (0, true),
            Stage::Partial { epochs_done } => (*epochs_done, true),
            Stage::Trained => (run.epochs, true),
            Stage::Done => (run.epochs, false),
        };
        if stage == Stage::Done {
            done += 1;
        }
        let remaining = run.epochs - epochs_done;
        epochs_left += remaining;
        let name = run.variant.name.as_str();
        let (epoch, evaluation) = estimates[name];
        match (remaining, epoch) {
            (0, _) => {}
            (n, Some(s)) => left += n as f64 * s,
            (_, None) => {
                if !unknown.contains(&name) {
                    unknown.push(name);
                }
            }
        }
        if evaluate {
            left += evaluation.unwrap_or(0.0);
        }
        let state = match stage {
            Stage::Fresh { .. } => "not started".to_owned(),
            Stage::Partial { epochs_done } => format!("{epochs_done}/{} epochs", run.epochs),
            Stage::Trained => format!("{0}/{0} epochs, not evaluated", run.epochs),
            Stage::Done => format!("{0}/{0} epochs, evaluated", run.epochs),
        };
        let _ = writeln!(lines, "  {:<16} {state}", file_name(&run.dir));
    }
    let mut text = format!(
        "xtask: reproduce: {done} of {} runs done, {epochs_left} epochs left",
        runs.len()
    );
    if epochs_left > 0 || done < runs.len() {
        let _ = write!(
            text,
            "; about {} left",
            humantime::format_duration(Duration::from_secs(left.round() as u64))
        );
        if !unknown.is_empty() {
            let _ = write!(
                text,
                " plus the epochs of {} (none measured yet)",
                unknown.join(", ")
            );
        }
    }
    text.push('\n');
    text.push_str(&lines);
    Ok(text)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Sample mean and standard deviation (n - 1; 0 for one value).
fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = if values.len() > 1 {
        values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// The table over seeds as JSON: per variant, each evaluated seed's
/// numbers and their mean and standard deviation.
pub fn table(runs: &[RunPlan]) -> Result<Value> {
    let mut by_variant: BTreeMap<usize, (String, Vec<Value>)> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for run in runs {
        let name = run.variant.name.clone();
        if !order.contains(&name) {
            order.push(name.clone());
        }
        let index = order.iter().position(|v| *v == name).unwrap_or(0);
        let entry = by_variant
            .entry(index)
            .or_insert_with(|| (name.clone(), Vec::new()));
        if run.stage()? != Stage::Done {
            continue;
        }
        let eval = read_json(&run.dir.join(EVAL_FILE))?.unwrap_or(Value::Null);
        let deterministic = read_json(&run.dir.join(DETERMINISTIC_FILE))?;
        let summary = read_json(&run.dir.join("summary.json"))?.unwrap_or(Value::Null);
        entry.1.push(json!({
            "seed": run.seed,
            "run_dir": file_name(&run.dir),
            "epochs": summary["epochs"],
            "accuracy": eval["accuracy"],
            "run_accuracies": eval["run_accuracies"],
            "ensemble_accuracy": eval["ensemble_accuracy"],
            "deterministic_accuracy": deterministic.as_ref().map_or(Value::Null, |d| d["accuracy"].clone()),
            "images": eval["images"],
            "steps": eval["settings"]["steps"],
            "train_seconds": summary["train_seconds"],
            "train_peak_rss_bytes": summary["train_peak_rss_bytes"],
        }));
    }
    let mut variants = Vec::new();
    for (_, (name, seeds)) in by_variant {
        let stat = |key: &str| -> Value {
            let values: Vec<f64> = seeds.iter().filter_map(|s| s[key].as_f64()).collect();
            if values.is_empty() {
                return Value::Null;
            }
            let (mean, std) = mean_std(&values);
            json!({ "mean": mean, "std": std, "n": values.len() })
        };
        variants.push(json!({
            "variant": name,
            "planned_seeds": runs.iter().filter(|r| r.variant.name == name).count(),
            "accuracy": stat("accuracy"),
            "ensemble_accuracy": stat("ensemble_accuracy"),
            "deterministic_accuracy": stat("deterministic_accuracy"),
            "train_seconds": stat("train_seconds"),
            "train_peak_rss_bytes": stat("train_peak_rss_bytes"),
            "seeds": seeds,
        }));
    }
    Ok(json!({ "variants": variants }))
}

fn percent(stat: &Value) -> String {
    match (
        stat["mean"].as_f64(),
        stat["std"].as_f64(),
        stat["n"].as_u64(),
    ) {
        (Some(mean), Some(std), Some(n)) if n > 1 => {
            format!("{:.2} ± {:.2}", 100.0 * mean, 100.0 * std)
        }
        (Some(mean), _, _) => format!("{:.2}", 100.0 * mean),
        _ => "-".to_owned(),
    }
}

/// The table as markdown, with how it was made.
pub fn render(table: &Value, command: &str, date: &str) -> String {
    let mut md = String::from("# Reproduction of the paper's MNIST comparison\n\n");
    let _ = writeln!(
        md,
        "Made by `{command}` ({date}). Final checkpoints (`last.safetensors`), all test images unless the command limits them. \
         **single runs**: the paper's protocol, the mean accuracy of independent stochastic inference runs of one seed's model \
         (CT and FM: Euler integration of the ODE at the steps given), then the mean ± standard deviation of those per-seed means over the seeds. \
         **ensemble**: the same runs' averaged probabilities, scored once (not the paper's number). \
         **deterministic**: no injected noise (DT, backprop).\n"
    );
    md.push_str(
        "| variant | epochs | seeds | single runs % | ensemble % | deterministic % | train time / seed | peak RSS (MiB) |\n|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let rows = table["variants"].as_array().cloned().unwrap_or_default();
    for v in &rows {
        let seeds = v["seeds"].as_array().cloned().unwrap_or_default();
        let epochs: Vec<String> = {
            let mut e: Vec<String> = seeds.iter().map(|s| s["epochs"].to_string()).collect();
            e.dedup();
            e
        };
        let time = v["train_seconds"]["mean"].as_f64().map_or("-".into(), |s| {
            if s < 60.0 {
                format!("{s:.0} s")
            } else {
                format!("{:.0} min", s / 60.0)
            }
        });
        let rss = v["train_peak_rss_bytes"]["mean"]
            .as_f64()
            .map_or("-".into(), |b| format!("{:.0}", b / (1u64 << 20) as f64));
        let _ = writeln!(
            md,
            "| {} | {} | {} of {} | {} | {} | {} | {time} | {rss} |",
            v["variant"].as_str().unwrap_or("?"),
            if epochs.is_empty() {
                "-".into()
            } else {
                epochs.join(", ")
            },
            seeds.len(),
            v["planned_seeds"],
            percent(&v["accuracy"]),
            percent(&v["ensemble_accuracy"]),
            percent(&v["deterministic_accuracy"]),
        );
    }
    md.push_str("\nPer seed (single runs: each run's accuracy, %):\n\n| run | epochs | single runs (mean) | each run | ensemble | deterministic |\n|---|---:|---:|---|---:|---:|\n");
    for v in &rows {
        for s in v["seeds"].as_array().cloned().unwrap_or_default() {
            let pct = |x: &Value| {
                x.as_f64()
                    .map_or("-".into(), |a| format!("{:.2}", 100.0 * a))
            };
            let each: Vec<String> = s["run_accuracies"]
                .as_array()
                .map(|a| a.iter().map(pct).collect())
                .unwrap_or_default();
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} |",
                s["run_dir"].as_str().unwrap_or("?"),
                s["epochs"],
                pct(&s["accuracy"]),
                each.join(", "),
                pct(&s["ensemble_accuracy"]),
                pct(&s["deterministic_accuracy"]),
            );
        }
    }
    md
}

/// The `cargo xtask reproduce ...` line of these arguments, for the table.
pub fn command_line(args: &ReproduceArgs) -> String {
    let mut line = String::from("cargo xtask reproduce");
    if args.out != Path::new("runs/reproduce") {
        let _ = write!(line, " --out {}", args.out.display());
    }
    if let Some(v) = &args.variants {
        let _ = write!(line, " --variants {}", v.join(","));
    }
    let seeds: Vec<String> = args.seeds.iter().map(u64::to_string).collect();
    if seeds != ["0", "1", "2"] {
        let _ = write!(line, " --seeds {}", seeds.join(","));
    }
    for (flag, value) in [
        ("--epochs", args.epochs),
        ("--train-limit", args.train_limit),
        ("--test-limit", args.test_limit),
    ] {
        if let Some(n) = value {
            let _ = write!(line, " {flag} {n}");
        }
    }
    if args.runs != 5 {
        let _ = write!(line, " --runs {}", args.runs);
    }
    if args.steps != 1000 {
        let _ = write!(line, " --steps {}", args.steps);
    }
    if args.device == Device::Cuda {
        line.push_str(" --device cuda");
    }
    line
}

fn write_table(args: &ReproduceArgs, runs: &[RunPlan], out: &Path) -> Result<String> {
    let table = table(runs)?;
    let date = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let command = command_line(args);
    let markdown = render(&table, &command, &date);
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut report = json!({ "command": command, "date": date });
    report["variants"] = table["variants"].clone();
    process::write_atomically(
        &out.join("reproduce.json"),
        &(serde_json::to_string_pretty(&report)? + "\n"),
    )?;
    process::write_atomically(&out.join("reproduce.md"), &markdown)?;
    Ok(markdown)
}

/// Runs `cargo xtask reproduce`.
pub fn run(args: &ReproduceArgs) -> Result<()> {
    let start = Instant::now();
    let workspace = workspace_root();
    let out = absolute(&args.out, &workspace);
    // `--status` runs nothing but `noprop info`: build only if needed.
    let noprop = noprop_binary(
        args.noprop.as_deref(),
        &workspace,
        args.device,
        args.dry_run || args.status,
    )?;
    let all = registered(&noprop)?;
    let variants = match &args.variants {
        None => all,
        Some(names) => names
            .iter()
            .map(|n| {
                all.iter().find(|v| &v.name == n).cloned().with_context(|| {
                    let known: Vec<&str> = all.iter().map(|v| v.name.as_str()).collect();
                    format!("--variants: no variant `{n}` (known: {})", known.join(", "))
                })
            })
            .collect::<Result<Vec<_>>>()?,
    };
    let runs = plan_runs(args, &variants, &workspace)?;
    eprint!("{}", progress(&runs)?);
    if args.status {
        print!("{}", render(&table(&runs)?, &command_line(args), "now"));
        return Ok(());
    }
    for run in &runs {
        let stage = run.stage()?;
        let mut steps = run_steps(args, run, &stage, &noprop);
        if args.dry_run {
            for step in &steps {
                match &step.stdout_to {
                    Some(path) => println!("{} > {}", describe(&step.command), path.display()),
                    None => println!("{}", describe(&step.command)),
                }
            }
            continue;
        }
        if steps.is_empty() {
            continue;
        }
        for step in &mut steps {
            run_step(step)?;
        }
        write_table(args, &runs, &out)?;
        eprint!("{}", progress(&runs)?);
    }
    if args.dry_run {
        return Ok(());
    }
    let markdown = write_table(args, &runs, &out)?;
    let mut compare: Command = Command::new(&noprop);
    // The report belongs to this job's directory: rewritten on every run.
    compare
        .arg("compare")
        .arg("--force")
        .arg("--runs")
        .args(runs.iter().map(|r| &r.dir))
        .arg("--out")
        .arg(&out)
        .arg("--note")
        .arg(command_line(args));
    process::run(&mut compare)?;
    print!("{markdown}");
    eprintln!(
        "xtask: reproduce finished in {:.1} min; table: {}, report: {}",
        start.elapsed().as_secs_f64() / 60.0,
        out.join("reproduce.md").display(),
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
        args: ReproduceArgs,
    }

    fn parse(line: &[&str]) -> ReproduceArgs {
        Wrapper::try_parse_from(std::iter::once("reproduce").chain(line.iter().copied()))
            .unwrap()
            .args
    }

    /// A workspace with presets for the made-up variants `alpha` (an ODE)
    /// and `beta`, removed on drop.
    struct Workspace(PathBuf);

    impl Workspace {
        fn new(tag: &str) -> Self {
            let ws = std::env::temp_dir().join(format!("xtask-repro-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&ws);
            std::fs::create_dir_all(ws.join("configs/reproduce")).unwrap();
            std::fs::write(
                ws.join("configs/reproduce/alpha.toml"),
                "# a comment\nvariant = \"alpha\"\nepochs = 20 # twenty\n[eval]\nepochs = 3\n",
            )
            .unwrap();
            std::fs::write(
                ws.join("configs/reproduce/beta.toml"),
                "variant = \"beta\"\nepochs = 2\n",
            )
            .unwrap();
            Self(ws)
        }
    }

    impl Drop for Workspace {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn variants() -> Vec<Registered> {
        vec![
            Registered {
                name: "alpha".into(),
                integrates_ode: true,
            },
            Registered {
                name: "beta".into(),
                integrates_ode: false,
            },
        ]
    }

    fn lines(steps: &[Step]) -> Vec<String> {
        steps.iter().map(|s| describe(&s.command)).collect()
    }

    /// Writes a run that has finished `epochs` epochs (each taking
    /// `seconds`), completed when `complete`.
    fn fake_run(dir: &Path, epochs: usize, seconds: f64, complete: bool) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("config.toml"), "").unwrap();
        std::fs::write(dir.join("last.safetensors"), "").unwrap();
        let lines: String = (1..=epochs)
            .map(|e| {
                format!("{{\"epoch\":{e},\"train_seconds\":{seconds},\"eval_seconds\":0.0}}\n")
            })
            .collect();
        std::fs::write(dir.join("metrics.jsonl"), lines).unwrap();
        if complete {
            let summary = json!({"status": "completed", "epochs": epochs, "train_seconds": seconds * epochs as f64, "train_peak_rss_bytes": 200u64 << 20});
            std::fs::write(dir.join("summary.json"), summary.to_string()).unwrap();
        }
    }

    fn fake_eval(dir: &Path, file: &str, runs: &[f64], ensemble: f64) {
        let n = runs.len() as f64;
        let eval = json!({
            "accuracy": runs.iter().sum::<f64>() / n,
            "run_accuracies": runs,
            "ensemble_accuracy": ensemble,
            "images": 10000,
            "seconds": 30.0,
            "settings": {"steps": 1000},
        });
        // Newer than the checkpoint (mtime resolution may be coarse).
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(dir.join(file), eval.to_string()).unwrap();
    }

    #[test]
    fn plan_is_variants_by_seeds_with_the_presets_epochs() {
        let ws = Workspace::new("plan");
        let runs = plan_runs(&parse(&["--seeds", "3,1"]), &variants(), &ws.0).unwrap();
        let names: Vec<(String, u64, usize)> = runs
            .iter()
            .map(|r| (file_name(&r.dir), r.seed, r.epochs))
            .collect();
        assert_eq!(
            names,
            [
                ("alpha-s3".to_string(), 3, 20),
                ("alpha-s1".to_string(), 1, 20),
                ("beta-s3".to_string(), 3, 2),
                ("beta-s1".to_string(), 1, 2),
            ]
        );
        assert_eq!(runs[0].dir, ws.0.join("runs/reproduce/alpha-s3"));
        let runs = plan_runs(&parse(&["--epochs", "4"]), &variants(), &ws.0).unwrap();
        assert!(runs.iter().all(|r| r.epochs == 4));
        assert_eq!(runs.len(), 6);
    }

    #[test]
    fn bad_arguments_and_presets_are_refused() {
        let ws = Workspace::new("bad");
        for bad in [
            vec!["--seeds", "1,1"],
            vec!["--epochs", "0"],
            vec!["--runs", "0"],
            vec!["--steps", "0"],
            vec!["--test-limit", "0"],
        ] {
            assert!(
                plan_runs(&parse(&bad), &variants(), &ws.0).is_err(),
                "{bad:?}"
            );
        }
        assert!(plan_runs(&parse(&[]), &[], &ws.0).is_err());
        let twice = [variants()[0].clone(), variants()[0].clone()];
        assert!(plan_runs(&parse(&[]), &twice, &ws.0).is_err());
        let gamma = [Registered {
            name: "gamma".into(),
            integrates_ode: false,
        }];
        let e = plan_runs(&parse(&[]), &gamma, &ws.0).unwrap_err();
        assert!(format!("{e:#}").contains("reproduce/gamma.toml"), "{e:#}");
        std::fs::write(
            ws.0.join("configs/reproduce/beta.toml"),
            "[beta]\nepochs = 2\n",
        )
        .unwrap();
        let e = plan_runs(&parse(&[]), &variants(), &ws.0).unwrap_err();
        assert!(e.to_string().contains("no top-level `epochs"), "{e}");
    }

    #[test]
    fn stage_follows_the_run_directory() {
        let ws = Workspace::new("stage");
        let dir = ws.0.join("run");
        let files = [EVAL_FILE, DETERMINISTIC_FILE];
        assert_eq!(
            stage(&dir, 3, &files).unwrap(),
            Stage::Fresh { force: false }
        );
        // A failed start: only config.toml.
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.toml"), "").unwrap();
        assert_eq!(
            stage(&dir, 3, &files).unwrap(),
            Stage::Fresh { force: true }
        );
        fake_run(&dir, 2, 10.0, false);
        assert_eq!(
            stage(&dir, 3, &files).unwrap(),
            Stage::Partial { epochs_done: 2 }
        );
        // Completed at 2 epochs, but 3 planned: resume to 3.
        fake_run(&dir, 2, 10.0, true);
        assert_eq!(
            stage(&dir, 3, &files).unwrap(),
            Stage::Partial { epochs_done: 2 }
        );
        assert_eq!(stage(&dir, 2, &files).unwrap(), Stage::Trained);
        fake_eval(&dir, EVAL_FILE, &[0.9], 0.9);
        assert_eq!(stage(&dir, 2, &files).unwrap(), Stage::Trained);
        fake_eval(&dir, DETERMINISTIC_FILE, &[0.9], 0.9);
        assert_eq!(stage(&dir, 2, &files).unwrap(), Stage::Done);
        // More epochs than planned, epochs without a checkpoint, and a
        // directory that is no run are errors.
        let e = stage(&dir, 1, &files).unwrap_err();
        assert!(e.to_string().contains("more than the 1 planned"), "{e}");
        std::fs::remove_file(dir.join("last.safetensors")).unwrap();
        let e = stage(&dir, 2, &files).unwrap_err();
        assert!(e.to_string().contains("no last.safetensors"), "{e}");
        let other = ws.0.join("other");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join("notes.txt"), "").unwrap();
        assert!(stage(&other, 2, &files).is_err());
    }

    #[test]
    fn steps_train_resume_and_evaluate_with_the_papers_protocol() {
        let ws = Workspace::new("steps");
        let w = ws.0.display().to_string();
        let args = parse(&["--seeds", "7", "--test-limit", "500"]);
        let runs = plan_runs(&args, &variants(), &ws.0).unwrap();
        let bin = Path::new("/bin/noprop");
        let nice = if process::which("nice").is_some() {
            "nice -n 19 "
        } else {
            ""
        };
        // An ODE variant from scratch: train, eval --runs 5 --steps 1000, infos.
        let alpha = lines(&run_steps(
            &args,
            &runs[0],
            &Stage::Fresh { force: false },
            bin,
        ));
        assert_eq!(alpha.len(), 4, "{alpha:?}");
        assert_eq!(
            alpha[0],
            format!("{nice}/bin/noprop train --config {w}/configs/reproduce/alpha.toml --seed 7 --epochs 20 --device cpu --test-limit 500 --out {w}/runs/reproduce/alpha-s7")
        );
        assert_eq!(
            alpha[1],
            format!("{nice}/bin/noprop eval --checkpoint {w}/runs/reproduce/alpha-s7/last.safetensors --runs 5 --steps 1000 --test-limit 500 --device cpu --json")
        );
        assert!(alpha[2].contains("info --checkpoint"), "{}", alpha[2]);
        // A partial run without an ODE: resume, then single runs and deterministic.
        let steps = run_steps(&args, &runs[1], &Stage::Partial { epochs_done: 1 }, bin);
        let beta = lines(&steps);
        assert_eq!(beta.len(), 5, "{beta:?}");
        assert_eq!(
            beta[0],
            format!("{nice}/bin/noprop train --resume {w}/runs/reproduce/beta-s7 --epochs 2")
        );
        assert!(
            beta[1].ends_with("--runs 5 --test-limit 500 --device cpu --json"),
            "{}",
            beta[1]
        );
        assert!(
            beta[2].ends_with("--deterministic --test-limit 500 --device cpu --json"),
            "{}",
            beta[2]
        );
        assert_eq!(
            steps[2].stdout_to.as_deref(),
            Some(
                ws.0.join("runs/reproduce/beta-s7/eval-deterministic.json")
                    .as_path()
            )
        );
        // Trained: evaluation only; done: nothing; a failed start: --force.
        assert_eq!(run_steps(&args, &runs[1], &Stage::Trained, bin).len(), 4);
        assert!(run_steps(&args, &runs[1], &Stage::Done, bin).is_empty());
        let forced = lines(&run_steps(
            &args,
            &runs[1],
            &Stage::Fresh { force: true },
            bin,
        ));
        assert!(forced[0].ends_with("--force"), "{}", forced[0]);
    }

    #[test]
    fn progress_estimates_what_is_left_from_measured_epochs() {
        let ws = Workspace::new("progress");
        let args = parse(&["--seeds", "0,1", "--variants", "alpha,beta"]);
        let runs = plan_runs(&args, &variants(), &ws.0).unwrap();
        // alpha-s0: 5 of 20 epochs at 60 s; alpha-s1 not started; beta none.
        fake_run(&runs[0].dir, 5, 60.0, false);
        let text = progress(&runs).unwrap();
        // 15 + 20 alpha epochs at 60 s = 35 min; beta unmeasured.
        assert!(text.starts_with("xtask: reproduce: 0 of 4 runs done, 39 epochs left; about 35m left plus the epochs of beta"), "{text}");
        assert!(text.contains("alpha-s0         5/20 epochs"), "{text}");
        assert!(text.contains("beta-s1          not started"), "{text}");
    }

    #[test]
    fn the_table_aggregates_the_seeds_and_keeps_single_runs_and_ensembles_apart() {
        let ws = Workspace::new("table");
        let args = parse(&["--seeds", "0,1"]);
        let runs = plan_runs(&args, &variants(), &ws.0).unwrap();
        for (run, accs) in runs
            .iter()
            .zip([[0.98, 0.99], [0.97, 0.98], [0.5, 0.5], [0.5, 0.5]])
        {
            fake_run(&run.dir, run.epochs, 10.0, true);
            fake_eval(&run.dir, EVAL_FILE, &accs, accs[1] + 0.001);
            if !run.variant.integrates_ode {
                fake_eval(&run.dir, DETERMINISTIC_FILE, &[0.6], 0.6);
            }
        }
        // beta-s1 is not evaluated (the deterministic file is missing).
        std::fs::remove_file(runs[3].dir.join(DETERMINISTIC_FILE)).unwrap();
        let table = table(&runs).unwrap();
        let alpha = &table["variants"][0];
        assert_eq!(alpha["variant"], "alpha");
        // Per-seed means 0.985 and 0.975: mean 0.98, sample std 0.00707.
        assert!((alpha["accuracy"]["mean"].as_f64().unwrap() - 0.98).abs() < 1e-12);
        assert!((alpha["accuracy"]["std"].as_f64().unwrap() - 0.01 / 2f64.sqrt()).abs() < 1e-12);
        assert!((alpha["ensemble_accuracy"]["mean"].as_f64().unwrap() - 0.986).abs() < 1e-12);
        assert_eq!(alpha["deterministic_accuracy"], Value::Null);
        let beta = &table["variants"][1];
        assert_eq!(beta["seeds"].as_array().unwrap().len(), 1);
        assert_eq!(beta["planned_seeds"], 2);
        let md = render(&table, "cargo xtask reproduce", "2026-12-02");
        assert!(
            md.contains("| alpha | 20 | 2 of 2 | 98.00 ± 0.71 | 98.60 ± 0.71 | - | 3 min | 200 |"),
            "{md}"
        );
        assert!(
            md.contains("| beta | 2 | 1 of 2 | 50.00 | 50.10 | 60.00 |"),
            "{md}"
        );
        assert!(
            md.contains("| alpha-s1 | 20 | 97.50 | 97.00, 98.00 | 98.10 | - |"),
            "{md}"
        );
    }

    #[test]
    fn command_line_gives_the_non_default_arguments() {
        assert_eq!(command_line(&parse(&[])), "cargo xtask reproduce");
        assert_eq!(
            command_line(&parse(&[
                "--seeds",
                "0",
                "--variants",
                "fm",
                "--epochs",
                "3",
                "--steps",
                "100"
            ])),
            "cargo xtask reproduce --variants fm --seeds 0 --epochs 3 --steps 100"
        );
    }
}
