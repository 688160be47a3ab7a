//! # noprop-core
//!
//! The mathematics of NoProp (Li, Teh, Pascanu 2025) and the surface the
//! variants share: noise schedules (cosine for DT, learned for CT), SNR and
//! posterior coefficients, the closed-form KL, time embeddings, ODE steppers,
//! class embeddings, seeded randomness, resumable optimizers and the
//! `Variant` trait.
//!
//! Invariant: this crate does no I/O (no files, no network, no printing).

pub mod ode;
pub mod params;
pub mod rng;
pub mod variant;

pub use ode::OdeSolver;
pub use params::ParamStore;
pub use rng::SeededRng;
pub use variant::{InferenceOptions, ModelSpec, StepReport, Variant, VariantKind};
