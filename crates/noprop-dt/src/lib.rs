//! # noprop-dt
//!
//! NoProp-DT (Li, Teh, Pascanu 2025, discrete time), usable on its own as a
//! library. Depends only on `noprop-core`, `noprop-block` and candle; never
//! on another variant, on the data crate or on the trainer.
//!
//! T blocks ([`noprop_block::DtBlock`], default T = 10) each learn to denoise
//! a noisy class embedding given the image; a linear head reads the class
//! off the cleanest latent. Time runs from noise (z_0) to label (z_T).
//!
//! - **Training** (`model.rs`, `loss.rs`): block t is fed
//!   z_{t-1} ~ q(z_{t-1} | y) and minimises its own loss (Eq. 8),
//!   `(T/2) eta (SNR(t) - SNR(t-1)) ||softmax(logits_t) W - u_y||^2 +
//!   CE(head(z_T), y) + KL(q(z_0 | y) || N(0, I))` with z_T ~ q(z_T | y) the
//!   noised label. Each block's loss is backpropagated on its own and
//!   updates block t (its own AdamW, lr 1e-3, weight decay 1e-3), the head
//!   and a learned W (one shared AdamW, stepped once per block loss; its
//!   rate is `head_lr`, default `lr`). No gradient crosses blocks; nothing
//!   calls `backward` on a sum of blocks' losses. With `parallel_blocks`
//!   (one-hot W, all-blocks order) the blocks of a minibatch train
//!   concurrently, one per worker thread, and the head steps once per block
//!   loss in block order afterwards: the same updates, from per-block random
//!   streams (`parallel.rs`). The same step splits the blocks over
//!   processes (`Variant::join_group`, `distributed.rs`): each trains its
//!   share, bitwise as one process would.
//! - **Schedule**: the reversed improved-DDPM cosine of
//!   [`noprop_core::CosineSchedule`], clean end clipped at `alpha_bar_max`
//!   (default 0.9999), eta = 0.1.
//! - **Orders** ([`TrainingOrder`]): `all-blocks` (every block on every
//!   minibatch, the default), `sweep` (the paper's: block 1 for
//!   `sweep_epochs_per_block` epochs, then block 2, ...; driven by
//!   `Variant::begin_epoch`), `random` (one uniformly drawn block per
//!   minibatch). `train_blocks` restricts training to a subset; the other
//!   blocks stay bitwise untouched.
//! - **Inference** (`inference.rs`): posterior mixing (Eq. 3) from
//!   z_0 ~ N(0, I), optionally without injected noise (`deterministic`);
//!   prediction softmax(head(z_T)). Each block's image features are
//!   computed once per batch of images and shared by all the runs asked
//!   for (batching, ensembles and accuracy: `noprop_core::inference`). `InferenceOptions::steps` and
//!   `solver` do not apply (always T steps) and are ignored.
//!
//! ## Variable names (checkpoint tensor names)
//!
//! - block t (1-based): `block.{t}.` + the block's names, e.g.
//!   `block.1.image.conv1.weight`, `block.10.fusion.out.bias`,
//!   `block.3.latent.bn1.running_mean` (BatchNorm statistics are buffers:
//!   saved, never optimised);
//! - head: `head.weight` [m, d], `head.bias` `[m]`;
//! - learned W: `embedding.weight` [m, d] (one-hot W is a constant, stored
//!   nowhere);
//! - optimizer state: `optim.{parameter}.step` / `.exp_avg` / `.exp_avg_sq`.
//!
//! ## Training blocks in separate processes
//!
//! Run one process per subset of blocks with the same seed and
//! configuration except `train_blocks` (e.g. `Some(vec![1, 2])`, then
//! `Some(vec![3, 4])`, ...). Every process starts from the same initial
//! values, and each leaves the blocks it does not train at those values.
//! Join them in one model built with the same seed: for each process, pass
//! its tensors (`params().named_tensors()` collected into a map, or a
//! checkpoint's tensors) and the blocks it trained to
//! [`NoPropDt::load_blocks`]; then load `head.*` (and `embedding.weight`)
//! by name from the run whose head you keep. With one-hot W the head's loss
//! (CE on noised labels) does not depend on any block, so every run's head
//! is equally valid; with a learned W each process learns its own W and the
//! joined blocks were trained against different embeddings, so joining is
//! exact only for fixed W.
//!
//! ## Example
//!
//! ```no_run
//! use candle_core::{Device, Tensor};
//! use noprop_core::inference::{self, InferenceSettings};
//! use noprop_core::variant::ModelSpec;
//! use noprop_core::{InferenceOptions, SeededRng, Variant};
//! use noprop_dt::{DtConfig, NoPropDt};
//!
//! # fn main() -> candle_core::Result<()> {
//! let device = Device::Cpu;
//! let mut model = NoPropDt::new(DtConfig::default(), ModelSpec::mnist(), None, 0, &device)?;
//! let mut rng = SeededRng::new(0).fork(10);
//! // images [B, 1, 28, 28] f32 (normalised), labels [B] u32, from your data.
//! let images = rng.normal((128, 1, 28, 28), &device)?;
//! let labels = Tensor::new(&[3u32; 128], &device)?;
//! model.begin_epoch(0)?;
//! let report = model.train_step(&images, &labels, &mut rng)?;
//! println!("loss {:.4} {:?}", report.loss, report.terms);
//! let options = InferenceOptions { deterministic: Some(true), ..Default::default() };
//! let settings = InferenceSettings::new(options);
//! let accuracy = inference::evaluate(&model, &images, &labels, &settings, &mut rng)?;
//! println!("accuracy {:.3}", accuracy.mean());
//! # Ok(())
//! # }
//! ```
//!
//! ## Using a trained model
//!
//! [`NoPropDt::from_checkpoint`] loads a checkpoint that `noprop train` wrote
//! (or `noprop export`, or [`NoPropDt::save`]): the model is rebuilt from the
//! file's own metadata, so this crate alone is enough. [`ModelCard`] says
//! how its inputs are normalised ([`ModelCard::normalize`] turns u8 pixels
//! into the model's inputs exactly as in training). The crate's example
//! `dt_predict_from_checkpoint`:
//!
//! ```no_run
#![doc = include_str!("../examples/dt_predict_from_checkpoint.rs")]
//! ```

#![warn(missing_docs)]

pub mod checkpoint;
pub mod config;
mod distributed;
pub mod inference;
pub mod loss;
pub mod model;
pub mod names;
mod parallel;
pub mod variant;

pub use config::{DtConfig, SharedOptimizer, TrainingOrder};
pub use loss::BlockLoss;
pub use model::NoPropDt;
pub use names::{block_prefix, HEAD_PREFIX, OPTIM_PREFIX};

// What a user of this crate alone needs to build, train and run a
// model: `noprop-dt` as the only dependency is enough.
pub use candle_core;
pub use candle_core::{DType, Device, Tensor};
pub use noprop_checkpoint::ModelCard;
pub use noprop_core::inference::{evaluate, predict_proba, predict_runs};
pub use noprop_core::{
    EmbeddingKind, InferenceOptions, InferenceSettings, ModelInit, ModelSpec, OdeSolver,
    RunAccuracy, SeededRng, StepReport, Variant, VariantConfig,
};
