//! `summary.json`: the outcome of a training run, written by `noprop train`
//! once every epoch is done (and printed by `noprop train --json`, finished
//! or interrupted), read back by `noprop compare`.
//!
//! Accuracies are fractions in [0, 1]; `test_accuracy` and the others are
//! those of the last epoch's line of `metrics.jsonl` (with several inference
//! runs, the mean of the single runs).

use serde::{Deserialize, Serialize};

use crate::train::BestScore;

/// The file's name in a run directory.
pub const SUMMARY_FILE: &str = "summary.json";

/// How a training run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Every planned epoch done.
    Completed,
    /// Stopped by Ctrl-C; `last.safetensors` holds the state
    /// (`noprop train --resume` continues).
    Interrupted,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Interrupted => "interrupted",
        }
    }
}

/// The contents of `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    pub status: RunStatus,
    pub run_dir: String,
    /// The registered variant name (`RunConfig::variant`).
    pub variant: String,
    pub dataset: String,
    /// Epochs completed.
    pub epochs: usize,
    /// Epochs the configuration asks for.
    pub epochs_planned: usize,
    /// Optimizer steps taken.
    pub step: u64,
    /// Trainable parameters.
    pub parameters: usize,
    /// Sum of the epochs' training seconds (the steps only: evaluation and
    /// train-accuracy measurement excluded).
    pub train_seconds: f64,
    /// Peak resident memory of the training process(es) during the
    /// training steps (sampled VmRSS, [`crate::memory`]): data, model,
    /// optimizer state, the largest step's activations, the binary. A
    /// resumed run: the largest of its processes' peaks. None where it
    /// cannot be read.
    pub train_peak_rss_bytes: Option<u64>,
    /// The same during the per-epoch evaluations.
    pub eval_peak_rss_bytes: Option<u64>,
    /// Resident memory before the first step of the last process.
    pub baseline_rss_bytes: Option<u64>,
    /// Peak device memory of the process during the training steps (CUDA
    /// runs, through nvidia-smi: [`crate::memory::DeviceMemorySampler`]);
    /// absent on the CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_peak_device_bytes: Option<u64>,
    /// The same during the per-epoch evaluations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_peak_device_bytes: Option<u64>,
    /// The last epoch's running train accuracy.
    pub train_accuracy: Option<f64>,
    /// The last epoch's test accuracy.
    pub test_accuracy: Option<f64>,
    /// The last epoch's validation accuracy (None without a validation
    /// split).
    pub validation_accuracy: Option<f64>,
    /// The epoch saved as `best.safetensors`, if any.
    pub best: Option<BestScore>,
    pub last_checkpoint: String,
    pub best_checkpoint: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_json() {
        let summary = RunSummary {
            status: RunStatus::Interrupted,
            run_dir: "runs/x".into(),
            variant: "dt".into(),
            dataset: "mnist".into(),
            epochs: 1,
            epochs_planned: 2,
            step: 94,
            parameters: 1234,
            train_seconds: 12.5,
            train_peak_rss_bytes: Some(1 << 30),
            eval_peak_rss_bytes: Some(1 << 29),
            train_peak_device_bytes: Some(3 << 28),
            eval_peak_device_bytes: None,
            baseline_rss_bytes: None,
            train_accuracy: Some(0.5),
            test_accuracy: Some(0.75),
            validation_accuracy: None,
            best: Some(BestScore {
                epoch: 1,
                accuracy: 0.75,
                split: "test".into(),
            }),
            last_checkpoint: "runs/x/last.safetensors".into(),
            best_checkpoint: Some("runs/x/best.safetensors".into()),
        };
        let text = serde_json::to_string_pretty(&summary).unwrap();
        assert!(text.contains("\"status\": \"interrupted\""), "{text}");
        assert_eq!(serde_json::from_str::<RunSummary>(&text).unwrap(), summary);
    }
}
