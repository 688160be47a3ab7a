//! What `noprop gpu-check` shows: the table on stdout, the one-line
//! summaries on stderr, and the `--json` report, written atomically.

use std::path::Path;

use anyhow::{Context, Result};

use super::compare::{Agreement, TensorDiff};
use super::Report;
use noprop_checkpoint::atomic::write_atomic;

/// Writes `report` to `path` as pretty JSON, atomically.
pub fn write_json(report: &Report, path: &Path) -> Result<()> {
    let mut text = serde_json::to_string_pretty(report)?;
    text.push('\n');
    write_atomic(path, text.as_bytes())
        .with_context(|| format!("--json {}: cannot write the report", path.display()))
}

/// The agreement of one variant, in one line for the progress log.
pub fn agreement_line(agreement: &Agreement) -> String {
    let verdict = if agreement.ok { "ok" } else { "FAILED" };
    let worst = |w: Option<&TensorDiff>| {
        w.map_or("-".into(), |w| {
            format!(
                "{} ({:.3e}, {} of {} elements over)",
                w.name, w.rel_diff, w.elements_over, w.elements
            )
        })
    };
    format!(
        "agreement {verdict}: loss {} vs {}; worst variable {}; worst optimizer state {}",
        agreement.loss_cpu,
        agreement.loss_device,
        worst(agreement.worst.as_ref()),
        worst(agreement.optimizer_worst.as_ref()),
    )
}

/// What failed, one entry per failing variant.
pub fn failures(report: &Report) -> Vec<String> {
    report
        .variants
        .iter()
        .filter(|r| !r.ok)
        .map(|r| {
            let why = match (&r.error, &r.agreement) {
                (Some(e), _) => e.clone(),
                (None, Some(a)) if !a.copy_exact => {
                    "the device model did not hold the CPU weights after the copy".into()
                }
                (None, Some(a)) => match a.optimizer_failing.first() {
                    Some(w) => format!(
                        "`{}` differs by {:.3e} relative (tolerance {:e}; {} of {} elements over; {} tensors over)",
                        w.name,
                        w.rel_diff,
                        a.tolerance,
                        w.elements_over,
                        w.elements,
                        a.optimizer_failing.len()
                    ),
                    None => format!(
                        "the loss differs: cpu {}, device {} ({:.3e} relative)",
                        a.loss_cpu, a.loss_device, a.loss_rel_diff
                    ),
                },
                (None, None) => "not checked".into(),
            };
            format!("{}: {why}", r.variant)
        })
        .collect()
}

