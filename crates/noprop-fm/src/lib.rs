//! # noprop-fm
//!
//! NoProp-FM (Li, Teh, Pascanu 2025, Sec. 3.3): one CT/FM block learns the
//! vector field of a flow from Gaussian noise to the class embedding, given
//! the image. Usable on its own; depends only on `noprop-core`,
//! `noprop-block` and candle (never on another variant, the data crate or the
//! trainer).
//!
//! - Training: z_0 ~ N(0, I), z_1 = u_y = W`[y]`, t ~ U[0, 1],
//!   z_t = t z_1 + (1 - t) z_0, v_hat = logits(x, z_t, t) @ W (no softmax),
//!   loss = mean over the batch of ||v_hat - (z_1 - z_0)||^2 (Eq. 11). With a
//!   learned W (dimN or prototype) the anchor term
//!   CE(head(z_t + (1 - t) v_hat), y) of Eq. 13 is added so the embeddings
//!   do not collapse; with one-hot W there is no head. Adam (lr 1e-3, L2
//!   weight decay 1e-3) over every trainable variable.
//! - Inference: integrate dz/dt = v_hat from z_0 ~ N(0, I) over [0, 1]
//!   (Euler, 1000 steps by default; Heun and RK4 available) with the image
//!   features computed once per batch; the prediction is the class whose
//!   embedding is nearest to z_1. [`Variant::predict_runs`] returns the
//!   softmax of minus the squared distances, whose argmax is that class.
//!
//! Variable names (checkpoint tensor names): `block.*` (see noprop-block),
//! `embedding.weight` (learned W only), `head.weight`, `head.bias` (learned
//! W only); optimizer state `optim.<variable>.{exp_avg,exp_avg_sq,step}`.
//!
//! ```no_run
//! // noprop-fm re-exports what this needs: no other dependency.
//! use noprop_fm::{
//!     predict_proba, Device, FmConfig, InferenceOptions, InferenceSettings, ModelSpec, NoPropFm,
//!     SeededRng, Tensor, Variant,
//! };
//!
//! # fn main() -> noprop_fm::candle_core::Result<()> {
//! let device = Device::Cpu;
//! let mut model = NoPropFm::new(FmConfig::default(), ModelSpec::mnist(), None, 0, &device)?;
//! let mut rng = SeededRng::new(1);
//! let images = rng.normal((8, 1, 28, 28), &device)?;
//! let labels = Tensor::new(&[0u32, 1, 2, 3, 4, 5, 6, 7], &device)?;
//! let report = model.train_step(&images, &labels, &mut rng)?;
//! println!("loss {}", report.loss);
//! let options = InferenceOptions { steps: Some(100), ..Default::default() };
//! let settings = InferenceSettings::new(options);
//! let probs = predict_proba(&model, &images, &settings, &mut rng)?; // [8, 10]
//! let classes = probs.argmax(1)?; // [8] u32
//! # let _ = classes;
//! # Ok(())
//! # }
//! ```
//!
//! [`Variant::predict_runs`]: noprop_core::Variant::predict_runs
//!
//! ## Using a trained model
//!
//! [`NoPropFm::from_checkpoint`] loads a checkpoint that `noprop train` wrote
//! (or `noprop export`, or [`NoPropFm::save`]): the model is rebuilt from the
//! file's own metadata, so this crate alone is enough. [`ModelCard`] says
//! how its inputs are normalised ([`ModelCard::normalize`] turns u8 pixels
//! into the model's inputs exactly as in training). The crate's example
//! `fm_predict_from_checkpoint`:
//!
//! ```no_run
#![doc = include_str!("../examples/fm_predict_from_checkpoint.rs")]
//! ```

#![warn(missing_docs)]

pub mod checkpoint;
pub mod config;
pub mod model;
pub mod names;
mod variant;

pub use config::FmConfig;
pub use model::NoPropFm;

// What a user of this crate alone needs to build, train and run a
// model: `noprop-fm` as the only dependency is enough.
pub use candle_core;
pub use candle_core::{DType, Device, Tensor};
pub use noprop_checkpoint::ModelCard;
pub use noprop_core::inference::{evaluate, predict_proba, predict_runs};
pub use noprop_core::{
    EmbeddingKind, InferenceOptions, InferenceSettings, ModelInit, ModelSpec, OdeSolver,
    RunAccuracy, SeededRng, StepReport, Variant, VariantConfig,
};
