//! # noprop-dt
//!
//! NoProp-DT, usable on its own as a library. Depends only on
//! `noprop-core`, `noprop-block` and candle; never on another variant, on
//! the data crate or on the trainer.
