//! `noprop compare`: a side-by-side report of several training runs.
//!
//! Reads run directories through the types that wrote them (see [`run`]:
//! [`crate::config::RunConfig`], [`crate::metrics::EpochMetrics`],
//! [`crate::summary::RunSummary`], [`crate::eval::EvalReport`],
//! [`crate::info::InfoReport`]) and writes into `--out`:
//!
//! - `report.md`: setup, a summary table (variant, the final model's test
//!   accuracy, with several inference runs the mean ± sd of the single runs
//!   and their ensemble apart, train accuracy, training time, inference time
//!   in ms per image, peak memory, parameter count, test accuracy (%) per
//!   million parameters, epochs, and with a validation split the best
//!   validation epoch), notes on where each number came from, the per-epoch
//!   table and the plots;
//! - `report.json`: the same numbers for scripts ([`CompareReport`]);
//! - PNG figures (see [`plots`]): learning curves, final accuracy, training
//!   and inference time, model size, accuracy per parameter, accuracy
//!   against speed, and the noise schedules (DT cosine, CT initial and
//!   learned; read from each run's `info.json` and `info-initial.json`, the
//!   saved output of `noprop info --json`).
//!
//! Accuracies are fractions in [0, 1] in `report.json` and percentages in
//! `report.md` and the plots.

mod markdown;
mod plots;
mod row;
mod run;
mod schedule;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde::Serialize;

pub use self::row::{RunRow, TestSource};
pub use self::run::RunData;
pub use self::schedule::ScheduleCurve;
use crate::metrics::EpochMetrics;

/// Arguments of `noprop compare`.
#[derive(Debug, Clone, clap::Args)]
pub struct CompareArgs {
    /// Run directories to compare (each written by `noprop train --out`).
    #[arg(long, num_args = 1.., required = true, value_name = "DIR")]
    pub runs: Vec<PathBuf>,
    /// Where to write report.md, report.json and the plots.
    #[arg(long, value_name = "DIR", default_value = "runs/compare")]
    pub out: PathBuf,
    /// Print report.json to stdout instead of the summary table.
    #[arg(long)]
    pub json: bool,
    /// The command that produced the runs, recorded in the report.
    #[arg(long, value_name = "TEXT")]
    pub note: Option<String>,
}

/// The per-epoch metrics of one run, for `report.json`: the lines of its
/// `metrics.jsonl`.
#[derive(Debug, Clone, Serialize)]
pub struct RunEpochs {
    pub name: String,
    pub variant: String,
    pub label: String,
    pub epochs: Vec<EpochMetrics>,
}

/// Everything `report.json` holds.
#[derive(Debug, Clone, Serialize)]
pub struct CompareReport {
    /// When the report was made, "YYYY-MM-DD HH:MM:SS".
    pub generated_utc: String,
    /// The command that produced the runs (`--note`).
    pub note: Option<String>,
    /// One summary table row per run, in `--runs` order.
    pub runs: Vec<RunRow>,
    /// Per-epoch metrics per run.
    pub epochs: Vec<RunEpochs>,
    /// Noise schedules found in the runs' `info.json`.
    pub schedules: Vec<ScheduleCurve>,
    /// Plot file names, relative to the report's directory.
    pub plots: Vec<String>,
}

impl CompareReport {
    /// Builds the report's numbers from loaded runs (no files written).
    pub fn from_runs(runs: &[RunData], note: Option<String>) -> Self {
        let rows: Vec<RunRow> = runs.iter().map(RunRow::from_run).collect();
        let epochs = runs
            .iter()
            .zip(&rows)
            .map(|(run, row)| RunEpochs {
                name: run.name.clone(),
                variant: row.variant.clone(),
                label: row.label.clone(),
                epochs: run.epochs.clone(),
            })
            .collect();
        let schedules = runs
            .iter()
            .flat_map(|run| {
                let initial = run
                    .initial_info
                    .as_ref()
                    .and_then(|info| schedule::from_info(info, true));
                let trained = run
                    .info
                    .as_ref()
                    .and_then(|info| schedule::from_info(info, false));
                // A fixed schedule is the same before and after training:
                // drawn once.
                let initial = initial.filter(|i| {
                    trained
                        .as_ref()
                        .is_none_or(|t| t.alpha_bar != i.alpha_bar || t.t != i.t)
                });
                initial.into_iter().chain(trained)
            })
            .collect();
        Self {
            generated_utc: utc_now(),
            note,
            runs: rows,
            epochs,
            schedules,
            plots: Vec::new(),
        }
    }
}

/// Runs `noprop compare`: reads the runs, writes report.md, report.json and
/// the plots into `--out`, and prints the summary table (or the JSON).
pub fn run_compare(args: &CompareArgs) -> Result<()> {
    if args.runs.is_empty() {
        bail!("--runs needs at least one run directory");
    }
    let runs = args
        .runs
        .iter()
        .map(|dir| RunData::load(dir))
        .collect::<Result<Vec<_>>>()?;
    let report = write_report(&runs, &args.out, args.note.clone())?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", markdown::summary_table(&report.runs));
        println!("\nReport: {}", args.out.join("report.md").display());
    }
    Ok(())
}

/// Writes report.md, report.json and the plots for `runs` into `out_dir`
/// (created if needed) and returns the report.
pub fn write_report(
    runs: &[RunData],
    out_dir: &std::path::Path,
    note: Option<String>,
) -> Result<CompareReport> {
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("creating output directory {}", out_dir.display()))?;
    let mut report = CompareReport::from_runs(runs, note);
    let written = plots::write_plots(out_dir, runs, &report.runs, &report.schedules)?;
    report.plots = written
        .iter()
        .filter_map(|p| Some(p.file_name()?.to_string_lossy().into_owned()))
        .collect();
    let json_path = out_dir.join("report.json");
    let json = serde_json::to_string_pretty(&report)? + "\n";
    crate::atomic::write_atomic(&json_path, json.as_bytes())
        .with_context(|| format!("writing {}", json_path.display()))?;
    let md_path = out_dir.join("report.md");
    crate::atomic::write_atomic(&md_path, markdown::render(&report).as_bytes())
        .with_context(|| format!("writing {}", md_path.display()))?;
    Ok(report)
}

/// The current UTC time as "YYYY-MM-DD HH:MM:SS".
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format_utc(secs)
}

/// Formats seconds since 1970-01-01 UTC as "YYYY-MM-DD HH:MM:SS".
fn format_utc(secs: u64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    humantime::format_rfc3339_seconds(time)
        .to_string()
        .trim_end_matches('Z')
        .replacen('T', " ", 1)
}

#[cfg(test)]
pub(crate) mod tests;
