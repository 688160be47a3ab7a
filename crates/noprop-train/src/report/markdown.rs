//! `report.md`: the human-readable comparison.
//!
//! Sections: header (date, command, setup), summary table (one row per run:
//! the final model's test accuracy (several inference runs: mean ± sd of
//! the single runs, and their ensemble in a column of its own), train
//! accuracy, training time, inference time, peak memory, parameters,
//! accuracy per million parameters, epochs, and, when a run has a
//! validation split, its best validation epoch), notes on where numbers
//! came from, the per-epoch table, and the plots.

use std::fmt::Write;

use super::row::{RunRow, TestSource};
use super::CompareReport;
use crate::metrics::EpochMetrics;

/// Renders the whole report.
pub fn render(report: &CompareReport) -> String {
    let mut md = String::new();
    md.push_str("# NoProp comparison\n\n");
    let _ = writeln!(md, "Generated {} (UTC).", report.generated_utc);
    if let Some(note) = &report.note {
        let _ = writeln!(md, "\nCommand: `{note}`");
    }
    md.push('\n');
    if !report.warnings.is_empty() {
        md.push_str("**Read with care:**\n\n");
        for warning in &report.warnings {
            let _ = writeln!(md, "- {warning}");
        }
        md.push('\n');
    }
    md.push_str(&setup_lines(&report.runs));
    if !report.differing_keys.is_empty() {
        md.push_str("\n## Configuration keys that differ\n\n");
        md.push_str(&differing_keys_table(report));
    }
    md.push_str("\n## Summary\n\n");
    md.push_str(&summary_table(&report.runs));
    md.push('\n');
    md.push_str(&summary_notes(&report.runs));
    if let Some(classes) = report
        .runs
        .iter()
        .filter_map(|r| r.per_class_accuracy.as_ref().map(Vec::len))
        .max()
    {
        md.push_str("\n## Per-class test accuracy\n\n");
        md.push_str(
            "From `eval.json`: each class's accuracy over the single runs (its confusion \
             matrix is in that file).\n\n",
        );
        md.push_str(&per_class_table(&report.runs, classes));
    }
    md.push_str("\n## Per-epoch metrics\n\n");
    md.push_str(&epoch_table(report));
    if !report.plots.is_empty() {
        md.push_str("\n## Plots\n\n");
        for plot in &report.plots {
            let title = plot.trim_end_matches(".png").replace('_', " ");
            let _ = writeln!(md, "![{title}]({plot})\n");
        }
    }
    md
}

/// Per-class test accuracy (%): one row per run, one column per class.
fn per_class_table(rows: &[RunRow], classes: usize) -> String {
    let line = |cells: Vec<String>| format!("| {} |\n", cells.join(" | "));
    let mut md = line(
        std::iter::once("run".to_owned())
            .chain((0..classes).map(|c| c.to_string()))
            .collect(),
    );
    md.push_str(&line(
        std::iter::once("---".to_owned())
            .chain((0..classes).map(|_| "---:".to_owned()))
            .collect(),
    ));
    for row in rows {
        let cells = (0..classes).map(|c| {
            match row
                .per_class_accuracy
                .as_ref()
                .and_then(|p| p.get(c).copied().flatten())
            {
                Some(a) => format!("{:.2}", 100.0 * a),
                None => "n/a".to_owned(),
            }
        });
        md.push_str(&line(
            std::iter::once(row.label.clone()).chain(cells).collect(),
        ));
    }
    md
}

/// The configuration keys that differ: one row per run, one column per key.
pub fn differing_keys_table(report: &CompareReport) -> String {
    let line = |cells: Vec<String>| format!("| {} |\n", cells.join(" | "));
    let keys = &report.differing_keys;
    let mut md = line(
        std::iter::once("run".to_owned())
            .chain(keys.iter().map(|k| format!("`{}`", k.key)))
            .collect(),
    );
    md.push_str(&line(
        std::iter::once("---".to_owned())
            .chain(keys.iter().map(|_| "---".to_owned()))
            .collect(),
    ));
    for (i, row) in report.runs.iter().enumerate() {
        md.push_str(&line(
            std::iter::once(row.label.clone())
                .chain(keys.iter().map(|k| match &k.values[i] {
                    Some(serde_json::Value::String(s)) => s.clone(),
                    Some(v) => v.to_string(),
                    None => "unset".to_owned(),
                }))
                .collect(),
        ));
    }
    md
}

