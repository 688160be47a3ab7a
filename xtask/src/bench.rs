//! `cargo xtask bench`: CPU timings of NoProp's blocks, ours next to
//! PyTorch's, with the ratio ours / PyTorch per measurement.
//!
//! 1. `cargo build --release -p noprop-bench` (unless `--bench-bin BIN`);
//! 2. `--rounds` times, alternately: the `noprop-bench` binary and, when
//!    `python3 -c "import torch"` works, `bench/torch_blocks.py`, both with
//!    the same thread count (interleaving spreads the machine's noise over
//!    both sides);
//! 3. per measurement, the median over rounds of each side's median, and the
//!    ratio; printed as a table and written to
//!    `OUT_DIR/<UTC date>.json` and `.md` with the command, date, machine
//!    and load average.
//!
//! A ratio, not an absolute time, is the figure of merit: the machines are
//! shared and noisy.

use std::path::PathBuf;
use std::process::Command;
use std::time::SystemTime;

use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};

use crate::process::{self, cargo_program};
use crate::stats::median;
use crate::workspace_root;

/// Arguments of `cargo xtask bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Minibatch size.
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// Timed runs per measurement and round (fewer for the 10-block minibatch).
    #[arg(long, default_value_t = 10)]
    pub iters: usize,
    /// Alternating rounds of ours and PyTorch.
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// Threads for both sides (RAYON_NUM_THREADS, torch.set_num_threads).
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// CANDLE_NUM_THREADS for ours (candle's element-wise pool); 1 runs
    /// element-wise ops inline, which is faster on a shared machine.
    #[arg(long, default_value_t = 1)]
    pub candle_threads: usize,
    /// Images of the whole-evaluation measurements (`fm_eval`, `ct_eval`,
    /// `dt_eval`), both sides.
    #[arg(long, default_value_t = 500)]
    pub eval_images: usize,
    /// ODE steps of the CT/FM whole-evaluation measurements.
    #[arg(long, default_value_t = 1000)]
    pub eval_steps: usize,
    /// Timed runs of each whole evaluation per round.
    #[arg(long, default_value_t = 2)]
    pub eval_iters: usize,
    /// Comma-separated measurement names (default: all).
    #[arg(long, default_value = "")]
    pub only: String,
    /// Run PyTorch with `OMP_WAIT_POLICY=PASSIVE`: its OpenMP threads then
    /// sleep instead of spinning between parallel regions. On a machine
    /// where another process holds a core, spinning threads wait on each
    /// other (measured: a CT/FM step at batch 500 took 92 ms with 2 spinning
    /// threads, 2.7 ms passive, 2.4 ms with 1 thread), so the 2-thread
    /// comparison is only meaningful this way under load.
    #[arg(long)]
    pub torch_omp_passive: bool,
    /// Skip PyTorch even if it is installed.
    #[arg(long)]
    pub no_torch: bool,
    /// Also time the blocks with candle's reference ops (slow).
    #[arg(long)]
    pub with_candle: bool,
    /// Use this noprop-bench binary instead of building one.
    #[arg(long, value_name = "BIN")]
    pub bench_bin: Option<PathBuf>,
    /// Where the JSON and markdown results go.
    #[arg(long, default_value = "docs/benchmarks", value_name = "DIR")]
    pub out_dir: PathBuf,
}

/// Runs `cmd` (named `what` in the log), failing with its stderr if it
/// fails; returns stdout parsed as JSON.
fn run_json(cmd: &mut Command, what: &str) -> Result<Value> {
    eprintln!("[bench] {what}");
    let stdout = process::output(cmd)?;
    // The JSON object is the last thing printed; skip any warnings before it.
    let start = stdout
        .find('{')
        .with_context(|| format!("{what} printed no JSON"))?;
    serde_json::from_str(&stdout[start..]).with_context(|| format!("parsing {what}'s JSON"))
}

fn torch_available() -> bool {
    process::output(Command::new("python3").args(["-c", "import torch"])).is_ok()
}

/// CPU model, core count, and the 1-minute load average now.
fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string());
    let flags = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .unwrap_or("");
    let simd: Vec<&str> = ["avx2", "fma", "avx512f"]
        .into_iter()
        .filter(|f| flags.split_whitespace().any(|x| x == *f))
        .collect();
    json!({
        "cpu": model,
        "simd": simd,
        "cores": std::thread::available_parallelism().map(|n| n.get()).ok(),
        "os": process::output(Command::new("uname").arg("-sr"))
            .ok()
            .map(|s| s.trim().to_string()),
    })
}

fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Per measurement name, the median over rounds of `field` (the rounds'
/// median wall time, or mean CPU time).
fn combine(rounds: &[Value], key: &str, field: &str) -> Map<String, Value> {
    let mut names: Vec<String> = rounds
        .iter()
        .filter_map(|r| r.get(key)?.as_object())
        .flat_map(|m| m.keys().cloned())
        .collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter_map(|name| {
            let ms: Vec<f64> = rounds
                .iter()
                .filter_map(|r| r.get(key)?.get(&name)?.get(field)?.as_f64())
                .collect();
            (!ms.is_empty()).then(|| (name, json!(median(&ms))))
        })
        .collect()
}

/// Which PyTorch measurement an ours-only measurement compares with.
fn torch_counterpart(name: &str) -> &str {
    match name {
        "dt_minibatch_block_parallel" => "dt_minibatch",
        "conv_stack_fwd_bwd_separate" => "conv_stack_fwd_bwd",
        other => other,
    }
}

pub fn run(args: &BenchArgs) -> Result<()> {
    if args.batch < 2 || args.threads == 0 || args.rounds == 0 {
        bail!("need --batch >= 2, --threads >= 1 and --rounds >= 1");
    }
    if args.eval_images == 0 || args.eval_steps == 0 || args.eval_iters == 0 {
        bail!("need --eval-images, --eval-steps and --eval-iters >= 1");
    }
    let eval_args = [
        "--eval-images".to_string(),
        args.eval_images.to_string(),
        "--eval-steps".to_string(),
        args.eval_steps.to_string(),
        "--eval-iters".to_string(),
        args.eval_iters.to_string(),
    ];
    let root = workspace_root();
    let bin = match &args.bench_bin {
        Some(bin) => bin.clone(),
        None => {
            process::run(Command::new(cargo_program()).current_dir(&root).args([
                "build",
                "--release",
                "-p",
                "noprop-bench",
            ]))
            .context("building noprop-bench failed")?;
            root.join("target/release/noprop-bench")
        }
    };
    let with_torch = !args.no_torch && torch_available();
    if !args.no_torch && !with_torch {
        eprintln!("[bench] python3 cannot import torch: measuring ours only (pip install torch)");
    }

    let load_before = load_average();
    let started = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let threads = args.threads.to_string();
    let (mut ours, mut torch) = (Vec::new(), Vec::new());
    for round in 0..args.rounds {
        let mut cmd = Command::new(&bin);
        cmd.current_dir(&root)
            .env("RAYON_NUM_THREADS", &threads)
            .env("CANDLE_NUM_THREADS", args.candle_threads.to_string())
            .args([
                "--batch",
                &args.batch.to_string(),
                "--iters",
                &args.iters.to_string(),
            ])
            .args(&eval_args);
        if !args.only.is_empty() {
            cmd.args(["--only", &args.only]);
        }
        if args.with_candle && round == 0 {
            cmd.arg("--with-candle");
        }
        ours.push(run_json(
            &mut cmd,
            &format!("noprop-bench, round {}", round + 1),
        )?);
        if with_torch {
            let mut cmd = Command::new("python3");
            if args.torch_omp_passive {
                cmd.env("OMP_WAIT_POLICY", "PASSIVE");
            }
            cmd.current_dir(&root)
                .args([
                    "bench/torch_blocks.py",
                    "--batch",
                    &args.batch.to_string(),
                    "--iters",
                    &args.iters.to_string(),
                    "--threads",
                    &threads,
                ])
                .args(&eval_args);
            if !args.only.is_empty() {
                let names: Vec<&str> = args.only.split(',').map(torch_counterpart).collect();
                cmd.args(["--only", &names.join(",")]);
            }
            torch.push(run_json(
                &mut cmd,
                &format!("PyTorch, round {}", round + 1),
            )?);
        }
    }

    let ours_ms = combine(&ours, "measurements", "median_ms");
    let torch_ms = combine(&torch, "measurements", "median_ms");
    let ours_cpu = combine(&ours, "measurements", "cpu_ms");
    let torch_cpu = combine(&torch, "measurements", "cpu_ms");
    let candle_ms = combine(&ours, "candle_ops", "median_ms");
    let mut rows = Vec::new();
    let mut table = String::from(
        "| measurement | noprop-rs ms | PyTorch ms | ours / PyTorch | CPU ms ours / PyTorch | CPU ratio | candle ops ms |\n|---|---:|---:|---:|---:|---:|---:|\n",
    );
    let fmt = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.2}"));
    for (name, ms) in &ours_ms {
        let ms = ms.as_f64();
        let theirs = torch_ms
            .get(torch_counterpart(name))
            .and_then(Value::as_f64);
        let candle = candle_ms.get(name).and_then(Value::as_f64);
        let ratio = ms.zip(theirs).map(|(a, b)| a / b);
        let cpu = ours_cpu.get(name).and_then(Value::as_f64);
        let cpu_theirs = torch_cpu
            .get(torch_counterpart(name))
            .and_then(Value::as_f64);
        let cpu_ratio = cpu.zip(cpu_theirs).map(|(a, b)| a / b);
        let fmt_ratio = |r: Option<f64>| r.map_or("-".into(), |r| format!("{r:.3}"));
        table += &format!(
            "| {name} | {} | {} | {} | {} / {} | {} | {} |\n",
            fmt(ms),
            fmt(theirs),
            fmt_ratio(ratio),
            fmt(cpu),
            fmt(cpu_theirs),
            fmt_ratio(cpu_ratio),
            fmt(candle)
        );
        rows.push(json!({
            "name": name, "ours_ms": ms, "pytorch_ms": theirs, "ratio": ratio,
            "ours_cpu_ms": cpu, "pytorch_cpu_ms": cpu_theirs, "cpu_ratio": cpu_ratio,
            "candle_ops_ms": candle,
        }));
    }
    // The whole evaluations, per image (their medians cover all images).
    let mut evals = String::new();
    for name in ["fm_eval", "ct_eval", "dt_eval"] {
        let Some(ms) = ours_ms.get(name).and_then(Value::as_f64) else {
            continue;
        };
        let per_image = |ms: f64| ms / args.eval_images as f64;
        let theirs = torch_ms.get(name).and_then(Value::as_f64);
        let cpu = ours_cpu.get(name).and_then(Value::as_f64);
        let cpu_theirs = torch_cpu.get(name).and_then(Value::as_f64);
        let ratio = |a: Option<f64>, b: Option<f64>| {
            a.zip(b)
                .map_or("-".to_string(), |(a, b)| format!("{:.3}", a / b))
        };
        evals += &format!(
            "| {name} | {:.3} | {} | {} | {} |\n",
            per_image(ms),
            theirs.map_or("-".to_string(), |t| format!("{:.3}", per_image(t))),
            ratio(Some(ms), theirs),
            ratio(cpu, cpu_theirs),
        );
    }
    if !evals.is_empty() {
        evals = format!(
            "\nwhole evaluations ({} images, {} ODE steps for CT/FM, one run, batches of 500):\n\n\
             | evaluation | noprop-rs ms/image | PyTorch ms/image | ours / PyTorch | CPU ratio |\n\
             |---|---:|---:|---:|---:|\n{evals}",
            args.eval_images, args.eval_steps
        );
    }
    let per_s = |ms: Option<f64>| ms.map(|ms| args.batch as f64 / (ms / 1e3));
    let ms_of = |m: &Map<String, Value>, k: &str| m.get(k).and_then(Value::as_f64);
    let epoch = json!({
        "note": "images/s estimated from minibatch times: a DT minibatch steps all 10 blocks, CT/FM its one block",
        "dt_intra_op": { "ours": per_s(ms_of(&ours_ms, "dt_minibatch")), "pytorch": per_s(ms_of(&torch_ms, "dt_minibatch")) },
        "dt_block_parallel": { "ours": per_s(ms_of(&ours_ms, "dt_minibatch_block_parallel")) },
        "ct_fm": { "ours": per_s(ms_of(&ours_ms, "ctfm_train_step")), "pytorch": per_s(ms_of(&torch_ms, "ctfm_train_step")) },
    });

    let command = std::iter::once("cargo xtask".to_string())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ");
    let report = json!({
        "command": command,
        "date": started,
        "machine": machine(),
        "load_average_1min": { "start": load_before, "end": load_average() },
        "batch": args.batch,
        "eval_images": args.eval_images,
        "eval_steps": args.eval_steps,
        "threads": args.threads,
        "candle_num_threads": args.candle_threads,
        "torch_omp_wait_policy": if args.torch_omp_passive { "PASSIVE" } else { "default" },
        "rounds": args.rounds,
        "torch_version": torch.first().and_then(|t| t.get("torch_version")).cloned(),
        "results": rows,
        "epoch_images_per_s": epoch,
        "raw": { "noprop_rs": ours, "pytorch": torch },
    });
    let mut md = format!(
        "# Benchmark {started}\n\n`{command}`\n\nmachine: {}\n\nthreads: {}, CANDLE_NUM_THREADS={}, PyTorch OMP_WAIT_POLICY={}, batch {}, {} round(s); load average {:?} -> {:?}\n\n{table}{evals}\nepoch throughput (images/s): {}\n",
        report["machine"], args.threads, args.candle_threads, report["torch_omp_wait_policy"].as_str().unwrap_or("default"), args.batch, args.rounds,
        load_before, load_average(), serde_json::to_string(&epoch)?,
    );
    if !with_torch {
        md += "\nPyTorch was not measured (not installed or --no-torch).\n";
    }
    print!("{md}");

    let out_dir = root.join(&args.out_dir);
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let stem = started.replace(':', "");
    let json_path = out_dir.join(format!("{stem}.json"));
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("writing {}", json_path.display()))?;
    std::fs::write(out_dir.join(format!("{stem}.md")), md)?;
    eprintln!("[bench] wrote {}", json_path.display());
    Ok(())
}
