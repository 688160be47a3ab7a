//! Inference over many images, once for every variant: batching, several
//! stochastic runs, their ensemble, and accuracy.
//!
//! A variant answers for one batch ([`Variant::predict_runs`]: each run's
//! class probabilities `[B, m]`); this module splits N images into batches
//! of [`InferenceSettings::batch_size`] (batch after batch, run after run
//! within a batch: the order of the random draws), and scores the result
//! two ways, which must not be confused:
//!
//! - **single runs**: run r's accuracy is the fraction of images whose
//!   argmax of run r's probabilities is the label. The paper reports the
//!   mean (and spread) of 5 single runs.
//! - **ensemble**: the argmax of the probabilities averaged over the runs,
//!   scored once; usually higher than any single run.

use std::ops::ControlFlow;

use candle_core::{DType, Tensor};

use crate::rng::SeededRng;
use crate::variant::{InferenceOptions, Variant};

/// Images per inference batch unless a caller says otherwise: the image
/// features of 500 MNIST images are about 0.5 MB per block.
pub const DEFAULT_INFERENCE_BATCH: usize = 500;

/// Everything an inference over many images needs besides the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InferenceSettings {
    /// The variant's own settings (ODE steps, solver, DT determinism).
    pub options: InferenceOptions,
    /// Independent stochastic runs (>= 1).
    pub runs: usize,
    /// Images per batch (>= 1): bounds memory.
    pub batch_size: usize,
}

impl Default for InferenceSettings {
    fn default() -> Self {
        Self {
            options: InferenceOptions::default(),
            runs: 1,
            batch_size: DEFAULT_INFERENCE_BATCH,
        }
    }
}

impl InferenceSettings {
    /// One run, the model's defaults, batches of [`DEFAULT_INFERENCE_BATCH`].
    pub fn new(options: InferenceOptions) -> Self {
        Self {
            options,
            ..Self::default()
        }
    }

    /// With `runs` runs.
    pub fn with_runs(mut self, runs: usize) -> Self {
        self.runs = runs;
        self
    }

    /// With batches of `batch_size` images.
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size;
        self
    }

    fn check(&self) -> candle_core::Result<()> {
        if self.runs == 0 {
            candle_core::bail!("inference: runs must be at least 1");
        }
        if self.batch_size == 0 {
            candle_core::bail!("inference: the batch size must be at least 1");
        }
        Ok(())
    }
}

/// Each run's class probabilities (`runs` tensors `[N, m]`) for `images`
/// `[N, C, H, W]`, in batches.
pub fn predict_runs(
    model: &dyn Variant,
    images: &Tensor,
    settings: &InferenceSettings,
    rng: &mut SeededRng,
) -> candle_core::Result<Vec<Tensor>> {
    settings.check()?;
    let n = model.spec().check_images(images, model.name())?;
    // per_batch[b][r]: run r's probabilities on batch b.
    let mut per_batch = Vec::with_capacity(n.div_ceil(settings.batch_size));
    let mut start = 0;
    while start < n {
        let len = settings.batch_size.min(n - start);
        let x = images.narrow(0, start, len)?;
        let runs = model.predict_runs(&x, &settings.options, settings.runs, rng)?;
        if runs.len() != settings.runs {
            candle_core::bail!(
                "{}: asked for {} inference runs, got {}",
                model.name(),
                settings.runs,
                runs.len()
            );
        }
        per_batch.push(runs);
        start += len;
    }
    (0..settings.runs)
        .map(|r| {
            let parts: Vec<&Tensor> = per_batch.iter().map(|b| &b[r]).collect();
            Tensor::cat(&parts, 0)
        })
        .collect()
}

/// The ensemble of several runs: their probabilities averaged (`[N, m]`).
pub fn ensemble(per_run: &[Tensor]) -> candle_core::Result<Tensor> {
    let Some((first, rest)) = per_run.split_first() else {
        candle_core::bail!("inference: an ensemble needs at least one run");
    };
    if rest.is_empty() {
        return Ok(first.clone());
    }
    let mut sum = first.clone();
    for p in rest {
        sum = (sum + p)?;
    }
    sum / per_run.len() as f64
}

/// The ensemble's class probabilities `[N, m]` (one run: that run's).
pub fn predict_proba(
    model: &dyn Variant,
    images: &Tensor,
    settings: &InferenceSettings,
    rng: &mut SeededRng,
) -> candle_core::Result<Tensor> {
    ensemble(&predict_runs(model, images, settings, rng)?)
}

/// Number of rows of `probs` `[N, m]` whose argmax equals `labels` `[N]`.
pub fn count_correct(probs: &Tensor, labels: &Tensor) -> candle_core::Result<u64> {
    let hits = probs
        .argmax(1)?
        .eq(&labels.to_dtype(DType::U32)?)?
        .to_dtype(DType::U32)?
        .sum_all()?
        .to_scalar::<u32>()?;
    Ok(u64::from(hits))
}

