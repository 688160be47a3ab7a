//! The fast kernels, whatever the process-wide backend: custom ops on
//! contiguous-able f32 CPU tensors, candle's reference ops on other devices
//! and dtypes.
//!
//! Shapes as in [`crate::conv2d`] and [`crate::max_pool2x2`]; shape errors
//! name the operand and the expected shape.

use candle_core::{bail, DType, Result, Tensor};

use crate::conv::{conv_geometry, Conv2dOp, Epilogue};
use crate::im2col::ConvGeometry;
use crate::pool::{pool_dims, MaxPool2x2Op};
use crate::reference;

/// Whether the custom ops apply: every operand an f32 CPU tensor.
fn on_cpu_f32(tensors: &[&Tensor]) -> bool {
    tensors
        .iter()
        .all(|t| t.device().is_cpu() && t.dtype() == DType::F32)
}

/// `w ⋆ x + b`, valid, stride 1.
pub fn conv2d(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let geo = conv_geometry(x, weight, bias)?;
    if !on_cpu_f32(&[x, weight, bias]) {
        return reference::conv2d(x, weight, bias);
    }
    Conv2dOp::apply(geo, Epilogue::None, x, weight, bias, None)
}

/// `relu(w ⋆ x + b)`, valid, stride 1, in one pass.
pub fn conv2d_relu(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    conv2d_relu_masked(x, weight, bias, None)
}

/// `relu(w ⋆ x + b) ⊙ mask` in one pass (no gradient reaches the mask).
pub fn conv2d_relu_masked(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    let geo = conv_geometry(x, weight, bias)?;
    let fallback = reference::conv2d_relu_masked;
    fused(geo, Epilogue::Relu, [x, weight, bias], mask, fallback)
}

/// `maxpool2x2(relu(w ⋆ x + b))` in one pass: the full-size convolution
/// output is never stored.
pub fn conv2d_relu_pool2x2(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    conv2d_relu_pool2x2_masked(x, weight, bias, None)
}

/// `maxpool2x2(relu(w ⋆ x + b)) ⊙ mask` in one pass (no gradient reaches the
/// mask).
pub fn conv2d_relu_pool2x2_masked(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    let geo = conv_geometry(x, weight, bias)?;
    if geo.out_h() < 2 || geo.out_w() < 2 {
        bail!(
            "conv2d_relu_pool2x2: the {}x{} convolution output is too small for 2x2 pooling",
            geo.out_h(),
            geo.out_w()
        )
    }
    let fallback = reference::conv2d_relu_pool2x2_masked;
    fused(
        geo,
        Epilogue::ReluMaxPool,
        [x, weight, bias],
        mask,
        fallback,
    )
}

/// candle's ops for a masked convolution, same arguments.
type MaskedFallback = fn(&Tensor, &Tensor, &Tensor, Option<&Tensor>) -> Result<Tensor>;

/// The custom op when every operand (and the mask) is an f32 CPU tensor,
/// else `fallback`.
fn fused(
    geo: ConvGeometry,
    epilogue: Epilogue,
    [x, weight, bias]: [&Tensor; 3],
    mask: Option<&Tensor>,
    fallback: MaskedFallback,
) -> Result<Tensor> {
    if !on_cpu_f32(&[x, weight, bias]) || !mask.is_none_or(|m| on_cpu_f32(&[m])) {
        return fallback(x, weight, bias, mask);
    }
    Conv2dOp::apply(geo, epilogue, x, weight, bias, mask)
}

/// 2x2, stride-2 max pooling.
pub fn max_pool2x2(x: &Tensor) -> Result<Tensor> {
    let dims = pool_dims(x)?;
    if !on_cpu_f32(&[x]) {
        return reference::max_pool2x2(x);
    }
    MaxPool2x2Op { dims }.apply(x)
}
