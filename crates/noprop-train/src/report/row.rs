//! The headline numbers of one run: one row of the report's summary table.
//!
//! Where each number comes from (the files of [`super::run`]):
//!
//! - test accuracy: the final model's. `eval.json` (`noprop eval` of
//!   `last.safetensors`) when present, else the last line of
//!   `metrics.jsonl` (the trainer's evaluation after the last epoch, which
//!   is of the same model). With several inference runs: the mean and
//!   standard deviation of the single runs, and separately their ensemble;
//! - best validation accuracy and its epoch: the highest
//!   `validation_accuracy` of `metrics.jsonl` (runs with a validation split
//!   only; the test set is never used to pick an epoch);
//! - train accuracy: the last epoch's running train accuracy;
//! - training time: the sum of the epochs' `train_seconds` (the steps only);
//! - inference time: `eval.json`'s `ms_per_image` (n/a without it);
//! - peak memory (of the training steps, and apart of the per-epoch
//!   evaluations): `summary.json`'s `train_peak_rss_bytes` and
//!   `eval_peak_rss_bytes`, else the largest of the metrics lines' (which
//!   is what the trainer puts in `summary.json` when it finishes);
//! - parameters: `summary.json`, else `info.json`'s `parameters.total`.
//!
//! Accuracy per million parameters = test accuracy (%) / (parameters / 1e6).

use serde::Serialize;

use super::run::RunData;
use crate::eval::UsedSettings;
use crate::metrics::EpochMetrics;
use crate::summary::{RunStatus, RunSummary};

/// Bytes in a MiB.
const MIB: f64 = (1u64 << 20) as f64;

/// Where a row's test accuracy came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum TestSource {
    /// `noprop eval` of `last.safetensors`.
    #[serde(rename = "eval.json")]
    Eval,
    /// The trainer's evaluation after the last epoch.
    #[serde(rename = "last epoch")]
    LastEpoch,
}

/// One row of the summary table. Accuracies are fractions in [0, 1].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRow {
    /// Run directory name.
    pub name: String,
    /// The registered variant name.
    pub variant: String,
    /// Display name in the tables and legends: the variant's ("NoProp-DT")
    /// when every run has another variant, else with the run's name
    /// ("NoProp-FM (fm-lr3)"), or `--label`.
    pub label: String,
    /// The run's colour in every figure: the variant's registered colour
    /// when every run has another variant, else one of a palette per run.
    #[serde(skip)]
    pub colour: [u8; 3],
    /// `summary.json`'s status; None without one (training not finished).
    pub status: Option<RunStatus>,
    pub dataset: String,
    /// The class embedding of the variant's configuration.
    pub embedding: Option<String>,
    pub seed: u64,
    pub batch_size: usize,
    /// Training images used (the train limit, when one was set).
    pub train_images: Option<usize>,
    /// Test images evaluated (the test limit, when one was set).
    pub test_images: Option<usize>,
    /// Training images held out for validation (0: none).
    pub validation_images: usize,
    /// Epochs completed (lines of metrics.jsonl).
    pub epochs: usize,
    /// Epochs the configuration asks for.
    pub epochs_planned: usize,
    /// The final model's test accuracy (several runs: their mean).
    pub test_accuracy: Option<f64>,
    /// Stochastic inference runs behind `test_accuracy`.
    pub inference_runs: usize,
    /// Sample standard deviation of the single runs (several runs only).
    pub test_accuracy_std: Option<f64>,
    /// Accuracy of the runs' ensemble (several runs only).
    pub ensemble_accuracy: Option<f64>,
    pub test_accuracy_source: TestSource,
    /// The highest validation accuracy and its (1-based) epoch.
    pub best_validation_accuracy: Option<f64>,
    pub best_validation_epoch: Option<usize>,
    /// The last epoch's running train accuracy.
    pub train_accuracy: Option<f64>,
    pub train_seconds: Option<f64>,
    pub inference_ms_per_image: Option<f64>,
    /// Peak resident memory of the training process(es) during the
    /// training steps, sampled ([`crate::memory`]).
    pub train_peak_rss_bytes: Option<u64>,
    /// The same in MiB (2^20 bytes): the table's peak memory.
    pub train_peak_rss_mib: Option<f64>,
    /// Peak resident memory during the per-epoch evaluations.
    pub eval_peak_rss_bytes: Option<u64>,
    /// Peak device memory of the process during the training steps (CUDA
    /// runs; [`crate::memory::DeviceMemorySampler`]).
    pub train_peak_device_bytes: Option<u64>,
    /// The same in MiB: the table's device memory (a column only when some
    /// run has it).
    pub train_peak_device_mib: Option<f64>,
    pub parameters: Option<u64>,
    /// Test accuracy in percent per million parameters.
    pub accuracy_per_million_params: Option<f64>,
    /// The inference settings of `eval.json`.
    pub eval_settings: Option<UsedSettings>,
    /// Each class's test accuracy over the single runs (`eval.json` of
    /// this version; None without it).
    pub per_class_accuracy: Option<Vec<Option<f64>>>,
}

