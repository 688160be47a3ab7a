//! Test support for the crates above core (feature `testing`; not part of
//! the library's API): a small real model implementing [`Variant`], so that
//! checkpoints and the trainer's machinery (resume, metrics, interruption,
//! NaN stops) are tested independently of the NoProp variants, and a
//! mutation fuzzer for parsers.
//!
//! The model is a linear softmax classifier, logits = x W^T + b, trained by
//! SGD with momentum on the cross-entropy, with Gaussian input noise drawn
//! from the step's generator (so that resuming must restore the generator
//! exactly as well as the momentum buffers).

use std::collections::HashMap;

use candle_core::{DType, Device, Result, Tensor, Var};

use crate::{InferenceOptions, ModelSpec, ParamStore, SeededRng, StepReport, Variant};

/// The name [`LinearSoftmax`] reports (no registered variant has it).
pub const TEST_VARIANT: &str = "linear-softmax";

/// Linear softmax classifier with SGD + momentum.
pub struct LinearSoftmax {
    store: ParamStore,
    weight: Var,
    bias: Var,
    velocity_weight: Tensor,
    velocity_bias: Tensor,
    steps: u32,
    spec: ModelSpec,
    name: &'static str,
    /// Learning rate; public so a test can make training diverge.
    pub lr: f64,
    /// The trainer's schedule factor (`Variant::set_lr_factor`).
    pub lr_factor: f64,
    /// Every factor the trainer set, in order (for the schedule tests).
    pub lr_factors_seen: Vec<f64>,
    momentum: f64,
    input_noise: f32,
}

impl LinearSoftmax {
    /// A fresh model for `spec`, its weights drawn from `SeededRng::new(seed)`.
    pub fn new(spec: ModelSpec, seed: u64, device: &Device) -> Result<Self> {
        let store = ParamStore::new(SeededRng::new(seed));
        let vb = store.var_builder(DType::F32, device);
        let d = spec.image_dim();
        let m = spec.num_classes;
        vb.get_with_hints(
            (m, d),
            "head.weight",
            candle_nn::init::DEFAULT_KAIMING_NORMAL,
        )?;
        vb.get_with_hints(m, "head.bias", candle_nn::Init::Const(0.0))?;
        let weight = store.get("head.weight").expect("just created");
        let bias = store.get("head.bias").expect("just created");
        Ok(Self {
            velocity_weight: weight.zeros_like()?,
            velocity_bias: bias.zeros_like()?,
            store,
            weight,
            bias,
            steps: 0,
            spec,
            name: TEST_VARIANT,
            lr: 0.05,
            lr_factor: 1.0,
            lr_factors_seen: Vec::new(),
            momentum: 0.9,
            input_noise: 0.1,
        })
    }

    /// Pretends to be another variant (for the wrong-variant checks).
    pub fn with_name(mut self, name: &'static str) -> Self {
        self.name = name;
        self
    }

    fn logits(&self, images: &Tensor) -> Result<Tensor> {
        images
            .flatten_from(1)?
            .matmul(&self.weight.as_tensor().t()?)?
            .broadcast_add(self.bias.as_tensor())
    }
}

impl Variant for LinearSoftmax {
    fn name(&self) -> &'static str {
        self.name
    }

    fn spec(&self) -> ModelSpec {
        self.spec
    }

    fn train_step(
        &mut self,
        images: &Tensor,
        labels: &Tensor,
        rng: &mut SeededRng,
    ) -> Result<StepReport> {
        let noise = (rng.normal(images.shape(), images.device())? * self.input_noise as f64)?;
        let logits = self.logits(&(images + noise)?)?;
        let loss = candle_nn::loss::cross_entropy(&logits, labels)?;
        let grads = loss.backward()?;
        for (var, velocity) in [
            (&self.weight, &mut self.velocity_weight),
            (&self.bias, &mut self.velocity_bias),
        ] {
            let g = grads.get(var).expect("the loss depends on every parameter");
            *velocity = ((&*velocity * self.momentum)? + g)?;
            var.set(&(var.as_tensor() - (&*velocity * (self.lr * self.lr_factor))?)?)?;
        }
        self.steps += 1;
        let loss = loss.to_scalar::<f32>()? as f64;
        Ok(StepReport {
            loss,
            terms: vec![("ce".into(), loss)],
        })
    }

    /// Deterministic: every run is the same softmax.
    fn predict_runs(
        &self,
        images: &Tensor,
        _options: &InferenceOptions,
        runs: usize,
        _rng: &mut SeededRng,
    ) -> Result<Vec<Tensor>> {
        let probs = candle_nn::ops::softmax_last_dim(&self.logits(images)?)?;
        Ok(vec![probs; runs])
    }

    fn set_lr_factor(&mut self, factor: f64) -> Result<()> {
        self.lr_factor = factor;
        self.lr_factors_seen.push(factor);
        Ok(())
    }

    fn params(&self) -> &ParamStore {
        &self.store
    }

    fn optimizer_state(&self) -> Result<Vec<(String, Tensor)>> {
        Ok(vec![
            (
                "optim.steps".into(),
                Tensor::new(&[self.steps], &Device::Cpu)?,
            ),
            (
                "optim.velocity.head.bias".into(),
                self.velocity_bias.clone(),
            ),
            (
                "optim.velocity.head.weight".into(),
                self.velocity_weight.clone(),
            ),
        ])
    }

    fn load_optimizer_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        let get = |name: &str| {
            state.get(name).cloned().ok_or_else(|| {
                candle_core::Error::Msg(format!("missing optimizer tensor `{name}`"))
            })
        };
        let steps = get("optim.steps")?.to_vec1::<u32>()?;
        let vw = get("optim.velocity.head.weight")?;
        let vb = get("optim.velocity.head.bias")?;
        if vw.dims() != self.weight.dims() || vb.dims() != self.bias.dims() || steps.len() != 1 {
            candle_core::bail!("optimizer state has the wrong shapes");
        }
        self.steps = steps[0];
        self.velocity_weight = vw.to_device(self.weight.device())?;
        self.velocity_bias = vb.to_device(self.bias.device())?;
        Ok(())
    }

    fn config_json(&self) -> Result<serde_json::Value> {
        Ok(serde_json::json!({ "lr": self.lr, "momentum": self.momentum }))
    }
}

