//! # noprop-kernels
//!
//! Fast CPU kernels for the operations NoProp's blocks spend their time in,
//! as candle custom ops with their own backward passes. On other devices the
//! functions fall back to candle's own ops. Depends only on candle.

use candle_core::{Result, Tensor};

/// Valid (no padding), stride-1 2-D convolution with bias:
/// `x [B, C_in, H, W]`, `weight [C_out, C_in, K, K]`, `bias [C_out]`
/// -> `[B, C_out, H-K+1, W-K+1]`.
pub fn conv2d(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let y = x.conv2d(weight, 0, 1, 1, 1)?;
    y.broadcast_add(&bias.reshape((1, bias.elem_count(), 1, 1))?)
}

/// 2x2 max pooling with stride 2 (odd trailing rows/columns dropped):
/// `[B, C, H, W]` -> `[B, C, H/2, W/2]`.
pub fn max_pool2x2(x: &Tensor) -> Result<Tensor> {
    x.max_pool2d(2)
}
