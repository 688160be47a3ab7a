//! The training loop: epochs of seeded minibatches, evaluation, metrics and
//! checkpoints, with exact resumption.
//!
//! Randomness, all derived from the run's `seed`:
//! - the order of epoch e is `noprop_data::permutation(N, seed, e)`, so the
//!   position in the data order is just (epoch, batch index);
//! - every training step draws from one generator, `SeededRng::new(seed)
//!   .fork(TRAIN_STREAM)`, whose state is saved in checkpoints;
//! - evaluations and train-accuracy measurements use their own forks, fresh
//!   each time, so measuring (or not) never changes the training numbers.
//!
//! A checkpoint after step s holds the model, the optimizer state, the
//! generator and the position, so a resumed run takes exactly the steps an
//! uninterrupted one would have taken: the final weights are bitwise equal.
//!
//! Stops: the `stop` flag (set by Ctrl-C) is checked after every step; the
//! run then saves `last.safetensors` and returns
//! [`TrainOutcome::Interrupted`]. A NaN or infinite loss returns a
//! [`NonFiniteLoss`] error without saving, so the last good checkpoint
//! stays.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, Result};
use noprop_core::{
    InferenceOptions, InferenceSettings, ModelSpec, Parallelism, ProcessGroup, RowShard, SeededRng,
    Variant,
};
use noprop_data::{DatasetKind, Split};
use serde::{Deserialize, Serialize};

use crate::checkpointer::Checkpointer;
use crate::config::RunConfig;
use crate::eval::evaluate_unless_stopped;
use crate::metrics::{EpochMetrics, EpochTotals, MetricsLog};
use crate::progress::Progress;
use noprop_checkpoint::{Checkpoint, CheckpointKind, CheckpointMeta};

/// Generator stream of the training steps ("train" in ASCII: far from the
/// small stream numbers variants fork for their own purposes).
pub const TRAIN_STREAM: u64 = 0x7472_6169_6e00_0000;
/// Generator stream of the per-epoch evaluations.
pub const EVAL_STREAM: u64 = 0x6576_616c_0000_0000;
/// Base stream of the train-accuracy measurements (plus the step number).
pub const TRAIN_ACCURACY_STREAM: u64 = 0x6163_6375_0000_0000;

/// File names in a run directory.
pub const LAST_CHECKPOINT: &str = "last.safetensors";
pub const BEST_CHECKPOINT: &str = "best.safetensors";
pub const CONFIG_FILE: &str = "config.toml";

/// Where a run stands; saved as `trainer_state` in training checkpoints.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Completed epochs.
    pub epochs_done: usize,
    /// Batches of the current epoch already trained on.
    pub batch_in_epoch: usize,
    /// Optimizer steps taken.
    pub step: u64,
    /// The best evaluation so far.
    pub best: Option<BestScore>,
    /// Running sums of the current epoch.
    pub totals: EpochTotals,
}

/// ODE steps of the per-epoch evaluation when `eval.steps` is unset (at
/// most the model's own `inference_steps`): a learning curve needs no more
/// (100 matched 1000 within 0.25 points in the committed runs), and the
/// paper's 1000 would cost a third of an epoch. `noprop eval` and `predict`
/// use the model's own default (1000) instead.
pub const EPOCH_EVAL_STEPS: usize = 100;

/// The per-epoch evaluation's settings: `[eval]`, with unset ODE steps
/// bounded by [`EPOCH_EVAL_STEPS`]; and those settings resolved over the
/// model's defaults, as the metrics line records them.
fn epoch_eval_settings(
    config: &RunConfig,
    variant: &str,
    variant_config: &serde_json::Value,
) -> (InferenceSettings, crate::eval::UsedSettings) {
    let mut settings = config.eval.settings();
    let mut used = crate::eval::UsedSettings::new(variant, &settings, variant_config);
    if settings.options.steps.is_none() {
        // The model's own default (None without an ODE), bounded.
        if let Some(steps) = used.steps.map(|s| s.min(EPOCH_EVAL_STEPS)) {
            settings.options.steps = Some(steps);
            used.steps = Some(steps);
        }
    }
    (settings, used)
}

