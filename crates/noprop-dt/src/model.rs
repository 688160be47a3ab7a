//! [`NoPropDt`]: T denoising blocks, a linear head and the class embedding
//! W, with one AdamW per block and one for the head and W.
//!
//! # Training step
//!
//! For a minibatch (x [B, C, H, W], y `[B]`) the training order (see
//! [`TrainingOrder`]) picks the blocks that step; for each picked block t, in
//! ascending order, [`NoPropDt::block_loss`] builds block t's loss (Eq. 8,
//! see `loss.rs`), `backward` runs on that loss alone, and two optimizers
//! step on the resulting gradients: block t's AdamW (over block t's
//! parameters) and the shared head/W AdamW. Block t's loss reaches no other
//! block, so no other block's parameters, moments or step counts change
//! (the `Adam` skips parameters without a gradient); nothing ever calls
//! `backward` on a sum of several blocks' losses.
//!
//! With `parallel_blocks` the stepped blocks train concurrently instead
//! (same losses and updates, per-block random streams; see `parallel.rs`).
//!
//! # Head and W optimizer
//!
//! The head (linear d -> m) and a learned W appear in every block's loss
//! (W through u_y, u_hat, z_{t-1}, z_T and the KL; the head through the CE
//! on z_T), so they are updated by every block's loss. They share one AdamW,
//! stepped once per block loss: with the all-blocks order on T = 10 blocks
//! it takes 10 steps per minibatch, with the sweep or random order one. This
//! is the simplest faithful reading of "each block's loss updates theta_t,
//! theta_out and W".
//!
//! # Random numbers
//!
//! Initial values: `SeededRng::new(seed)` forked into a parameter stream
//! (blocks 1..=T, then the head, drawn in that order, PyTorch's
//! initialisation) and an embedding stream (orthogonal W). Training draws
//! from the caller's generator, per stepped block: the random block choice
//! (random order, once per step), then z_{t-1} noise [B, d], the block's
//! dropout masks, the z_T noise [B, d].

use std::collections::HashMap;

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::Linear;
use noprop_block::{layers::linear, BlockConfig, DtBlock};
use noprop_core::optim::AdamConfig;
use noprop_core::{
    Adam, ClassEmbedding, CosineSchedule, ModelInit, ModelSpec, ParamStore, SeededRng, StepReport,
    EMBEDDING_WEIGHT,
};

use crate::config::{DtConfig, TrainingOrder};
use crate::distributed::BlockShare;
use crate::names::{block_prefix, is_block_var, HEAD_PREFIX, OPTIM_PREFIX};

/// Fork stream of the parameter initialisation.
const PARAM_STREAM: u64 = 1;
/// Fork stream of the orthogonal embedding initialisation.
const EMBEDDING_STREAM: u64 = 2;

/// A NoProp-DT model with its optimizers (see the module doc).
pub struct NoPropDt {
    pub(crate) config: DtConfig,
    pub(crate) spec: ModelSpec,
    pub(crate) device: Device,
    pub(crate) store: ParamStore,
    pub(crate) schedule: CosineSchedule,
    pub(crate) embedding: ClassEmbedding,
    pub(crate) blocks: Vec<DtBlock>,
    pub(crate) head: Linear,
    pub(crate) block_optimizers: Vec<Adam>,
    /// The head/W optimizer state: one, or one per block
    /// ([`crate::config::SharedOptimizer`]).
    pub(crate) head_optimizers: Vec<Adam>,
    /// The blocks that train, 1-based, ascending.
    trained: Vec<usize>,
    /// The epoch announced by `begin_epoch` (sweep order).
    epoch: usize,
    /// The blocks' split over processes (`Variant::join_group`).
    pub(crate) share: Option<BlockShare>,
}

