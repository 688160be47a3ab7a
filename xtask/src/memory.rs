//! `cargo xtask memory`: the training memory of a NoProp variant (by
//! default NoProp-DT) against a baseline (by default the back-propagation
//! baseline) on the same blocks, data and batch, and of the first for
//! several numbers of blocks T.
//!
//! Each measurement is a short `noprop train` run (`--steps` minibatches of
//! MNIST, one epoch, blocks stepped one after another), whose
//! `summary.json` records the peak resident memory of its training steps
//! (`train_peak_rss_bytes`: sampled every 5 ms, see the trainer's
//! `memory.rs`) and the resident memory before the first step
//! (`baseline_rss_bytes`: binary, data and model; the optimizer moments
//! are allocated at the first step). A few dozen steps reach the steady peak: every step builds
//! and frees the same graph. Written to `OUT/memory.json` and
//! `OUT/memory.md` with the command and the date.
//!
//! What to expect: with NoProp-DT only one block's graph exists at a time,
//! so the growth with T is the parameters and their two Adam moments
//! (3 x 4 bytes per parameter); the baseline keeps every block's
//! activations alive for its one backward pass.

use std::path::PathBuf;
use std::process::Command;
use std::time::SystemTime;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::process;
use crate::train_all::{build_noprop, Device};
use crate::{absolute, workspace_root};

/// Arguments of `cargo xtask memory`.
#[derive(Debug, Clone, clap::Args)]
pub struct MemoryArgs {
    /// The NoProp variant measured for several T (it must have a
    /// `num_blocks` key).
    #[arg(long, default_value = "dt")]
    pub variant: String,
    /// The variant it is compared with at `--compare-blocks` blocks.
    #[arg(long, default_value = "backprop")]
    pub baseline: String,
    /// Numbers of blocks T measured for `--variant`.
    #[arg(long, value_delimiter = ',', default_value = "2,5,10,20")]
    pub blocks: Vec<usize>,
    /// T of the side-by-side comparison with the baseline.
    #[arg(long, default_value_t = 10)]
    pub compare_blocks: usize,
    /// Training minibatches per measurement.
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Minibatch size.
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// Where the run directories go (scratch).
    #[arg(long, default_value = "target/xtask-memory", value_name = "DIR")]
    pub runs: PathBuf,
    /// Where memory.json and memory.md go.
    #[arg(long, default_value = "docs/results/memory", value_name = "DIR")]
    pub out: PathBuf,
    /// Use this `noprop` binary instead of building one.
    #[arg(long, value_name = "BIN")]
    pub noprop: Option<PathBuf>,
    /// Where to train: on cuda the tables add each run's peak device memory
    /// (nvidia-smi's figure for the process; use another --out, e.g.
    /// docs/results/memory-cuda).
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: Device,
}

/// One measurement.
struct Case<'a> {
    variant: &'a str,
    blocks: usize,
}

impl Case<'_> {
    fn name(&self) -> String {
        format!("{}-T{}", self.variant, self.blocks)
    }
}