impl TrainerState {
    /// Refuses a state this run cannot have reached (a crafted or foreign
    /// checkpoint): its counts must agree with the checkpoint's metadata and
    /// with `n_batches` batches per epoch, every epoch having the same number
    /// (`step = epochs_done * n_batches + batch_in_epoch`). `batch_in_epoch =
    /// n_batches` is a trained epoch whose evaluation was interrupted.
    pub fn check_resumable(
        &self,
        meta: &CheckpointMeta,
        n_batches: usize,
        config: &RunConfig,
    ) -> Result<()> {
        let impossible = |why: String| -> Result<()> {
            anyhow::bail!("the checkpoint's trainer state is impossible for this run: {why}")
        };
        if self.epochs_done != meta.epoch || self.step != meta.step {
            return impossible(format!(
                "it says epoch {} step {}, the checkpoint's metadata epoch {} step {}",
                self.epochs_done, self.step, meta.epoch, meta.step
            ));
        }
        if self.epochs_done > config.epochs {
            return impossible(format!(
                "{} epochs done, more than the run's {}",
                self.epochs_done, config.epochs
            ));
        }
        if self.batch_in_epoch > n_batches {
            return impossible(format!(
                "batch {} of an epoch of {} batches (batches of {})",
                self.batch_in_epoch, n_batches, config.batch_size
            ));
        }
        let expected = (self.epochs_done as u64)
            .checked_mul(n_batches as u64)
            .and_then(|s| s.checked_add(self.batch_in_epoch as u64));
        if expected != Some(self.step) {
            return impossible(format!(
                "step {} after {} epochs of {} batches and {} batches more",
                self.step, self.epochs_done, n_batches, self.batch_in_epoch
            ));
        }
        if let Some(best) = &self.best {
            if best.epoch == 0 || best.epoch > self.epochs_done || !best.accuracy.is_finite() {
                return impossible(format!(
                    "the best epoch is {} (accuracy {}) after {} epochs",
                    best.epoch, best.accuracy, self.epochs_done
                ));
            }
        }
        Ok(())
    }
}

/// The epoch whose model is in `best.safetensors`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BestScore {
    pub epoch: usize,
    pub accuracy: f64,
    /// `validation` when a validation split exists, else `test`.
    pub split: String,
}

/// The data a run trains and evaluates on.
pub struct RunData<'a> {
    pub train: &'a Split,
    pub validation: Option<&'a Split>,
    pub test: &'a Split,
    pub dataset: DatasetKind,
    pub spec: ModelSpec,
    /// Per-channel normalisation, stored in checkpoints for `predict`.
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// The class names, where the data has them (stored in checkpoints).
    pub class_names: Option<Vec<String>>,
}

/// How a run ended (other than by an error).
#[derive(Debug, Clone, PartialEq)]
pub enum TrainOutcome {
    /// Every epoch done; the metrics of the last epoch run in this process.
    Completed {
        state: TrainerState,
        last_epoch: Option<Box<EpochMetrics>>,
    },
    /// Stopped by the stop flag; `last.safetensors` holds the state.
    Interrupted { state: TrainerState },
}

/// A NaN or infinite training loss.
#[derive(Debug, Clone, PartialEq)]
pub struct NonFiniteLoss {
    pub loss: f64,
    pub epoch: usize,
    pub step: u64,
    /// The checkpoint left intact, with its epoch and step, if any.
    pub last_good: Option<(PathBuf, usize, u64)>,
}

impl std::fmt::Display for NonFiniteLoss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "training stopped: the loss is {} at epoch {}, step {}; ",
            self.loss, self.epoch, self.step
        )?;
        match &self.last_good {
            Some((path, epoch, step)) => write!(
                f,
                "the last good checkpoint, {} (epoch {epoch}, step {step}), was kept",
                path.display()
            ),
            None => write!(f, "no checkpoint had been saved yet"),
        }?;
        write!(f, " (try a lower learning rate)")
    }
}

impl std::error::Error for NonFiniteLoss {}

/// One training run: configuration, data and run directory.
pub struct Trainer<'a> {
    pub config: &'a RunConfig,
    pub run_dir: &'a Path,
    pub data: RunData<'a>,
    /// Set (by Ctrl-C) to save and stop after the current step.
    pub stop: Option<&'a AtomicBool>,
    /// Draw progress bars (when stderr is a terminal).
    pub progress: bool,
    /// Without a terminal: a progress line this often (zero: none).
    pub log_every: std::time::Duration,
    /// The processes training this run together (one, unless started by an
    /// MPI launcher: `crate::distributed`). Rank 0 alone writes files and
    /// evaluates.
    pub group: ProcessGroup,
}