impl RunRow {
    /// The row of one run (see the module doc for the sources).
    pub fn from_run(run: &RunData) -> Self {
        let last = run.epochs.last();
        let (test_accuracy, run_accuracies, ensemble, test_accuracy_source) = match &run.eval {
            Some(eval) => (
                Some(eval.accuracy),
                eval.run_accuracies.clone(),
                Some(eval.ensemble_accuracy),
                TestSource::Eval,
            ),
            None => (
                last.map(|e| e.test_accuracy),
                last.and_then(|e| e.test_run_accuracies.clone())
                    .unwrap_or_default(),
                last.and_then(|e| e.test_ensemble_accuracy),
                TestSource::LastEpoch,
            ),
        };
        let inference_runs = run_accuracies.len().max(1);
        let several = inference_runs > 1;
        let test_accuracy_std = match &run.eval {
            Some(eval) => Some(eval.accuracy_std),
            None => Some(sample_sd(&run_accuracies)),
        }
        .filter(|_| several);
        let ensemble_accuracy = ensemble.filter(|_| several);

        let best_validation = run
            .epochs
            .iter()
            .filter_map(|e| Some((e.epoch, e.validation_accuracy?)))
            .fold(
                None,
                |best: Option<(usize, f64)>, (epoch, acc)| match best {
                    Some((_, b)) if b >= acc => best,
                    _ => Some((epoch, acc)),
                },
            );

        let train_seconds =
            (!run.epochs.is_empty()).then(|| run.epochs.iter().map(|e| e.train_seconds).sum());
        let peak =
            |of_summary: fn(&RunSummary) -> Option<u64>,
             of_epoch: fn(&EpochMetrics) -> Option<u64>| match &run.summary {
                Some(summary) => of_summary(summary),
                None => run.epochs.iter().filter_map(of_epoch).max(),
            };
        let train_peak_rss_bytes = peak(
            |s| s.train_peak_rss_bytes,
            |e| e.memory.train_peak_rss_bytes,
        );
        let eval_peak_rss_bytes = peak(|s| s.eval_peak_rss_bytes, |e| e.memory.eval_peak_rss_bytes);
        let train_peak_device_bytes = peak(
            |s| s.train_peak_device_bytes,
            |e| e.memory.train_peak_device_bytes,
        );
        let parameters = run
            .summary
            .as_ref()
            .map(|s| s.parameters)
            .or_else(|| run.info.as_ref().map(|i| i.parameters.total))
            .map(|p| p as u64);
        let accuracy_per_million_params = match (test_accuracy, parameters) {
            (Some(acc), Some(p)) if p > 0 => Some(100.0 * acc / (p as f64 / 1e6)),
            _ => None,
        };

        let config = &run.config;
        Self {
            name: run.name.clone(),
            variant: config.variant.clone(),
            label: crate::registry::label(&config.variant),
            colour: crate::registry::find(&config.variant)
                .map_or(super::plots::style::RUN_PALETTE[0], |entry| entry.colour()),
            status: run.summary.as_ref().map(|s| s.status),
            dataset: config.data.dataset.clone(),
            embedding: config
                .variant_section()
                .ok()
                .and_then(|s| s.get("embedding")?.as_str().map(str::to_owned)),
            seed: config.seed,
            batch_size: config.batch_size,
            train_images: config.data.train_limit,
            test_images: config.data.test_limit,
            validation_images: config.data.validation,
            epochs: run.epochs.len(),
            epochs_planned: config.epochs,
            test_accuracy,
            inference_runs,
            test_accuracy_std,
            ensemble_accuracy,
            test_accuracy_source,
            best_validation_accuracy: best_validation.map(|(_, a)| a),
            best_validation_epoch: best_validation.map(|(e, _)| e),
            train_accuracy: last.and_then(|e| e.train_accuracy),
            train_seconds,
            inference_ms_per_image: run.eval.as_ref().map(|e| e.ms_per_image),
            train_peak_rss_bytes,
            train_peak_rss_mib: train_peak_rss_bytes.map(|b| b as f64 / MIB),
            eval_peak_rss_bytes,
            train_peak_device_bytes,
            train_peak_device_mib: train_peak_device_bytes.map(|b| b as f64 / MIB),
            parameters,
            accuracy_per_million_params,
            eval_settings: run.eval.as_ref().map(|e| e.settings.clone()),
            per_class_accuracy: run
                .eval
                .as_ref()
                .map(|e| e.per_class_accuracy.clone())
                .filter(|p| !p.is_empty()),
        }
    }
}

