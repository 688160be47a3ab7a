//! # noprop-block
//!
//! The denoising blocks of the NoProp paper (Fig. 6): the DT block (with
//! BatchNorm and a latent skip) and the CT/FM block (with a time branch).
//! Depends only on `noprop-core` and candle.
