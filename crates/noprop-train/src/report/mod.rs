//! `noprop compare`: a side-by-side report of several training runs.
//!
//! Reads run directories through the types that wrote them (see [`RunData`]:
//! [`crate::config::RunConfig`], [`crate::metrics::EpochMetrics`],
//! [`crate::summary::RunSummary`], [`crate::eval::EvalReport`],
//! [`crate::info::InfoReport`]) and writes into `--out`:
//!
//! - `report.md`: warnings when the runs' datasets, test sets or inference
//!   settings differ, setup, the configuration keys whose values differ
//!   between the runs, a summary table (run, the final model's test
//!   accuracy, with several inference runs the mean ± sd of the single runs
//!   and their ensemble apart, train accuracy, training time, inference time
//!   in ms per image, peak memory, parameter count, test accuracy (%) per
//!   million parameters, epochs, and with a validation split the best
//!   validation epoch), notes on where each number came from, the per-epoch
//!   table and the plots;
//! - `report.json`: the same numbers for scripts ([`CompareReport`]);
//! - PNG figures (see `report/plots/`): learning curves, final accuracy, training
//!   and inference time, model size, accuracy per parameter, accuracy
//!   against speed, the per-class test accuracy (runs with an `eval.json`
//!   of this version), and the noise schedules (DT cosine, CT initial and
//!   learned; read from each run's `info.json` and `info-initial.json`, the
//!   saved output of `noprop info --json`).
//!
//! Runs are named by their variant when every run has another one, else
//! (a sweep) by their directory too, or by `--label`; each has its own colour
//! in the figures. An existing report is replaced only with `--force`.
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
    /// The runs' names in tables and legends, one per run in `--runs`
    /// order (default: the variant, with the run directory's name when
    /// several runs share a variant).
    #[arg(long = "label", value_name = "NAME")]
    pub labels: Vec<String>,
    /// Replace a report already in `--out`.
    #[arg(long)]
    pub force: bool,
    /// A caution printed at the top of the report, before the computed
    /// warnings (e.g. that the runs are a smoke test); repeatable.
    #[arg(long = "caveat", value_name = "TEXT")]
    pub caveats: Vec<String>,
}

/// A configuration key whose value is not the same in every run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DifferingKey {
    /// Dotted path, e.g. `fm.lr`.
    pub key: String,
    /// Its value in each run, in `--runs` order (None: unset).
    pub values: Vec<Option<serde_json::Value>>,
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
    /// How to read the numbers: the caller's caveats (`--caveat`), then
    /// what makes the runs not comparable as they stand (other datasets,
    /// test sets or inference settings).
    pub warnings: Vec<String>,
    /// The configuration keys that differ between the runs.
    pub differing_keys: Vec<DifferingKey>,
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
    /// Builds the report's numbers from loaded runs (no files written);
    /// `labels`: the runs' display names (empty: chosen, see
    /// [`RunRow::label`]).
    pub fn from_runs(runs: &[RunData], note: Option<String>, labels: &[String]) -> Result<Self> {
        let mut rows: Vec<RunRow> = runs.iter().map(RunRow::from_run).collect();
        let renamed = name_runs(&mut rows, runs, labels)?;
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
            .zip(&rows)
            .flat_map(|(run, row)| {
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
                initial.into_iter().chain(trained).map(|mut curve| {
                    curve.colour = row.colour;
                    if renamed {
                        let variant_label = crate::registry::label(&curve.variant);
                        curve.label = curve.label.replacen(&variant_label, &row.label, 1);
                    }
                    curve
                })
            })
            .collect();
        Ok(Self {
            generated_utc: utc_now(),
            note,
            warnings: warnings(runs, &rows),
            differing_keys: differing_keys(runs)?,
            runs: rows,
            epochs,
            schedules,
            plots: Vec::new(),
        })
    }
}

/// Names and colours the rows: `labels` when given (one per run), else the
/// variant's name when the variants are all different, else the variant
/// with the run's directory name (and its parent's, when two runs have the
/// same name); colours per run from a palette when variants repeat.
/// Returns whether the labels are the runs' own (not the variants').
fn name_runs(rows: &mut [RunRow], runs: &[RunData], labels: &[String]) -> Result<bool> {
    let variants: std::collections::BTreeSet<&str> =
        rows.iter().map(|r| r.variant.as_str()).collect();
    let sweep = variants.len() < rows.len();
    if sweep {
        for (i, row) in rows.iter_mut().enumerate() {
            row.colour = plots::style::RUN_PALETTE[i % plots::style::RUN_PALETTE.len()];
        }
    }
    if !labels.is_empty() {
        if labels.len() != rows.len() {
            bail!(
                "--label was given {} times for {} runs: give one per run, in --runs order",
                labels.len(),
                rows.len()
            );
        }
        for (row, label) in rows.iter_mut().zip(labels) {
            row.label = label.clone();
        }
        return Ok(true);
    }
    if !sweep {
        return Ok(false);
    }
    let names: Vec<String> = rows.iter().map(|r| r.name.clone()).collect();
    let unique = names
        .iter()
        .collect::<std::collections::BTreeSet<_>>()
        .len()
        == names.len();
    for (row, run) in rows.iter_mut().zip(runs) {
        let name = match unique {
            true => row.name.clone(),
            false => {
                let parent = run
                    .dir
                    .parent()
                    .and_then(|p| p.file_name())
                    .map(|p| p.to_string_lossy().into_owned());
                match parent {
                    Some(parent) => format!("{parent}/{}", row.name),
                    None => row.name.clone(),
                }
            }
        };
        row.label = format!("{} ({name})", row.label);
    }
    Ok(true)
}

