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

/// `relu(w ⋆ x + b) ⊙ mask` with candle's ops (the mask detached).
pub fn conv2d_relu_masked(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    apply_mask(conv2d_relu(x, weight, bias)?, mask)
}

/// `maxpool2x2(relu(w ⋆ x + b)) ⊙ mask` with candle's ops (the mask
/// detached).
pub fn conv2d_relu_pool2x2_masked(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    apply_mask(conv2d_relu_pool2x2(x, weight, bias)?, mask)
}

fn apply_mask(y: Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    match mask {
        None => Ok(y),
        Some(m) => {
            crate::conv::check_mask(m, y.dims())?;
            y.mul(&m.detach().to_dtype(y.dtype())?)
        }
    }
}

/// 2x2, stride-2 max pooling (floor: an odd last row or column is dropped),
/// built from candle ops whose gradient is right on every device: crop to
/// even sizes, split each axis into (half, 2), move the two window axes
/// last and take the max over the 4 window elements.
///
/// Not candle's `max_pool2d`: in candle 0.11 its backward multiplies the
/// argmax gradient by the fraction of maxima in the window instead of
/// dividing by their count, so with a unique maximum the gradient is a
/// quarter of the true one (the test
/// `candle_max_pool2d_gradient_is_a_quarter_of_the_true_one` pins this).
/// This path is the implementation on CUDA, so it must train exactly like
/// the fast CPU kernel. With exact ties (e.g. an all-zero window after a
/// ReLU) every maximum receives the gradient, where the fast kernel gives it
/// to the first; below a ReLU both are multiplied by zero.
pub fn max_pool2x2(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let (h2, w2) = (h / 2, w / 2);
    if h2 == 0 || w2 == 0 {
        candle_core::bail!("max_pool2x2: input {h}x{w} is smaller than the 2x2 window");
    }
    let x = if h != 2 * h2 || w != 2 * w2 {
        x.narrow(2, 0, 2 * h2)?.narrow(3, 0, 2 * w2)?
    } else {
        x.clone()
    };
    x.reshape((n, c, h2, 2, w2, 2))?
        .permute((0, 1, 2, 4, 3, 5))?
        .reshape((n, c, h2, w2, 4))?
        .max(4)
}
