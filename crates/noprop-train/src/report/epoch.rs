//! One epoch of a run, as the trainer logs it in `metrics.jsonl`.
//!
//! Each line of `metrics.jsonl` is one JSON object per finished epoch:
//! epoch number, optimizer step, train loss and its named terms, running
//! train accuracy, test accuracy, epoch training seconds, evaluation seconds,
//! learning rate and a timestamp. Accuracies are kept here as fractions in
//! [0, 1] whatever the file uses.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::Value;

use super::fields::{accuracy, number};

/// The numbers the report uses from one `metrics.jsonl` line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EpochMetrics {
    /// 1-based epoch number (the trainer's 0-based numbers are shifted).
    pub epoch: usize,
    /// Optimizer steps taken so far.
    pub step: Option<u64>,
    /// Mean training loss over the epoch.
    pub train_loss: Option<f64>,
    /// Named loss terms (e.g. "denoise", "ce", "kl"), in file order.
    pub loss_terms: Vec<(String, f64)>,
    /// Running train accuracy on the batches seen (fraction).
    pub train_accuracy: Option<f64>,
    /// Test (or validation) accuracy after the epoch (fraction).
    pub test_accuracy: Option<f64>,
    /// Seconds spent training in this epoch (evaluation excluded).
    pub train_seconds: Option<f64>,
    /// Seconds spent evaluating after this epoch.
    pub eval_seconds: Option<f64>,
    /// Learning rate at the end of the epoch.
    pub lr: Option<f64>,
}

const EPOCH_KEYS: &[&str] = &["epoch"];
const STEP_KEYS: &[&str] = &["step", "global_step", "steps"];
const LOSS_KEYS: &[&str] = &["train_loss", "loss", "train.loss"];
const TERMS_KEYS: &[&str] = &["loss_terms", "terms", "train_terms", "train.terms"];
const TRAIN_ACC_KEYS: &[&str] = &["train_accuracy", "train_acc", "train.accuracy", "train.acc"];
const TEST_ACC_KEYS: &[&str] = &["test_accuracy", "test_acc", "test.accuracy", "test.acc"];
const TRAIN_SECONDS_KEYS: &[&str] = &[
    "epoch_seconds",
    "train_seconds",
    "epoch_train_seconds",
    "train_time_s",
    "train.seconds",
];
const EVAL_SECONDS_KEYS: &[&str] = &[
    "eval_seconds",
    "eval_time_s",
    "test_seconds",
    "eval.seconds",
];
const LR_KEYS: &[&str] = &["learning_rate", "lr"];

impl EpochMetrics {
    /// Parses one `metrics.jsonl` object. `index` (0-based line number)
    /// numbers the epoch when the line has no epoch field.
    pub fn from_json(value: &Value, index: usize) -> Result<Self> {
        if !value.is_object() {
            bail!("expected a JSON object, found {value}");
        }
        let epoch = match number(value, EPOCH_KEYS) {
            Some(e) if e >= 0.0 && e.fract() == 0.0 => e as usize,
            Some(e) => bail!("`epoch` must be a non-negative integer, found {e}"),
            None => index + 1,
        };
        Ok(Self {
            epoch,
            step: number(value, STEP_KEYS).map(|s| s as u64),
            train_loss: number(value, LOSS_KEYS),
            loss_terms: loss_terms(value),
            train_accuracy: accuracy(value, TRAIN_ACC_KEYS),
            test_accuracy: accuracy(value, TEST_ACC_KEYS),
            train_seconds: number(value, TRAIN_SECONDS_KEYS),
            eval_seconds: number(value, EVAL_SECONDS_KEYS),
            lr: number(value, LR_KEYS),
        })
    }
}

