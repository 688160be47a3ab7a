//! `report.md`: the human-readable comparison.
//!
//! Sections: header (date, command, setup), summary table (one row per run:
//! test and train accuracy, training time, inference time, parameters,
//! accuracy per million parameters, best epoch), notes on where numbers came
//! from, the per-epoch table, and the plots.

use std::fmt::Write;

use super::epoch::EpochMetrics;
use super::summary::RunSummary;
use super::CompareReport;

/// Renders the whole report.
pub fn render(report: &CompareReport) -> String {
    let mut md = String::new();
    md.push_str("# NoProp comparison\n\n");
    let _ = writeln!(md, "Generated {} (UTC).", report.generated_utc);
    if let Some(note) = &report.note {
        let _ = writeln!(md, "\nCommand: `{note}`");
    }
    md.push('\n');
    md.push_str(&setup_lines(&report.runs));
    md.push_str("\n## Summary\n\n");
    md.push_str(&summary_table(&report.runs));
    md.push('\n');
    md.push_str(&summary_notes(&report.runs));
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

/// The summary table alone (also printed by `noprop compare`).
pub fn summary_table(runs: &[RunSummary]) -> String {
    let mut md = String::from(
        "| variant | test accuracy | train accuracy | training time | inference (ms/image) | parameters | test acc. % per M params | epochs | best test (epoch) |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for s in runs {
        let best = match (s.best_test_accuracy, s.best_epoch) {
            (Some(a), Some(e)) => format!("{} ({e})", pct(Some(a))),
            _ => "n/a".to_owned(),
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            s.label,
            pct(s.test_accuracy),
            pct(s.train_accuracy),
            duration(s.train_seconds),
            s.inference_ms_per_image
                .map_or("n/a".to_owned(), |ms| format!("{ms:.3}")),
            s.parameters.map_or("n/a".to_owned(), thousands),
            s.accuracy_per_million_params
                .map_or("n/a".to_owned(), |x| format!("{x:.1}")),
            s.epochs,
            best,
        );
    }
    md
}

fn setup_lines(runs: &[RunSummary]) -> String {
    let mut md = String::from("Setup:\n\n");
    for s in runs {
        let mut parts = Vec::new();
        if let Some(d) = &s.dataset {
            parts.push(format!("dataset {d}"));
        }
        parts.push(match s.train_images {
            Some(n) => format!("{} training images", thousands(n)),
            None => "full training set".to_owned(),
        });
        parts.push(match s.test_images {
            Some(n) => format!("{} test images", thousands(n)),
            None => "full test set".to_owned(),
        });
        parts.push(format!(
            "{} epoch{}",
            s.epochs,
            if s.epochs == 1 { "" } else { "s" }
        ));
        if let Some(b) = s.batch_size {
            parts.push(format!("batch {b}"));
        }
        if let Some(e) = &s.embedding {
            parts.push(format!("{e} embedding"));
        }
        if let Some(seed) = s.seed {
            parts.push(format!("seed {seed}"));
        }
        let _ = writeln!(md, "- {} (`{}`): {}", s.label, s.name, parts.join(", "));
    }
    md
}

fn summary_notes(runs: &[RunSummary]) -> String {
    let mut md = String::from(
        "Training time is the sum of the epochs' training seconds (evaluation excluded). \
         Train accuracy is the running accuracy over the last epoch's batches. \
         Accuracy per million parameters is test accuracy (%) divided by parameters / 10^6.\n\n",
    );
    for s in runs {
        let source = match s.test_accuracy_source.as_str() {
            "eval.json" => "full evaluation of the final checkpoint (`noprop eval`)",
            "summary.json" => "the trainer's summary",
            _ => "the last epoch's evaluation",
        };
        let settings = s
            .eval_settings
            .as_ref()
            .map_or(String::new(), |e| format!(" ({e})"));
        let _ = writeln!(md, "- {}: test accuracy from {source}{settings}.", s.label);
    }
    md
}

fn epoch_table(report: &CompareReport) -> String {
    let mut md = String::from(
        "| variant | epoch | step | train loss | loss terms | train acc. | test acc. | train s | eval s | lr |\n\
         |---|---:|---:|---:|---|---:|---:|---:|---:|---:|\n",
    );
    for run in &report.epochs {
        for e in &run.epochs {
            md.push_str(&epoch_row(&run.label, e));
        }
    }
    md
}

fn epoch_row(label: &str, e: &EpochMetrics) -> String {
    let terms = e
        .loss_terms
        .iter()
        .map(|(name, v)| format!("{name} {}", sig(*v)))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "| {label} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
        e.epoch,
        e.step.map_or("n/a".to_owned(), |s| s.to_string()),
        e.train_loss.map_or("n/a".to_owned(), sig),
        if terms.is_empty() {
            "n/a".to_owned()
        } else {
            terms
        },
        pct(e.train_accuracy),
        pct(e.test_accuracy),
        e.train_seconds
            .map_or("n/a".to_owned(), |s| format!("{s:.1}")),
        e.eval_seconds
            .map_or("n/a".to_owned(), |s| format!("{s:.1}")),
        e.lr.map_or("n/a".to_owned(), |lr| format!("{lr:.2e}")),
    )
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
        if i > 0 && (digits.len() - i) % 3 == 0 {
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
