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

/// Data parallelism checked against one process, for a variant whose
/// [`Variant::join_group`] answers [`crate::Parallelism::Data`]. `make()`
/// builds the same fresh model every time, `loss(model, images, labels,
/// rng)` is its training loss on a batch (the tensor its step
/// differentiates). With `ranks` threads as processes
/// ([`crate::distributed::threads`]), each on its rows of the batch with
/// the generator sharded:
///
/// 1. the gradients summed by [`crate::ProcessGroup::sum_gradients`] equal
///    one process's gradient of the whole batch's loss, for every
///    trainable variable, within `tolerance` times the largest magnitude of
///    that variable's gradient; the rows' losses, weighted, sum to the
///    whole batch's loss; and the generator ends where one process's does;
/// 2. `steps` training steps leave every rank with bitwise the same
///    variables (the sum reached every step), reporting the losses one
///    process reports within `tolerance` (relative).
///
/// Panics with the first difference.
pub fn data_parallel_matches_one_process<M, F, L>(
    make: F,
    loss: L,
    images: &Tensor,
    labels: &Tensor,
    ranks: usize,
    steps: usize,
    tolerance: f64,
) where
    M: Variant,
    F: Fn() -> M + Sync,
    L: Fn(&M, &Tensor, &Tensor, &mut SeededRng) -> Tensor + Sync,
{
    use crate::distributed::{threads, RowShard};
    use crate::Parallelism;

    let host = |t: &Tensor| -> Vec<f64> {
        t.flatten_all()
            .and_then(|t| t.to_dtype(DType::F64))
            .and_then(|t| t.to_vec1::<f64>())
            .unwrap()
    };
    let bits = |m: &M| -> Vec<(String, Vec<f64>)> {
        m.params()
            .named_tensors()
            .iter()
            .map(|(n, t)| (n.clone(), host(t)))
            .collect()
    };

    // One process: the whole batch's loss, gradient and generator state.
    let one = make();
    let mut rng = SeededRng::new(77);
    let whole_loss = loss(&one, images, labels, &mut rng);
    let whole_grads = whole_loss.backward().unwrap();
    let whole_loss = host(&whole_loss)[0];
    let rng_after = rng.state_words();
    let params = one.params().trainable("");
    let expected: Vec<Option<Vec<f64>>> = params
        .iter()
        .map(|(_, v)| whole_grads.get(v.as_tensor()).map(&host))
        .collect();
    assert!(
        expected.iter().any(Option::is_some),
        "no variable has a gradient"
    );
    let mut one = one;
    let mut one_losses = Vec::new();
    let mut rng = SeededRng::new(78);
    for _ in 0..steps {
        one_losses.push(one.train_step(images, labels, &mut rng).unwrap().loss);
    }

    let rows = images.dim(0).unwrap();
    type RankResult = (
        Vec<Option<Vec<f64>>>,
        f64,
        Vec<u32>,
        Vec<(String, Vec<f64>)>,
        Vec<f64>,
    );
    let results: Vec<RankResult> = std::thread::scope(|s| {
        let handles: Vec<_> = threads::groups(ranks)
            .into_iter()
            .map(|group| {
                let (make, loss) = (&make, &loss);
                s.spawn(move || {
                    let shard = RowShard::of(rows, group.rank(), group.size());
                    let x = images.narrow(0, shard.start, shard.len).unwrap();
                    let y = labels.narrow(0, shard.start, shard.len).unwrap();
                    let mut m = make();
                    let mut rng = SeededRng::new(77);
                    rng.set_row_shard(Some(shard));
                    let l = loss(&m, &x, &y, &mut rng);
                    let mut grads = l.backward().unwrap();
                    let params = m.params().trainable("");
                    group
                        .sum_gradients(&mut grads, &params, shard.weight())
                        .unwrap();
                    let mut total = [host(&l)[0] * shard.weight()];
                    group.sum_f64(&mut total).unwrap();
                    let summed = params
                        .iter()
                        .map(|(_, v)| grads.get(v.as_tensor()).map(&host))
                        .collect();
                    let rng_after = rng.state_words();

                    assert_eq!(m.join_group(group).unwrap(), Parallelism::Data);
                    let mut rng = SeededRng::new(78);
                    let mut losses = Vec::new();
                    for _ in 0..steps {
                        rng.set_row_shard(Some(shard));
                        losses.push(m.train_step(&x, &y, &mut rng).unwrap().loss);
                        rng.set_row_shard(None);
                    }
                    (summed, total[0], rng_after, bits(&m), losses)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let first_model = &results[0].3;
    for (rank, (summed, total, rng_state, model, losses)) in results.iter().enumerate() {
        assert_eq!(
            rng_state, &rng_after,
            "rank {rank}: the generator is elsewhere"
        );
        let rel = |a: f64, b: f64| (a - b).abs() <= tolerance * (1.0 + b.abs());
        assert!(
            rel(*total, whole_loss),
            "rank {rank}: loss {total}, one process {whole_loss}"
        );
        for (((name, _), got), want) in params.iter().zip(summed).zip(&expected) {
            match (got, want) {
                (Some(got), Some(want)) => {
                    let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
                    for (i, (a, b)) in got.iter().zip(want).enumerate() {
                        assert!(
                            (a - b).abs() <= tolerance * scale + 1e-30,
                            "rank {rank}: gradient of `{name}`[{i}] = {a}, one process {b} \
                             (largest {scale})"
                        );
                    }
                }
                (None, None) => {}
                _ => panic!("rank {rank}: `{name}` has a gradient in one run only"),
            }
        }
        assert!(
            model == first_model,
            "rank {rank}: the model differs from rank 0's"
        );
        for (l, e) in losses.iter().zip(&one_losses) {
            assert!(rel(*l, *e), "rank {rank}: step loss {l}, one process {e}");
        }
    }
}
