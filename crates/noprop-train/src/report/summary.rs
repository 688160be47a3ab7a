//! The headline numbers of one run: one row of the report's summary table.
//!
//! Each number comes from the most specific source present, in this order:
//!
//! - test accuracy: `eval.json` (`noprop eval` of the final checkpoint),
//!   else the trainer's `summary.json`, else the last epoch of
//!   `metrics.jsonl`;
//! - train accuracy: `summary.json`, else the last epoch (running accuracy on
//!   the batches seen in that epoch);
//! - training time: `summary.json`, else the sum of the epochs' training
//!   seconds (evaluation excluded);
//! - inference time (ms per image): `eval.json` (its ms per image, or its
//!   seconds over its image count), else `summary.json`, else the last
//!   epoch's evaluation seconds over the test set size;
//! - parameter count: `summary.json`, else `info.json`.
//!
//! Accuracy per million parameters = test accuracy (%) / (parameters / 1e6).

use serde::Serialize;
use serde_json::Value;

use super::fields::{accuracy, number, string};
use super::run::RunData;

/// One row of the summary table. Accuracies are fractions in [0, 1].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSummary {
    /// Run directory name.
    pub name: String,
    /// `dt`, `ct` or `fm`.
    pub variant: String,
    /// Display name, e.g. "NoProp-DT".
    pub label: String,
    pub dataset: Option<String>,
    pub embedding: Option<String>,
    pub seed: Option<u64>,
    pub batch_size: Option<u64>,
    /// Training images used (the train limit, when one was set).
    pub train_images: Option<u64>,
    /// Test images evaluated (the test limit, when one was set).
    pub test_images: Option<u64>,
    /// Epochs completed (lines in metrics.jsonl).
    pub epochs: usize,
    pub test_accuracy: Option<f64>,
    /// Where `test_accuracy` came from: "eval.json", "summary.json" or
    /// "last epoch".
    pub test_accuracy_source: String,
    pub best_test_accuracy: Option<f64>,
    pub best_epoch: Option<usize>,
    pub train_accuracy: Option<f64>,
    pub train_seconds: Option<f64>,
    pub inference_ms_per_image: Option<f64>,
    pub parameters: Option<u64>,
    /// Test accuracy in percent per million parameters.
    pub accuracy_per_million_params: Option<f64>,
    /// Inference settings of the final evaluation, as `noprop eval` reported
    /// them (steps, solver, runs, deterministic), for the table's notes.
    pub eval_settings: Option<String>,
}

const TEST_ACC_KEYS: &[&str] = &[
    "test_accuracy",
    "final_test_accuracy",
    "accuracy",
    "mean_accuracy",
    "accuracy_mean",
    "test.accuracy",
];
const TRAIN_ACC_KEYS: &[&str] = &["train_accuracy", "final_train_accuracy"];
const TRAIN_SECONDS_KEYS: &[&str] = &[
    "train_seconds",
    "training_seconds",
    "total_train_seconds",
    "train_time_s",
];
const MS_PER_IMAGE_KEYS: &[&str] = &[
    "ms_per_image",
    "inference_ms_per_image",
    "timing.ms_per_image",
];
const EVAL_SECONDS_KEYS: &[&str] = &[
    "seconds",
    "eval_seconds",
    "elapsed_seconds",
    "inference_seconds",
    "timing.seconds",
];
const IMAGE_COUNT_KEYS: &[&str] = &["images", "num_images", "n_images", "count", "n", "examples"];
const PARAM_KEYS: &[&str] = &[
    "parameters",
    "parameter_count",
    "param_count",
    "num_parameters",
    "parameters.total",
    "params.total",
    "parameter_counts.total",
    "total_parameters",
];

