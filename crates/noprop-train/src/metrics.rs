//! Training metrics: running sums within an epoch, and `metrics.jsonl`, one
//! JSON object per completed epoch.
//!
//! Fields of a line ([`EpochMetrics`]): `epoch` (1-based), `step` (optimizer
//! steps so far), `train_loss` (mean over the epoch's batches), `train_terms`
//! (mean of each named loss term), `train_accuracy` (fraction in [0, 1],
//! running, on the batches measured; null when none was) with
//! `train_accuracy_images`, `validation_accuracy` (null without a validation
//! split), `test_accuracy` (with several inference runs, `eval.runs`, the
//! mean of the single runs, and `test_run_accuracies` and
//! `test_ensemble_accuracy` beside it), `train_seconds` (the steps only),
//! `train_accuracy_seconds`, `eval_seconds`, `images_per_second` (training
//! throughput), `learning_rate` (null if the variant reports none),
//! `memory` (`train_peak_rss_bytes` during the epoch's steps,
//! `eval_peak_rss_bytes` during its evaluation, `baseline_rss_bytes` before
//! the first step of the process: [`crate::memory`]),
//! `best` (whether this epoch produced `best.safetensors`), `timestamp`
//! (UTC, RFC 3339).

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use noprop_core::StepReport;
use serde::{Deserialize, Serialize};

use noprop_checkpoint::atomic::write_atomic;

/// Running sums of the current epoch (saved in checkpoints so that an epoch
/// interrupted and resumed reports the same numbers).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochTotals {
    pub batches: usize,
    pub images: usize,
    pub loss_sum: f64,
    pub term_sums: BTreeMap<String, f64>,
    pub correct: u64,
    pub measured: u64,
    pub train_seconds: f64,
    pub train_accuracy_seconds: f64,
}

impl EpochTotals {
    pub fn add_step(&mut self, report: &StepReport, images: usize, seconds: f64) {
        self.batches += 1;
        self.images += images;
        self.loss_sum += report.loss;
        for (name, value) in &report.terms {
            *self.term_sums.entry(name.clone()).or_insert(0.0) += value;
        }
        self.train_seconds += seconds;
    }

    pub fn add_accuracy(&mut self, correct: u64, measured: u64, seconds: f64) {
        self.correct += correct;
        self.measured += measured;
        self.train_accuracy_seconds += seconds;
    }

    pub fn mean_loss(&self) -> f64 {
        self.loss_sum / self.batches.max(1) as f64
    }

    pub fn train_accuracy(&self) -> Option<f64> {
        (self.measured > 0).then(|| self.correct as f64 / self.measured as f64)
    }
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub step: u64,
    pub train_loss: f64,
    pub train_terms: BTreeMap<String, f64>,
    pub train_accuracy: Option<f64>,
    pub train_accuracy_images: u64,
    pub validation_accuracy: Option<f64>,
    /// With `eval.runs` = 1 that run's accuracy, else the mean of the
    /// single runs' accuracies.
    pub test_accuracy: f64,
    /// Each run's test accuracy (only with `eval.runs` > 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_run_accuracies: Option<Vec<f64>>,
    /// The test accuracy of the runs' ensemble (only with `eval.runs` > 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_ensemble_accuracy: Option<f64>,
    /// Test images of the evaluation (absent from older files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_images: Option<u64>,
    /// The inference settings of the evaluation: ODE steps and solver,
    /// noise, runs, batch size (absent from older files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_settings: Option<crate::eval::UsedSettings>,
    pub train_seconds: f64,
    pub train_accuracy_seconds: f64,
    pub eval_seconds: f64,
    pub images_per_second: f64,
    pub learning_rate: Option<f64>,
    /// The process's memory when the epoch ended (see [`crate::memory`]).
    #[serde(default)]
    pub memory: crate::memory::MemoryUsage,
    pub best: bool,
    pub timestamp: String,
}

impl EpochMetrics {
    /// The line for an epoch whose running sums are `totals`.
    pub fn from_totals(epoch: usize, step: u64, totals: &EpochTotals) -> Self {
        let batches = totals.batches.max(1) as f64;
        Self {
            epoch,
            step,
            train_loss: totals.mean_loss(),
            train_terms: totals
                .term_sums
                .iter()
                .map(|(k, v)| (k.clone(), v / batches))
                .collect(),
            train_accuracy: totals.train_accuracy(),
            train_accuracy_images: totals.measured,
            validation_accuracy: None,
            test_accuracy: f64::NAN,
            test_run_accuracies: None,
            test_ensemble_accuracy: None,
            test_images: None,
            eval_settings: None,
            train_seconds: totals.train_seconds,
            train_accuracy_seconds: totals.train_accuracy_seconds,
            eval_seconds: 0.0,
            images_per_second: totals.images as f64 / totals.train_seconds.max(1e-9),
            learning_rate: None,
            memory: crate::memory::MemoryUsage::default(),
            best: false,
            timestamp: utc_timestamp(SystemTime::now()),
        }
    }
}

/// The `metrics.jsonl` file of a run directory.
#[derive(Debug, Clone)]
pub struct MetricsLog {
    path: PathBuf,
}

