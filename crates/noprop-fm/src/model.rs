//! The NoProp-FM model: one CT/FM block trained by flow matching.
//!
//! Training (Eq. 11, 13): z_0 ~ N(0, I), z_1 = u_y, t ~ U[0, 1],
//! z_t = t z_1 + (1 - t) z_0 (+ sigma eps), v_hat = logits(x, z_t, t) @ W,
//! loss = mean_B ||v_hat - (z_1 - z_0)||^2 (+ CE(head(z_t + (1 - t) v_hat), y)
//! when W is learned). Inference: integrate dz/dt = v_hat from z_0 ~ N(0, I)
//! over [0, 1] and read out the class whose embedding is nearest to z_1.

use std::collections::HashMap;

use candle_core::{DType, Device, Result, Tensor, D};
use candle_nn::{Linear, Module};
use noprop_block::{BlockConfig, CtFmBlock, Mode};
use noprop_core::variant::ModelSpec;
use noprop_core::{
    linear_mix, Adam, AdamConfig, ClassEmbedding, EmbeddingKind, InferenceOptions, ParamStore,
    SeededRng, StepReport, Variant, VariantKind,
};

use crate::config::FmConfig;

/// Prefix of the optimizer's state tensors in [`Variant::optimizer_state`].
pub const OPTIM_PREFIX: &str = "optim.";

/// NoProp-FM with its optimizer.
pub struct NoPropFm {
    config: FmConfig,
    spec: ModelSpec,
    store: ParamStore,
    block: CtFmBlock,
    embedding: ClassEmbedding,
    /// d -> m, for the anchor loss; present only when W is learned.
    head: Option<Linear>,
    optimizer: Adam,
    device: Device,
}

impl NoPropFm {
    /// Builds the model. Variables come from a seeded stream (`seed`), so the
    /// same seed gives the same initial model. `prototype_source` (normalised
    /// training images `[N, C, H, W]`, labels `[N]`) initialises prototype
    /// embeddings; pass `None` with prototype embeddings only when the values
    /// are about to be loaded from a checkpoint (W then starts at zero).
    pub fn new(
        config: FmConfig,
        spec: ModelSpec,
        prototype_source: Option<(&Tensor, &Tensor)>,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        config.validate()?;
        let root = SeededRng::new(seed);
        let store = ParamStore::new(root.fork(0));
        let mut embedding_rng = root.fork(1);
        let vb = store.var_builder(DType::F32, device);
        let m = spec.num_classes;
        let d = config.embedding.dim(m, spec.image_dim());
        let block_config =
            BlockConfig::new(spec.in_channels, spec.image_size, d, m).with_dropout(config.dropout);
        let block = CtFmBlock::new(&block_config, vb.pp("block"))?;
        let embedding = match (config.embedding, prototype_source) {
            (EmbeddingKind::Prototype, None) => {
                ClassEmbedding::for_loading(config.embedding, m, spec.image_dim(), &store, device)?
            }
            (kind, source) => {
                ClassEmbedding::new(kind, m, &store, &mut embedding_rng, source, device)?
            }
        };
        let head = if embedding.is_learned() {
            Some(candle_nn::linear(d, m, vb.pp("head"))?)
        } else {
            None
        };
        let optimizer = Adam::with_params(
            store.trainable(""),
            AdamConfig::adam(config.lr, config.weight_decay),
        )?;
        Ok(Self {
            config,
            spec,
            store,
            block,
            embedding,
            head,
            optimizer,
            device: device.clone(),
        })
    }

    pub fn config(&self) -> &FmConfig {
        &self.config
    }

    pub fn spec(&self) -> ModelSpec {
        self.spec
    }

    pub fn block(&self) -> &CtFmBlock {
        &self.block
    }

    pub fn embedding(&self) -> &ClassEmbedding {
        &self.embedding
    }

    /// Trainable scalars (block, head and learned W).
    pub fn num_parameters(&self) -> usize {
        self.store.count_trainable("")
    }

    /// The losses of one batch: (total, flow-matching, anchor CE).
    fn losses(
        &self,
        images: &Tensor,
        labels: &Tensor,
        rng: &mut SeededRng,
    ) -> Result<(Tensor, Tensor, Option<Tensor>)> {
        let batch = images.dim(0)?;
        let d = self.embedding.dim();
        let u_y = self.embedding.rows(labels)?; // z_1 [B, d]
        let z0 = rng.normal((batch, d), &self.device)?;
        let t = rng.uniform(0.0, 1.0, batch, &self.device)?; // [B]
        let t_col = t.unsqueeze(1)?;
        let mut z_t = (u_y.broadcast_mul(&t_col)? + z0.broadcast_mul(&(1.0 - &t_col)?)?)?;
        if self.config.sigma > 0.0 {
            let eps = rng.normal((batch, d), &self.device)?;
            z_t = (z_t + (eps * self.config.sigma)?)?;
        }
        let logits = self.block.forward(images, &z_t, &t, Mode::Train(rng))?;
        let w = self.embedding.matrix();
        let v_hat = linear_mix(&logits, &w)?;
        let target = (&u_y - &z0)?;
        let flow = (v_hat.clone() - target)?.sqr()?.sum(1)?.mean(0)?;
        match &self.head {
            Some(head) if self.config.anchor_weight > 0.0 => {
                // Eq. 13: the one-step estimate of z_1 must classify as y.
                let z1_hat = (z_t + v_hat.broadcast_mul(&(1.0 - &t_col)?)?)?;
                let ce = candle_nn::loss::cross_entropy(&head.forward(&z1_hat)?, labels)?;
                let total = (&flow + (&ce * self.config.anchor_weight)?)?;
                Ok((total, flow, Some(ce)))
            }
            _ => Ok((flow.clone(), flow, None)),
        }
    }