/// A small model shape for tests: 1x4x4 images, 3 classes.
pub fn blob_spec() -> ModelSpec {
    ModelSpec {
        in_channels: 1,
        image_size: 4,
        num_classes: 3,
    }
}

/// Uniform indices below `n` from a seeded generator, for making mutants.
pub struct Below(SeededRng);

impl Below {
    /// An index in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.0.next_u64() % n.max(1) as u64) as usize
    }
}

/// Runs `parse` on mutants of `valid`, each made by 1 to 3 calls of
/// `mutate` (indices from a generator seeded with `seed`): `default_cases`
/// of them, or `NOPROP_FUZZ_CASES`, or as many as `NOPROP_FUZZ_SECONDS`
/// seconds allow. `parse` must never panic nor fail
/// without a message, and both
/// accepted and refused mutants must occur (or the mutations miss the
/// parser's checks, or its happy path).
pub fn fuzz_mutants<T, E: std::fmt::Display>(
    seed: u64,
    default_cases: usize,
    valid: &[u8],
    mut mutate: impl FnMut(&mut Vec<u8>, &mut Below),
    parse: impl Fn(&[u8]) -> std::result::Result<T, E>,
) -> FuzzReport {
    let cases = std::env::var("NOPROP_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_cases);
    let seconds: Option<f64> = std::env::var("NOPROP_FUZZ_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok());
    let start = std::time::Instant::now();
    let mut rng = Below(SeededRng::new(seed));
    let (mut accepted, mut refused) = (0usize, 0usize);
    while match seconds {
        Some(s) => start.elapsed().as_secs_f64() < s,
        None => accepted + refused < cases,
    } {
        let mut bytes = valid.to_vec();
        for _ in 0..1 + rng.below(3) {
            if bytes.is_empty() {
                break;
            }
            mutate(&mut bytes, &mut rng);
        }
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| parse(&bytes))) {
            Ok(Ok(_)) => accepted += 1,
            Ok(Err(e)) => {
                assert!(!e.to_string().is_empty(), "an error without a message");
                refused += 1;
            }
            Err(_) => panic!(
                "the parser panicked on a mutant of {} bytes: {:?}",
                bytes.len(),
                String::from_utf8_lossy(&bytes)
            ),
        }
    }
    let cases = accepted + refused;
    assert!(
        accepted > 0 && refused > 0,
        "{accepted} accepted, {refused} refused of {cases} mutants"
    );
    FuzzReport {
        seed,
        cases,
        accepted,
        seconds: start.elapsed().as_secs_f64(),
    }
}

/// What a [`fuzz_mutants`] run did (a test prints it: visible with
/// `--nocapture`, for the record of a long run).
#[derive(Debug, Clone, Copy)]
pub struct FuzzReport {
    /// The mutation generator's seed.
    pub seed: u64,
    /// Mutants parsed.
    pub cases: usize,
    /// Of which accepted.
    pub accepted: usize,
    /// Wall-clock seconds.
    pub seconds: f64,
}

impl std::fmt::Display for FuzzReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "seed {}: {} mutants in {:.0} s, {} accepted, no panic",
            self.seed, self.cases, self.seconds, self.accepted
        )
    }
}