impl Trainer<'_> {
    /// Trains `model` (freshly built, or rebuilt for `resume`) to
    /// `config.epochs` epochs.
    pub fn run(
        &self,
        model: &mut dyn Variant,
        resume: Option<&Checkpoint>,
    ) -> Result<TrainOutcome> {
        let config = self.config;
        let (mut state, mut rng) = match resume {
            Some(checkpoint) => {
                if checkpoint.meta.kind != CheckpointKind::Training {
                    anyhow::bail!(
                        "cannot resume from a weights-only checkpoint (it has no training state)"
                    );
                }
                checkpoint.restore_into(model)?;
                let json = checkpoint.meta.trainer_state_json.as_deref().unwrap_or("");
                let state: TrainerState =
                    serde_json::from_str(json).context("invalid `trainer_state` metadata")?;
                let n_batches = self
                    .data
                    .train
                    .batches(config.batch_size, None)?
                    .drop_last(config.data.drop_last)
                    .len();
                state
                    .check_resumable(&checkpoint.meta, n_batches, config)
                    .with_context(|| format!("{}", self.run_dir.join(LAST_CHECKPOINT).display()))?;
                (state, checkpoint.trainer_rng()?)
            }
            None => (
                TrainerState::default(),
                SeededRng::new(config.seed).fork(TRAIN_STREAM),
            ),
        };
        let root = self.group.is_root();
        // Several processes: each variant says how it splits the work.
        let parallelism = match self.group.size() {
            1 => None,
            _ => Some(model.join_group(self.group.clone())?),
        };
        let log = MetricsLog::new(self.run_dir);
        if root {
            log.truncate_to(state.epochs_done)?;
        }
        let mut last_good = resume.map(|c| {
            (
                self.run_dir.join(LAST_CHECKPOINT),
                c.meta.epoch,
                c.meta.step,
            )
        });
        let progress = Progress::new(
            self.progress,
            config.epochs,
            state.epochs_done,
            self.log_every,
        );
        let checkpointer = self.checkpointer();
        let baseline_rss_bytes = crate::memory::current_rss_bytes();
        let memory = crate::memory::PeakSampler::start();
        let device_memory = if config.device == crate::device::DeviceChoice::Cuda {
            let sampler = crate::memory::DeviceMemorySampler::start_nvidia_smi();
            if sampler.is_none() {
                tracing::warn!("peak device memory is not measured: nvidia-smi could not be run");
            }
            sampler
        } else {
            None
        };
        let mut last_epoch = None;
        // The schedule's factor of the latest step (for the metrics).
        let mut lr_factor = 1.0;

        while state.epochs_done < config.epochs {
            let epoch = state.epochs_done;
            model.begin_epoch(epoch)?;
            let batches = self
                .data
                .train
                .batches(config.batch_size, Some((config.seed, epoch as u64)))?
                .drop_last(config.data.drop_last);
            let n_batches = batches.len();
            // Every epoch has the same batches, so the run has this many steps.
            let total_steps = (n_batches * config.epochs) as u64;
            progress.start_epoch(n_batches, state.batch_in_epoch);
            for (index, batch) in batches.enumerate().skip(state.batch_in_epoch) {
                let (images, labels) = batch?;
                if !config.lr_schedule.is_constant() {
                    let factor = config.lr_schedule.factor(state.step + 1, total_steps);
                    model.set_lr_factor(factor)?;
                    lr_factor = factor;
                }
                let rows = labels.dim(0)?;
                // Data parallel: this process's rows, and the generator
                // drawing one process's numbers for them.
                let (step_images, step_labels, shard) = match parallelism {
                    Some(Parallelism::Data) => {
                        let (rank, size) = (self.group.rank(), self.group.size());
                        if rows < size {
                            anyhow::bail!(
                                "a minibatch of {rows} images cannot be shared by {size} \
                                 processes: use a larger batch_size, data.drop_last = true, or \
                                 fewer processes"
                            );
                        }
                        let shard = RowShard::of(rows, rank, size);
                        (
                            images.narrow(0, shard.start, shard.len)?,
                            labels.narrow(0, shard.start, shard.len)?,
                            Some(shard),
                        )
                    }
                    _ => (images.clone(), labels.clone(), None),
                };
                let started = Instant::now();
                rng.set_row_shard(shard);
                let report = model.train_step(&step_images, &step_labels, &mut rng);
                rng.set_row_shard(None);
                let report = report?;
                let seconds = started.elapsed().as_secs_f64();
                state.step += 1;
                if !report.loss.is_finite() {
                    progress.finish();
                    return Err(NonFiniteLoss {
                        loss: report.loss,
                        epoch: epoch + 1,
                        step: state.step,
                        last_good,
                    }
                    .into());
                }
                state.batch_in_epoch += 1;
                state.totals.add_step(&report, rows, seconds);
                let every = config.train_accuracy_every;
                // Every n-th batch, and the last one, so short epochs report
                // too; not between the syncs of a model-parallel run (each
                // process holds only its share of the model up to date).
                if every > 0
                    && ((index + 1) % every == 0 || index + 1 == n_batches)
                    && parallelism != Some(Parallelism::Model)
                {
                    let started = Instant::now();
                    let settings = self.train_accuracy_settings(step_labels.dim(0)?);
                    let mut acc_rng = SeededRng::new(config.seed)
                        .fork(TRAIN_ACCURACY_STREAM.wrapping_add(state.step));
                    let scored = noprop_core::inference::evaluate(
                        model,
                        &step_images,
                        &step_labels,
                        &settings,
                        &mut acc_rng,
                    )?;
                    // Data parallel: every process's rows counted.
                    let mut counts = [scored.correct_per_run[0] as f64, scored.total as f64];
                    self.group.sum_f64(&mut counts)?;
                    let (correct, n) = (counts[0] as u64, counts[1] as u64);
                    state
                        .totals
                        .add_accuracy(correct, n, started.elapsed().as_secs_f64());
                }
                progress.batch(report.loss, state.totals.train_accuracy(), rows);
                let stop = self.agreed_stop()?;
                if checkpointer.save_within_epoch(state.step, stop) {
                    model.sync_group()?;
                    if root {
                        let path = self.save(model, &state, &rng, false)?;
                        last_good = Some((path, state.epochs_done, state.step));
                    }
                }
                if stop {
                    progress.finish();
                    return Ok(TrainOutcome::Interrupted { state });
                }
            }

            let train_peak_rss_bytes = memory.take_peak();
            let train_peak_device_bytes = device_memory.as_ref().and_then(|d| d.take_peak());
            // Every process holds the whole model from here (model
            // parallel); rank 0 evaluates, the others only close the epoch.
            model.sync_group()?;
            let evaluated = match root {
                true => self.finish_epoch(model, &mut state, &progress, lr_factor)?,
                false => {
                    Self::close_epoch_unevaluated(&mut state);
                    None
                }
            };
            // Rank 0 stopped during its evaluation: every process stops.
            let stopped = self.flag_of_root(root && evaluated.is_none())?;
            if stopped {
                // Stopped during the evaluation: the epoch's steps are saved
                // (batch_in_epoch = n_batches), so a resume only evaluates.
                progress.finish();
                if root {
                    self.save(model, &state, &rng, false)?;
                }
                return Ok(TrainOutcome::Interrupted { state });
            }
            // Rank 0: the epoch's metrics and checkpoint.
            if let Some(mut metrics) = evaluated {
                metrics.memory = crate::memory::MemoryUsage {
                    train_peak_rss_bytes,
                    eval_peak_rss_bytes: memory.take_peak(),
                    baseline_rss_bytes,
                    train_peak_device_bytes,
                    eval_peak_device_bytes: device_memory.as_ref().and_then(|d| d.take_peak()),
                };
                log.append(&metrics)?;
                let path = self.save(model, &state, &rng, metrics.best)?;
                last_good = Some((path, state.epochs_done, state.step));
                progress.finish_epoch(&summary_line(&metrics, config.epochs));
                last_epoch = Some(Box::new(metrics));
            }
            if self.agreed_stop()? && state.epochs_done < config.epochs {
                progress.finish();
                return Ok(TrainOutcome::Interrupted { state });
            }
        }
        progress.finish();
        Ok(TrainOutcome::Completed { state, last_epoch })
    }

    /// Evaluates, updates the best score and closes the epoch's sums;
    /// `None`, with `state` unchanged, when a stop was requested during the
    /// evaluation.
    fn finish_epoch(
        &self,
        model: &dyn Variant,
        state: &mut TrainerState,
        progress: &Progress,
        lr_factor: f64,
    ) -> Result<Option<EpochMetrics>> {
        let config = self.config;
        let variant_config = model.config_json()?;
        let (settings, used) = epoch_eval_settings(config, model.name(), &variant_config);
        let epoch = state.epochs_done + 1;
        let mut metrics = EpochMetrics::from_totals(epoch, state.step, &state.totals);
        // Each split from the same evaluation stream; None on a stop request.
        let evaluate_split = |name: &str, split: &Split| {
            progress.start_eval(name, split.len());
            let mut rng = SeededRng::new(config.seed).fork(EVAL_STREAM);
            let stop = || self.stop_requested();
            evaluate_unless_stopped(model, split, &settings, &mut rng, Some(progress), &stop)
        };
        let mut eval_seconds = 0.0;
        if let Some(validation) = self.data.validation {
            let Some(evaluation) = evaluate_split("validation", validation)? else {
                return Ok(None);
            };
            metrics.validation_accuracy = Some(evaluation.fraction());
            eval_seconds += evaluation.seconds;
        }
        let Some(evaluation) = evaluate_split("test", self.data.test)? else {
            return Ok(None);
        };
        metrics.test_accuracy = evaluation.fraction();
        metrics.test_images = Some(evaluation.accuracy.total);
        metrics.eval_settings = Some(used);
        if settings.runs > 1 {
            metrics.test_run_accuracies = Some(evaluation.accuracy.per_run());
            metrics.test_ensemble_accuracy = Some(evaluation.accuracy.ensemble());
        }
        eval_seconds += evaluation.seconds;
        metrics.eval_seconds = eval_seconds;
        // The configured rate times the schedule's factor of the last step.
        metrics.learning_rate = variant_config
            .get("lr")
            .and_then(|v| v.as_f64())
            .map(|lr| lr * lr_factor);

        if let Some(best) =
            self.checkpointer()
                .new_best(state.best.as_ref(), epoch, metrics.validation_accuracy)
        {
            state.best = Some(best);
            metrics.best = true;
        }
        state.epochs_done = epoch;
        state.batch_in_epoch = 0;
        state.totals = EpochTotals::default();
        Ok(Some(metrics))
    }

    /// The processes other than rank 0 close an epoch without evaluating.
    fn close_epoch_unevaluated(state: &mut TrainerState) {
        state.epochs_done += 1;
        state.batch_in_epoch = 0;
        state.totals = EpochTotals::default();
    }

    /// Inference for the train-accuracy measurement: one run, few ODE
    /// steps, the batch at once.
    fn train_accuracy_settings(&self, batch: usize) -> InferenceSettings {
        InferenceSettings {
            options: InferenceOptions {
                steps: Some(self.config.train_accuracy_steps),
                solver: self.config.eval.solver,
                deterministic: self.config.eval.deterministic,
            },
            runs: 1,
            batch_size: batch.max(1),
        }
    }

    /// The run's checkpoint policy.
    fn checkpointer(&self) -> Checkpointer<'_> {
        Checkpointer::new(self.run_dir, self.config.save_every_steps)
    }

    /// Whether a stop (Ctrl-C) was requested.
    fn stop_requested(&self) -> bool {
        self.stop.is_some_and(|s| s.load(Ordering::SeqCst))
    }

    /// Whether a stop was requested of any process (every process calls it
    /// at the same points, so all stop after the same step).
    fn agreed_stop(&self) -> Result<bool> {
        let mut any = [f64::from(u8::from(self.stop_requested()))];
        self.group.sum_f64(&mut any)?;
        Ok(any[0] > 0.0)
    }

    /// Rank 0's `flag`, on every process.
    fn flag_of_root(&self, flag: bool) -> Result<bool> {
        if self.group.size() == 1 {
            return Ok(flag);
        }
        Ok(self.group.broadcast_bytes(0, &[u8::from(flag)])? == [1])
    }

    /// The checkpoint metadata for the current state.
    fn meta(&self, model: &dyn Variant, state: &TrainerState) -> Result<CheckpointMeta> {
        Ok(CheckpointMeta {
            kind: CheckpointKind::Training,
            variant: model.name().to_string(),
            config_json: self.config.to_json()?,
            variant_config_json: model.config_json()?.to_string(),
            crate_version: env!("CARGO_PKG_VERSION").to_string(),
            epoch: state.epochs_done,
            step: state.step,
            dataset: self.data.dataset.name().to_string(),
            spec: self.data.spec,
            normalize_mean: self.data.mean.clone(),
            normalize_std: self.data.std.clone(),
            trainer_state_json: Some(serde_json::to_string(state)?),
            class_names: self.data.class_names.clone(),
        })
    }

    /// Saves `last.safetensors` (and `best.safetensors`), returning the
    /// path of the former.
    fn save(
        &self,
        model: &dyn Variant,
        state: &TrainerState,
        rng: &SeededRng,
        best: bool,
    ) -> Result<PathBuf> {
        let checkpoint = Checkpoint::capture(model, self.meta(model, state)?, Some(rng))?;
        let last = self.checkpointer().save(&checkpoint, best)?;
        tracing::debug!(
            epoch = state.epochs_done,
            step = state.step,
            best,
            "checkpoint saved"
        );
        Ok(last)
    }
}

