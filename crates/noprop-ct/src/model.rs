//! [`NoPropCt`]: one [`CtFmBlock`] with time input, a linear head d -> m,
//! the learned schedule, the class embedding W and one Adam optimizer with
//! three groups (block + W; schedule; head).
//!
//! Training (one step, batch B): draw t [B] (uniform or importance),
//! z_t ~ q(z_t | y), logits = block(x, z_t, t), loss of [`crate::loss`],
//! one backward, one Adam step (learning rate scaled by the warm-up).
//!
//! Inference: z_0 ~ N(0, I) [B, d]; integrate the probability-flow ODE
//! dz/dt = (-gamma'(t) / 2) (sqrt(ab(t)) u_hat(x, z, t) - ab(t) z) from
//! t = 0 to 1 with the chosen stepper (the bounded form of
//! ab' / (2 (1 - ab)) (u_hat / sqrt(ab) - z), since ab' = -gamma' ab (1 - ab));
//! the image features are computed once per batch; probabilities
//! softmax(head(z_1)), per run.

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::Linear;
use noprop_block::{BlockConfig, CtFmBlock, Mode};
use noprop_core::optim::AdamConfig;
use noprop_core::{
    ModelInit, ModelSpec,    kl_prior_tensor, marginal_sample_per_row, softmax_mix, Adam, ClassEmbedding, InferenceOptions,
    LearnedSchedule, ParamGroup, ParamStore, SeededRng, StepReport,
};

use crate::config::{CtConfig, TimeSampling};
use crate::loss::{denoising_loss, CtLoss};
use crate::names::{BLOCK_PREFIX, HEAD_PREFIX, SCHEDULE_PREFIX};

/// Stream of the class-embedding initialisation (forked from the seed).
const EMBEDDING_STREAM: u64 = 1;

/// A NoProp-CT model with its optimizer (see the module doc).
#[derive(Debug)]
pub struct NoPropCt {
    pub(crate) config: CtConfig,
    pub(crate) spec: ModelSpec,
    pub(crate) store: ParamStore,
    pub(crate) block: CtFmBlock,
    pub(crate) head: Linear,
    pub(crate) schedule: LearnedSchedule,
    pub(crate) embedding: ClassEmbedding,
    pub(crate) optimizer: Adam,
    pub(crate) device: Device,
}

impl NoPropCt {
    /// A fresh model. `prototype_source` = normalised train images
    /// [N, C, H, W] and labels [N] u32, required for prototype embeddings.
    /// Every initial value comes from `SeededRng::new(seed)` (the store) and
    /// its fork for the embedding.
    pub fn new(
        config: CtConfig,
        spec: ModelSpec,
        prototype_source: Option<(&Tensor, &Tensor)>,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        Self::build(
            config,
            spec,
            device,
            |store| {
                let mut rng = SeededRng::new(seed).fork(EMBEDDING_STREAM);
                ClassEmbedding::new(
                    config.embedding,
                    spec.num_classes,
                    store,
                    &mut rng,
                    prototype_source,
                    device,
                )
            },
            seed,
        )
    }

    /// A model with the right variables (values to be overwritten by
    /// `params().load(..)` from a checkpoint); needs no training images.
    pub fn for_loading(config: CtConfig, spec: ModelSpec, device: &Device) -> Result<Self> {
        Self::build(
            config,
            spec,
            device,
            |store| {
                ClassEmbedding::for_loading(
                    config.embedding,
                    spec.num_classes,
                    spec.image_dim(),
                    store,
                    device,
                )
            },
            0,
        )
    }

    /// Builds the model as `init` says (see [`ModelInit`]).
    pub fn with_init(
        config: CtConfig,
        spec: ModelSpec,
        init: ModelInit<'_>,
        device: &Device,
    ) -> Result<Self> {
        match init {
            ModelInit::Train { seed, prototypes } => {
                Self::new(config, spec, prototypes, seed, device)
            }
            ModelInit::ForLoading => Self::for_loading(config, spec, device),
        }
    }