/// Loss terms from either an object (`{"ce": 0.1, ...}`) or a list of
/// `[name, value]` pairs / `{"name":..., "value":...}` objects.
fn loss_terms(value: &Value) -> Vec<(String, f64)> {
    let Some(terms) = TERMS_KEYS
        .iter()
        .find_map(|key| super::fields::at_path(value, key))
    else {
        return Vec::new();
    };
    match terms {
        Value::Object(map) => map
            .iter()
            .filter_map(|(name, v)| Some((name.clone(), v.as_f64()?)))
            .collect(),
        Value::Array(items) => items
            .iter()
            .filter_map(|item| match item {
                Value::Array(pair) if pair.len() == 2 => {
                    Some((pair[0].as_str()?.to_owned(), pair[1].as_f64()?))
                }
                Value::Object(_) => Some((
                    super::fields::string(item, &["name"])?,
                    number(item, &["value"])?,
                )),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Reads every epoch of a `metrics.jsonl` file. Blank lines are skipped, and
/// so is a last line cut short (no final newline) by a crash mid-write; any
/// other line that is not JSON is an error naming the file and line. Epoch numbers
/// are made 1-based: if the file counts from 0, every epoch is shifted by one.
/// When a resumed run logged an epoch twice, the later line wins.
pub fn read_metrics(path: &Path) -> Result<Vec<EpochMetrics>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut epochs = Vec::new();
    let line_count = text.lines().count();
    for (line_index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = match serde_json::from_str(line) {
            Ok(value) => value,
            // A crash while appending leaves a last line without its newline.
            Err(_) if line_index + 1 == line_count && !text.ends_with('\n') => break,
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("{}:{}: not a JSON line", path.display(), line_index + 1)
                })
            }
        };
        let epoch = EpochMetrics::from_json(&value, epochs.len())
            .with_context(|| format!("{}:{}", path.display(), line_index + 1))?;
        epochs.push(epoch);
    }
    if epochs.iter().any(|e| e.epoch == 0) {
        for e in &mut epochs {
            e.epoch += 1;
        }
    }
    // Keep the last record of each epoch, in epoch order.
    let mut by_epoch = std::collections::BTreeMap::new();
    for e in epochs {
        by_epoch.insert(e.epoch, e);
    }
    Ok(by_epoch.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_a_flat_line_with_object_terms() {
        let v = json!({"epoch": 2, "step": 938, "train_loss": 1.25,
            "loss_terms": {"ce": 0.25, "kl": 1.0}, "train_accuracy": 0.9,
            "test_accuracy": 97.5, "epoch_seconds": 12.0, "eval_seconds": 1.5,
            "lr": 0.001, "timestamp": "2026-01-01T00:00:00Z"});
        let e = EpochMetrics::from_json(&v, 0).unwrap();
        assert_eq!(e.epoch, 2);
        assert_eq!(e.step, Some(938));
        assert_eq!(e.train_loss, Some(1.25));
        assert_eq!(
            e.loss_terms,
            vec![("ce".to_owned(), 0.25), ("kl".to_owned(), 1.0)]
        );
        assert_eq!(e.train_accuracy, Some(0.9));
        assert_eq!(e.test_accuracy, Some(0.975));
        assert_eq!(e.train_seconds, Some(12.0));
        assert_eq!(e.eval_seconds, Some(1.5));
        assert_eq!(e.lr, Some(0.001));
    }

    #[test]
    fn parses_list_terms_and_defaults_the_epoch_number() {
        let v = json!({"loss": 3.0, "terms": [["denoise", 2.0], {"name": "ce", "value": 1.0}]});
        let e = EpochMetrics::from_json(&v, 4).unwrap();
        assert_eq!(e.epoch, 5);
        assert_eq!(e.train_loss, Some(3.0));
        assert_eq!(
            e.loss_terms,
            vec![("denoise".to_owned(), 2.0), ("ce".to_owned(), 1.0)]
        );
        assert_eq!(e.test_accuracy, None);
    }

    #[test]
    fn rejects_non_objects_and_bad_epochs() {
        assert!(EpochMetrics::from_json(&json!([1, 2]), 0).is_err());
        let err = EpochMetrics::from_json(&json!({"epoch": 1.5}), 0).unwrap_err();
        assert!(err.to_string().contains("epoch"), "{err}");
    }

    #[test]
    fn reads_a_file_shifting_zero_based_epochs_and_keeping_the_last_duplicate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        std::fs::write(
            &path,
            "{\"epoch\":0,\"test_accuracy\":0.5}\n\n{\"epoch\":1,\"test_accuracy\":0.6}\n{\"epoch\":1,\"test_accuracy\":0.7}\n",
        )
        .unwrap();
        let epochs = read_metrics(&path).unwrap();
        assert_eq!(epochs.len(), 2);
        assert_eq!((epochs[0].epoch, epochs[0].test_accuracy), (1, Some(0.5)));
        assert_eq!((epochs[1].epoch, epochs[1].test_accuracy), (2, Some(0.7)));
    }

    #[test]
    fn skips_a_last_line_cut_short() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        std::fs::write(&path, "{\"epoch\":1}\n{\"epoch\":2,\"te").unwrap();
        let epochs = read_metrics(&path).unwrap();
        assert_eq!(epochs.len(), 1);
    }

    #[test]
    fn a_corrupt_line_names_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        std::fs::write(&path, "{\"epoch\":1}\nnot json\n").unwrap();
        let err = format!("{:#}", read_metrics(&path).unwrap_err());
        assert!(err.contains("metrics.jsonl:2"), "{err}");
    }
}
