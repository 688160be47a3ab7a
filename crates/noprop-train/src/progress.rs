//! Progress bars for training and evaluation (indicatif), on stderr.
//!
//! Bars are drawn only when stderr is a terminal, so logs and pipes get the
//! plain one-line-per-epoch summaries instead of control sequences.

use std::io::IsTerminal;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// An epoch bar and a batch bar, or nothing when disabled.
pub struct Progress {
    bars: Option<(MultiProgress, Option<ProgressBar>, ProgressBar)>,
}

fn batch_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix:>10} {pos}/{len} [{bar:30}] {per_sec} eta {eta} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

impl Progress {
    /// Bars for `total_epochs` epochs, starting after `done_epochs`, when
    /// `wanted` and stderr is a terminal.
    pub fn new(wanted: bool, total_epochs: usize, done_epochs: usize) -> Self {
        if !wanted || !std::io::stderr().is_terminal() {
            return Self { bars: None };
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let epochs = multi.add(ProgressBar::new(total_epochs as u64));
        epochs.set_style(
            ProgressStyle::with_template("epoch {pos}/{len} [{bar:30}] {elapsed_precise} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        epochs.set_position(done_epochs as u64);
        let batches = multi.add(ProgressBar::new(0));
        batches.set_style(batch_style());
        Self {
            bars: Some((multi, Some(epochs), batches)),
        }
    }

    /// A single bar, for evaluation only.
    pub fn eval_only(wanted: bool) -> Self {
        if !wanted || !std::io::stderr().is_terminal() {
            return Self { bars: None };
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let batches = multi.add(ProgressBar::new(0));
        batches.set_style(batch_style());
        Self {
            bars: Some((multi, None, batches)),
        }
    }

    /// A new epoch of `total` batches, `done` of them already (resume).
    pub fn start_epoch(&self, total: usize, done: usize) {
        if let Some((_, _, batches)) = &self.bars {
            batches.set_prefix("train");
            batches.set_length(total as u64);
            batches.set_position(done as u64);
            batches.reset_eta();
        }
    }

    /// One batch done, with the running loss and accuracy.
    pub fn batch(&self, loss: f64, accuracy: Option<f64>) {
        if let Some((_, _, batches)) = &self.bars {
            batches.inc(1);
            batches.set_message(match accuracy {
                Some(a) => format!("loss {loss:.4} acc {:.2}%", 100.0 * a),
                None => format!("loss {loss:.4}"),
            });
        }
    }

    /// Switches the batch bar to evaluation of `total` images.
    pub fn start_eval(&self, what: &str, total: usize) {
        if let Some((_, _, batches)) = &self.bars {
            batches.set_prefix(what.to_string());
            batches.set_length(total as u64);
            batches.set_position(0);
            batches.set_message("");
        }
    }

    /// `n` images evaluated.
    pub fn eval_images(&self, n: usize) {
        if let Some((_, _, batches)) = &self.bars {
            batches.inc(n as u64);
        }
    }

    /// An epoch finished; `summary` is printed above the bars (or to stderr).
    pub fn finish_epoch(&self, summary: &str) {
        match &self.bars {
            Some((multi, epochs, _)) => {
                if let Some(epochs) = epochs {
                    epochs.inc(1);
                    epochs.set_message(summary.to_string());
                }
                let _ = multi.println(summary);
            }
            None => eprintln!("{summary}"),
        }
    }

    /// Removes the bars.
    pub fn finish(&self) {
        if let Some((multi, epochs, batches)) = &self.bars {
            batches.finish_and_clear();
            if let Some(epochs) = epochs {
                epochs.finish_and_clear();
            }
            let _ = multi.clear();
        }
    }
}
