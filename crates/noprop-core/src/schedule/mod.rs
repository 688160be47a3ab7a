//! Noise schedules.
//!
//! NoProp runs time from noise to label: z_0 is pure noise, z_T (or z_1) the
//! cleanest latent, so alpha_bar and SNR = alpha_bar / (1 - alpha_bar) both
//! *increase* with t. The marginal is
//! q(z_t | y) = N(sqrt(alpha_bar_t) u_y, (1 - alpha_bar_t) I).
//!
//! - [`CosineSchedule`]: the fixed discrete schedule of NoProp-DT, host `f64`
//!   values indexed by t in 0..=T.
//! - [`LearnedSchedule`]: the trainable continuous schedule of NoProp-CT
//!   (Appendix B), tensor-valued and differentiable, t in [0, 1].

pub mod cosine;
pub mod learned;

pub use cosine::{CosineSchedule, CosineScheduleConfig, PosteriorCoeffs, ScheduleRow};
pub use learned::{ImportanceSample, LearnedSchedule, LearnedScheduleConfig, ScheduleValues};
