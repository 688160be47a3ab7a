//! # noprop-kernels
//!
//! Fast CPU kernels for the operations NoProp's blocks spend their time in,
//! as candle custom ops with their own backward passes. On other devices and
//! dtypes the functions fall back to candle's own ops. Depends only on candle
//! (and the `gemm` crate candle itself uses).
//!
//! | function | math | shapes |
//! |---|---|---|
//! | [`conv2d`] | `y = w ⋆ x + b` (valid, stride 1) | `x [B, C_in, H, W]`, `w [C_out, C_in, K_h, K_w]`, `b [C_out]` -> `[B, C_out, H-K_h+1, W-K_w+1]` |
//! | [`conv2d_relu`] | `y = relu(w ⋆ x + b)` | as [`conv2d`] |
//! | [`conv2d_relu_pool2x2`] | `y = maxpool2x2(relu(w ⋆ x + b))` | as [`conv2d`], then `[B, C_out, OH/2, OW/2]` |
//! | [`conv2d_relu_masked`], [`conv2d_relu_pool2x2_masked`] | the same times a constant `mask` of the output's shape (inverted dropout) | as above |
//! | [`max_pool2x2`] | `y[i, j] = max of x[2i..2i+2, 2j..2j+2]` | `[B, C, H, W]` -> `[B, C, H/2, W/2]` |
//! | [`dense::matmul_rows`] | `dst (+)= lhs · rhs` on plain row-major slices, single-threaded (inference loops with reused buffers) | `[rows, k] · [k, n]` |
//!
//! ## How they are fast
//!
//! - Convolution forward and both gradients are matrix products around an
//!   im2col patch matrix (col2im for the input gradient), on the `gemm`
//!   crate, instead of candle's direct `conv_transpose2d` loop.
//! - No input gradient is computed for an input that does not need one
//!   (`Tensor::track_op` is false: the image entering the first layer).
//! - [`conv2d_relu`] applies bias and ReLU while copying the product out, and
//!   its backward masks the gradient with the saved output.
//! - [`conv2d_relu_pool2x2`] also pools while copying the product out: the
//!   full-size activation is never stored, only the pooled output and one
//!   argmax byte per output, and its backward scatters to the argmaxes.
//! - The `_masked` variants multiply by a dropout mask while copying out and
//!   fold the mask into their backward: the dropout after each convolution
//!   adds no graph node, so candle's backward does not allocate, zero and
//!   accumulate a gradient for an extra activation-sized tensor.
//! - Max pooling sends each gradient to its window's argmax in one pass.
//!
//! ## Threading (deliberate; see the benchmark in `docs/benchmarks/`)
//!
//! Each op cuts the batch into groups of a fixed number of images (a function
//! of the layer shape only) and runs the groups on rayon's *current* pool,
//! each group single-threaded (`gemm` with `Parallelism::None`). Per-group
//! partial weight/bias gradients are summed in group order. Hence:
//!
//! - results are **bitwise identical for any thread count** and any run;
//! - the thread count is rayon's: `RAYON_NUM_THREADS` for the global pool,
//!   or a `rayon::ThreadPool::install` scope. A trainer that runs several
//!   NoProp-DT blocks concurrently gives each a one-thread pool and so gets
//!   no oversubscription;
//! - on a shared machine set `CANDLE_NUM_THREADS=1`: candle's element-wise
//!   ops then run inline instead of on its spinning barrier pool, which
//!   otherwise competes with these kernels for the same cores.
//!
//! ## Memory
//!
//! Binaries should call [`tune_cpu_allocator`] once at start-up: it keeps
//! freed activation memory in the process instead of page-faulting it back
//! in at every op (about a quarter of a training step otherwise).
//!
//! ## Choosing the implementation
//!
//! The top-level functions use the process-wide [`KernelBackend`]
//! ([`set_kernel_backend`], or `NOPROP_KERNELS=fast|candle`); [`fast`] and
//! [`reference`](mod@reference) name one implementation explicitly.

#![warn(missing_docs)]

mod allocator;
mod backend;
mod conv;
mod cpu_data;
pub mod dense;
pub mod fast;
mod im2col;
mod matmul;
mod pool;
pub mod reference;
mod scratch;

pub use allocator::tune_cpu_allocator;
pub use backend::{kernel_backend, set_kernel_backend, KernelBackend, KERNEL_BACKEND_ENV};

use candle_core::{Result, Tensor};

/// Valid (no padding), stride-1 2-D convolution with bias:
/// `x [B, C_in, H, W]`, `weight [C_out, C_in, K_h, K_w]`, `bias [C_out]`
/// -> `[B, C_out, H-K_h+1, W-K_w+1]`.
pub fn conv2d(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    match kernel_backend()? {
        KernelBackend::Fast => fast::conv2d(x, weight, bias),
        KernelBackend::Candle => reference::conv2d(x, weight, bias),
    }
}

/// [`conv2d`] followed by ReLU, fused: `relu(w ⋆ x + b)`, same shapes.
pub fn conv2d_relu(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    conv2d_relu_masked(x, weight, bias, None)
}

/// [`conv2d_relu`] followed by [`max_pool2x2`], fused:
/// `maxpool2x2(relu(w ⋆ x + b))` -> `[B, C_out, OH/2, OW/2]` with
/// `OH = H-K_h+1`, `OW = W-K_w+1` (both at least 2). Same values and
/// gradients as the two ops in turn (ties go to the first maximum).
pub fn conv2d_relu_pool2x2(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    conv2d_relu_pool2x2_masked(x, weight, bias, None)
}

/// [`conv2d_relu`] times a constant mask of the output's shape, fused:
/// `relu(w ⋆ x + b) ⊙ mask` (an inverted-dropout mask, say). No gradient
/// flows to the mask; `None` is [`conv2d_relu`].
pub fn conv2d_relu_masked(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    match kernel_backend()? {
        KernelBackend::Fast => fast::conv2d_relu_masked(x, weight, bias, mask),
        KernelBackend::Candle => reference::conv2d_relu_masked(x, weight, bias, mask),
    }
}

/// [`conv2d_relu_pool2x2`] times a constant mask of the pooled output's
/// shape, fused: `maxpool2x2(relu(w ⋆ x + b)) ⊙ mask`. No gradient flows to
/// the mask; `None` is [`conv2d_relu_pool2x2`].
pub fn conv2d_relu_pool2x2_masked(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    match kernel_backend()? {
        KernelBackend::Fast => fast::conv2d_relu_pool2x2_masked(x, weight, bias, mask),
        KernelBackend::Candle => reference::conv2d_relu_pool2x2_masked(x, weight, bias, mask),
    }
}

/// 2x2 max pooling with stride 2 (odd trailing rows/columns dropped):
/// `[B, C, H, W]` -> `[B, C, H/2, W/2]`.
pub fn max_pool2x2(x: &Tensor) -> Result<Tensor> {
    match kernel_backend()? {
        KernelBackend::Fast => fast::max_pool2x2(x),
        KernelBackend::Candle => reference::max_pool2x2(x),
    }
}