/// The configuration keys whose values are not the same in every run.
fn differing_keys(runs: &[RunData]) -> Result<Vec<DifferingKey>> {
    let configs: Vec<&crate::config::RunConfig> = runs.iter().map(|run| &run.config).collect();
    Ok(crate::config::differing_keys(&configs)?
        .into_iter()
        .map(|(key, values)| DifferingKey { key, values })
        .collect())
}

/// Warnings for numbers that are not comparable as they stand: other
/// datasets, other test sets (a test limit), other inference settings
/// behind the test accuracy (steps, solver, noise, runs).
fn warnings(runs: &[RunData], rows: &[RunRow]) -> Vec<String> {
    let mut warnings = Vec::new();
    let mut differs = |what: &str, values: Vec<String>| {
        if values.iter().any(|v| *v != values[0]) {
            let listed: Vec<String> = rows
                .iter()
                .zip(&values)
                .map(|(row, value)| format!("{}: {value}", row.label))
                .collect();
            warnings.push(format!("{what} differ: {}", listed.join("; ")));
        }
    };
    differs(
        "the datasets",
        rows.iter().map(|r| r.dataset.clone()).collect(),
    );
    differs(
        "the test sets",
        rows.iter()
            .map(|r| match r.test_images {
                Some(n) => format!("the first {n} test images"),
                None => "all test images".into(),
            })
            .collect(),
    );
    differs(
        "the inference settings of the test accuracies",
        runs.iter()
            .zip(rows)
            .map(|(run, row)| inference_description(run, row))
            .collect(),
    );
    warnings
}

/// The inference behind a row's test accuracy: `eval.json`'s settings, else
/// those the last metrics line records, else the run's configuration
/// (`[eval]` over the variant's defaults).
fn inference_description(run: &RunData, row: &RunRow) -> String {
    let recorded = || run.epochs.last().and_then(|e| e.eval_settings.clone());
    let used = row.eval_settings.clone().or_else(recorded).or_else(|| {
        let section = serde_json::to_value(run.config.variant_section().ok()?).ok()?;
        Some(crate::eval::UsedSettings::new(
            &run.config.variant,
            &run.config.eval.settings(),
            &section,
        ))
    });
    let Some(used) = used else {
        return "unknown".into();
    };
    let mut parts = Vec::new();
    if let Some(steps) = used.steps {
        parts.push(format!("{steps} steps"));
    }
    if let Some(solver) = &used.solver {
        parts.push(solver.clone());
    }
    if let Some(deterministic) = used.deterministic {
        parts.push(match deterministic {
            true => "deterministic".into(),
            false => "stochastic".into(),
        });
    }
    parts.push(format!("{} run(s)", used.runs));
    parts.join(", ")
}

/// Runs `noprop compare`: reads the runs, writes report.md, report.json and
/// the plots into `--out`, and prints the summary table (or the JSON).
pub fn run_compare(args: &CompareArgs) -> Result<()> {
    if args.runs.is_empty() {
        bail!("--runs needs at least one run directory");
    }
    if !args.force {
        for file in ["report.md", "report.json"] {
            let path = args.out.join(file);
            if path.exists() {
                bail!(
                    "--out {} already holds a report ({}); choose another --out, or add --force \
                     to replace it",
                    args.out.display(),
                    path.display()
                );
            }
        }
    }
    let runs = args
        .runs
        .iter()
        .map(|dir| RunData::load(dir))
        .collect::<Result<Vec<_>>>()?;
    let report = write_report_with(
        &runs,
        &args.out,
        args.note.clone(),
        &args.labels,
        &args.caveats,
    )?;
    for warning in &report.warnings {
        eprintln!("warning: {warning}");
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", markdown::summary_table(&report.runs));
        if !report.differing_keys.is_empty() {
            print!("\n{}", markdown::differing_keys_table(&report));
        }
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
    labels: &[String],
) -> Result<CompareReport> {
    write_report_with(runs, out_dir, note, labels, &[])
}

/// [`write_report`] with `caveats` at the top of the report's warnings.
pub fn write_report_with(
    runs: &[RunData],
    out_dir: &std::path::Path,
    note: Option<String>,
    labels: &[String],
    caveats: &[String],
) -> Result<CompareReport> {
    let mut report = CompareReport::from_runs(runs, note, labels)?;
    report.warnings.splice(0..0, caveats.iter().cloned());
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("creating output directory {}", out_dir.display()))?;
    let written = plots::write_plots(out_dir, runs, &report.runs, &report.schedules)?;
    report.plots = written
        .iter()
        .filter_map(|p| Some(p.file_name()?.to_string_lossy().into_owned()))
        .collect();
    let json_path = out_dir.join("report.json");
    let json = serde_json::to_string_pretty(&report)? + "\n";
    noprop_checkpoint::atomic::write_atomic(&json_path, json.as_bytes())
        .with_context(|| format!("writing {}", json_path.display()))?;
    let md_path = out_dir.join("report.md");
    noprop_checkpoint::atomic::write_atomic(&md_path, markdown::render(&report).as_bytes())
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