/// `epoch 2/5: loss 0.1234 (ce 0.1, ...), train 95.10%, test 96.20%, 12.3 s + eval 1.2 s`.
pub fn summary_line(m: &EpochMetrics, epochs: usize) -> String {
    let pct = |x: Option<f64>| x.map_or("-".into(), |a| format!("{:.2}%", 100.0 * a));
    let terms: Vec<String> = m
        .train_terms
        .iter()
        .map(|(k, v)| format!("{k} {v:.4}"))
        .collect();
    let mut line = format!("epoch {}/{epochs}: loss {:.4}", m.epoch, m.train_loss);
    if !terms.is_empty() {
        line += &format!(" ({})", terms.join(", "));
    }
    line += &format!(", train acc {}", pct(m.train_accuracy));
    if m.validation_accuracy.is_some() {
        line += &format!(", validation {}", pct(m.validation_accuracy));
    }
    line += &format!(
        ", test {}, {:.1} s train + {:.1} s eval{}",
        pct(Some(m.test_accuracy)),
        m.train_seconds,
        m.eval_seconds,
        if m.best { " (best)" } else { "" }
    );
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{blob_spec, blobs, LinearSoftmax, Scripted};
    use candle_core::Device;
    use std::collections::BTreeMap;

    fn config(epochs: usize) -> RunConfig {
        RunConfig {
            variant: crate::testing::TEST_VARIANT.into(),
            epochs,
            batch_size: 16,
            train_accuracy_every: 2,
            seed: 5,
            ..RunConfig::default()
        }
    }

    struct Fixture {
        train: Split,
        test: Split,
    }

    impl Fixture {
        fn new() -> Self {
            // 90 images in batches of 16: 6 batches, the last one of 10.
            Self {
                train: blobs(90, 1),
                test: blobs(60, 2),
            }
        }

        fn trainer<'a>(
            &'a self,
            config: &'a RunConfig,
            dir: &'a Path,
            stop: Option<&'a AtomicBool>,
        ) -> Trainer<'a> {
            Trainer {
                config,
                run_dir: dir,
                data: RunData {
                    train: &self.train,
                    validation: None,
                    test: &self.test,
                    dataset: DatasetKind::Mnist,
                    spec: blob_spec(),
                    mean: vec![0.0],
                    std: vec![1.0],
                    class_names: None,
                },
                stop,
                progress: false,
                log_every: std::time::Duration::ZERO,
                group: Default::default(),
            }
        }
    }

    fn model() -> LinearSoftmax {
        LinearSoftmax::new(blob_spec(), 5, &Device::Cpu).unwrap()
    }

    /// Every tensor of a checkpoint file as raw f32/u32 bit patterns.
    fn tensor_bits(path: &Path) -> BTreeMap<String, Vec<u32>> {
        let checkpoint = Checkpoint::load(path, &Device::Cpu).unwrap();
        checkpoint.bit_patterns().unwrap()
    }

    /// The metrics lines without what a machine measures (times, memory).
    fn metrics_without_times(dir: &Path) -> Vec<EpochMetrics> {
        MetricsLog::new(dir)
            .read()
            .unwrap()
            .into_iter()
            .map(|mut m| {
                m.train_seconds = 0.0;
                m.train_accuracy_seconds = 0.0;
                m.eval_seconds = 0.0;
                m.images_per_second = 0.0;
                m.timestamp.clear();
                m.memory = Default::default();
                m
            })
            .collect()
    }

    #[test]
    fn training_learns_and_writes_metrics_and_checkpoints() {
        let fx = Fixture::new();
        let dir = tempfile::tempdir().unwrap();
        let config = config(2);
        let mut m = model();
        let outcome = fx
            .trainer(&config, dir.path(), None)
            .run(&mut m, None)
            .unwrap();
        let TrainOutcome::Completed { state, last_epoch } = outcome else {
            panic!("not completed: {outcome:?}")
        };
        assert_eq!((state.epochs_done, state.step), (2, 12));
        let lines = MetricsLog::new(dir.path()).read().unwrap();
        assert_eq!(lines.len(), 2);
        // (JSON does not round-trip every float exactly: compare the exact fields.)
        let last_epoch = last_epoch.unwrap();
        assert_eq!(
            (lines[1].epoch, lines[1].step),
            (last_epoch.epoch, last_epoch.step)
        );
        assert_eq!(lines[1].test_accuracy, last_epoch.test_accuracy);
        assert_eq!((lines[0].epoch, lines[0].step), (1, 6));
        // Batches 2, 4 and 6 (the last) of each epoch are measured: 16 + 16 + 10 images.
        assert_eq!(lines[0].train_accuracy_images, 42);
        // Three well-separated blobs: far above the 1/3 of chance.
        assert!(lines[1].test_accuracy > 0.9, "{lines:?}");
        assert_eq!(lines[1].learning_rate, Some(0.05));
        assert!(lines[0].train_terms.contains_key("ce"));
        assert!(dir.path().join(LAST_CHECKPOINT).is_file());
        // No validation split: no model is selected (on the test set).
        assert!(!dir.path().join(BEST_CHECKPOINT).exists());
        assert!(state.best.is_none() && lines.iter().all(|l| !l.best));
        let meta = Checkpoint::read_meta(&dir.path().join(LAST_CHECKPOINT)).unwrap();
        assert_eq!(
            (meta.epoch, meta.step, meta.kind),
            (2, 12, CheckpointKind::Training)
        );
    }

    #[test]
    fn resuming_is_bitwise_identical_to_an_uninterrupted_run() {
        let fx = Fixture::new();
        let two = config(2);
        let straight = tempfile::tempdir().unwrap();
        fx.trainer(&two, straight.path(), None)
            .run(&mut model(), None)
            .unwrap();

        // Stopped at an epoch boundary: train 1 epoch, then resume to 2.
        let split = tempfile::tempdir().unwrap();
        let one = config(1);
        fx.trainer(&one, split.path(), None)
            .run(&mut model(), None)
            .unwrap();
        let checkpoint =
            Checkpoint::load(&split.path().join(LAST_CHECKPOINT), &Device::Cpu).unwrap();
        let mut fresh = LinearSoftmax::new(blob_spec(), 77, &Device::Cpu).unwrap();
        fx.trainer(&two, split.path(), None)
            .run(&mut fresh, Some(&checkpoint))
            .unwrap();

        // Stopped mid-epoch (Ctrl-C during step 8, the 2nd batch of epoch 2).
        let interrupted = tempfile::tempdir().unwrap();
        let stop = AtomicBool::new(false);
        let mut scripted = Scripted::new(model());
        scripted.stop_at = Some((8, &stop));
        let outcome = fx
            .trainer(&two, interrupted.path(), Some(&stop))
            .run(&mut scripted, None)
            .unwrap();
        let TrainOutcome::Interrupted { state } = outcome else {
            panic!("not interrupted: {outcome:?}")
        };
        assert_eq!(
            (state.epochs_done, state.batch_in_epoch, state.step),
            (1, 2, 8)
        );
        let checkpoint =
            Checkpoint::load(&interrupted.path().join(LAST_CHECKPOINT), &Device::Cpu).unwrap();
        fx.trainer(&two, interrupted.path(), None)
            .run(&mut model(), Some(&checkpoint))
            .unwrap();

        let expected = tensor_bits(&straight.path().join(LAST_CHECKPOINT));
        assert!(
            expected.contains_key("optim.velocity.head.weight")
                && expected.contains_key(noprop_checkpoint::RNG_TENSOR)
        );
        assert_eq!(tensor_bits(&split.path().join(LAST_CHECKPOINT)), expected);
        assert_eq!(
            tensor_bits(&interrupted.path().join(LAST_CHECKPOINT)),
            expected
        );
        let metrics = metrics_without_times(straight.path());
        assert_eq!(metrics_without_times(split.path()), metrics);
        assert_eq!(metrics_without_times(interrupted.path()), metrics);

        // A different seed gives different weights: the comparison can fail.
        let other = tempfile::tempdir().unwrap();
        let mut reseeded = config(2);
        reseeded.seed = 6;
        fx.trainer(&reseeded, other.path(), None)
            .run(&mut model(), None)
            .unwrap();
        assert_ne!(tensor_bits(&other.path().join(LAST_CHECKPOINT)), expected);
    }

    /// A cosine schedule with warm-up: the model is given the schedule's
    /// factor before every step (computed over the run's 12 steps), the
    /// metrics report the rate in use, and a run interrupted mid-epoch
    /// resumes bitwise, schedule included.
    #[test]
    fn the_lr_schedule_reaches_every_step_and_resumes_exactly() {
        let fx = Fixture::new();
        let mut cosine = config(2);
        cosine.lr_schedule = noprop_core::LrSchedule {
            kind: noprop_core::LrScheduleKind::Cosine,
            warmup_steps: 3,
            min_factor: 0.1,
        };
        let straight = tempfile::tempdir().unwrap();
        let mut m = model();
        fx.trainer(&cosine, straight.path(), None)
            .run(&mut m, None)
            .unwrap();
        let want: Vec<f64> = (1..=12).map(|k| cosine.lr_schedule.factor(k, 12)).collect();
        assert_eq!(m.lr_factors_seen, want);
        assert_eq!(&want[..4], &[1.0 / 3.0, 2.0 / 3.0, 1.0, 1.0]);
        let lines = MetricsLog::new(straight.path()).read().unwrap();
        assert_eq!(lines[0].learning_rate, Some(0.05 * want[5]));
        assert_eq!(lines[1].learning_rate, Some(0.05 * want[11]));

        let interrupted = tempfile::tempdir().unwrap();
        let stop = AtomicBool::new(false);
        let mut scripted = Scripted::new(model());
        scripted.stop_at = Some((8, &stop));
        fx.trainer(&cosine, interrupted.path(), Some(&stop))
            .run(&mut scripted, None)
            .unwrap();
        let checkpoint =
            Checkpoint::load(&interrupted.path().join(LAST_CHECKPOINT), &Device::Cpu).unwrap();
        let mut resumed = model();
        fx.trainer(&cosine, interrupted.path(), None)
            .run(&mut resumed, Some(&checkpoint))
            .unwrap();
        assert_eq!(resumed.lr_factors_seen, &want[8..]);
        let expected = tensor_bits(&straight.path().join(LAST_CHECKPOINT));
        assert_eq!(
            tensor_bits(&interrupted.path().join(LAST_CHECKPOINT)),
            expected
        );

        // The schedule changes the weights (the comparison can fail), and
        // the constant default never calls the model.
        let constant = tempfile::tempdir().unwrap();
        let mut m = model();
        fx.trainer(&config(2), constant.path(), None)
            .run(&mut m, None)
            .unwrap();
        assert!(m.lr_factors_seen.is_empty());
        assert_ne!(
            tensor_bits(&constant.path().join(LAST_CHECKPOINT)),
            expected
        );
    }

    #[test]
    fn a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint() {
        let fx = Fixture::new();
        let dir = tempfile::tempdir().unwrap();
        let mut scripted = Scripted::new(model());
        scripted.poison_at = Some(9);
        let err = fx
            .trainer(&config(3), dir.path(), None)
            .run(&mut scripted, None)
            .unwrap_err();
        let nan = err
            .downcast_ref::<NonFiniteLoss>()
            .expect("a NonFiniteLoss error");
        assert!(nan.loss.is_nan());
        assert_eq!((nan.epoch, nan.step), (2, 9));
        let last = dir.path().join(LAST_CHECKPOINT);
        assert_eq!(nan.last_good, Some((last.clone(), 1, 6)));
        let message = err.to_string();
        assert!(
            message.contains("NaN") && message.contains("last.safetensors"),
            "{message}"
        );
        // The checkpoint on disk is still the one of epoch 1, and finite.
        let meta = Checkpoint::read_meta(&last).unwrap();
        assert_eq!((meta.epoch, meta.step), (1, 6));
        let weights = tensor_bits(&last)["head.weight"].clone();
        assert!(weights.iter().all(|b| f32::from_bits(*b).is_finite()));
        assert_eq!(MetricsLog::new(dir.path()).read().unwrap().len(), 1);
    }

    #[test]
    fn a_validation_split_chooses_the_best_checkpoint() {
        let fx = Fixture::new();
        let validation = blobs(30, 3);
        let dir = tempfile::tempdir().unwrap();
        let config = config(1);
        let mut trainer = fx.trainer(&config, dir.path(), None);
        trainer.data.validation = Some(&validation);
        let TrainOutcome::Completed { state, last_epoch } =
            trainer.run(&mut model(), None).unwrap()
        else {
            panic!("not completed")
        };
        let best = state.best.unwrap();
        assert_eq!(best.split, "validation");
        assert_eq!(Some(best.accuracy), last_epoch.unwrap().validation_accuracy);
    }
}