    fn build(
        config: CtConfig,
        spec: ModelSpec,
        device: &Device,
        embedding: impl FnOnce(&ParamStore) -> Result<ClassEmbedding>,
        seed: u64,
    ) -> Result<Self> {
        config.validate()?;
        if spec.num_classes < 2 || spec.in_channels == 0 || spec.image_size == 0 {
            candle_core::bail!(
                "ct: the model spec needs >= 2 classes and a non-empty image, got {spec:?}"
            );
        }
        let store = ParamStore::new(SeededRng::new(seed));
        let embedding = embedding(&store)?;
        let d = embedding.dim();
        let vb = store.var_builder(DType::F32, device);
        let block_config = BlockConfig::new(spec.in_channels, spec.image_size, d, spec.num_classes)
            .with_dropout(config.dropout);
        let block = CtFmBlock::new(&block_config, vb.pp(BLOCK_PREFIX))?;
        let head = noprop_block::layers::linear(d, spec.num_classes, vb.pp(HEAD_PREFIX))?;
        let schedule = LearnedSchedule::new(&config.schedule, vb.pp(SCHEDULE_PREFIX))?;

        let schedule_prefix = format!("{SCHEDULE_PREFIX}.");
        let head_prefix = format!("{HEAD_PREFIX}.");
        let (schedule_vars, rest): (Vec<_>, Vec<_>) = store
            .trainable("")
            .into_iter()
            .partition(|(name, _)| name.starts_with(&schedule_prefix));
        let (head_vars, model_vars): (Vec<_>, Vec<_>) = rest
            .into_iter()
            .partition(|(name, _)| name.starts_with(&head_prefix));
        let schedule_group = ParamGroup::new(schedule_vars)
            .with_weight_decay(config.schedule_weight_decay)
            .with_lr(config.schedule_lr.unwrap_or(config.lr));
        let head_group = ParamGroup::new(head_vars).with_lr(config.head_lr.unwrap_or(config.lr));
        let optimizer = Adam::new(
            vec![ParamGroup::new(model_vars), schedule_group, head_group],
            AdamConfig::adam(config.lr, config.weight_decay),
        )?;
        Ok(Self {
            config,
            spec,
            store,
            block,
            head,
            schedule,
            embedding,
            optimizer,
            device: device.clone(),
        })
    }

    pub fn config(&self) -> &CtConfig {
        &self.config
    }

    pub fn block(&self) -> &CtFmBlock {
        &self.block
    }

    /// The learned noise schedule (for plotting alpha_bar, SNR').
    pub fn schedule(&self) -> &LearnedSchedule {
        &self.schedule
    }

    pub fn embedding(&self) -> &ClassEmbedding {
        &self.embedding
    }

    /// Optimizer steps taken so far.
    pub fn steps_taken(&self) -> u64 {
        // The head gets a gradient on every step (the CE term).
        u64::from(self.optimizer.step_count(&format!("{HEAD_PREFIX}.bias")))
    }