/// Correct predictions of each single run and of their ensemble, out of a
/// number of images. Sums over batches with [`RunAccuracy::add`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunAccuracy {
    /// Correct predictions of each run.
    pub correct_per_run: Vec<u64>,
    /// Correct predictions of the ensemble (the averaged probabilities).
    pub ensemble_correct: u64,
    /// Images scored.
    pub total: u64,
    /// `confusion[label][predicted]`: predictions of the single runs,
    /// summed over the runs (`total` x runs in all), so its diagonal gives
    /// the per-class accuracy of the mean single run, the paper's protocol.
    /// Empty when nothing was scored.
    pub confusion: Vec<Vec<u64>>,
}

impl RunAccuracy {
    /// Scores each run's probabilities and their ensemble against `labels`.
    pub fn score(per_run: &[Tensor], labels: &Tensor) -> candle_core::Result<Self> {
        let classes = match per_run.first() {
            Some(p) => p.dim(1)?,
            None => 0,
        };
        let truth = labels.to_dtype(DType::U32)?.to_vec1::<u32>()?;
        // One argmax per run gives both its correct count and its share of
        // the confusion matrix.
        let mut confusion = vec![vec![0u64; classes]; classes];
        let mut correct_per_run = Vec::with_capacity(per_run.len());
        for p in per_run {
            let predicted = p.argmax(1)?.to_vec1::<u32>()?;
            let mut correct = 0u64;
            for (&label, &guess) in truth.iter().zip(&predicted) {
                let row = confusion.get_mut(label as usize).ok_or_else(|| {
                    candle_core::Error::Msg(format!(
                        "inference: label {label} of a model with {classes} classes"
                    ))
                })?;
                row[guess as usize] += 1;
                correct += u64::from(label == guess);
            }
            correct_per_run.push(correct);
        }
        Ok(Self {
            correct_per_run,
            ensemble_correct: count_correct(&ensemble(per_run)?, labels)?,
            total: labels.dim(0)? as u64,
            confusion,
        })
    }

    /// Each class's accuracy in [0, 1] (the confusion matrix's diagonal over
    /// its rows; None for a class without images).
    pub fn per_class(&self) -> Vec<Option<f64>> {
        self.confusion
            .iter()
            .enumerate()
            .map(|(class, row)| {
                let n: u64 = row.iter().sum();
                (n > 0).then(|| row[class] as f64 / n as f64)
            })
            .collect()
    }

    /// Adds another batch's counts (same number of runs).
    pub fn add(&mut self, other: &RunAccuracy) -> candle_core::Result<()> {
        if self.total == 0 && self.correct_per_run.is_empty() {
            *self = other.clone();
            return Ok(());
        }
        if other.correct_per_run.len() != self.correct_per_run.len() {
            candle_core::bail!(
                "inference: cannot add counts of {} runs to counts of {}",
                other.correct_per_run.len(),
                self.correct_per_run.len()
            );
        }
        for (a, b) in self.correct_per_run.iter_mut().zip(&other.correct_per_run) {
            *a += b;
        }
        self.ensemble_correct += other.ensemble_correct;
        self.total += other.total;
        if self.confusion.is_empty() {
            self.confusion = other.confusion.clone();
        } else if !other.confusion.is_empty() {
            if other.confusion.len() != self.confusion.len() {
                candle_core::bail!(
                    "inference: cannot add a confusion matrix of {} classes to one of {}",
                    other.confusion.len(),
                    self.confusion.len()
                );
            }
            for (a, b) in self.confusion.iter_mut().zip(&other.confusion) {
                for (x, y) in a.iter_mut().zip(b) {
                    *x += y;
                }
            }
        }
        Ok(())
    }

    /// Each run's accuracy in [0, 1].
    pub fn per_run(&self) -> Vec<f64> {
        let n = self.total.max(1) as f64;
        self.correct_per_run.iter().map(|&c| c as f64 / n).collect()
    }

    /// The mean of the single runs' accuracies (the paper's number).
    pub fn mean(&self) -> f64 {
        let per_run = self.per_run();
        per_run.iter().sum::<f64>() / per_run.len().max(1) as f64
    }

    /// The sample standard deviation of the single runs' accuracies (0 for
    /// one run).
    pub fn std(&self) -> f64 {
        let per_run = self.per_run();
        if per_run.len() < 2 {
            return 0.0;
        }
        let mean = self.mean();
        let ss: f64 = per_run.iter().map(|a| (a - mean).powi(2)).sum();
        (ss / (per_run.len() - 1) as f64).sqrt()
    }

