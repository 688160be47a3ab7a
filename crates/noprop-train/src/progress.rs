//! Progress on stderr: bars for training and evaluation (indicatif) when
//! stderr is a terminal; otherwise (a log file, a batch job) a plain line
//! every `log_every` seconds during an epoch, with its position, the loss,
//! images per second and the time left in the epoch (and the same for the
//! end-of-epoch evaluation), beside the one-line-per-epoch summaries.

use std::cell::Cell;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// An epoch bar and a batch bar, or log lines, or nothing.
pub struct Progress {
    bars: Option<(MultiProgress, Option<ProgressBar>, ProgressBar)>,
    log: Option<LogLines>,
}

/// The state of the periodic log lines.
struct LogLines {
    every: Duration,
    total_epochs: usize,
    epoch: Cell<usize>,
    batches: Cell<usize>,
    done: Cell<usize>,
    /// Batches of the epoch done before this process (a resume).
    skipped: Cell<usize>,
    images: Cell<usize>,
    started: Cell<Instant>,
    last: Cell<Instant>,
    /// The evaluation in progress: its split, images done and total.
    eval_split: std::cell::RefCell<String>,
    eval_done: Cell<usize>,
    eval_total: Cell<usize>,
    eval_started: Cell<Instant>,
}

impl LogLines {
    /// Now, when a line is due (`every` since the last one), which it
    /// records; else None.
    fn due(&self) -> Option<Instant> {
        let now = Instant::now();
        if now.duration_since(self.last.get()) < self.every {
            return None;
        }
        self.last.set(now);
        Some(now)
    }

    fn batch(&self, loss: f64, images: usize) {
        self.done.set(self.done.get() + 1);
        self.images.set(self.images.get() + images);
        let Some(now) = self.due() else { return };
        let seconds = now.duration_since(self.started.get()).as_secs_f64();
        let done_here = self.done.get();
        let rate = self.images.get() as f64 / seconds.max(1e-9);
        let per_batch = seconds / done_here.saturating_sub(self.skipped.get()).max(1) as f64;
        let left = per_batch * self.batches.get().saturating_sub(done_here) as f64;
        eprintln!(
            "epoch {}/{}: batch {}/{}, loss {loss:.4}, {rate:.1} images/s, {} left in the epoch",
            self.epoch.get(),
            self.total_epochs,
            done_here,
            self.batches.get(),
            format_duration(left)
        );
    }
}

impl LogLines {
    /// An evaluation starts: a line at once (a long evaluation is then not
    /// mistaken for a hang), then one every `every`.
    fn start_eval(&self, split: &str, total: usize) {
        let now = Instant::now();
        *self.eval_split.borrow_mut() = split.to_string();
        self.eval_done.set(0);
        self.eval_total.set(total);
        self.eval_started.set(now);
        self.last.set(now);
        eprintln!(
            "epoch {}/{}: evaluating on {total} {split} images",
            self.epoch.get(),
            self.total_epochs
        );
    }

    fn eval_images(&self, n: usize) {
        self.eval_done.set(self.eval_done.get() + n);
        let Some(now) = self.due() else { return };
        let seconds = now.duration_since(self.eval_started.get()).as_secs_f64();
        let (done, total) = (self.eval_done.get(), self.eval_total.get());
        let rate = done as f64 / seconds.max(1e-9);
        let left = total.saturating_sub(done) as f64 / rate.max(1e-9);
        eprintln!(
            "epoch {}/{}: {} {done}/{total} images, {rate:.1} images/s, {} left in the evaluation",
            self.epoch.get(),
            self.total_epochs,
            self.eval_split.borrow(),
            format_duration(left)
        );
    }
}

/// `1h02m`, `3m05s` or `12s`.
fn format_duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

fn batch_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix:>10} {pos}/{len} [{bar:30}] {per_sec} eta {eta} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

impl Progress {
    /// Bars for `total_epochs` epochs, starting after `done_epochs`, when
    /// `wanted` and stderr is a terminal; else a log line every `log_every`
    /// (none when zero).
    pub fn new(wanted: bool, total_epochs: usize, done_epochs: usize, log_every: Duration) -> Self {
        if !wanted || !std::io::stderr().is_terminal() {
            let now = Instant::now();
            let log = (!log_every.is_zero()).then(|| LogLines {
                every: log_every,
                total_epochs,
                epoch: Cell::new(done_epochs),
                batches: Cell::new(0),
                done: Cell::new(0),
                skipped: Cell::new(0),
                images: Cell::new(0),
                started: Cell::new(now),
                last: Cell::new(now),
                eval_split: std::cell::RefCell::new(String::new()),
                eval_done: Cell::new(0),
                eval_total: Cell::new(0),
                eval_started: Cell::new(now),
            });
            return Self { bars: None, log };
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
            log: None,
        }
    }

    /// A single bar, for evaluation only.
    pub fn eval_only(wanted: bool) -> Self {
        if !wanted || !std::io::stderr().is_terminal() {
            return Self {
                bars: None,
                log: None,
            };
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let batches = multi.add(ProgressBar::new(0));
        batches.set_style(batch_style());
        Self {
            bars: Some((multi, None, batches)),
            log: None,
        }
    }

    /// A new epoch of `total` batches, `done` of them already (resume).
    pub fn start_epoch(&self, total: usize, done: usize) {
        if let Some(log) = &self.log {
            let now = Instant::now();
            log.epoch.set(log.epoch.get() + 1);
            log.batches.set(total);
            log.done.set(done);
            log.skipped.set(done);
            log.images.set(0);
            log.started.set(now);
            log.last.set(now);
        }
        if let Some((_, _, batches)) = &self.bars {
            batches.set_prefix("train");
            batches.set_length(total as u64);
            batches.set_position(done as u64);
            batches.reset_eta();
        }
    }

    /// One batch of `images` done, with the running loss and accuracy.
    pub fn batch(&self, loss: f64, accuracy: Option<f64>, images: usize) {
        if let Some(log) = &self.log {
            log.batch(loss, images);
        }
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
        if let Some(log) = &self.log {
            log.start_eval(what, total);
        }
        if let Some((_, _, batches)) = &self.bars {
            batches.set_prefix(what.to_string());
            batches.set_length(total as u64);
            batches.set_position(0);
            batches.set_message("");
        }
    }

    /// `n` images evaluated.
    pub fn eval_images(&self, n: usize) {
        if let Some(log) = &self.log {
            log.eval_images(n);
        }
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