    /// z_1 for one chunk of images, from `z0` [B, d], with the image features
    /// computed once.
    fn integrate(
        &self,
        images: &Tensor,
        z0: &Tensor,
        steps: usize,
        solver: noprop_core::OdeSolver,
    ) -> Result<Tensor> {
        let batch = images.dim(0)?;
        // Detached: inference must not record a backprop graph, which would
        // keep every step's activations alive (the weights are variables).
        let features = self.block.image_features(images, Mode::Eval)?.detach();
        let w = self.embedding.matrix().detach();
        solver.integrate(&z0.detach(), 0.0, 1.0, steps, |z, t| {
            let t = Tensor::full(t as f32, batch, &self.device)?;
            let logits = self
                .block
                .forward_from_features(&features, z, &t, Mode::Eval)?;
            Ok(linear_mix(&logits, &w)?.detach())
        })
    }

    /// Class probabilities from z_1: softmax over classes of minus the squared
    /// distance to each embedding (argmax = nearest embedding).
    fn distance_proba(&self, z1: &Tensor) -> Result<Tensor> {
        let w = self.embedding.matrix();
        let cross = z1.matmul(&w.t()?)?; // [B, m]
        let w_sq = w.sqr()?.sum(1)?.unsqueeze(0)?; // [1, m]
        let z_sq = z1.sqr()?.sum_keepdim(1)?; // [B, 1]
        let dist = (w_sq.broadcast_sub(&(cross * 2.0)?)?.broadcast_add(&z_sq))?;
        candle_nn::ops::softmax(&dist.neg()?, D::Minus1)
    }

    /// Test accuracy in [0, 1] of `images` [N, C, H, W] against `labels` [N].
    pub fn evaluate(
        &self,
        images: &Tensor,
        labels: &Tensor,
        options: &InferenceOptions,
        rng: &mut SeededRng,
    ) -> Result<f64> {
        let predicted = self.predict(images, options, rng)?;
        let labels = labels.to_dtype(DType::U32)?;
        let correct = predicted
            .eq(&labels)?
            .to_dtype(DType::F32)?
            .sum_all()?
            .to_scalar::<f32>()?;
        Ok(correct as f64 / images.dim(0)? as f64)
    }
}

impl Variant for NoPropFm {
    fn kind(&self) -> VariantKind {
        VariantKind::Fm
    }

    fn num_classes(&self) -> usize {
        self.spec.num_classes
    }

    fn train_step(
        &mut self,
        images: &Tensor,
        labels: &Tensor,
        rng: &mut SeededRng,
    ) -> Result<StepReport> {
        let (total, flow, anchor) = self.losses(images, labels, rng)?;
        self.optimizer.backward_step(&total)?;
        let mut terms = vec![("flow".to_string(), flow.to_scalar::<f32>()? as f64)];
        if let Some(ce) = anchor {
            terms.push(("anchor_ce".to_string(), ce.to_scalar::<f32>()? as f64));
        }
        Ok(StepReport {
            loss: total.to_scalar::<f32>()? as f64,
            terms,
        })
    }

    fn predict_proba(
        &self,
        images: &Tensor,
        options: &InferenceOptions,
        rng: &mut SeededRng,
    ) -> Result<Tensor> {
        let steps = options.steps.unwrap_or(self.config.inference_steps);
        let solver = options.solver.unwrap_or(self.config.solver);
        let runs = options.runs.unwrap_or(self.config.inference_runs);
        if steps == 0 || runs == 0 {
            candle_core::bail!("fm inference: steps and runs must be at least 1");
        }
        let n = images.dim(0)?;
        let d = self.embedding.dim();
        let mut chunks = Vec::new();
        let mut start = 0;
        while start < n {
            let len = self.config.eval_batch_size.min(n - start);
            let x = images.narrow(0, start, len)?;
            let mut sum: Option<Tensor> = None;
            for _ in 0..runs {
                let z0 = rng.normal((len, d), &self.device)?;
                let p = self.distance_proba(&self.integrate(&x, &z0, steps, solver)?)?;
                sum = Some(match sum {
                    Some(s) => (s + p)?,
                    None => p,
                });
            }
            let sum = sum.expect("runs >= 1");
            chunks.push((sum / runs as f64)?);
            start += len;
        }
        Tensor::cat(&chunks, 0)
    }

    fn params(&self) -> &ParamStore {
        &self.store
    }

    fn optimizer_state(&self) -> Result<Vec<(String, Tensor)>> {
        Ok(self
            .optimizer
            .state()?
            .into_iter()
            .map(|(n, t)| (format!("{OPTIM_PREFIX}{n}"), t))
            .collect())
    }

    fn load_optimizer_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        let mut inner = HashMap::new();
        for (name, t) in state {
            let Some(stripped) = name.strip_prefix(OPTIM_PREFIX) else {
                candle_core::bail!(
                    "fm: optimizer state `{name}` lacks the `{OPTIM_PREFIX}` prefix"
                );
            };
            inner.insert(stripped.to_string(), t.clone());
        }
        self.optimizer.load_state(&inner)
    }

    fn config_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.config).expect("FmConfig serialises")
    }
}
