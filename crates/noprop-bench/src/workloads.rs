//! The measured workloads, on MNIST shapes (1x28x28, m = 10 classes, one-hot
//! embeddings d = 10) with synthetic inputs (the cost does not depend on the
//! pixel values), mirroring `bench/torch_blocks.py` step for step.
//!
//! - DT training step: `z ~ N(0.7 u_y, 0.49 I)`, logits = block(x, z),
//!   `loss = 5 ||softmax(logits) W - u_y||² + CE(head(z_T), y)` (Eq. 8 with
//!   a representative weight), backward, AdamW (lr 1e-3, wd 1e-3; the
//!   `noprop_core::Adam` the variants train with).
//! - CT/FM training step: flow matching (Eq. 11), `z_t = t u_y + (1-t) z_0`,
//!   `loss = ||logits W - (u_y - z_0)||²`, backward, AdamW.
//! - Forward passes in `Mode::Eval`; the cached step runs the latent, time and
//!   fusion layers on precomputed image features plus one Euler update.
//!
//! Each trainer owns its parameters, optimizer and generator (the DT
//! trainer its own head too). The whole-model DT measurements use
//! `noprop_dt::NoPropDt` itself (see `main.rs`).

use anyhow::Result;
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::Linear;
use noprop_block::{denoised_embedding, velocity, BlockConfig, CtFmBlock, DtBlock, Mode};
use noprop_core::{Adam, AdamConfig, ParamStore, SeededRng};

pub const CLASSES: usize = 10;
pub const IMAGE: usize = 28;

/// A synthetic labelled minibatch with one-hot embeddings.
pub struct Batch {
    pub x: Tensor,
    pub labels: Tensor,
    /// Class embeddings `W [m, d]` (identity).
    pub embeddings: Tensor,
    /// `u_y [B, d]`.
    pub targets: Tensor,
}

impl Batch {
    pub fn new(batch: usize, rng: &mut SeededRng) -> Result<Self> {
        let dev = Device::Cpu;
        let x = rng.normal((batch, 1, IMAGE, IMAGE), &dev)?;
        let ys: Vec<u32> = (0..batch)
            .map(|_| (rng.next_u64() % CLASSES as u64) as u32)
            .collect();
        let labels = Tensor::new(ys.as_slice(), &dev)?;
        let embeddings = Tensor::eye(CLASSES, DType::F32, &dev)?;
        let targets = embeddings.index_select(&labels, 0)?;
        Ok(Self {
            x,
            labels,
            embeddings,
            targets,
        })
    }

    pub fn size(&self) -> usize {
        self.labels.dims()[0]
    }
}

/// The optimizer the variants train with (`noprop_core::Adam`), as AdamW
/// with the script's hyperparameters.
fn adamw(store: &ParamStore) -> Result<Adam> {
    Ok(Adam::with_params(
        store.trainable(""),
        AdamConfig::adamw(1e-3, 1e-3),
    )?)
}

/// One DT block with its head and optimizer.
pub struct DtTrainer {
    pub block: DtBlock,
    head: Linear,
    opt: Adam,
    rng: SeededRng,
}

impl DtTrainer {
    pub fn new(seed: u64) -> Result<Self> {
        let store = ParamStore::new(SeededRng::new(seed));
        let vb = store.var_builder(DType::F32, &Device::Cpu);
        let block = DtBlock::new(&BlockConfig::for_mnist(CLASSES, CLASSES), vb.pp("block"))?;
        let head = noprop_block::layers::linear(CLASSES, CLASSES, vb.pp("head"))?;
        let opt = adamw(&store)?;
        Ok(Self {
            block,
            head,
            opt,
            rng: SeededRng::new(seed).fork(1),
        })
    }

    pub fn step(&mut self, b: &Batch) -> Result<()> {
        let shape = b.targets.shape().clone();
        let z = ((&b.targets * 0.7)? + (self.rng.normal(&shape, &Device::Cpu)? * 0.7)?)?;
        let z_last = ((&b.targets * 0.99)? + (self.rng.normal(&shape, &Device::Cpu)? * 0.1)?)?;
        let logits = self.block.forward(&b.x, &z, Mode::Train(&mut self.rng))?;
        let u_hat = denoised_embedding(&logits, &b.embeddings)?;
        let denoise = ((u_hat - &b.targets)?.sqr()?.sum(1)?.mean(0)? * 5.0)?;
        let ce = candle_nn::loss::cross_entropy(&self.head.forward(&z_last)?, &b.labels)?;
        self.opt.backward_step(&(denoise + ce)?)?;
        Ok(())
    }

    pub fn forward_eval(&self, b: &Batch, z: &Tensor) -> Result<Tensor> {
        Ok(self.block.forward(&b.x, z, Mode::Eval)?)
    }
}

/// The shared CT/FM block with its optimizer, trained by flow matching.
pub struct CtFmTrainer {
    pub block: CtFmBlock,
    opt: Adam,
    rng: SeededRng,
}

impl CtFmTrainer {
    pub fn new(seed: u64) -> Result<Self> {
        let store = ParamStore::new(SeededRng::new(seed));
        let vb = store.var_builder(DType::F32, &Device::Cpu);
        let block = CtFmBlock::new(&BlockConfig::for_mnist(CLASSES, CLASSES), vb.pp("block"))?;
        let opt = adamw(&store)?;
        Ok(Self {
            block,
            opt,
            rng: SeededRng::new(seed).fork(1),
        })
    }

    pub fn step(&mut self, b: &Batch) -> Result<()> {
        let dev = Device::Cpu;
        let z0 = self.rng.normal(b.targets.shape(), &dev)?;
        let t = self.rng.uniform(0.0, 1.0, b.size(), &dev)?;
        let t_col = t.unsqueeze(1)?;
        let zt = (b.targets.broadcast_mul(&t_col)? + z0.broadcast_mul(&(1.0 - &t_col)?)?)?;
        let logits = self
            .block
            .forward(&b.x, &zt, &t, Mode::Train(&mut self.rng))?;
        let v_hat = velocity(&logits, &b.embeddings)?;
        let loss = (v_hat - (&b.targets - &z0)?)?.sqr()?.sum(1)?.mean(0)?;
        self.opt.backward_step(&loss)?;
        Ok(())
    }

    /// One Euler step of `dz/dt = v(x, z, t)` from cached image features.
    pub fn cached_step(
        &self,
        features: &Tensor,
        z: &Tensor,
        t: &Tensor,
        b: &Batch,
    ) -> Result<Tensor> {
        let logits = self
            .block
            .forward_from_features(features, z, t, Mode::Eval)?;
        let v = velocity(&logits, &b.embeddings)?;
        Ok((z + (v * 1e-3)?)?)
    }
}