impl MetricsLog {
    pub fn new(run_dir: &Path) -> Self {
        Self {
            path: run_dir.join("metrics.jsonl"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line and syncs it to disk.
    pub fn append(&self, metrics: &EpochMetrics) -> Result<()> {
        let mut line = serde_json::to_string(metrics)?;
        line.push('\n');
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .with_context(|| format!("cannot open {}", self.path.display()))?;
        file.write_all(line.as_bytes())
            .and_then(|()| file.sync_data())
            .with_context(|| format!("cannot write {}", self.path.display()))
    }

    /// Every well-formed line (a line cut short by a crash is skipped).
    pub fn read(&self) -> Result<Vec<EpochMetrics>> {
        if !self.path.exists() {
            return Ok(Vec::new());
        }
        let text = fs::read_to_string(&self.path)
            .with_context(|| format!("cannot read {}", self.path.display()))?;
        Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    }

    /// Every line, for readers of a finished or running run (`noprop
    /// compare`): a missing file, or a line that is not an [`EpochMetrics`],
    /// is an error naming the file, the line and what does not parse. Only a
    /// last line cut short by a crash (no final newline) is skipped.
    pub fn read_checked(&self) -> Result<Vec<EpochMetrics>> {
        let text = fs::read_to_string(&self.path)
            .with_context(|| format!("cannot read {}", self.path.display()))?;
        let count = text.lines().count();
        let mut lines = Vec::with_capacity(count);
        for (i, line) in text.lines().enumerate() {
            match serde_json::from_str(line) {
                Ok(metrics) => lines.push(metrics),
                Err(_) if i + 1 == count && !text.ends_with('\n') => break,
                Err(e) => {
                    anyhow::bail!("{}:{}: not a metrics line: {e}", self.path.display(), i + 1)
                }
            }
        }
        Ok(lines)
    }

    /// Keeps the lines of epochs `1..=epochs` only (resuming from a
    /// checkpoint of epoch `epochs` drops the lines of epochs it will redo).
    pub fn truncate_to(&self, epochs: usize) -> Result<()> {
        if !self.path.exists() {
            return Ok(());
        }
        let text = fs::read_to_string(&self.path)
            .with_context(|| format!("cannot read {}", self.path.display()))?;
        // Lines are kept as written (a re-serialised float may print
        // differently); the file is rewritten only if a line goes.
        let kept: Vec<&str> = text
            .lines()
            .filter(|line| {
                serde_json::from_str::<EpochMetrics>(line).is_ok_and(|m| m.epoch <= epochs)
            })
            .collect();
        if kept.len() == text.lines().count() && (text.is_empty() || text.ends_with('\n')) {
            return Ok(());
        }
        let kept: String = kept.iter().map(|line| format!("{line}\n")).collect();
        write_atomic(&self.path, kept.as_bytes())
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` for `time` (UTC); a time before 1970 gives
/// the epoch.
pub fn utc_timestamp(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time.max(UNIX_EPOCH)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_match_known_dates() {
        // Known instants: the epoch, a leap day, and 2026-11-06 12:34:56 UTC
        // (1_793_968_496 s, from `date -u -d @1793968496`).
        let at = |s: u64| utc_timestamp(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_793_968_496), "2026-11-06T12:34:56Z");
        assert_eq!(
            utc_timestamp(UNIX_EPOCH - Duration::from_secs(5)),
            "1970-01-01T00:00:00Z"
        );
    }

    #[test]
    fn totals_average_and_lines_round_trip_and_truncate() {
        let mut totals = EpochTotals::default();
        let report = |loss: f64| StepReport {
            loss,
            terms: vec![("ce".into(), loss / 2.0)],
        };
        totals.add_step(&report(1.0), 10, 0.5);
        totals.add_step(&report(3.0), 10, 0.5);
        totals.add_accuracy(15, 20, 0.1);
        let m = EpochMetrics::from_totals(1, 2, &totals);
        assert_eq!(m.train_loss, 2.0);
        assert_eq!(m.train_terms["ce"], 1.0);
        assert_eq!(m.train_accuracy, Some(0.75));
        assert_eq!(m.images_per_second, 20.0);

        let dir = tempfile::tempdir().unwrap();
        let log = MetricsLog::new(dir.path());
        for epoch in 1..=3 {
            let mut line = m.clone();
            line.epoch = epoch;
            line.test_accuracy = 0.5;
            log.append(&line).unwrap();
        }
        // A line cut short by a crash is ignored.
        fs::OpenOptions::new()
            .append(true)
            .open(log.path())
            .unwrap()
            .write_all(b"{\"epo")
            .unwrap();
        assert_eq!(log.read().unwrap().len(), 3);
        log.truncate_to(2).unwrap();
        let lines = log.read().unwrap();
        assert_eq!(
            lines.iter().map(|m| m.epoch).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert_eq!(lines[0].test_accuracy, 0.5);
        assert_eq!(log.read_checked().unwrap(), lines);
    }

    #[test]
    fn checked_reading_names_the_bad_line_and_skips_only_a_cut_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let log = MetricsLog::new(dir.path());
        let err = format!("{:#}", log.read_checked().unwrap_err());
        assert!(err.contains("metrics.jsonl"), "{err}");
        let mut m = EpochMetrics::from_totals(1, 2, &EpochTotals::default());
        m.test_accuracy = 0.5;
        log.append(&m).unwrap();
        let mut text = fs::read_to_string(log.path()).unwrap();
        text.push_str("{\"epo");
        fs::write(log.path(), &text).unwrap();
        assert_eq!(log.read_checked().unwrap(), vec![m.clone()]);
        // The same line, finished by a newline, is not a crash's leftover.
        text.push('\n');
        fs::write(log.path(), &text).unwrap();
        let err = log.read_checked().unwrap_err().to_string();
        assert!(err.contains("metrics.jsonl:2"), "{err}");
        // A line of another shape: serde says which field.
        let line = serde_json::to_string(&m)
            .unwrap()
            .replace("\"step\":2,", "");
        fs::write(log.path(), line + "\n").unwrap();
        let err = log.read_checked().unwrap_err().to_string();
        assert!(
            err.contains("metrics.jsonl:1") && err.contains("`step`"),
            "{err}"
        );
    }
}
