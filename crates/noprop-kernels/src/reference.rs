//! candle's own ops for the same functions: the reference the fast kernels
//! are tested against, and the implementation on non-CPU devices and
//! non-f32 dtypes.
//!
//! Shapes as in [`crate::conv2d`], [`crate::conv2d_relu_pool2x2`] and
//! [`crate::max_pool2x2`].

use candle_core::{Result, Tensor};

/// `w ⋆ x + b` (valid, stride 1) with candle's `conv2d` and a broadcast add.
pub fn conv2d(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let y = x.conv2d(weight, 0, 1, 1, 1)?;
    y.broadcast_add(&bias.reshape((1, bias.elem_count(), 1, 1))?)
}

/// `relu(w ⋆ x + b)` with candle's ops.
pub fn conv2d_relu(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    conv2d(x, weight, bias)?.relu()
}

/// `maxpool2x2(relu(w ⋆ x + b))` with candle's ops.
pub fn conv2d_relu_pool2x2(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    max_pool2x2(&conv2d_relu(x, weight, bias)?)
}

/// 2x2, stride-2 max pooling with candle's `max_pool2d`. (Its gradient in
/// candle 0.11 is a quarter of the true one; see the tests.)
pub fn max_pool2x2(x: &Tensor) -> Result<Tensor> {
    x.max_pool2d(2)
}
