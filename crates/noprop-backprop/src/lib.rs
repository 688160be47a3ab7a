//! # noprop-backprop
//!
//! The back-propagation baseline of the NoProp paper (Li, Teh, Pascanu
//! 2025, Eqs. 17-19; docs/algorithm.md, "Eqs. 17-19"): the T blocks of
//! NoProp-DT chained into one network and trained end to end. It is the
//! "backprop, same blocks" row of the paper's result tables. Usable on its
//! own as a library; depends only on `noprop-core`, `noprop-block` and
//! candle, never on another variant, on the data crate or on the trainer.
//!
//! ```text
//! z_0 ~ N(0, I)                                                   [B, d]
//! z_t = (1 - a_t) z_{t-1} + a_t u_hat_t,   t = 1..T
//!       u_hat_t = block_t(x, z_{t-1}) W                           [B, d]
//!                 (block_output = softmax: softmax(block_t(x, z_{t-1})) W)
//!       a_t     = tanh(w_t),  w_t a learned scalar per block
//! p(y | x) = softmax(head(z_T))                                   [B, m]
//! L = CE(head(z_T), y)          one backward through the whole chain
//! ```
//!
//! x is `[B, C, H, W]`, W `[m, d]` the class embedding, head a linear
//! layer d -> m.
//!
//! - **Blocks** ([`noprop_block::DtBlock`], default T = 10): the same block
//!   and `BlockConfig` as NoProp-DT (dropout 0.2 in the convolutional
//!   branches, BatchNorm), PyTorch initialisation, drawn from the same
//!   seeded streams in the same order (blocks 1..=T, then the head).
//! - **Class embedding W** ([`noprop_core::ClassEmbedding`]): one-hot
//!   (fixed), dimN (learned, orthogonal start) or prototype (learned,
//!   d = C*H*W), built exactly as NoProp-DT builds it.
//! - **Read-out of a block** (`block_output`): its m logits times W, by
//!   default without the softmax NoProp-DT applies; with it, the chain
//!   merges pairs of classes under the paper's recipe and stalls (69% after
//!   3 epochs on MNIST; 54.7% against 96.3% after one epoch of 20,000
//!   images; docs/algorithm.md, "Eqs. 17-19").
//! - **Mixing weights**: one variable `mix.weight` `[T]`; every w_t starts
//!   at atanh(`mixing_init`), default `mixing_init` = 0.5 (a_t = 0.5, an
//!   equal blend; the paper gives no value).
//! - **Training** (`model.rs`): one loss, one backward, one AdamW
//!   (lr 1e-3, decoupled weight decay 1e-3, the paper's Table 3) over every
//!   trainable parameter: blocks, mixing weights, head and a learned W
//!   (`head_lr`, unset by default, gives the head and W their own rate, as
//!   NoProp-DT's `head_lr` does). Unlike NoProp, block t gets gradient
//!   through every later block. Training mode: dropout masks from the step's generator, BatchNorm on
//!   batch statistics (running statistics updated; B >= 2). The step draws
//!   z_0 [B, d], then blocks 1..=T's dropout masks, from the caller's
//!   generator.
//! - **Inference** (`inference.rs`): the same chain in evaluation mode, each
//!   run from its own z_0 ~ N(0, I); the image features of every block are
//!   computed once per batch and shared by the runs. Deterministic
//!   inference (`deterministic`, or `InferenceOptions::deterministic =
//!   Some(true)`) starts from z_0 = 0, the prior's mean, and draws nothing:
//!   every run is the same. `InferenceOptions::steps` and `solver` do not
//!   apply and are ignored.
//!
//! ## Variable names (checkpoint tensor names)
//!
//! - block t (1-based): `block.{t}.` + the block's names, e.g.
//!   `block.1.image.conv1.weight`, `block.3.latent.bn1.running_mean`
//!   (BatchNorm statistics are buffers: saved, never optimised);
//! - mixing weights: `mix.weight` `[T]` (entry t-1 is w_t);
//! - head: `head.weight` [m, d], `head.bias` `[m]`;
//! - learned W: `embedding.weight` [m, d] (one-hot W is a constant, stored
//!   nowhere);
//! - optimizer state: `optim.{parameter}.step` / `.exp_avg` / `.exp_avg_sq`.
//!
//! With one-hot W on MNIST the model has 10 x 919,946 (blocks) + 10
//! (mixing weights) + 110 (head) = 9,199,580 trainable parameters.
//!
//! ## Example
//!
//! ```no_run
//! use candle_core::{Device, Tensor};
//! use noprop_backprop::{BackpropConfig, NoPropBackprop};
//! use noprop_core::inference::{self, InferenceSettings};
//! use noprop_core::variant::ModelSpec;
//! use noprop_core::{InferenceOptions, SeededRng, Variant};
//!
//! # fn main() -> candle_core::Result<()> {
//! let device = Device::Cpu;
//! let mut model =
//!     NoPropBackprop::new(BackpropConfig::default(), ModelSpec::mnist(), None, 0, &device)?;
//! let mut rng = SeededRng::new(0).fork(10);
//! // images [B, 1, 28, 28] f32 (normalised), labels [B] u32, from your data.
//! let images = rng.normal((128, 1, 28, 28), &device)?;
//! let labels = Tensor::new(&[3u32; 128], &device)?;
//! let report = model.train_step(&images, &labels, &mut rng)?;
//! println!("loss {:.4} {:?}", report.loss, report.terms);
//! let settings = InferenceSettings::new(InferenceOptions::default()).with_runs(5);
//! let accuracy = inference::evaluate(&model, &images, &labels, &settings, &mut rng)?;
//! println!("accuracy {:.3} (mean of 5 runs)", accuracy.mean());
//! # Ok(())
//! # }
//! ```
//!
//! ## Using a trained model
//!
//! [`NoPropBackprop::from_checkpoint`] loads a checkpoint that `noprop train` wrote
//! (or `noprop export`, or [`NoPropBackprop::save`]): the model is rebuilt from the
//! file's own metadata, so this crate alone is enough. [`ModelCard`] says
//! how its inputs are normalised ([`ModelCard::normalize`] turns u8 pixels
//! into the model's inputs exactly as in training). The crate's example
//! `backprop_predict_from_checkpoint`:
//!
//! ```no_run
#![doc = include_str!("../examples/backprop_predict_from_checkpoint.rs")]
//! ```

#![warn(missing_docs)]

pub mod checkpoint;
pub mod config;
pub mod inference;
pub mod model;
pub mod names;
pub mod variant;

pub use config::{BackpropConfig, BlockOutput};
pub use model::NoPropBackprop;
pub use names::{block_prefix, HEAD_PREFIX, MIX_WEIGHT, OPTIM_PREFIX};

// What a user of this crate alone needs to build, train and run a
// model: `noprop-backprop` as the only dependency is enough.
pub use candle_core;
pub use candle_core::{DType, Device, Tensor};
pub use noprop_checkpoint::ModelCard;
pub use noprop_core::inference::{evaluate, predict_proba, predict_runs};
pub use noprop_core::{
    EmbeddingKind, InferenceOptions, InferenceSettings, ModelInit, ModelSpec, OdeSolver,
    RunAccuracy, SeededRng, StepReport, Variant, VariantConfig,
};
