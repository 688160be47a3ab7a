//! `cargo xtask distributed`: the training time of one process against
//! `mpirun -np N`, side by side, for each variant.
//!
//! Each measurement is a short `noprop train` run (`--steps` minibatches of
//! MNIST, one epoch), every process with one kernel thread (`--threads 1`
//! alone, `RAYON_NUM_THREADS=1` under mpirun), so that N processes use N
//! cores. The one-process and N-process runs alternate, `--repeats` times,
//! and the table gives each median `train_seconds` (the training steps
//! only: no evaluation, no start-up) and their ratio. For NoProp-DT it also
//! checks that the N-process checkpoint is byte for byte the one process's.
//! Written to `OUT/distributed.json` and `OUT/distributed.md`.
//!
//! The `noprop` binary must be built with the `mpi` feature (`cargo build
//! --release -p noprop-train --features mpi`; built here without
//! `--noprop`), and Open MPI's `mpirun` must be on the PATH.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::process::{self, cargo_program};
use crate::stats::median;
use crate::{absolute, workspace_root};

/// Arguments of `cargo xtask distributed`.
#[derive(Debug, Clone, clap::Args)]
pub struct DistributedArgs {
    /// Variants, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "dt,fm")]
    pub variants: Vec<String>,
    /// Processes of the distributed runs.
    #[arg(long, default_value_t = 2)]
    pub ranks: usize,
    /// Training minibatches per run.
    #[arg(long, default_value_t = 40)]
    pub steps: usize,
    /// Minibatch size.
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// Alternating pairs of runs (one process, N processes) per variant.
    #[arg(long, default_value_t = 2)]
    pub repeats: usize,
    /// Extra `--set key=value` for the runs (a key of a measured variant's
    /// section for that variant's runs only; e.g. dt.parallel_blocks=true,
    /// which NoProp-DT needs across processes).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Where the run directories go (scratch).
    #[arg(long, default_value = "target/xtask-distributed", value_name = "DIR")]
    pub runs: PathBuf,
    /// Where distributed.json and distributed.md go.
    #[arg(long, default_value = "docs/results/distributed", value_name = "DIR")]
    pub out: PathBuf,
    /// Use this `noprop` binary (built with the `mpi` feature) instead of
    /// building one.
    #[arg(long, value_name = "BIN")]
    pub noprop: Option<PathBuf>,
}

fn train_seconds(dir: &Path) -> Result<f64> {
    let path = dir.join("summary.json");
    let summary: Value = serde_json::from_str(
        &std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?,
    )
    .with_context(|| format!("{} is not JSON", path.display()))?;
    summary
        .get("train_seconds")
        .and_then(Value::as_f64)
        .with_context(|| format!("{} has no train_seconds", path.display()))
}

