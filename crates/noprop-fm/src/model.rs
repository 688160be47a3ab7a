//! The NoProp-FM model: one CT/FM block trained by flow matching.
//!
//! Training (Eq. 11, 13): z_0 ~ N(0, I), z_1 = u_y, t ~ U[0, 1],
//! z_t = t z_1 + (1 - t) z_0 (+ sigma eps), v_hat = logits(x, z_t, t) @ W,
//! loss = mean_B ||v_hat - (z_1 - z_0)||^2 (+ CE(head(z_t + (1 - t) v_hat), y)
//! when W is learned). Inference: integrate dz/dt = v_hat from z_0 ~ N(0, I)
//! over [0, 1] and read out the class whose embedding is nearest to z_1.

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::{Linear, Module};
use noprop_block::{layers, BlockConfig, CtFmBlock, Mode};
use noprop_core::{
    linear_mix, Adam, AdamConfig, ClassEmbedding, EmbeddingKind, InferenceOptions, ModelInit,
    ModelSpec, OdeSolver, ParamStore, SeededRng,
};

use crate::config::FmConfig;
use crate::names::{BLOCK_PREFIX, HEAD_PREFIX};

/// Stream of the class-embedding initialisation (forked from the seed).
const EMBEDDING_STREAM: u64 = 1;

/// NoProp-FM with its optimizer.
pub struct NoPropFm {
    pub(crate) config: FmConfig,
    pub(crate) spec: ModelSpec,
    pub(crate) store: ParamStore,
    pub(crate) block: CtFmBlock,
    pub(crate) embedding: ClassEmbedding,
    /// d -> m, for the anchor loss; present only when W is learned.
    pub(crate) head: Option<Linear>,
    pub(crate) optimizer: Adam,
    pub(crate) device: Device,
}

impl NoPropFm {
    /// A fresh model for training. Every initial value comes from
    /// `SeededRng::new(seed)` and its forks. `prototype_source` (normalised
    /// training images `[N, C, H, W]`, labels `[N]`) is required by
    /// prototype embeddings. To load a checkpoint, build with
    /// [`ModelInit::ForLoading`] through [`noprop_core::BuildVariant`].
    pub fn new(
        config: FmConfig,
        spec: ModelSpec,
        prototype_source: Option<(&Tensor, &Tensor)>,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        Self::with_init(
            config,
            spec,
            ModelInit::Train {
                seed,
                prototypes: prototype_source,
            },
            device,
        )
    }

    /// Builds the model as `init` says (see [`ModelInit`]).
    pub fn with_init(
        config: FmConfig,
        spec: ModelSpec,
        init: ModelInit<'_>,
        device: &Device,
    ) -> Result<Self> {
        config.validate()?;
        let (seed, prototypes) = init.parts();
        let root = SeededRng::new(seed);
        let store = ParamStore::new(root.fork(0));
        let vb = store.var_builder(DType::F32, device);
        let m = spec.num_classes;
        let d = config.embedding.dim(m, spec.image_dim());
        let block_config =
            BlockConfig::new(spec.in_channels, spec.image_size, d, m).with_dropout(config.dropout);
        let block = CtFmBlock::new(&block_config, vb.pp(BLOCK_PREFIX))?;
        let embedding = match init {
            ModelInit::ForLoading => {
                ClassEmbedding::for_loading(config.embedding, m, spec.image_dim(), &store, device)?
            }
            ModelInit::Train { .. } => {
                if config.embedding == EmbeddingKind::Prototype && prototypes.is_none() {
                    candle_core::bail!(
                        "fm: prototype embeddings need the training images and labels"
                    );
                }
                let mut embedding_rng = root.fork(EMBEDDING_STREAM);
                ClassEmbedding::new(
                    config.embedding,
                    m,
                    &store,
                    &mut embedding_rng,
                    prototypes,
                    device,
                )?
            }
        };
        let head = if embedding.is_learned() {
            Some(layers::linear(d, m, vb.pp(HEAD_PREFIX))?)
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
    pub(crate) fn losses(
        &self,
        images: &Tensor,
        labels: &Tensor,
        rng: &mut SeededRng,
    ) -> Result<(Tensor, Tensor, Option<Tensor>)> {
        let batch = self.spec.check_batch(images, labels, "fm")?;
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

    /// Each run's class probabilities [B, m] on one batch of images: per
    /// run, z_0 ~ N(0, I) [B, d] is integrated to z_1 with the image
    /// features computed once for all runs, and read out as the softmax
    /// over classes of minus the squared distance to each embedding (its
    /// argmax is the nearest embedding).
    pub(crate) fn predict_runs_batch(
        &self,
        images: &Tensor,
        options: &InferenceOptions,
        runs: usize,
        rng: &mut SeededRng,
    ) -> Result<Vec<Tensor>> {
        let batch = self.spec.check_images(images, "fm")?;
        let steps = options.steps.unwrap_or(self.config.inference_steps);
        let solver = options.solver.unwrap_or(self.config.solver);
        if steps == 0 {
            candle_core::bail!("fm: inference needs at least one ODE step");
        }
        // Detached: inference must not record a backprop graph, which would
        // keep every step's activations alive (the weights are variables).
        let features = self.block.image_features(images, Mode::Eval)?.detach();
        let w = self.embedding.matrix().detach();
        let d = self.embedding.dim();
        (0..runs)
            .map(|_| {
                let z0 = rng.normal((batch, d), &self.device)?;
                let z1 = self.integrate(&features, &w, &z0, steps, solver)?;
                candle_nn::ops::softmax_last_dim(&self.embedding.neg_sq_distances(&z1)?)
            })
            .collect()
    }

    /// z_1 from `z0` [B, d] by integrating dz/dt = v_hat(x, z, t) over
    /// [0, 1] on the batch's image `features`.
    fn integrate(
        &self,
        features: &Tensor,
        w: &Tensor,
        z0: &Tensor,
        steps: usize,
        solver: OdeSolver,
    ) -> Result<Tensor> {
        let batch = z0.dim(0)?;
        solver.integrate(z0, 0.0, 1.0, steps, |z, t| {
            let t = Tensor::full(t as f32, batch, &self.device)?;
            let logits = self
                .block
                .forward_from_features(features, z, &t, Mode::Eval)?;
            Ok(linear_mix(&logits, w)?.detach())
        })
    }
}