    /// The loss terms on a batch, drawing t, z_t, z_1 and dropout from `rng`.
    pub fn loss(&self, images: &Tensor, labels: &Tensor, rng: &mut SeededRng) -> Result<CtLoss> {
        let b = self.spec.check_batch(images, labels, "ct")?;
        let labels = labels.to_dtype(DType::U32)?;
        let u_y = self.embedding.rows(&labels)?; // [B, d]
        let w = self.embedding.matrix();
        let (t, weight) = match self.config.time_sampling {
            TimeSampling::Uniform => {
                let t = rng.uniform(0.0, 1.0, b, &self.device)?;
                let snr_prime = self.schedule.snr_prime(&t)?;
                (t, snr_prime)
            }
            TimeSampling::Importance => {
                let s = self.schedule.sample_t_importance(
                    b,
                    self.config.importance_cells,
                    self.config.importance_uniform_mix,
                    rng,
                )?;
                let snr_prime = self.schedule.snr_prime(&s.t)?;
                (s.t, (snr_prime / s.density)?)
            }
        };
        let alpha_bar = self.schedule.alpha_bar(&t)?;
        let z_t = marginal_sample_per_row(&u_y, &alpha_bar, rng)?;
        let logits = self.block.forward(images, &z_t, &t, Mode::Train(rng))?;
        let denoise = denoising_loss(&logits, &w, &u_y, &weight, self.config.eta)?;

        let ab_1 = self
            .schedule
            .alpha_bar_clean_end()?
            .broadcast_as(b)?
            .contiguous()?;
        let z_1 = marginal_sample_per_row(&u_y, &ab_1, rng)?;
        let ce = candle_nn::loss::cross_entropy(&self.head.forward(&z_1)?, &labels)?;
        let kl = kl_prior_tensor(&u_y, &self.schedule.alpha_bar_noise_end()?)?;
        Ok(CtLoss { denoise, ce, kl })
    }

    /// One optimisation step: loss, backward, Adam with the warm-up factor.
    pub(crate) fn step(
        &mut self,
        images: &Tensor,
        labels: &Tensor,
        rng: &mut SeededRng,
    ) -> Result<StepReport> {
        let loss = self.loss(images, labels, rng)?;
        let total = loss.total()?;
        let grads = total.backward()?;
        // Each group keeps the rate it was built with; the warm-up scales all.
        self.optimizer
            .set_lr_scale(self.config.warmup_factor(self.steps_taken() + 1))?;
        self.optimizer.step(&grads)?;
        // One host read-out for every reported number.
        let (g0, g1) = (self.schedule_var("gamma_0")?, self.schedule_var("gamma_1")?);
        let values = Tensor::cat(
            &[
                total.reshape(1)?,
                loss.denoise.reshape(1)?,
                loss.ce.reshape(1)?,
                loss.kl.reshape(1)?,
                g0,
                g1,
            ],
            0,
        )?
        .to_dtype(DType::F64)?
        .to_vec1::<f64>()?;
        if !values[0].is_finite() {
            candle_core::bail!(
                "ct: the loss is not finite ({}); lower lr or use a warm-up",
                values[0]
            );
        }
        Ok(StepReport {
            loss: values[0],
            terms: ["denoise", "ce", "kl", "gamma_0", "gamma_1"]
                .iter()
                .zip(&values[1..])
                .map(|(n, v)| (n.to_string(), *v))
                .collect(),
        })
    }

    fn schedule_var(&self, name: &str) -> Result<Tensor> {
        let full = format!("{SCHEDULE_PREFIX}.{name}");
        match self.store.get(&full) {
            Some(v) => Ok(v.as_tensor().detach()),
            None => candle_core::bail!("ct: missing schedule variable `{full}`"),
        }
    }

    /// Each run's class probabilities [B, m] for one batch of images
    /// [B, C, H, W] by the probability-flow ODE (see the module doc): the
    /// image features are computed once for all runs.
    pub(crate) fn predict_runs_batch(
        &self,
        images: &Tensor,
        options: &InferenceOptions,
        runs: usize,
        rng: &mut SeededRng,
    ) -> Result<Vec<Tensor>> {
        let b = self.spec.check_images(images, "ct")?;
        let steps = options.steps.unwrap_or(self.config.inference_steps);
        let solver = options.solver.unwrap_or(self.config.solver);
        if steps == 0 {
            candle_core::bail!("ct: inference needs at least one ODE step");
        }
        // Nothing here is trained: detach so no graph outlives a step.
        let features = self.block.image_features(images, Mode::Eval)?.detach();
        let w = self.embedding.matrix().detach();
        (0..runs)
            .map(|_| {
                let z0 = rng.normal((b, self.embedding.dim()), &self.device)?;
                let z1 = solver
                    .integrate(&z0, 0.0, 1.0, steps, |z, t| self.drift(&features, &w, z, t))?;
                candle_nn::ops::softmax_last_dim(&self.head.forward(&z1)?.detach())
            })
            .collect()
    }