/// One column of a table: header, alignment row cell, and its cells.
struct Column<'a, T> {
    header: &'static str,
    align: &'static str,
    cell: Box<dyn Fn(&T) -> String + 'a>,
}

fn column<'a, T>(
    header: &'static str,
    align: &'static str,
    cell: impl Fn(&T) -> String + 'a,
) -> Column<'a, T> {
    Column {
        header,
        align,
        cell: Box::new(cell),
    }
}

fn table<T>(columns: &[Column<'_, T>], rows: impl IntoIterator<Item = T>) -> String {
    let line = |cells: Vec<String>| format!("| {} |\n", cells.join(" | "));
    let mut md = line(columns.iter().map(|c| c.header.to_owned()).collect());
    md.push_str(&format!(
        "|{}|\n",
        columns
            .iter()
            .map(|c| c.align)
            .collect::<Vec<_>>()
            .join("|")
    ));
    for row in rows {
        md.push_str(&line(columns.iter().map(|c| (c.cell)(&row)).collect()));
    }
    md
}

/// Whether any run evaluated several stochastic inference runs.
fn several_runs(rows: &[RunRow]) -> bool {
    rows.iter().any(|r| r.inference_runs > 1)
}

/// Whether any run has a validation split (and so a best validation epoch).
fn has_validation(rows: &[RunRow]) -> bool {
    rows.iter().any(|r| r.best_validation_accuracy.is_some())
}

/// The summary table alone (also printed by `noprop compare`).
pub fn summary_table(rows: &[RunRow]) -> String {
    let several = several_runs(rows);
    let mut columns: Vec<Column<'_, &RunRow>> =
        vec![column("variant", "---", |r: &&RunRow| r.label.clone())];
    if several {
        columns.push(column(
            "test accuracy (single runs: mean ± sd)",
            "---:",
            |r: &&RunRow| match (r.test_accuracy, r.test_accuracy_std) {
                (Some(a), Some(sd)) => {
                    format!(
                        "{} ± {:.2} ({} runs)",
                        pct(Some(a)),
                        100.0 * sd,
                        r.inference_runs
                    )
                }
                (a, _) => pct(a),
            },
        ));
        columns.push(column(
            "test accuracy (ensemble of the runs)",
            "---:",
            |r: &&RunRow| pct(r.ensemble_accuracy),
        ));
    } else {
        columns.push(column("test accuracy", "---:", |r: &&RunRow| {
            pct(r.test_accuracy)
        }));
    }
    columns.extend([
        column(
            "train accuracy",
            "---:",
            |r: &&RunRow| pct(r.train_accuracy),
        ),
        column("training time", "---:", |r: &&RunRow| {
            duration(r.train_seconds)
        }),
        column("inference (ms/image)", "---:", |r: &&RunRow| {
            r.inference_ms_per_image
                .map_or("n/a".to_owned(), |ms| format!("{ms:.3}"))
        }),
        column("peak memory, training (MiB)", "---:", |r: &&RunRow| {
            r.train_peak_rss_mib
                .map_or("n/a".to_owned(), |m| thousands(m.round() as u64))
        }),
        column("parameters", "---:", |r: &&RunRow| {
            r.parameters.map_or("n/a".to_owned(), thousands)
        }),
        column("test acc. % per M params", "---:", |r: &&RunRow| {
            r.accuracy_per_million_params
                .map_or("n/a".to_owned(), |x| format!("{x:.1}"))
        }),
        column("epochs", "---:", |r: &&RunRow| {
            match r.epochs == r.epochs_planned {
                true => r.epochs.to_string(),
                false => format!("{} of {}", r.epochs, r.epochs_planned),
            }
        }),
    ]);
    if rows.iter().any(|r| r.train_peak_device_mib.is_some()) {
        // Beside the resident memory: before parameters, accuracy per
        // parameter and epochs, the last three columns.
        let at = columns.len() - 3;
        columns.insert(
            at,
            column(
                "peak device memory, training (MiB)",
                "---:",
                |r: &&RunRow| {
                    r.train_peak_device_mib
                        .map_or("n/a".to_owned(), |m| thousands(m.round() as u64))
                },
            ),
        );
    }
    if has_validation(rows) {
        columns.push(column(
            "best validation (epoch)",
            "---:",
            |r: &&RunRow| match (r.best_validation_accuracy, r.best_validation_epoch) {
                (Some(a), Some(e)) => format!("{} ({e})", pct(Some(a))),
                _ => "n/a".to_owned(),
            },
        ));
    }
    table(&columns, rows)
}

fn setup_lines(rows: &[RunRow]) -> String {
    let mut md = String::from("Setup:\n\n");
    for r in rows {
        let mut parts = vec![format!("dataset {}", r.dataset)];
        parts.push(match r.train_images {
            Some(n) => format!("{} training images", thousands(n as u64)),
            None => "full training set".to_owned(),
        });
        if r.validation_images > 0 {
            parts.push(format!(
                "{} of them held out for validation",
                thousands(r.validation_images as u64)
            ));
        }
        parts.push(match r.test_images {
            Some(n) => format!("{} test images", thousands(n as u64)),
            None => "full test set".to_owned(),
        });
        parts.push(format!(
            "{} epoch{}",
            r.epochs,
            if r.epochs == 1 { "" } else { "s" }
        ));
        parts.push(format!("batch {}", r.batch_size));
        if let Some(e) = &r.embedding {
            parts.push(format!("{e} embedding"));
        }
        parts.push(format!("seed {}", r.seed));
        parts.push(match r.status {
            Some(status) => status.as_str().to_owned(),
            None => "not finished (no summary.json)".to_owned(),
        });
        let _ = writeln!(md, "- {} (`{}`): {}", r.label, r.name, parts.join(", "));
    }
    md
}

fn summary_notes(rows: &[RunRow]) -> String {
    let mut md = String::from(
        "Test accuracy is the final model's (`last.safetensors`). \
         Training time is the sum of the epochs' training seconds (evaluation excluded). \
         Train accuracy is the running accuracy over the last epoch's batches. \
         Inference time is `noprop eval`'s wall-clock time per test image, all runs included. \
         Peak memory is the training process's peak resident memory (RSS, in MiB of 2^20 bytes) \
         during the training steps, sampled (Linux VmRSS every 5 ms): data, model, optimizer \
         state, activations, allocator caches and the binary; the evaluations' own peak is in \
         report.json. \
         Peak device memory (CUDA runs only) is the process's memory on the GPU as the driver \
         reports it (nvidia-smi, sampled every 0.5 s): CUDA context, tensors and library \
         workspaces. \
         Accuracy per million parameters is test accuracy (%) divided by parameters / 10^6.\n",
    );
    if several_runs(rows) {
        md.push_str(
            "\nWith several stochastic inference runs, the test accuracy is the mean ± standard \
             deviation (percentage points) of the single runs' accuracies (the paper's protocol); \
             the ensemble scores the runs' averaged probabilities once.\n",
        );
    }
    if has_validation(rows) {
        md.push_str(
            "\nBest validation (epoch): the highest validation accuracy and its epoch \
             (the epoch `best.safetensors` holds); no epoch is chosen on the test set.\n",
        );
    }
    md.push('\n');
    for r in rows {
        let source = match (r.test_accuracy_source, &r.eval_settings) {
            (TestSource::Eval, Some(settings)) => format!(
                "`noprop eval` of `last.safetensors` ({})",
                settings.describe()
            ),
            (TestSource::Eval, None) => "`noprop eval` of `last.safetensors`".to_owned(),
            (TestSource::LastEpoch, _) => {
                "the trainer's evaluation after the last epoch (no eval.json)".to_owned()
            }
        };
        let _ = writeln!(md, "- {}: test accuracy from {source}.", r.label);
    }
    md
}

fn epoch_table(report: &CompareReport) -> String {
    let with_validation = report
        .epochs
        .iter()
        .flat_map(|run| &run.epochs)
        .any(|e| e.validation_accuracy.is_some());
    let mut columns: Vec<Column<'_, (&str, &EpochMetrics)>> = vec![
        column("variant", "---", |(label, _): &(&str, &EpochMetrics)| {
            (*label).to_owned()
        }),
        column("epoch", "---:", |(_, e): &(&str, &EpochMetrics)| {
            e.epoch.to_string()
        }),
        column("step", "---:", |(_, e): &(&str, &EpochMetrics)| {
            e.step.to_string()
        }),
        column("train loss", "---:", |(_, e): &(&str, &EpochMetrics)| {
            sig(e.train_loss)
        }),
        column("loss terms", "---", |(_, e): &(&str, &EpochMetrics)| {
            let terms = e
                .train_terms
                .iter()
                .map(|(name, v)| format!("{name} {}", sig(*v)))
                .collect::<Vec<_>>()
                .join(", ");
            if terms.is_empty() {
                "n/a".to_owned()
            } else {
                terms
            }
        }),
        column("train acc.", "---:", |(_, e): &(&str, &EpochMetrics)| {
            pct(e.train_accuracy)
        }),
    ];
    if with_validation {
        columns.push(column(
            "validation acc.",
            "---:",
            |(_, e): &(&str, &EpochMetrics)| pct(e.validation_accuracy),
        ));
    }
    columns.extend([
        column("test acc.", "---:", |(_, e): &(&str, &EpochMetrics)| {
            pct(Some(e.test_accuracy))
        }),
        column("train s", "---:", |(_, e): &(&str, &EpochMetrics)| {
            format!("{:.1}", e.train_seconds)
        }),
        column("eval s", "---:", |(_, e): &(&str, &EpochMetrics)| {
            format!("{:.1}", e.eval_seconds)
        }),
        column("lr", "---:", |(_, e): &(&str, &EpochMetrics)| {
            e.learning_rate
                .map_or("n/a".to_owned(), |lr| format!("{lr:.2e}"))
        }),
    ]);
    let rows = report
        .epochs
        .iter()
        .flat_map(|run| run.epochs.iter().map(|e| (run.label.as_str(), e)));
    table(&columns, rows)
}