/// Runs `cargo xtask memory`.
pub fn run(args: &MemoryArgs) -> Result<()> {
    if args.blocks.is_empty() || args.blocks.contains(&0) || args.compare_blocks == 0 {
        bail!("--blocks and --compare-blocks need numbers of blocks >= 1");
    }
    if args.steps == 0 || args.batch_size == 0 {
        bail!("--steps and --batch-size must be at least 1");
    }
    let workspace = workspace_root();
    let noprop = match &args.noprop {
        Some(bin) => bin.clone(),
        None => build_noprop(&workspace, args.device, false)?,
    };
    let runs = absolute(&args.runs, &workspace);
    let out = absolute(&args.out, &workspace);
    let mut cases: Vec<Case> = args
        .blocks
        .iter()
        .map(|&blocks| Case {
            variant: &args.variant,
            blocks,
        })
        .collect();
    cases.push(Case {
        variant: &args.baseline,
        blocks: args.compare_blocks,
    });
    if !args.blocks.contains(&args.compare_blocks) {
        cases.push(Case {
            variant: &args.variant,
            blocks: args.compare_blocks,
        });
    }
    let mut rows = Vec::new();
    for case in &cases {
        let dir = runs.join(case.name());
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        let mut train = Command::new(&noprop);
        train
            .arg("train")
            .arg("--variant")
            .arg(case.variant)
            .arg("--set")
            .arg(format!("{}.num_blocks={}", case.variant, case.blocks))
            .arg("--train-limit")
            .arg((args.steps * args.batch_size).to_string())
            .arg("--batch-size")
            .arg(args.batch_size.to_string())
            .arg("--test-limit")
            .arg("100")
            .arg("--epochs")
            .arg("1")
            .arg("--set")
            .arg("train_accuracy_every=0")
            .arg("--no-progress")
            .arg("--device")
            .arg(args.device.name())
            .arg("--out")
            .arg(&dir);
        process::run(&mut train)?;
        let summary_path = dir.join("summary.json");
        let summary: Value = serde_json::from_str(
            &std::fs::read_to_string(&summary_path)
                .with_context(|| format!("reading {}", summary_path.display()))?,
        )
        .with_context(|| format!("{} is not JSON", summary_path.display()))?;
        let field = |key: &str| summary.get(key).and_then(Value::as_u64);
        let (Some(peak), Some(baseline), Some(parameters)) = (
            field("train_peak_rss_bytes"),
            field("baseline_rss_bytes"),
            field("parameters"),
        ) else {
            bail!(
                "{} has no memory figures (this platform may not report them)",
                summary_path.display()
            );
        };
        if args.device == Device::Cuda && field("train_peak_device_bytes").is_none() {
            bail!(
                "{} has no peak device memory: nvidia-smi could not be run during training",
                summary_path.display()
            );
        }
        rows.push(json!({
            "variant": case.variant,
            "blocks": case.blocks,
            "parameters": parameters,
            // Parameters and their two Adam moments, f32.
            "parameter_and_optimizer_bytes": 12 * parameters,
            "baseline_rss_bytes": baseline,
            "train_peak_rss_bytes": peak,
            "growth_during_training_bytes": peak.saturating_sub(baseline),
            "train_peak_device_bytes": field("train_peak_device_bytes"),
        }));
    }
    let command = format!(
        "cargo xtask memory --variant {} --baseline {} --blocks {} --compare-blocks {} --steps {} --batch-size {}{}",
        args.variant,
        args.baseline,
        args.blocks
            .iter()
            .map(|b| b.to_string())
            .collect::<Vec<_>>()
            .join(","),
        args.compare_blocks,
        args.steps,
        args.batch_size,
        if args.device == Device::Cuda { " --device cuda" } else { "" }
    );
    let date = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let report = json!({
        "command": command,
        "variant": args.variant,
        "baseline": args.baseline,
        "date": date,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "rows": rows,
    });
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    process::write_atomically(
        &out.join("memory.json"),
        &(serde_json::to_string_pretty(&report)? + "\n"),
    )?;
    let markdown = render(&report, args.compare_blocks);
    process::write_atomically(&out.join("memory.md"), &markdown)?;
    print!("{markdown}");
    Ok(())
}

fn mib(bytes: &Value) -> String {
    bytes.as_u64().map_or("-".into(), |b| {
        format!("{:.0}", b as f64 / (1u64 << 20) as f64)
    })
}