    /// dz/dt = (-gamma'(t) / 2) (sqrt(ab) u_hat - ab z) at one time t for the
    /// whole batch; the schedule is evaluated once at t, not per row.
    fn drift(&self, features: &Tensor, w: &Tensor, z: &Tensor, t: f64) -> Result<Tensor> {
        let b = z.dim(0)?;
        let values = self
            .schedule
            .evaluate(&Tensor::new(&[t as f32], &self.device)?)?;
        let t_batch = Tensor::full(t as f32, b, &self.device)?;
        let logits = self
            .block
            .forward_from_features(features, z, &t_batch, Mode::Eval)?;
        let u_hat = softmax_mix(&logits, w)?;
        let ab = values.alpha_bar.detach(); // [1]
        let rate = (values.gamma_prime.detach() * -0.5)?; // [1]
        let toward = (u_hat.broadcast_mul(&ab.sqrt()?)? - z.broadcast_mul(&ab)?)?;
        Ok(toward.broadcast_mul(&rate)?.detach())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use noprop_core::EmbeddingKind;

    #[test]
    fn drift_matches_the_schedule_probability_flow() {
        // The per-batch drift (schedule evaluated once at t) must equal the
        // core's per-row `probability_flow_drift` given the same u_hat.
        let dev = Device::Cpu;
        let m = NoPropCt::new(CtConfig::default(), ModelSpec::mnist(), None, 0, &dev).unwrap();
        let mut rng = SeededRng::new(1);
        let x = rng.normal((3, 1, 28, 28), &dev).unwrap();
        let z = rng.normal((3, 10), &dev).unwrap();
        let features = m.block.image_features(&x, Mode::Eval).unwrap();
        let w = m.embedding.matrix();
        for t in [0.0, 0.3, 1.0] {
            let got = m.drift(&features, &w, &z, t).unwrap();
            let tb = Tensor::full(t as f32, 3, &dev).unwrap();
            let logits = m.block.forward(&x, &z, &tb, Mode::Eval).unwrap();
            let u_hat = softmax_mix(&logits, &w).unwrap();
            let want = m.schedule.probability_flow_drift(&z, &u_hat, t).unwrap();
            let err = (got - want)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(err < 1e-5, "t = {t}: {err}");
        }
    }

    #[test]
    fn learned_embedding_trains_w_and_schedule_gets_no_decay_by_default() {
        let dev = Device::Cpu;
        let config = CtConfig {
            embedding: EmbeddingKind::Learned { dim: 20 },
            ..CtConfig::default()
        };
        let mut m = NoPropCt::new(config, ModelSpec::mnist(), None, 0, &dev).unwrap();
        assert_eq!(m.optimizer.group_hyperparameters(0), Some((1e-3, 1e-3)));
        assert_eq!(m.optimizer.group_hyperparameters(1), Some((1e-3, 0.0)));
        assert_eq!(m.optimizer.group_hyperparameters(2), Some((1e-3, 1e-3)));
        let before = m.embedding.matrix().copy().unwrap();
        let mut rng = SeededRng::new(2);
        let x = rng.normal((4, 1, 28, 28), &dev).unwrap();
        let y = Tensor::new(&[1u32, 2, 3, 4], &dev).unwrap();
        let report = m.step(&x, &y, &mut rng).unwrap();
        assert!(report.loss.is_finite());
        assert_eq!(m.steps_taken(), 1);
        let moved = (m.embedding.matrix() - before)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(moved > 0.0);
        let names = m.store.names();
        for want in [
            "embedding.weight",
            "head.weight",
            "schedule.gamma_0",
            "block.time.fc.weight",
        ] {
            assert!(
                names.iter().any(|n| n == want),
                "{want} missing from {names:?}"
            );
        }
    }
}
