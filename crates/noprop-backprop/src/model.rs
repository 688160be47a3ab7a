//! [`NoPropBackprop`]: the paper's back-propagation baseline (Eqs. 17-19).
//! T NoProp-DT blocks, T learned mixing weights, a linear head and the
//! class embedding W, chained into one network and trained end to end by
//! one AdamW.
//!
//! # The chain
//!
//! ```text
//! z_0 ~ N(0, I)                                                   [B, d]
//! for t = 1..T:
//!     u_hat_t = block_t(x, z_{t-1}) W                             [B, m] x [m, d] -> [B, d]
//!               (block_output = softmax: softmax(block_t(x, z_{t-1})) W)
//!     z_t     = (1 - a_t) z_{t-1} + a_t u_hat_t,   a_t = tanh(w_t)
//! logits = head(z_T)                                              [B, m]
//! L      = CE(logits, y)                                          averaged over the batch
//! ```
//!
//! x is `[B, C, H, W]`; block t is a [`DtBlock`] (the same block, the same
//! `BlockConfig` and dropout as NoProp-DT builds); w = (w_1, ..., w_T) is
//! one variable `[T]` (`mix.weight`), a = tanh(w) elementwise.
//!
//! # Training step
//!
//! One loss, one `backward` through the whole chain, one AdamW step
//! (decoupled weight decay, `torch.optim.AdamW`) over every trainable
//! parameter: every block, the mixing weights, the head and a learned W
//! (the head and W in a second parameter group whose rate is `head_lr`,
//! default `lr`: with the default the paper's single AdamW).
//! Unlike NoProp, block t's parameters receive gradient through every later
//! block. The blocks run in training mode: dropout masks come from the
//! step's generator, and BatchNorm normalises with batch statistics and
//! updates its running statistics (momentum 0.1), so a batch needs at
//! least 2 examples.
//!
//! # Random numbers
//!
//! Initial values: `SeededRng::new(seed)` forked into a parameter stream
//! (blocks 1..=T, then the head, PyTorch's initialisation; the mixing
//! weights are constants and draw nothing) and an embedding stream
//! (orthogonal W), the streams and order NoProp-DT uses. Training draws
//! from the caller's generator, per step: z_0 [B, d], then the dropout
//! masks of blocks 1..=T in turn.

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{Init, Linear};
use noprop_block::{layers::linear, BlockConfig, DtBlock, Mode};
use noprop_core::{
    linear_mix, softmax_mix, Adam, AdamConfig, ClassEmbedding, ModelInit, ModelSpec, ParamGroup,
    ParamStore, SeededRng, StepReport, EMBEDDING_WEIGHT,
};

use crate::config::{BackpropConfig, BlockOutput};
use crate::names::{block_prefix, HEAD_PREFIX, MIX_PREFIX};

/// Fork stream of the parameter initialisation (NoProp-DT's).
const PARAM_STREAM: u64 = 1;
/// Fork stream of the orthogonal embedding initialisation (NoProp-DT's).
const EMBEDDING_STREAM: u64 = 2;

/// The back-propagation baseline with its optimizer (see the module doc).
pub struct NoPropBackprop {
    pub(crate) config: BackpropConfig,
    pub(crate) spec: ModelSpec,
    pub(crate) device: Device,
    pub(crate) store: ParamStore,
    pub(crate) embedding: ClassEmbedding,
    pub(crate) blocks: Vec<DtBlock>,
    /// The raw mixing weights w [T] (the variable's tensor).
    pub(crate) mix: Tensor,
    pub(crate) head: Linear,
    pub(crate) optimizer: Adam,
}

impl std::fmt::Debug for NoPropBackprop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoPropBackprop")
            .field("config", &self.config)
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

/// One mixing step: `(1 - a_t) z_{t-1} + a_t u_hat_t`, with `a_t` a `[1]`
/// tensor broadcast over `[B, d]`. The one definition training and
/// inference share.
pub(crate) fn mix_step(z_prev: &Tensor, u_hat: &Tensor, a_t: &Tensor) -> Result<Tensor> {
    let keep = a_t.affine(-1.0, 1.0)?; // 1 - a_t
    z_prev.broadcast_mul(&keep)? + u_hat.broadcast_mul(a_t)?
}