/// Runs `cargo xtask distributed`.
pub fn run(args: &DistributedArgs) -> Result<()> {
    if args.ranks < 2 || args.steps == 0 || args.batch_size == 0 || args.repeats == 0 {
        bail!("--ranks must be at least 2, --steps, --batch-size and --repeats at least 1");
    }
    let mpirun = process::which("mpirun")
        .context("mpirun is not on the PATH (Debian: apt-get install openmpi-bin)")?;
    let workspace = workspace_root();
    let noprop = match &args.noprop {
        Some(bin) => absolute(bin, &workspace),
        None => {
            let mut build = Command::new(cargo_program());
            build.current_dir(&workspace).args([
                "build",
                "--release",
                "-p",
                "noprop-train",
                "--bin",
                "noprop",
                "--features",
                "mpi",
            ]);
            process::run(&mut build)?;
            workspace.join("target/release/noprop")
        }
    };
    let runs = absolute(&args.runs, &workspace);
    let out = absolute(&args.out, &workspace);
    let mut rows = Vec::new();
    for variant in &args.variants {
        let train_args = |dir: &Path| -> Vec<String> {
            let mut a: Vec<String> = [
                "train",
                "--variant",
                variant,
                "--train-limit",
                &(args.steps * args.batch_size).to_string(),
                "--batch-size",
                &args.batch_size.to_string(),
                "--test-limit",
                "100",
                "--epochs",
                "1",
                "--set",
                "train_accuracy_every=0",
                "--no-progress",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            // A key of one measured variant's section goes to its runs only.
            for s in &args.set {
                let section = s.split_once('.').map(|(head, _)| head);
                let other =
                    section.is_some_and(|h| h != variant && args.variants.iter().any(|v| v == h));
                if !other {
                    a.extend(["--set".to_string(), s.clone()]);
                }
            }
            a.extend(["--out".to_string(), dir.display().to_string()]);
            a
        };
        let (mut one, mut many) = (Vec::new(), Vec::new());
        let mut identical = true;
        for repeat in 0..args.repeats {
            let one_dir = runs.join(format!("{variant}-1-{repeat}"));
            let many_dir = runs.join(format!("{variant}-{}-{repeat}", args.ranks));
            for dir in [&one_dir, &many_dir] {
                if dir.exists() {
                    std::fs::remove_dir_all(dir)
                        .with_context(|| format!("removing {}", dir.display()))?;
                }
            }
            let mut single = Command::new(&noprop);
            single.args(train_args(&one_dir)).args(["--threads", "1"]);
            process::run(&mut single)?;
            one.push(train_seconds(&one_dir)?);
            let mut distributed = Command::new(&mpirun);
            distributed
                .args(["--allow-run-as-root", "--oversubscribe", "-np"])
                .arg(args.ranks.to_string())
                .args(["-x", "RAYON_NUM_THREADS=1"])
                .arg(&noprop)
                .args(train_args(&many_dir));
            process::run(&mut distributed)?;
            many.push(train_seconds(&many_dir)?);
            let read = |d: &Path| std::fs::read(d.join("last.safetensors"));
            identical &= read(&one_dir)? == read(&many_dir)?;
        }
        let (one_median, many_median) = (median(&one), median(&many));
        rows.push(json!({
            "variant": variant,
            "one_process_train_seconds": one,
            "distributed_train_seconds": many,
            "one_process_median": one_median,
            "distributed_median": many_median,
            "time_ratio": many_median / one_median,
            "checkpoint_identical": identical,
        }));
    }
    let mut command = format!(
        "cargo xtask distributed --variants {} --ranks {} --steps {} --batch-size {} --repeats {}",
        args.variants.join(","),
        args.ranks,
        args.steps,
        args.batch_size,
        args.repeats
    );
    for s in &args.set {
        command += &format!(" --set {s}");
    }
    let date = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let report = json!({
        "command": command,
        "date": date,
        "cpu": cpu,
        "cores": cores,
        "ranks": args.ranks,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "rows": rows,
    });
    let mut md = format!(
        "# Training across processes: one process against `mpirun -np {}`\n\n\
         Written by `{command}` on {date} ({cpu}, {cores} cores). Each run trains \
         {} minibatches of {} MNIST images, every process with one kernel thread; \
         one-process and {}-process runs alternate {} times; the medians of \
         `train_seconds` (the training steps only) and their ratio.\n\n\
         | variant | 1 process (s) | {} processes (s) | time ratio | checkpoint identical |\n\
         |---|---:|---:|---:|---|\n",
        args.ranks, args.steps, args.batch_size, args.ranks, args.repeats, args.ranks
    );
    for r in &rows {
        md += &format!(
            "| {} | {:.1} | {:.1} | **{:.2}** | {} |\n",
            r["variant"].as_str().unwrap_or("?"),
            r["one_process_median"].as_f64().unwrap_or(f64::NAN),
            r["distributed_median"].as_f64().unwrap_or(f64::NAN),
            r["time_ratio"].as_f64().unwrap_or(f64::NAN),
            if r["checkpoint_identical"].as_bool() == Some(true) {
                "yes, byte for byte"
            } else {
                "no"
            }
        );
    }
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    process::write_atomically(
        &out.join("distributed.json"),
        &(serde_json::to_string_pretty(&report)? + "\n"),
    )?;
    process::write_atomically(&out.join("distributed.md"), &md)?;
    print!("{md}");
    Ok(())
}