/// The two tables as markdown.
fn render(report: &Value, compare_blocks: usize) -> String {
    let rows = report["rows"].as_array().cloned().unwrap_or_default();
    let variant = report["variant"].as_str().unwrap_or("");
    let baseline = report["baseline"].as_str().unwrap_or("");
    let device = rows.iter().any(|r| r["train_peak_device_bytes"].is_u64());
    let mut md = format!("# Training memory: {variant} and {baseline}\n\n");
    md.push_str(&format!(
        "`{}` ({}), on this project's 2-core CPU machine: {} minibatches of {} MNIST \
         images per measurement, one process each, blocks stepped one after another. \
         Resident memory (MiB): `baseline` before the first training step (binary, data, \
         model; Adam's moments are allocated at the first step), `peak` the largest sample \
         (every 5 ms) during the training steps; `params + Adam` is 12 bytes per parameter \
         (the parameters and their two Adam moments, f32).\n\n",
        report["command"].as_str().unwrap_or(""),
        report["date"].as_str().unwrap_or(""),
        report["steps"],
        report["batch_size"]
    ));
    if device {
        md.push_str(
            "`device peak`: the process's peak GPU memory during the training steps as the \
             driver reports it (nvidia-smi every 0.5 s): CUDA context, tensors, library \
             workspaces.\n\n",
        );
    }
    let (extra_head, extra_rule) = if device {
        (" device peak |", "---:|")
    } else {
        ("", "")
    };
    md.push_str(&format!(
        "## The same T = {compare_blocks} blocks, data and batch\n\n\
         | variant | parameters | params + Adam | baseline | peak | peak - baseline |{extra_head}\n\
         |---|---:|---:|---:|---:|---:|{extra_rule}\n"
    ));
    for row in rows.iter().filter(|r| r["blocks"] == compare_blocks) {
        md.push_str(&table_row(
            row,
            row["variant"].as_str().unwrap_or(""),
            device,
        ));
    }
    md.push_str(&format!(
        "\n## {variant} for several T\n\n\
         | T | parameters | params + Adam | baseline | peak | peak - baseline |{extra_head}\n\
         |---:|---:|---:|---:|---:|---:|{extra_rule}\n"
    ));
    let mut dt: Vec<&Value> = rows.iter().filter(|r| r["variant"] == variant).collect();
    dt.sort_by_key(|r| r["blocks"].as_u64());
    dt.dedup_by_key(|r| r["blocks"].as_u64());
    for row in dt {
        md.push_str(&table_row(row, &row["blocks"].to_string(), device));
    }
    md
}

fn table_row(row: &Value, first: &str, device: bool) -> String {
    let mut line = format!(
        "| {first} | {} | {} | {} | {} | {} |",
        row["parameters"],
        mib(&row["parameter_and_optimizer_bytes"]),
        mib(&row["baseline_rss_bytes"]),
        mib(&row["train_peak_rss_bytes"]),
        mib(&row["growth_during_training_bytes"]),
    );
    if device {
        line.push_str(&format!(" {} |", mib(&row["train_peak_device_bytes"])));
    }
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tables_show_the_comparison_and_every_t() {
        let row = |variant: &str, blocks: usize, peak: u64| {
            json!({"variant": variant, "blocks": blocks, "parameters": 1000,
                   "parameter_and_optimizer_bytes": 12_000,
                   "baseline_rss_bytes": 100u64 << 20, "train_peak_rss_bytes": peak << 20,
                   "growth_during_training_bytes": (peak - 100) << 20})
        };
        let report = json!({"command": "cargo xtask memory", "date": "d", "steps": 20,
            "batch_size": 128, "variant": "a", "baseline": "b",
            "rows": [row("a", 2, 150), row("a", 10, 240), row("b", 10, 470)]});
        let md = render(&report, 10);
        assert!(md.contains("| a | 1000 | 0 | 100 | 240 | 140 |"), "{md}");
        assert!(md.contains("| b | 1000 | 0 | 100 | 470 | 370 |"), "{md}");
        assert!(md.contains("| 2 | 1000 | 0 | 100 | 150 | 50 |"), "{md}");
        assert!(!md.contains("| 20 |"), "{md}");
        assert!(!md.contains("device peak"), "{md}");

        // On a GPU: the device column.
        let mut report = report;
        for (row, mib) in report["rows"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .zip([300u64, 500, 900])
        {
            row["train_peak_device_bytes"] = json!(mib << 20);
        }
        let md = render(&report, 10);
        assert!(md.contains("| variant | parameters | params + Adam | baseline | peak | peak - baseline | device peak |"), "{md}");
        assert!(
            md.contains("| b | 1000 | 0 | 100 | 470 | 370 | 900 |"),
            "{md}"
        );
        assert!(
            md.contains("| 2 | 1000 | 0 | 100 | 150 | 50 | 300 |"),
            "{md}"
        );
    }
}
