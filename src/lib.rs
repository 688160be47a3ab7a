//! # noprop
//!
//! NoProp (Li, Teh, Pascanu 2025) in Rust on candle: a classifier trained
//! without end-to-end back-propagation. This root crate re-exports the
//! workspace's crates; see `ARCHITECTURE.md` for how they fit together.

pub use noprop_backprop as backprop;
pub use noprop_block as block;
pub use noprop_checkpoint as checkpoint;
pub use noprop_core as core;
pub use noprop_ct as ct;
pub use noprop_data as data;
pub use noprop_dt as dt;
pub use noprop_fm as fm;
pub use noprop_kernels as kernels;
pub use noprop_train as train;