/// The human-readable summary.
pub fn table(report: &Report) -> String {
    let mut out = format!(
        "noprop gpu-check: {} vs cpu, {}, batch {}, {} timed steps, {} ODE steps (CT, FM), seed {}\n",
        report.device,
        report.data,
        report.batch_size,
        report.steps,
        report.inference_steps,
        report.seed
    );
    let header = vec![
        "variant".to_string(),
        "agreement".into(),
        "loss cpu".into(),
        match report.device.as_str() {
            "cpu" => "loss cpu (copy)".to_string(),
            device => format!("loss {device}"),
        },
        "worst variable (rel. diff)".into(),
        "worst optimizer state".into(),
        "images/s".into(),
        "ms/batch of 1".into(),
        format!("ms/batch of {}", report.batch_size),
    ];
    let mut rows = vec![header];
    for r in &report.variants {
        let a = r.agreement.as_ref();
        let verdict = match (&r.error, a) {
            (Some(_), _) => "ERROR",
            (None, Some(a)) if a.exact => "exact",
            (None, Some(a)) if a.ok => "ok",
            _ => "FAILED",
        };
        let worst = |w: Option<&TensorDiff>| {
            w.map_or("-".into(), |w| format!("{} ({:.2e})", w.name, w.rel_diff))
        };
        let num = |x: Option<f64>, digits: usize| x.map_or("-".into(), |v| format!("{v:.digits$}"));
        rows.push(vec![
            r.variant.to_string(),
            verdict.to_string(),
            num(a.map(|a| a.loss_cpu), 6),
            num(a.map(|a| a.loss_device), 6),
            worst(a.and_then(|a| a.worst.as_ref())),
            worst(a.and_then(|a| a.optimizer_worst.as_ref())),
            num(r.training.as_ref().map(|t| t.images_per_second), 1),
            num(r.inference.as_ref().map(|l| l.ms_batch_1), 3),
            num(r.inference.as_ref().map(|l| l.ms_batch), 3),
        ]);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (cell, &w))| {
                if i < 2 || i == 4 || i == 5 {
                    format!("{cell:<w$}")
                } else {
                    format!("{cell:>w$}")
                }
            })
            .collect();
        out += cells.join("  ").trim_end();
        out.push('\n');
    }
    for r in &report.variants {
        if let Some(e) = &r.error {
            out += &format!("{}: error: {e}\n", r.variant);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu_check::{VariantReport, TOLERANCE};

    fn diff(name: &str, rel_diff: f64) -> TensorDiff {
        TensorDiff {
            name: name.into(),
            max_abs_diff: rel_diff,
            rel_diff,
            elements: 4,
            elements_over: usize::from(rel_diff >= TOLERANCE),
        }
    }

    fn variant(
        name: &'static str,
        agreement: Option<Agreement>,
        error: Option<&str>,
    ) -> VariantReport {
        VariantReport {
            variant: name,
            ok: error.is_none() && agreement.as_ref().is_some_and(|a| a.ok),
            parameters: None,
            agreement,
            training: None,
            inference: None,
            error: error.map(String::from),
            variant_config: None,
        }
    }

    #[test]
    fn the_table_and_the_failures_name_each_variant_and_why() {
        let agreement = |failing: Vec<TensorDiff>| Agreement {
            ok: failing.is_empty(),
            exact: false,
            tolerance: TOLERANCE,
            copy_exact: true,
            loss_cpu: 2.5,
            loss_device: 2.5,
            loss_rel_diff: 0.0,
            tensors: 2,
            worst: Some(diff("head.weight", 1e-5)),
            variables_over: Vec::new(),
            optimizer_tensors: 3,
            optimizer_worst: failing.first().cloned().or(Some(diff("optim.w", 1e-6))),
            optimizer_failing: failing,
        };
        let report = Report {
            passed: false,
            device: "cuda".into(),
            noprop_version: "0",
            data: "embedded MNIST".into(),
            seed: 0,
            batch_size: 8,
            steps: 2,
            inference_steps: 10,
            latency_runs: 3,
            tolerance: TOLERANCE,
            variants: vec![
                variant("alpha", Some(agreement(Vec::new())), None),
                variant(
                    "beta",
                    Some(agreement(vec![diff("optim.b.exp_avg", 0.5)])),
                    None,
                ),
                variant("gamma", None, Some("no such kernel")),
            ],
        };
        let failures = failures(&report);
        assert_eq!(failures.len(), 2, "{failures:?}");
        assert!(
            failures[0].starts_with("beta: `optim.b.exp_avg` differs by 5.000e-1"),
            "{failures:?}"
        );
        assert_eq!(failures[1], "gamma: no such kernel");
        let table = table(&report);
        let rows: Vec<&str> = table.lines().collect();
        assert!(
            rows[1].starts_with("variant") && rows[1].contains("loss cuda"),
            "{table}"
        );
        assert!(rows[2].starts_with("alpha    ok "), "{table}");
        assert!(rows[3].starts_with("beta     FAILED"), "{table}");
        assert!(rows[4].starts_with("gamma    ERROR"), "{table}");
        assert_eq!(rows[5], "gamma: error: no such kernel");
        assert!(agreement_line(&agreement(Vec::new())).starts_with("agreement ok: loss 2.5 vs 2.5"));
    }
}
