//! # noprop-ct
//!
//! NoProp-CT (Li, Teh, Pascanu 2025, continuous time), usable on its own as
//! a library. Depends only on `noprop-core`, `noprop-block` and candle;
//! never on another variant, on the data crate or on the trainer.
//!
//! One shared [`noprop_block::CtFmBlock`] learns to denoise a noisy class
//! embedding z_t ~ q(z_t | y) = N(sqrt(ab(t)) u_y, (1 - ab(t)) I) given the
//! image x and the time t in [0, 1] (0 = noise, 1 = clean); the schedule
//! ab(t) = sigmoid(-gamma(t)) is learned (`noprop_core::LearnedSchedule`).
//! The loss (Eq. 9, [`loss`]) is CE(head(z_1), y) + KL(q(z_0|y) || N(0,I)) +
//! (eta / 2) SNR'(t) ||softmax(block(x, z_t, t)) W - u_y||^2, eta = 1. One
//! Adam (PyTorch L2 decay) updates block, head, W (decay 1e-3) and the
//! schedule (its own group, decay 0 by default). Inference integrates the
//! probability-flow ODE from z_0 ~ N(0, I) ([`model`]) and reads
//! softmax(head(z_1)).
//!
//! Stability choices (config [`CtConfig`], evidence in the crate README):
//! initial endpoints gamma = +-ln 99, t uniform as in Eq. 9 (sampling t in
//! proportion to SNR'(t) with the weight divided out,
//! [`TimeSampling::Importance`], is an option: it learned faster in one
//! epoch but worse over three), no weight decay on the schedule, an
//! optional learning-rate warm-up.
//!
//! ## Variable names (checkpoint tensors)
//!
//! - `block.image.{conv1,conv2,conv3,fc}.{weight,bias}`,
//!   `block.latent.fc.*` (or `block.latent.{conv1,..}` for prototypes),
//!   `block.time.fc.*`, `block.fusion.{fc1,fc2,out}.*`
//! - `head.weight` [m, d], `head.bias` `[m]`
//! - `schedule.gamma_0`, `schedule.gamma_1`, `schedule.net.*`
//! - `embedding.weight` [m, d] (learned embeddings only)
//! - optimizer state: `optim.<variable>.{step,exp_avg,exp_avg_sq}`
//!
//! ## Example
//!
//! ```no_run
//! use candle_core::{Device, Tensor};
//! use noprop_core::inference::{self, InferenceSettings};
//! use noprop_core::variant::ModelSpec;
//! use noprop_core::{InferenceOptions, SeededRng, Variant};
//! use noprop_ct::{CtConfig, NoPropCt};
//!
//! # fn main() -> candle_core::Result<()> {
//! let dev = Device::Cpu;
//! let mut model = NoPropCt::new(CtConfig::default(), ModelSpec::mnist(), None, 0, &dev)?;
//! let mut rng = SeededRng::new(1);
//! let images = rng.normal((8, 1, 28, 28), &dev)?; // normalised MNIST in practice
//! let labels = Tensor::new(&[0u32, 1, 2, 3, 4, 5, 6, 7], &dev)?;
//! let report = model.train_step(&images, &labels, &mut rng)?;
//! println!("loss {}", report.loss);
//! let options = InferenceOptions { steps: Some(100), ..Default::default() };
//! let settings = InferenceSettings::new(options);
//! let accuracy = inference::evaluate(&model, &images, &labels, &settings, &mut rng)?;
//! println!("accuracy {}", accuracy.mean());
//! # Ok(())
//! # }
//! ```
//!
//! ## Using a trained model
//!
//! [`NoPropCt::from_checkpoint`] loads a checkpoint that `noprop train` wrote
//! (or `noprop export`, or [`NoPropCt::save`]): the model is rebuilt from the
//! file's own metadata, so this crate alone is enough. [`ModelCard`] says
//! how its inputs are normalised ([`ModelCard::normalize`] turns u8 pixels
//! into the model's inputs exactly as in training). The crate's example
//! `ct_predict_from_checkpoint`:
//!
//! ```no_run
#![doc = include_str!("../examples/ct_predict_from_checkpoint.rs")]
//! ```

#![warn(missing_docs)]

pub mod checkpoint;
pub mod config;
pub mod loss;
pub mod model;
pub mod names;
mod variant;

pub use config::{CtConfig, TimeSampling};
pub use loss::CtLoss;
pub use model::NoPropCt;

// What a user of this crate alone needs to build, train and run a
// model: `noprop-ct` as the only dependency is enough.
pub use candle_core;
pub use candle_core::{DType, Device, Tensor};
pub use noprop_checkpoint::ModelCard;
pub use noprop_core::inference::{evaluate, predict_proba, predict_runs};
pub use noprop_core::{
    EmbeddingKind, InferenceOptions, InferenceSettings, ModelInit, ModelSpec, OdeSolver,
    RunAccuracy, SeededRng, StepReport, Variant, VariantConfig,
};