    /// The ensemble's accuracy in [0, 1].
    pub fn ensemble(&self) -> f64 {
        self.ensemble_correct as f64 / self.total.max(1) as f64
    }
}

/// Scores `model` on `images` `[N, C, H, W]` against `labels` `[N]`.
pub fn evaluate(
    model: &dyn Variant,
    images: &Tensor,
    labels: &Tensor,
    settings: &InferenceSettings,
    rng: &mut SeededRng,
) -> candle_core::Result<RunAccuracy> {
    let scored = evaluate_with_progress(model, images, labels, settings, rng, &mut |_| {
        ControlFlow::Continue(())
    })?;
    // The callback never breaks.
    scored.ok_or_else(|| candle_core::Error::Msg("the evaluation was stopped".into()))
}

/// [`evaluate`], calling `done(n)` after each batch of n images; `None`
/// when `done` breaks (the caller stops the evaluation, e.g. on Ctrl-C,
/// after the batch in progress).
pub fn evaluate_with_progress(
    model: &dyn Variant,
    images: &Tensor,
    labels: &Tensor,
    settings: &InferenceSettings,
    rng: &mut SeededRng,
    done: &mut dyn FnMut(usize) -> ControlFlow<()>,
) -> candle_core::Result<Option<RunAccuracy>> {
    settings.check()?;
    let n = model.spec().check_batch(images, labels, model.name())?;
    let mut total = RunAccuracy::default();
    let mut start = 0;
    while start < n {
        let len = settings.batch_size.min(n - start);
        let x = images.narrow(0, start, len)?;
        let y = labels.narrow(0, start, len)?;
        let per_run = predict_runs(model, &x, settings, rng)?;
        total.add(&RunAccuracy::score(&per_run, &y)?)?;
        if done(len).is_break() {
            return Ok(None);
        }
        start += len;
    }
    Ok(Some(total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn single_runs_and_the_ensemble_are_scored_apart() {
        let dev = Device::Cpu;
        // Three images, labels 0, 1, 1; two runs.
        let labels = Tensor::new(&[0u32, 1, 1], &dev).unwrap();
        let run_a = Tensor::new(&[[0.9f32, 0.1], [0.6, 0.4], [0.2, 0.8]], &dev).unwrap();
        let run_b = Tensor::new(&[[0.4f32, 0.6], [0.1, 0.9], [0.3, 0.7]], &dev).unwrap();
        let acc = RunAccuracy::score(&[run_a, run_b], &labels).unwrap();
        // By hand: run a gets images 0 and 2 right, run b images 1 and 2;
        // the average [[0.65, 0.35], [0.35, 0.65], [0.25, 0.75]] gets all 3.
        assert_eq!(acc.correct_per_run, vec![2, 2]);
        assert_eq!(acc.ensemble_correct, 3);
        assert!((acc.mean() - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(acc.std(), 0.0);
        assert_eq!(acc.ensemble(), 1.0);
        // Predictions: run a 0, 0, 1; run b 1, 1, 1. Class 0 (image 0): a
        // right, b wrong; class 1 (images 1, 2): a wrong then right, b right
        // twice.
        assert_eq!(acc.confusion, vec![vec![1, 1], vec![1, 3]]);
        assert_eq!(acc.per_class(), vec![Some(0.5), Some(0.75)]);
        // Summed over batches.
        let mut twice = acc.clone();
        twice.add(&acc).unwrap();
        assert_eq!(twice.confusion, vec![vec![2, 2], vec![2, 6]]);
    }

    #[test]
    fn counts_add_over_batches_and_refuse_other_run_counts() {
        let mut a = RunAccuracy {
            correct_per_run: vec![3, 4],
            ensemble_correct: 4,
            total: 5,
            confusion: vec![],
        };
        let b = RunAccuracy {
            correct_per_run: vec![1, 0],
            ensemble_correct: 1,
            total: 2,
            confusion: vec![],
        };
        a.add(&b).unwrap();
        assert_eq!(a.correct_per_run, vec![4, 4]);
        assert_eq!((a.ensemble_correct, a.total), (5, 7));
        // Sample std of 4/7 and 4/7 is 0; of 0.5 and 1.0 it is 0.3536.
        let c = RunAccuracy {
            correct_per_run: vec![1, 2],
            ensemble_correct: 2,
            total: 2,
            confusion: vec![],
        };
        assert!((c.std() - (0.125f64).sqrt()).abs() < 1e-12);
        let three = RunAccuracy {
            correct_per_run: vec![1, 1, 1],
            ensemble_correct: 1,
            total: 1,
            confusion: vec![],
        };
        assert!(a.add(&three).is_err());
    }
}
