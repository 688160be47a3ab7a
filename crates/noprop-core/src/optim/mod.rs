//! Optimizers whose state can be saved and restored exactly.
//!
//! candle-nn's `AdamW` keeps its moments private, so a run cannot resume
//! bitwise. [`Adam`] implements PyTorch's Adam (L2 decay) and AdamW
//! (decoupled decay) with per-group learning rate and weight decay, and
//! exports its state as named tensors for checkpoints.

pub mod adam;
pub mod lr_schedule;

pub use adam::{Adam, AdamConfig, ParamGroup};
pub use lr_schedule::{LrSchedule, LrScheduleKind};
