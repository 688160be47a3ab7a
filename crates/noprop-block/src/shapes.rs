//! Input checks shared by the blocks, so a wrong shape is an error naming
//! the expected shape instead of a failure deep inside a matmul.

use candle_core::{bail, Result, Tensor};

/// Width of the image, latent (and time) features of both blocks.
pub const FEATURE_DIM: usize = 256;

/// `features` must be `[B, 256]`; returns B.
pub(crate) fn check_features(features: &Tensor) -> Result<usize> {
    match features.dims() {
        [b, f] if *f == FEATURE_DIM => Ok(*b),
        dims => bail!("block: expected image features [B, {FEATURE_DIM}], got {dims:?}"),
    }
}

/// `z` must be `[batch, d]`.
pub(crate) fn check_latent(z: &Tensor, batch: usize, d: usize) -> Result<()> {
    match z.dims() {
        [b, zd] if (*b, *zd) == (batch, d) => Ok(()),
        dims => bail!(
            "block: expected latent z [{batch}, {d}] (batch of the image features), got {dims:?}"
        ),
    }
}

/// `t` must be `[batch]` or `[batch, 1]`.
pub(crate) fn check_time(t: &Tensor, batch: usize) -> Result<()> {
    match t.dims() {
        [b] | [b, 1] if *b == batch => Ok(()),
        dims => {
            bail!("block: expected time t [{batch}] (batch of the image features), got {dims:?}")
        }
    }
}
