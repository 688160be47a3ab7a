//! How fast the device trains (images per second over timed steps) and
//! infers (median latency of a batch of 1 and of a full batch). The device
//! is synchronised before every reading of the clock: device work is
//! queued, and a time without it would measure only the launches.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use noprop_core::stats::median;
use noprop_core::{InferenceOptions, SeededRng, Variant};
use serde::Serialize;

use crate::train::EVAL_STREAM;

/// Training speed on the device.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Throughput {
    /// Timed steps (after one warm-up step).
    pub steps: usize,
    pub batch_size: usize,
    pub seconds: f64,
    pub images_per_second: f64,
    /// The loss of every timed step.
    pub losses: Vec<f64>,
}

/// Inference latency on the device.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Latency {
    /// ODE steps (CT, FM); `None` for DT (always its T blocks).
    pub ode_steps: Option<usize>,
    /// Timed calls per batch size (after one warm-up call each).
    pub runs: usize,
    pub batch_size: usize,
    /// Median milliseconds per call, batch of 1.
    pub ms_batch_1: f64,
    /// Median milliseconds per call, batch of `batch_size`.
    pub ms_batch: f64,
    /// Every timing (ms), batch of 1 then batch of `batch_size`.
    pub all_ms_batch_1: Vec<f64>,
    pub all_ms_batch: Vec<f64>,
}

/// One warm-up step on the first batch, then one timed step on each of the
/// others.
pub fn measure_throughput(
    model: &mut dyn Variant,
    batches: &[(Tensor, Tensor)],
    rng: &mut SeededRng,
    device: &Device,
) -> Result<Throughput> {
    let ((warm_images, warm_labels), timed) =
        batches.split_first().context("no training batch to time")?;
    model.train_step(warm_images, warm_labels, rng)?;
    device.synchronize()?;
    let mut losses = Vec::with_capacity(timed.len());
    let mut images = 0;
    let started = Instant::now();
    for (x, y) in timed {
        losses.push(model.train_step(x, y, rng)?.loss);
        images += x.dim(0)?;
    }
    device.synchronize()?;
    let seconds = started.elapsed().as_secs_f64();
    if let Some(loss) = losses.iter().find(|l| !l.is_finite()) {
        bail!("the training loss became {loss} on the device");
    }
    Ok(Throughput {
        steps: timed.len(),
        batch_size: warm_images.dim(0)?,
        seconds,
        images_per_second: images as f64 / seconds.max(1e-9),
        losses,
    })
}

/// Median inference time on the first image and on all of `images`.
pub fn measure_latency(
    model: &dyn Variant,
    images: &Tensor,
    options: &InferenceOptions,
    runs: usize,
    seed: u64,
    device: &Device,
) -> Result<Latency> {
    let mut rng = SeededRng::new(seed).fork(EVAL_STREAM);
    let mut time = |x: &Tensor| -> Result<Vec<f64>> {
        model.predict_runs(x, options, 1, &mut rng)?;
        device.synchronize()?;
        (0..runs)
            .map(|_| {
                let started = Instant::now();
                model.predict_runs(x, options, 1, &mut rng)?;
                device.synchronize()?;
                Ok(1000.0 * started.elapsed().as_secs_f64())
            })
            .collect()
    };
    let all_ms_batch_1 = time(&images.narrow(0, 0, 1)?)?;
    let all_ms_batch = time(images)?;
    Ok(Latency {
        ode_steps: options.steps,
        runs,
        batch_size: images.dim(0)?,
        ms_batch_1: median(&all_ms_batch_1),
        ms_batch: median(&all_ms_batch),
        all_ms_batch_1,
        all_ms_batch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{blob_spec, blobs, LinearSoftmax};

    #[test]
    fn throughput_and_latency_time_the_device() {
        let spec = blob_spec();
        let mut model = LinearSoftmax::new(spec, 1, &Device::Cpu).unwrap();
        let split = blobs(24, 1);
        let b = (split.images().clone(), split.labels().clone());
        let batches = vec![b.clone(), b.clone(), b.clone()];
        let mut rng = SeededRng::new(0);
        let t = measure_throughput(&mut model, &batches, &mut rng, &Device::Cpu).unwrap();
        assert_eq!((t.steps, t.batch_size, t.losses.len()), (2, 24, 2));
        assert!(t.images_per_second > 0.0 && t.seconds > 0.0, "{t:?}");
        let options = InferenceOptions::default();
        let l = measure_latency(&model, &b.0, &options, 3, 0, &Device::Cpu).unwrap();
        assert_eq!((l.runs, l.batch_size), (3, 24));
        assert_eq!((l.all_ms_batch_1.len(), l.all_ms_batch.len()), (3, 3));
        assert_eq!(l.ms_batch, median(&l.all_ms_batch));
    }
}