/// A fraction as a percentage with two decimals.
pub fn pct(fraction: Option<f64>) -> String {
    fraction.map_or("n/a".to_owned(), |a| format!("{:.2}%", 100.0 * a))
}

/// Seconds, with minutes when over two minutes.
pub fn duration(seconds: Option<f64>) -> String {
    match seconds {
        None => "n/a".to_owned(),
        Some(s) if s >= 120.0 => format!("{s:.0} s ({:.1} min)", s / 60.0),
        Some(s) => format!("{s:.1} s"),
    }
}

/// 4 significant digits, without exponent for ordinary magnitudes.
fn sig(x: f64) -> String {
    if x == 0.0 {
        "0".to_owned()
    } else if x.abs() >= 1e5 || x.abs() < 1e-3 {
        format!("{x:.3e}")
    } else {
        let decimals = (3 - x.abs().log10().floor() as i32).clamp(0, 6) as usize;
        format!("{x:.decimals$}")
    }
}

/// 1234567 -> "1,234,567".
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_formats() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(919_946), "919,946");
        assert_eq!(thousands(9_199_460), "9,199,460");
        assert_eq!(pct(Some(0.97346)), "97.35%");
        assert_eq!(pct(None), "n/a");
        assert_eq!(duration(Some(59.94)), "59.9 s");
        assert_eq!(duration(Some(750.0)), "750 s (12.5 min)");
        assert_eq!(sig(1.23456), "1.235");
        assert_eq!(sig(123.456), "123.5");
        assert_eq!(sig(0.0123456), "0.01235");
        assert_eq!(sig(123456.0), "1.235e5");
        assert_eq!(sig(0.0), "0");
    }
}
