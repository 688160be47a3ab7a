//! # noprop-core
//!
//! The mathematics of NoProp (Li, Teh, Pascanu 2025) and the surface the
//! variants share. Time runs from noise (z_0) to label (z_T, or z_1 in
//! continuous time); `docs/algorithm.md` states the mathematics.
//!
//! | module | what | used by |
//! |---|---|---|
//! | [`schedule::cosine`] | [`CosineSchedule`]: alpha_bar, alpha, SNR, SNR deltas, Eq. 3 posterior coefficients, `table()` | DT |
//! | [`schedule::learned`] | [`LearnedSchedule`]: trainable gamma(t), alpha_bar, SNR, SNR', probability-flow drift, importance sampling of t | CT |
//! | [`kl`] | [`kl_prior`], [`kl_prior_tensor`]: closed-form KL(q(z_0 \| y) \|\| N(0, I)) | DT, CT |
//! | [`marginal`] | [`marginal_sample`]: z ~ q(z_t \| y) with one or per-row alpha_bar | DT, CT |
//! | [`mix`] | [`softmax_mix`] (DT/CT block output), [`linear_mix`] (FM) | block, variants |
//! | [`embedding`] | [`ClassEmbedding`] W [m, d]: one-hot, learned dim-k (orthogonal), prototype | all |
//! | [`time_embedding`] | [`SinusoidalTimeEmbedding`]: t `[B]` -> [B, 64] on 1000 t | block (CT/FM) |
//! | [`ode`] | [`OdeSolver`]: Euler, Heun, RK4 over a caller's vector field | CT, FM inference |
//! | [`optim`] | [`Adam`] / AdamW matching PyTorch, per-group lr and decay, exportable state | all |
//! | [`rng`] | [`SeededRng`]: every random number of the project | all |
//! | [`params`] | [`ParamStore`]: seeded `VarBuilder` backend, sorted names | all |
//! | [`variant`] | [`Variant`], [`BuildVariant`], [`VariantConfig`]: what a trainer drives and builds | variants, trainer |
//! | [`inference`] | batching, several runs, ensemble, accuracy ([`inference::evaluate`]) | variants, trainer |
//! | [`distributed`] | [`ProcessGroup`] (one all-gather; sums in rank order), [`RowShard`], gradient sums of data parallelism | variants, trainer |
//! | [`stats`] | [`stats::median`] of host values | embedding, trainer, bench, xtask |
//!
//! Conventions: host scalars are `f64`; tensors are f32 unless a caller
//! builds in another dtype; shapes are written `[B, d]` (batch, latent
//! dimension), `[m, d]` (classes, latent dimension). Bad input is an error
//! naming the problem, never a panic.
//!
//! A DT training step, in outline (`store`, `rng`, the block and its
//! optimizer belong to the variant):
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use noprop_core::{kl_prior, marginal_sample, softmax_mix, ClassEmbedding, CosineSchedule, EmbeddingKind, ParamStore, SeededRng};
//!
//! # fn main() -> candle_core::Result<()> {
//! let dev = Device::Cpu;
//! let schedule = CosineSchedule::new(10, 0.9999)?;
//! let store = ParamStore::new(SeededRng::new(0));
//! let mut rng = SeededRng::new(1);
//! let w = ClassEmbedding::new(EmbeddingKind::OneHot, 10, &store, &mut rng, None, &dev)?;
//! let labels = Tensor::new(&[3u32, 7], &dev)?;
//! let u_y = w.rows(&labels)?; // [B, d]
//! let t = 4; // block t sees z_{t-1} ~ q(z_{t-1} | y)
//! let ab: f64 = schedule.alpha_bar(t - 1)?;
//! let z_prev = marginal_sample(&u_y, ab, &mut rng)?;
//! let logits = Tensor::zeros((2, 10), candle_core::DType::F32, &dev)?; // block(x, z_prev)
//! let u_hat = softmax_mix(&logits, &w.matrix())?;
//! let denoise = ((u_hat - &u_y)?.sqr()?.sum(1)?.mean(0)? * schedule.loss_weight(t, 0.1)?)?;
//! let kl = kl_prior(&u_y, schedule.alpha_bar_noise_end())?;
//! let _loss = (denoise + kl)?; // + CE(head(z_T), y)
//! # let _ = z_prev;
//! # Ok(())
//! # }
//! ```
//!
//! Invariant: this crate does no I/O (no files, no network, no printing).

#![warn(missing_docs)]

pub mod distributed;
pub mod embedding;
pub mod inference;
pub mod kl;
pub mod marginal;
pub mod mix;
pub mod ode;
pub mod optim;
pub mod params;
pub mod rng;
pub mod schedule;
pub mod stats;
#[cfg(any(test, feature = "testing"))]
#[doc(hidden)]
pub mod testing;
pub mod time_embedding;
pub mod variant;

pub use distributed::{ProcessGroup, RowShard};
pub use embedding::{ClassEmbedding, EmbeddingKind, EMBEDDING_WEIGHT};
pub use inference::{InferenceSettings, RunAccuracy};
pub use kl::{kl_prior, kl_prior_tensor};
pub use marginal::{marginal_sample, marginal_sample_per_row, marginal_with_noise};
pub use mix::{linear_mix, softmax_mix};
pub use ode::OdeSolver;
pub use optim::{Adam, AdamConfig, LrSchedule, LrScheduleKind, ParamGroup};
pub use params::ParamStore;
pub use rng::SeededRng;
pub use schedule::{
    CosineSchedule, CosineScheduleConfig, ImportanceSample, LearnedSchedule, LearnedScheduleConfig,
    PosteriorCoeffs, ScheduleRow, ScheduleValues,
};
pub use time_embedding::SinusoidalTimeEmbedding;
pub use variant::{
    BuildVariant, InferenceOptions, ModelInit, ModelSpec, Parallelism, ScheduleTable, StepReport,
    Variant, VariantConfig,
};