impl RunSummary {
    /// Computes the summary of one run (see the module doc for the sources).
    pub fn from_run(run: &RunData) -> Self {
        // The explicit final evaluation first: its settings are recorded.
        let sources: Vec<(&str, &Value)> = [
            ("eval.json", run.eval.as_ref()),
            ("summary.json", run.summary.as_ref()),
        ]
        .into_iter()
        .filter_map(|(name, v)| Some((name, v?)))
        .collect();
        let last = run.epochs.last();

        let (test_accuracy, test_accuracy_source) = sources
            .iter()
            .find_map(|(name, v)| Some((accuracy(v, TEST_ACC_KEYS)?, (*name).to_owned())))
            .map(|(a, s)| (Some(a), s))
            .unwrap_or_else(|| (last.and_then(|e| e.test_accuracy), "last epoch".to_owned()));

        let best = run
            .epochs
            .iter()
            .filter_map(|e| Some((e.epoch, e.test_accuracy?)))
            .fold(
                None,
                |best: Option<(usize, f64)>, (epoch, acc)| match best {
                    Some((_, b)) if b >= acc => best,
                    _ => Some((epoch, acc)),
                },
            );

        let train_accuracy = run
            .summary
            .as_ref()
            .and_then(|s| accuracy(s, TRAIN_ACC_KEYS))
            .or_else(|| last.and_then(|e| e.train_accuracy));

        let train_seconds = run
            .summary
            .as_ref()
            .and_then(|s| number(s, TRAIN_SECONDS_KEYS))
            .or_else(|| {
                let times: Vec<f64> = run.epochs.iter().filter_map(|e| e.train_seconds).collect();
                (!times.is_empty()).then(|| times.iter().sum())
            });

        let test_images = config_u64(&run.config, &["data.test_limit", "test_limit"])
            .or_else(|| Some(default_test_images(&run.config)));
        let inference_ms_per_image = sources
            .iter()
            .find_map(|(_, v)| {
                number(v, MS_PER_IMAGE_KEYS).or_else(|| {
                    let seconds = number(v, EVAL_SECONDS_KEYS)?;
                    let images = number(v, IMAGE_COUNT_KEYS)?;
                    (images > 0.0).then(|| 1000.0 * seconds / images)
                })
            })
            .or_else(|| {
                let seconds = last?.eval_seconds?;
                let images = test_images? as f64;
                (images > 0.0).then(|| 1000.0 * seconds / images)
            });

        let parameters = [run.summary.as_ref(), run.info.as_ref()]
            .into_iter()
            .flatten()
            .find_map(|v| number(v, PARAM_KEYS))
            .map(|p| p.round() as u64);

        let accuracy_per_million_params = match (test_accuracy, parameters) {
            (Some(acc), Some(p)) if p > 0 => Some(100.0 * acc / (p as f64 / 1e6)),
            _ => None,
        };

        let eval_settings = run.eval.as_ref().and_then(eval_settings);

        Self {
            name: run.name.clone(),
            variant: run.variant.clone(),
            label: variant_label(&run.variant),
            dataset: string(&run.config, &["data.dataset", "dataset"]),
            embedding: string(
                &run.config,
                &[
                    &format!("{}.embedding", run.variant),
                    "embedding",
                    "data.embedding",
                ],
            ),
            seed: config_u64(&run.config, &["seed"]),
            batch_size: config_u64(&run.config, &["batch_size", "data.batch_size"]),
            train_images: config_u64(&run.config, &["data.train_limit", "train_limit"]),
            test_images: config_u64(&run.config, &["data.test_limit", "test_limit"]),
            epochs: run.epochs.len(),
            test_accuracy,
            test_accuracy_source,
            best_test_accuracy: best.map(|(_, a)| a),
            best_epoch: best.map(|(e, _)| e),
            train_accuracy,
            train_seconds,
            inference_ms_per_image,
            parameters,
            accuracy_per_million_params,
            eval_settings,
        }
    }
}

/// The registry's display name ("NoProp-DT"); unknown names are kept.
pub fn variant_label(variant: &str) -> String {
    crate::registry::label(variant)
}

fn config_u64(config: &Value, keys: &[&str]) -> Option<u64> {
    number(config, keys)
        .filter(|x| *x >= 0.0 && x.fract() == 0.0)
        .map(|x| x as u64)
}

/// The test set size when no limit is set: 10,000 for MNIST-family and
/// CIFAR datasets, the only ones the trainer reads.
fn default_test_images(_config: &Value) -> u64 {
    10_000
}