/// The sample standard deviation (0 for fewer than two values), as
/// `noprop eval` computes `accuracy_std`.
fn sample_sd(values: &[f64]) -> f64 {
    if values.len() < 2 {
        return 0.0;
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::{epoch_line, eval_report, run_config, summary};
    use std::path::{Path, PathBuf};

    fn run(accs: &[f64]) -> RunData {
        let mut config = run_config("dt");
        config.seed = 7;
        config.data.train_limit = Some(5000);
        config.data.test_limit = Some(1000);
        RunData {
            dir: PathBuf::from("x"),
            name: "dt".into(),
            config,
            epochs: accs
                .iter()
                .enumerate()
                .map(|(i, &a)| epoch_line(i + 1, a))
                .collect(),
            summary: None,
            eval: None,
            info: None,
            initial_info: None,
        }
    }

    #[test]
    fn without_eval_the_last_epoch_gives_the_test_accuracy() {
        let mut r = run(&[0.90, 0.95, 0.94]);
        let s = RunRow::from_run(&r);
        assert_eq!(s.label, "NoProp-DT");
        assert_eq!(s.test_accuracy, Some(0.94));
        assert_eq!(s.test_accuracy_source, TestSource::LastEpoch);
        assert_eq!((s.inference_runs, s.test_accuracy_std), (1, None));
        assert_eq!(s.ensemble_accuracy, None);
        // No validation split: no best epoch.
        assert_eq!(s.best_validation_epoch, None);
        assert_eq!(s.train_accuracy, Some(0.94 - 0.02));
        // Three epochs of 100 s.
        assert_eq!(s.train_seconds, Some(300.0));
        assert_eq!(s.inference_ms_per_image, None);
        // The largest of the lines' peaks: 300 + 10 * 2 MiB.
        assert_eq!(s.train_peak_rss_mib, Some(320.0));
        assert_eq!(s.eval_peak_rss_bytes, Some(400 << 20));
        assert_eq!((s.parameters, s.accuracy_per_million_params), (None, None));
        assert_eq!(s.embedding.as_deref(), Some("one-hot"));
        assert_eq!(
            (s.seed, s.batch_size, s.train_images, s.test_images),
            (7, 128, Some(5000), Some(1000))
        );
        assert_eq!((s.epochs, s.epochs_planned, s.status), (3, 1, None));

        // Several inference runs per evaluation: mean, sd and ensemble.
        let last = r.epochs.last_mut().unwrap();
        last.test_run_accuracies = Some(vec![0.93, 0.94, 0.95]);
        last.test_ensemble_accuracy = Some(0.96);
        let s = RunRow::from_run(&r);
        assert_eq!(s.inference_runs, 3);
        assert!((s.test_accuracy_std.unwrap() - 0.01).abs() < 1e-12);
        assert_eq!(s.ensemble_accuracy, Some(0.96));
    }

    #[test]
    fn eval_summary_and_validation_are_used_when_present() {
        let mut r = run(&[0.90, 0.95, 0.94]);
        for (e, v) in r.epochs.iter_mut().zip([0.91, 0.96, 0.96]) {
            e.validation_accuracy = Some(v);
        }
        let dir = Path::new("x");
        r.eval = Some(eval_report(dir, "dt", 0.96, &[0.95, 0.96, 0.97]));
        let mut sum = summary(dir, "dt");
        sum.parameters = 2_000_000;
        sum.train_peak_rss_bytes = Some(3 << 29);
        sum.eval_peak_rss_bytes = None;
        sum.train_peak_device_bytes = Some(700 << 20);
        r.summary = Some(sum);
        let s = RunRow::from_run(&r);
        assert_eq!(s.train_peak_device_mib, Some(700.0));
        let table = crate::report::markdown::summary_table(std::slice::from_ref(&s));
        assert!(
            table.contains("| peak device memory, training (MiB) |"),
            "{table}"
        );
        assert!(
            table.contains("| 1,536 | 700 | 2,000,000 | 48.0 |"),
            "{table}"
        );
        assert_eq!(s.test_accuracy, Some(0.96));
        assert_eq!(s.test_accuracy_source, TestSource::Eval);
        assert_eq!(s.inference_runs, 3);
        assert!((s.test_accuracy_std.unwrap() - 0.01).abs() < 1e-12);
        assert_eq!(s.ensemble_accuracy, Some(0.97));
        // The first epoch of the highest validation accuracy.
        assert_eq!(
            (s.best_validation_epoch, s.best_validation_accuracy),
            (Some(2), Some(0.96))
        );
        // 2.5 ms per image in eval_report.
        assert_eq!(s.inference_ms_per_image, Some(2.5));
        assert_eq!(s.parameters, Some(2_000_000));
        // 96 % / 2 M parameters = 48 % per million.
        assert_eq!(s.accuracy_per_million_params, Some(48.0));
        assert_eq!(s.train_peak_rss_mib, Some(1536.0));
        assert_eq!(s.eval_peak_rss_bytes, None);
        assert_eq!(s.status, Some(RunStatus::Completed));
        assert_eq!(s.eval_settings.unwrap().runs, 3);
    }
}
