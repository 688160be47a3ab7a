//! When the trainer saves, and which epoch is the best: the checkpoint
//! policy of a run, in one place (after burn's `CheckpointingStrategy`).
//!
//! - `last.safetensors` is written at the end of every epoch, every
//!   `save_every_steps` optimizer steps within an epoch (0: never), and when
//!   a stop is requested; it is what `--resume` continues from.
//! - `best.safetensors` exists only with a validation split: it is the
//!   model of the epoch with the highest validation accuracy (the first of
//!   equals). Without one nothing is selected: choosing a model on the test
//!   set would bias its test accuracy upward, so the final model
//!   (`last.safetensors`) is the run's result.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::train::{BestScore, BEST_CHECKPOINT, LAST_CHECKPOINT};
use noprop_checkpoint::Checkpoint;

/// The checkpoint policy of one run directory.
#[derive(Debug, Clone)]
pub struct Checkpointer<'a> {
    run_dir: &'a Path,
    save_every_steps: usize,
}

impl<'a> Checkpointer<'a> {
    pub fn new(run_dir: &'a Path, save_every_steps: usize) -> Self {
        Self {
            run_dir,
            save_every_steps,
        }
    }

    /// Whether to save after optimizer step `step` (1-based) within an
    /// epoch: periodically, or because a stop was requested.
    pub fn save_within_epoch(&self, step: u64, stop_requested: bool) -> bool {
        stop_requested
            || (self.save_every_steps > 0 && step.is_multiple_of(self.save_every_steps as u64))
    }

    /// The new best score if the epoch just evaluated beats `best`: only
    /// with a validation accuracy (see the module doc).
    pub fn new_best(
        &self,
        best: Option<&BestScore>,
        epoch: usize,
        validation_accuracy: Option<f64>,
    ) -> Option<BestScore> {
        let accuracy = validation_accuracy?;
        best.is_none_or(|b| accuracy > b.accuracy)
            .then(|| BestScore {
                epoch,
                accuracy,
                split: "validation".into(),
            })
    }

    /// Writes `checkpoint` as `last.safetensors` (and as `best.safetensors`
    /// when `best`), atomically; returns the former's path.
    pub fn save(&self, checkpoint: &Checkpoint, best: bool) -> Result<PathBuf> {
        let last = self.last();
        checkpoint.save(&last)?;
        if best {
            checkpoint.save(&self.run_dir.join(BEST_CHECKPOINT))?;
        }
        Ok(last)
    }

    /// The path of `last.safetensors`.
    pub fn last(&self) -> PathBuf {
        self.run_dir.join(LAST_CHECKPOINT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_periodically_or_on_a_stop() {
        let dir = Path::new("/run");
        let every_3 = Checkpointer::new(dir, 3);
        let saves: Vec<u64> = (1..=7)
            .filter(|&s| every_3.save_within_epoch(s, false))
            .collect();
        assert_eq!(saves, [3, 6]);
        assert!(every_3.save_within_epoch(4, true));
        let never = Checkpointer::new(dir, 0);
        assert!(!(1..=100).any(|s| never.save_within_epoch(s, false)));
    }

    #[test]
    fn the_best_is_chosen_on_validation_only() {
        let c = Checkpointer::new(Path::new("/run"), 0);
        assert_eq!(
            c.new_best(None, 1, None),
            None,
            "no selection on the test set"
        );
        let first = c.new_best(None, 1, Some(0.9)).unwrap();
        assert_eq!((first.epoch, first.split.as_str()), (1, "validation"));
        assert_eq!(
            c.new_best(Some(&first), 2, Some(0.9)),
            None,
            "ties keep the first"
        );
        assert_eq!(c.new_best(Some(&first), 2, Some(0.95)).unwrap().epoch, 2);
    }
}