impl std::fmt::Debug for NoPropDt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoPropDt")
            .field("config", &self.config)
            .field("spec", &self.spec)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl NoPropDt {
    /// Builds a model for `spec` with fresh, seeded parameters.
    /// `prototype_source` (normalised training images [N, C, H, W] and
    /// labels `[N]` u32) is required for prototype embeddings and ignored
    /// otherwise. To load a checkpoint, build with [`ModelInit::ForLoading`].
    pub fn new(
        config: DtConfig,
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
        config: DtConfig,
        spec: ModelSpec,
        init: ModelInit<'_>,
        device: &Device,
    ) -> Result<Self> {
        config.validate()?;
        if config.parallel_blocks && !device.is_cpu() {
            // Measured and tested on the CPU only: concurrent blocks on one
            // accelerator would share its queue rather than add compute.
            candle_core::bail!(
                "dt: parallel_blocks trains blocks on CPU threads; it is not supported on {device:?}"
            );
        }
        let schedule = CosineSchedule::from_config(&config.schedule_config())?;
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

        let adamw = AdamConfig::adamw(config.lr, config.weight_decay);
        let block_optimizers = (1..=config.num_blocks)
            .map(|t| {
                let params = store.trainable(&format!("{}.", block_prefix(t)));
                Adam::with_params(params, adamw)
            })
            .collect::<Result<Vec<_>>>()?;
        let mut head_params = store.trainable(&format!("{HEAD_PREFIX}."));
        if let Some(var) = embedding.var() {
            head_params.push((EMBEDDING_WEIGHT.to_string(), var.clone()));
        }
        let head_adamw =
            AdamConfig::adamw(config.head_lr.unwrap_or(config.lr), config.weight_decay);
        let head_optimizers = (0..config.head_optimizer_count())
            .map(|_| Adam::with_params(head_params.clone(), head_adamw))
            .collect::<Result<Vec<_>>>()?;
        let trained = config.trained_blocks();
        Ok(Self {
            config,
            spec,
            device: device.clone(),
            store,
            schedule,
            embedding,
            blocks,
            head,
            block_optimizers,
            head_optimizers,
            trained,
            epoch: 0,
            share: None,
        })
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &DtConfig {
        &self.config
    }

    /// The device its tensors live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The cosine schedule (alpha_bar, SNR, loss weights, Eq. 3 coefficients).
    pub fn schedule(&self) -> &CosineSchedule {
        &self.schedule
    }

    /// The class embedding W [m, d].
    pub fn embedding(&self) -> &ClassEmbedding {
        &self.embedding
    }

    /// Block t (1-based).
    pub fn block(&self, t: usize) -> Result<&DtBlock> {
        self.check_block_index(t)?;
        Ok(&self.blocks[t - 1])
    }

    /// The head, linear d -> m (its softmax is the prediction).
    pub fn head(&self) -> &Linear {
        &self.head
    }

    /// The blocks that train (1-based, ascending).
    pub fn trained_blocks(&self) -> &[usize] {
        &self.trained
    }

    /// The epoch last announced with `begin_epoch` (0 before any).
    pub fn epoch(&self) -> usize {
        self.epoch
    }

    pub(crate) fn set_epoch(&mut self, epoch: usize) {
        self.epoch = epoch;
    }

    pub(crate) fn check_block_index(&self, t: usize) -> Result<()> {
        if t == 0 || t > self.config.num_blocks {
            candle_core::bail!(
                "dt: block {t} does not exist, blocks are numbered 1..={}",
                self.config.num_blocks
            );
        }
        Ok(())
    }

    /// Checks images [B, C, H, W] against the spec; returns B.
    pub(crate) fn check_images(&self, images: &Tensor) -> Result<usize> {
        self.spec.check_images(images, "dt")
    }

    /// Checks a batch: images as [`Self::check_images`], integer labels [B].
    pub(crate) fn check_batch(&self, images: &Tensor, labels: &Tensor) -> Result<usize> {
        self.spec.check_batch(images, labels, "dt")
    }

    /// The blocks that step on this minibatch (see [`TrainingOrder`]).
    fn blocks_for_step(&self, rng: &mut SeededRng) -> Vec<usize> {
        let n = self.trained.len();
        match self.config.order {
            TrainingOrder::AllBlocks => self.trained.clone(),
            TrainingOrder::Sweep => {
                vec![self.trained[(self.epoch / self.config.sweep_epochs_per_block) % n]]
            }
            TrainingOrder::Random => {
                let pick = ((rng.uniform_f64() * n as f64) as usize).min(n - 1);
                vec![self.trained[pick]]
            }
        }
    }

    /// The block(s) the sweep order trains in `epoch` (all trained blocks
    /// for the other orders; the random order draws among them per step).
    pub fn blocks_in_epoch(&self, epoch: usize) -> Vec<usize> {
        match self.config.order {
            TrainingOrder::Sweep => {
                let n = self.trained.len();
                vec![self.trained[(epoch / self.config.sweep_epochs_per_block) % n]]
            }
            _ => self.trained.clone(),
        }
    }

    /// One training step (see the module doc). The report's loss is the sum
    /// of the stepped blocks' losses; its terms `denoise`, `ce` and `kl` are
    /// summed over the same blocks (so they add up to the loss).
    pub fn step(
        &mut self,
        images: &Tensor,
        labels: &Tensor,
        rng: &mut SeededRng,
    ) -> Result<StepReport> {
        self.check_batch(images, labels)?;
        let stepped = self.blocks_for_step(rng);
        let terms = if self.config.parallel_blocks {
            self.step_blocks_parallel(&stepped, images, labels, rng)?
        } else {
            let mut terms = Vec::with_capacity(3 * stepped.len());
            for &t in &stepped {
                let loss = self.block_loss(t, images, labels, rng)?;
                // Block t's loss alone: its gradients reach block t, the head and W.
                let grads = loss.total.backward()?;
                self.block_optimizers[t - 1].step(&grads)?;
                self.head_optimizer(t).step(&grads)?;
                terms.extend([loss.denoise.detach(), loss.ce.detach(), loss.kl.detach()]);
            }
            terms
        };
        // One host read-out for the whole step.
        let values = Tensor::stack(&terms, 0)?
            .to_dtype(DType::F64)?
            .to_vec1::<f64>()?;
        let (mut denoise, mut ce, mut kl) = (0.0, 0.0, 0.0);
        for v in values.chunks_exact(3) {
            denoise += v[0];
            ce += v[1];
            kl += v[2];
        }
        // Split over processes: each summed its own blocks' denoising terms
        // (the CE and KL terms are computed by every process alike).
        let denoise = self.sum_denoise(denoise)?;
        Ok(StepReport {
            loss: denoise + ce + kl,
            terms: vec![
                ("denoise".to_string(), denoise),
                ("ce".to_string(), ce),
                ("kl".to_string(), kl),
            ],
        })
    }

    /// The head/W optimizer that block t's loss steps.
    pub(crate) fn head_optimizer(&mut self, t: usize) -> &mut Adam {
        let i = if self.head_optimizers.len() == 1 {
            0
        } else {
            t - 1
        };
        &mut self.head_optimizers[i]
    }

    /// Every optimizer's state, names prefixed with `optim.` (per-block
    /// head/W state: `optim.shared.{t}.` + the variable's name).
    pub(crate) fn optimizer_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::new();
        for optimizer in &self.block_optimizers {
            for (name, tensor) in optimizer.state()? {
                out.push((format!("{OPTIM_PREFIX}{name}"), tensor));
            }
        }
        let per_block = self.head_optimizers.len() > 1;
        for (i, optimizer) in self.head_optimizers.iter().enumerate() {
            for (name, tensor) in optimizer.state()? {
                let key = match per_block {
                    true => format!("{OPTIM_PREFIX}{}{name}", shared_state_prefix(i + 1)),
                    false => format!("{OPTIM_PREFIX}{name}"),
                };
                out.push((key, tensor));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Restores [`NoPropDt::optimizer_tensors`]: each entry goes to the
    /// optimizer owning its parameter; every optimizer is replaced (one
    /// without entries starts afresh).
    pub(crate) fn load_optimizer_tensors(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        let num_blocks = self.config.num_blocks;
        let mut per_block: Vec<HashMap<String, Tensor>> = vec![HashMap::new(); num_blocks];
        let head_count = self.head_optimizers.len();
        let mut head: Vec<HashMap<String, Tensor>> = vec![HashMap::new(); head_count];
        let is_head_var = |name: &str| {
            name.starts_with(&format!("{HEAD_PREFIX}."))
                || name.starts_with(&format!("{EMBEDDING_WEIGHT}."))
        };
        for (key, tensor) in state {
            let Some(name) = key.strip_prefix(OPTIM_PREFIX) else {
                candle_core::bail!("dt: optimizer state `{key}` lacks the `{OPTIM_PREFIX}` prefix");
            };
            let owner = (1..=num_blocks).find(|&t| is_block_var(name, t));
            let shared_owner = (1..=num_blocks).find_map(|t| {
                name.strip_prefix(&shared_state_prefix(t))
                    .map(|rest| (t, rest))
            });
            match (owner, shared_owner) {
                (Some(t), _) => {
                    per_block[t - 1].insert(name.to_string(), tensor.clone());
                }
                (None, Some((t, rest))) if head_count > 1 && is_head_var(rest) => {
                    head[t - 1].insert(rest.to_string(), tensor.clone());
                }
                (None, None) if head_count == 1 && is_head_var(name) => {
                    head[0].insert(name.to_string(), tensor.clone());
                }
                _ => candle_core::bail!(
                    "dt: unexpected optimizer state `{key}` (shared_optimizer = {:?})",
                    self.config.shared_optimizer
                ),
            };
        }
        // Validate everything before replacing anything.
        let mut staged: Vec<Adam> = Vec::with_capacity(num_blocks + 1);
        let adamw = *self.block_optimizers[0].config();
        for (t, entries) in per_block.iter().enumerate() {
            let params = self.store.trainable(&format!("{}.", block_prefix(t + 1)));
            let mut optimizer = Adam::with_params(params, adamw)?;
            optimizer.load_state(entries)?;
            staged.push(optimizer);
        }
        let mut head_params = self.store.trainable(&format!("{HEAD_PREFIX}."));
        if let Some(var) = self.embedding.var() {
            head_params.push((EMBEDDING_WEIGHT.to_string(), var.clone()));
        }
        let head_adamw = *self.head_optimizers[0].config();
        let head_optimizers = head
            .iter()
            .map(|entries| {
                let mut optimizer = Adam::with_params(head_params.clone(), head_adamw)?;
                optimizer.load_state(entries)?;
                Ok(optimizer)
            })
            .collect::<Result<Vec<_>>>()?;
        self.head_optimizers = head_optimizers;
        self.block_optimizers = staged;
        Ok(())
    }

    /// Joins blocks trained elsewhere: sets every variable of each block t
    /// in `blocks` (parameters and BatchNorm statistics, names
    /// `block.{t}.…`) from `source`, e.g. the `named_tensors()` of the
    /// model (or the tensors of the checkpoint) that trained block t. All
    /// names and shapes are checked before anything is set. The head and a
    /// learned W are not touched: load them separately (by name) from the
    /// run whose head you keep.
    pub fn load_blocks(&self, source: &HashMap<String, Tensor>, blocks: &[usize]) -> Result<()> {
        let mut updates = Vec::new();
        for &t in blocks {
            self.check_block_index(t)?;
            for (name, var) in self.store.all_vars() {
                if !is_block_var(&name, t) {
                    continue;
                }
                let Some(value) = source.get(&name) else {
                    candle_core::bail!("dt: joining block {t}: no tensor `{name}` in the source");
                };
                if value.dims() != var.dims() {
                    candle_core::bail!(
                        "dt: joining block {t}: `{name}` has shape {:?}, the model expects {:?}",
                        value.dims(),
                        var.dims()
                    );
                }
                updates.push((var, value));
            }
        }
        for (var, value) in updates {
            var.set(&value.to_dtype(var.dtype())?.to_device(var.device())?)?;
        }
        Ok(())
    }
}
/// The name prefix of block t's head/W optimizer state (per-block
/// [`crate::config::SharedOptimizer`]).
fn shared_state_prefix(t: usize) -> String {
    format!("shared.{t}.")
}