/// "steps 100, euler, 5 runs" from whatever settings `eval.json` records.
fn eval_settings(eval: &Value) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(steps) = number(eval, &["steps", "options.steps", "inference.steps"]) {
        parts.push(format!("{steps} steps"));
    }
    if let Some(solver) = string(eval, &["solver", "options.solver", "inference.solver"]) {
        parts.push(solver);
    }
    if let Some(runs) = number(eval, &["runs", "options.runs", "inference.runs"]) {
        parts.push(format!("{runs} run{}", if runs == 1.0 { "" } else { "s" }));
    }
    if let Some(true) = [
        "deterministic",
        "options.deterministic",
        "inference.deterministic",
    ]
    .iter()
    .find_map(|k| super::fields::at_path(eval, k)?.as_bool())
    {
        parts.push("deterministic".to_owned());
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::epoch::EpochMetrics;
    use serde_json::json;
    use std::path::PathBuf;

    fn epoch(n: usize, test: f64, train_seconds: f64) -> EpochMetrics {
        EpochMetrics {
            epoch: n,
            step: None,
            train_loss: Some(1.0),
            loss_terms: vec![],
            train_accuracy: Some(test - 0.01),
            test_accuracy: Some(test),
            train_seconds: Some(train_seconds),
            eval_seconds: Some(2.0),
            lr: None,
        }
    }

    fn run(eval: Option<Value>, info: Option<Value>) -> RunData {
        RunData {
            dir: PathBuf::from("x"),
            name: "dt".into(),
            variant: "dt".into(),
            config: json!({"variant": "dt", "seed": 7, "batch_size": 128,
                "data": {"dataset": "mnist", "train_limit": 5000, "test_limit": 1000},
                "dt": {"embedding": "one-hot"}}),
            epochs: vec![
                epoch(1, 0.90, 10.0),
                epoch(2, 0.95, 12.5),
                epoch(3, 0.94, 11.0),
            ],
            summary: None,
            eval,
            info,
            initial_info: None,
        }
    }

    #[test]
    fn falls_back_to_metrics_when_no_eval_or_info() {
        let s = RunSummary::from_run(&run(None, None));
        assert_eq!(s.label, "NoProp-DT");
        assert_eq!(s.test_accuracy, Some(0.94));
        assert_eq!(s.test_accuracy_source, "last epoch");
        assert_eq!((s.best_epoch, s.best_test_accuracy), (Some(2), Some(0.95)));
        assert_eq!(s.train_accuracy, Some(0.94 - 0.01));
        // 10 + 12.5 + 11 seconds of training.
        assert_eq!(s.train_seconds, Some(33.5));
        // 2 s of evaluation over the 1000-image test limit = 2 ms per image.
        assert_eq!(s.inference_ms_per_image, Some(2.0));
        assert_eq!(s.parameters, None);
        assert_eq!(s.accuracy_per_million_params, None);
        assert_eq!(s.embedding.as_deref(), Some("one-hot"));
        assert_eq!(
            (s.seed, s.batch_size, s.train_images),
            (Some(7), Some(128), Some(5000))
        );
    }

    #[test]
    fn prefers_eval_and_info_when_present() {
        let eval = json!({"accuracy": 96.0, "seconds": 5.0, "images": 10000, "steps": 100,
            "solver": "euler", "runs": 5});
        let info = json!({"parameters": {"total": 2_000_000}});
        let s = RunSummary::from_run(&run(Some(eval), Some(info)));
        assert_eq!(s.test_accuracy, Some(0.96));
        assert_eq!(s.test_accuracy_source, "eval.json");
        // 5 s over 10,000 images = 0.5 ms per image.
        assert_eq!(s.inference_ms_per_image, Some(0.5));
        assert_eq!(s.parameters, Some(2_000_000));
        // 96 % / 2 M parameters = 48 % per million.
        assert_eq!(s.accuracy_per_million_params, Some(48.0));
        assert_eq!(s.eval_settings.as_deref(), Some("100 steps, euler, 5 runs"));
    }
}
