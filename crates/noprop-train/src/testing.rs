//! Test support: seeded synthetic data, and a model wrapper that scripts
//! events, on top of core's test model ([`LinearSoftmax`]).

use std::collections::HashMap;

use candle_core::{Device, Result, Tensor};
pub use noprop_core::testing::{blob_spec, fuzz_mutants, Below, LinearSoftmax, TEST_VARIANT};
use noprop_core::{InferenceOptions, ModelSpec, ParamStore, SeededRng, StepReport, Variant};
use noprop_data::Split;

/// `n` images of three Gaussian blobs (class means drawn once from seed 99,
/// unit noise), seeded, so a linear classifier separates them well.
pub fn blobs(n: usize, seed: u64) -> Split {
    let spec = blob_spec();
    let d = spec.image_dim();
    let mut means_rng = SeededRng::new(99);
    let means: Vec<Vec<f32>> = (0..spec.num_classes)
        .map(|_| {
            means_rng
                .normal_vec(d)
                .into_iter()
                .map(|x| 2.0 * x)
                .collect()
        })
        .collect();
    let mut rng = SeededRng::new(seed);
    let mut pixels = Vec::with_capacity(n * d);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let class = i % spec.num_classes;
        labels.push(class as u32);
        pixels.extend(means[class].iter().map(|m| m + rng.normal_f32()));
    }
    let images = Tensor::from_vec(pixels, (n, 1, 4, 4), &Device::Cpu).expect("shape matches");
    let labels = Tensor::from_vec(labels, n, &Device::Cpu).expect("shape matches");
    Split::new(images, labels).expect("valid split")
}

/// Wraps a model to simulate events at given steps (counted from 1 in this
/// process): Ctrl-C arriving during a step (`stop_at`) and a batch that
/// makes the loss NaN (`poison_at`: the images are replaced by NaN, so the
/// model's own computation yields the NaN).
pub struct Scripted<'a> {
    pub inner: LinearSoftmax,
    pub stop_at: Option<(u64, &'a std::sync::atomic::AtomicBool)>,
    pub poison_at: Option<u64>,
    pub steps: u64,
}

impl<'a> Scripted<'a> {
    pub fn new(inner: LinearSoftmax) -> Self {
        Self {
            inner,
            stop_at: None,
            poison_at: None,
            steps: 0,
        }
    }
}

impl Variant for Scripted<'_> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn spec(&self) -> ModelSpec {
        self.inner.spec()
    }
    fn train_step(
        &mut self,
        images: &Tensor,
        labels: &Tensor,
        rng: &mut SeededRng,
    ) -> Result<StepReport> {
        self.steps += 1;
        if let Some((at, flag)) = self.stop_at {
            if at == self.steps {
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        if self.poison_at == Some(self.steps) {
            let nan = (images.ones_like()? * f64::NAN)?;
            return self.inner.train_step(&nan, labels, rng);
        }
        self.inner.train_step(images, labels, rng)
    }
    fn predict_runs(
        &self,
        images: &Tensor,
        options: &InferenceOptions,
        runs: usize,
        rng: &mut SeededRng,
    ) -> Result<Vec<Tensor>> {
        self.inner.predict_runs(images, options, runs, rng)
    }
    fn set_lr_factor(&mut self, factor: f64) -> Result<()> {
        self.inner.set_lr_factor(factor)
    }
    fn params(&self) -> &ParamStore {
        self.inner.params()
    }
    fn optimizer_state(&self) -> Result<Vec<(String, Tensor)>> {
        self.inner.optimizer_state()
    }
    fn load_optimizer_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        self.inner.load_optimizer_state(state)
    }
    fn config_json(&self) -> Result<serde_json::Value> {
        self.inner.config_json()
    }
}