/// A block's prediction u_hat_t [B, d] from its logits [B, m] and W [m, d],
/// as `output` says. The one definition training and inference share.
pub(crate) fn block_prediction(logits: &Tensor, w: &Tensor, output: BlockOutput) -> Result<Tensor> {
    match output {
        BlockOutput::Softmax => softmax_mix(logits, w),
        BlockOutput::Linear => linear_mix(logits, w),
    }
}

impl NoPropBackprop {
    /// Builds a model for `spec` with fresh, seeded parameters.
    /// `prototype_source` (normalised training images [N, C, H, W] and
    /// labels `[N]` u32) is required for prototype embeddings and ignored
    /// otherwise. To load a checkpoint, build with [`ModelInit::ForLoading`].
    pub fn new(
        config: BackpropConfig,
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

    /// Builds the model as `init` says (see [`ModelInit`]):
    /// [`ModelInit::ForLoading`] makes every variable with its name and
    /// shape and needs no images (a learned W starts at zero).
    pub fn with_init(
        config: BackpropConfig,
        spec: ModelSpec,
        init: ModelInit<'_>,
        device: &Device,
    ) -> Result<Self> {
        config.validate()?;
        let (seed, _) = init.parts();
        let root = SeededRng::new(seed);
        let store = init.param_store(root.fork(PARAM_STREAM));
        let m = spec.num_classes;
        let embedding = ClassEmbedding::for_init(
            config.embedding,
            m,
            spec.image_dim(),
            &store,
            init,
            &mut root.fork(EMBEDDING_STREAM),
            device,
        )?;
        let d = embedding.dim();
        let block_config =
            BlockConfig::new(spec.in_channels, spec.image_size, d, m).with_dropout(config.dropout);
        block_config.validate()?;
        let vb = store.var_builder(DType::F32, device);
        let blocks = (1..=config.num_blocks)
            .map(|t| DtBlock::new(&block_config, vb.pp(block_prefix(t))))
            .collect::<Result<Vec<_>>>()?;
        let head = linear(d, m, vb.pp(HEAD_PREFIX))?;
        // A constant: draws nothing from the parameter stream.
        let mix = vb.pp(MIX_PREFIX).get_with_hints(
            config.num_blocks,
            "weight",
            Init::Const(config.initial_mixing_weight()),
        )?;
        let optimizer = Self::optimizer(&store, &config)?;
        Ok(Self {
            config,
            spec,
            device: device.clone(),
            store,
            embedding,
            blocks,
            mix,
            head,
            optimizer,
        })
    }

    /// One AdamW over every trainable parameter, in two groups: the head
    /// and a learned W at `head_lr` (default `lr`), everything else (the
    /// blocks and the mixing weights) at `lr`.
    fn optimizer(store: &ParamStore, config: &BackpropConfig) -> Result<Adam> {
        let is_head =
            |name: &str| name == EMBEDDING_WEIGHT || name.starts_with(&format!("{HEAD_PREFIX}."));
        let (head, body): (Vec<_>, Vec<_>) = store
            .trainable("")
            .into_iter()
            .partition(|(n, _)| is_head(n));
        let head_lr = config.head_lr.unwrap_or(config.lr);
        Adam::new(
            vec![
                ParamGroup::new(body),
                ParamGroup::new(head).with_lr(head_lr),
            ],
            AdamConfig::adamw(config.lr, config.weight_decay),
        )
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &BackpropConfig {
        &self.config
    }

    /// The device its tensors live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The class embedding W [m, d].
    pub fn embedding(&self) -> &ClassEmbedding {
        &self.embedding
    }

    /// Block t (1-based).
    pub fn block(&self, t: usize) -> Result<&DtBlock> {
        if t == 0 || t > self.blocks.len() {
            candle_core::bail!(
                "backprop: block {t} does not exist, blocks are numbered 1..={}",
                self.blocks.len()
            );
        }
        Ok(&self.blocks[t - 1])
    }

    /// The head, linear d -> m (its softmax is the prediction).
    pub fn head(&self) -> &Linear {
        &self.head
    }

    /// The raw mixing weights w `[T]` (the variable `mix.weight`).
    pub fn mixing_weights(&self) -> &Tensor {
        &self.mix
    }

    /// The mixing coefficients a = tanh(w) `[T]` (differentiable in w).
    pub fn mixing_coefficients(&self) -> Result<Tensor> {
        self.mix.tanh()
    }

    /// Number of trainable scalars: the blocks, the T mixing weights, the
    /// head and a learned W (BatchNorm running statistics excluded).
    pub fn num_parameters(&self) -> usize {
        self.store.count_trainable("")
    }

    /// Checks images [B, C, H, W] against the spec; returns B.
    pub(crate) fn check_images(&self, images: &Tensor) -> Result<usize> {
        self.spec.check_images(images, "backprop")
    }

    /// z_T of the chain from `z0` [B, d] for images [B, C, H, W], with the
    /// blocks in `mode` (in `Train`, block 1's dropout masks are drawn
    /// first, then block 2's, ...; BatchNorm running statistics are
    /// updated). The result carries the graph back to every parameter.
    pub fn latent(&self, images: &Tensor, z0: &Tensor, mut mode: Mode) -> Result<Tensor> {
        let b = self.check_images(images)?;
        let d = self.embedding.dim();
        if z0.dims() != [b, d] {
            candle_core::bail!(
                "backprop: z_0 must be [B, d] = [{b}, {d}], got {:?}",
                z0.dims()
            );
        }
        let w = self.embedding.matrix();
        let a = self.mixing_coefficients()?;
        let mut z = z0.clone();
        for (i, block) in self.blocks.iter().enumerate() {
            let logits = block.forward(images, &z, mode.reborrow())?;
            let u_hat = block_prediction(&logits, &w, self.config.block_output)?;
            z = mix_step(&z, &u_hat, &a.narrow(0, i, 1)?)?;
        }
        Ok(z)
    }

    /// The head's logits on z_T: `head(latent(images, z0, mode))` [B, m].
    pub fn logits(&self, images: &Tensor, z0: &Tensor, mode: Mode) -> Result<Tensor> {
        self.head.forward(&self.latent(images, z0, mode)?)
    }

    /// The training loss CE(head(z_T), y) on a batch (images [B, C, H, W],
    /// labels `[B]` u32, B >= 2), in training mode. Draws z_0 [B, d], then
    /// the blocks' dropout masks, from `rng`; updates the BatchNorm running
    /// statistics and nothing else.
    pub fn loss(&self, images: &Tensor, labels: &Tensor, rng: &mut SeededRng) -> Result<Tensor> {
        let b = self.spec.check_batch(images, labels, "backprop")?;
        let z0 = rng.normal((b, self.embedding.dim()), &self.device)?;
        let logits = self.logits(images, &z0, Mode::Train(rng))?;
        candle_nn::loss::cross_entropy(&logits, labels)
    }

    /// One training step: [`NoPropBackprop::loss`], one `backward` through
    /// the chain, one AdamW step over every trainable parameter. The report
    /// holds the loss and its one term, `ce`.
    pub fn step(
        &mut self,
        images: &Tensor,
        labels: &Tensor,
        rng: &mut SeededRng,
    ) -> Result<StepReport> {
        let loss = self.loss(images, labels, rng)?;
        self.optimizer.backward_step(&loss)?;
        let ce = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        Ok(StepReport {
            loss: ce,
            terms: vec![("ce".to_string(), ce)],
        })
    }
}

#[cfg(test)]
mod tests {
    //! The chain and its loss against Eqs. 17-19 recomputed by hand on a
    //! tiny model (1x14x14 images, the smallest the block allows; m = 3;
    //! T = 2). The hand computation shares only the blocks' forward passes
    //! (their logits) and the generator with the code: softmax, the mix
    //! with W, tanh, the mixing steps, the head and the cross-entropy are
    //! computed in f64 on the host.

    use super::*;
    use noprop_core::EmbeddingKind;

    const B: usize = 4;
    const M: usize = 3;
    const LABELS: [u32; B] = [2, 0, 1, 2];

    fn host2(t: &Tensor) -> Vec<Vec<f64>> {
        t.to_dtype(DType::F64).unwrap().to_vec2::<f64>().unwrap()
    }

    fn host1(t: &Tensor) -> Vec<f64> {
        t.to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap()
    }

    fn to_tensor(rows: &[Vec<f64>]) -> Tensor {
        let flat: Vec<f32> = rows.iter().flatten().map(|&v| v as f32).collect();
        Tensor::from_vec(flat, (rows.len(), rows[0].len()), &Device::Cpu).unwrap()
    }

    fn assert_close(got: f64, want: f64, what: &str) {
        let tol = 1e-4 * want.abs().max(1e-2);
        assert!(
            (got - want).abs() <= tol,
            "{what}: code {got}, by hand {want} (tolerance {tol})"
        );
    }

    fn spec() -> ModelSpec {
        ModelSpec {
            in_channels: 1,
            image_size: 14,
            num_classes: M,
        }
    }

    /// A T = 2 model whose mixing weights differ (a_1 != a_2) and whose
    /// learned W (if any) has rows of unequal norms.
    fn setup(embedding: EmbeddingKind) -> (NoPropBackprop, Tensor, Tensor) {
        setup_with(embedding, BlockOutput::default())
    }

    fn setup_with(
        embedding: EmbeddingKind,
        block_output: BlockOutput,
    ) -> (NoPropBackprop, Tensor, Tensor) {
        let dev = Device::Cpu;
        let config = BackpropConfig {
            num_blocks: 2,
            embedding,
            block_output,
            ..BackpropConfig::default()
        };
        let model = NoPropBackprop::new(config, spec(), None, 0, &dev).unwrap();
        let w_var = model.store.get(crate::names::MIX_WEIGHT).unwrap();
        w_var
            .set(&Tensor::new(&[0.3f32, -0.8], &dev).unwrap())
            .unwrap();
        if let Some(var) = model.embedding.var() {
            let d = model.embedding.dim();
            var.set(&(SeededRng::new(5).normal((M, d), &dev).unwrap() * 1.5).unwrap())
                .unwrap();
        }
        let x = SeededRng::new(6).normal((B, 1, 14, 14), &dev).unwrap();
        let y = Tensor::new(&LABELS, &dev).unwrap();
        (model, x, y)
    }

    /// The chain by hand from z_0: z_t = (1 - tanh w_t) z_{t-1} +
    /// tanh(w_t) p_t W with l_t = block_t(x, z_{t-1}) (the model's block,
    /// run on the hand-computed z_{t-1}) and p_t = softmax(l_t), or l_t
    /// itself for the linear block output, then head(z_2).
    fn logits_by_hand(
        model: &NoPropBackprop,
        x: &Tensor,
        z0: &[Vec<f64>],
        mode: Mode,
    ) -> Vec<Vec<f64>> {
        let mut mode = mode;
        let w = host2(&model.embedding.matrix());
        let raw = host1(&model.mix);
        let d = w[0].len();
        let mut z = z0.to_vec();
        for (t, raw_w) in raw.iter().enumerate() {
            let logits = host2(
                &model.blocks[t]
                    .forward(x, &to_tensor(&z), mode.reborrow())
                    .unwrap(),
            );
            let a = raw_w.tanh();
            z = (0..B)
                .map(|b| {
                    let p: Vec<f64> = match model.config.block_output {
                        BlockOutput::Softmax => {
                            let max = logits[b].iter().cloned().fold(f64::MIN, f64::max);
                            let e: Vec<f64> = logits[b].iter().map(|l| (l - max).exp()).collect();
                            let s: f64 = e.iter().sum();
                            e.iter().map(|e| e / s).collect()
                        }
                        BlockOutput::Linear => logits[b].clone(),
                    };
                    (0..d)
                        .map(|j| {
                            let u_hat: f64 = (0..M).map(|c| p[c] * w[c][j]).sum();
                            (1.0 - a) * z[b][j] + a * u_hat
                        })
                        .collect()
                })
                .collect();
        }
        let (hw, hb) = (
            host2(model.head.weight()),
            host1(model.head.bias().unwrap()),
        );
        z.iter()
            .map(|zb| {
                (0..M)
                    .map(|c| hb[c] + (0..d).map(|j| hw[c][j] * zb[j]).sum::<f64>())
                    .collect()
            })
            .collect()
    }

    fn cross_entropy(logits: &[Vec<f64>]) -> f64 {
        logits
            .iter()
            .zip(LABELS)
            .map(|(l, y)| {
                let max = l.iter().cloned().fold(f64::MIN, f64::max);
                let lse = max + l.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
                lse - l[y as usize]
            })
            .sum::<f64>()
            / B as f64
    }

    #[test]
    fn the_chain_is_eqs_17_to_19_by_hand() {
        for (embedding, output) in [
            (EmbeddingKind::OneHot, BlockOutput::Softmax),
            (EmbeddingKind::Learned { dim: 5 }, BlockOutput::Softmax),
            (EmbeddingKind::OneHot, BlockOutput::Linear),
            (EmbeddingKind::Learned { dim: 5 }, BlockOutput::Linear),
        ] {
            let (model, x, y) = setup_with(embedding, output);
            let embedding = format!("{embedding} {output:?}");
            let d = model.embedding.dim();
            // Evaluation mode, from a random z_0.
            let z0 = SeededRng::new(7).normal((B, d), &Device::Cpu).unwrap();
            let code = host2(&model.logits(&x, &z0, Mode::Eval).unwrap());
            let hand = logits_by_hand(&model, &x, &host2(&z0), Mode::Eval);
            for b in 0..B {
                for c in 0..M {
                    assert_close(
                        code[b][c],
                        hand[b][c],
                        &format!("{embedding}: eval logit {b},{c}"),
                    );
                }
            }
            // Training mode: the loss draws z_0, then block 1's and block
            // 2's dropout masks; the hand computation replays those draws.
            let loss = model.loss(&x, &y, &mut SeededRng::new(8)).unwrap();
            let mut rng = SeededRng::new(8);
            let z0 = host2(&rng.normal((B, d), &Device::Cpu).unwrap());
            let hand = logits_by_hand(&model, &x, &z0, Mode::Train(&mut rng));
            let code = loss
                .to_dtype(DType::F64)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap();
            assert_close(
                code,
                cross_entropy(&hand),
                &format!("{embedding}: training CE"),
            );
        }
    }

    #[test]
    fn one_loss_gives_gradient_to_every_parameter() {
        let (model, x, y) = setup(EmbeddingKind::Learned { dim: 5 });
        let loss = model.loss(&x, &y, &mut SeededRng::new(9)).unwrap();
        let grads = loss.backward().unwrap();
        let trainable = model.store.trainable("");
        // 2 blocks' parameters, mix.weight, head.{weight,bias}, embedding.weight.
        assert!(trainable.iter().any(|(n, _)| n == "mix.weight"));
        assert!(trainable.iter().any(|(n, _)| n == "embedding.weight"));
        for (name, var) in &trainable {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("no gradient reached `{name}`"));
            let norm = g
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(
                norm > 0.0 && norm.is_finite(),
                "`{name}`: gradient norm {norm}"
            );
        }
        // The mixing weights get a gradient per block.
        let g_mix = host1(grads.get(&model.mix).unwrap());
        assert!(g_mix.iter().all(|g| *g != 0.0), "{g_mix:?}");
    }

    #[test]
    fn a_step_moves_every_parameter_and_the_running_statistics() {
        let (mut model, x, y) = setup(EmbeddingKind::OneHot);
        let before: Vec<(String, Vec<f32>)> = model
            .store
            .named_tensors()
            .into_iter()
            .map(|(n, t)| (n, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
            .collect();
        let report = model.step(&x, &y, &mut SeededRng::new(10)).unwrap();
        assert_eq!(report.terms.len(), 1);
        assert_eq!(report.terms[0], ("ce".to_string(), report.loss));
        for (name, old) in &before {
            let new = model.store.get(name).unwrap();
            let new = new.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            // Every parameter and every BatchNorm statistic (Mode::Train
            // updates running_mean and running_var) of both blocks moved.
            assert_ne!(old, &new, "`{name}` did not change");
        }
        // Inference leaves the running statistics alone.
        // Host copies: `named_tensors` shares the variables' storage.
        let stats: Vec<(String, Vec<f32>)> = model
            .store
            .named_tensors()
            .into_iter()
            .filter(|(n, _)| noprop_core::params::is_buffer(n))
            .map(|(n, t)| (n, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
            .collect();
        assert_eq!(
            stats.len(),
            2 * 12,
            "6 BatchNorms per block, 2 statistics each"
        );
        let opts = noprop_core::InferenceOptions::default();
        model
            .predict_runs_batch(&x, &opts, 2, &mut SeededRng::new(11))
            .unwrap();
        for (name, old) in stats {
            let now = model.store.get(&name).unwrap();
            assert_eq!(
                old,
                now.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                "inference changed `{name}`"
            );
        }
    }
}
