//! 2x2 max pooling with stride 2, as a candle custom op whose backward pass
//! routes each output gradient to the input that was the maximum.
//!
//! Shapes: `x [B, C, H, W]` -> `y [B, C, H/2, W/2]` (floor: an odd last row or
//! column is dropped, as in candle and PyTorch).
//!
//! - forward: `y[b, c, i, j] = max_{u, v ∈ {0, 1}} x[b, c, 2i+u, 2j+v]`
//! - backward: `dx[b, c, 2i+u*, 2j+v*] = dy[b, c, i, j]` at the window's
//!   argmax `(u*, v*)`, zero elsewhere. Ties go to the first maximum in
//!   row-major window order, as in PyTorch (candle's reference instead
//!   spreads a tie's gradient over all tied inputs).
//!
//! The argmax is recomputed in backward from the saved input by the same
//! comparison code as in forward, so it is the one forward used; that reads
//! the input once more but stores nothing between the passes.
//!
//! Threading: planes are split into fixed chunks processed in parallel; no
//! reductions, so the result does not depend on the thread count.

use std::sync::Arc;

use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::cpu_data::{cpu_f32, F32Guard};

/// Elements of input per parallel task: big enough to amortise scheduling.
const MIN_TASK_ELEMENTS: usize = 32 * 1024;

/// Checks the input shape and returns `(B, C, H, W)`.
pub(crate) fn pool_dims(x: &Tensor) -> Result<(usize, usize, usize, usize)> {
    let Ok(dims) = x.dims4() else {
        bail!(
            "max_pool2x2: input must be [B, C, H, W], got shape {:?}",
            x.dims()
        )
    };
    let (_, _, h, w) = dims;
    if h < 2 || w < 2 {
        bail!("max_pool2x2: input planes must be at least 2x2, got {h}x{w}")
    }
    Ok(dims)
}

/// The custom op on contiguous f32 CPU tensors.
pub(crate) struct MaxPool2x2Op {
    pub dims: (usize, usize, usize, usize),
}

impl MaxPool2x2Op {
    pub fn apply(self, x: &Tensor) -> Result<Tensor> {
        let op: Arc<Box<dyn CustomOp1 + Send + Sync>> = Arc::new(Box::new(self));
        x.contiguous()?.apply_op1_arc(op)
    }
}

/// Offset (within the plane) and value of the maximum of the window whose
/// top-left input pixel is `top_left`; ties keep the first.
#[inline]
fn window_argmax(plane: &[f32], w: usize, top_left: usize) -> (usize, f32) {
    let mut best = (top_left, plane[top_left]);
    for offset in [top_left + 1, top_left + w, top_left + w + 1] {
        if plane[offset] > best.1 {
            best = (offset, plane[offset]);
        }
    }
    best
}

/// Planes per parallel task.
fn planes_per_task(h: usize, w: usize) -> usize {
    MIN_TASK_ELEMENTS.div_ceil(h * w).max(1)
}

pub(crate) fn pool_forward(dims: (usize, usize, usize, usize), x: &[f32]) -> Vec<f32> {
    let (b, c, h, w) = dims;
    let (oh, ow) = (h / 2, w / 2);
    let per_task = planes_per_task(h, w);
    let mut y = vec![0.0f32; b * c * oh * ow];
    y.par_chunks_mut(per_task * oh * ow)
        .zip(x.par_chunks(per_task * h * w))
        .for_each(|(y_planes, x_planes)| {
            for (y_plane, x_plane) in y_planes
                .chunks_exact_mut(oh * ow)
                .zip(x_planes.chunks_exact(h * w))
            {
                for i in 0..oh {
                    for j in 0..ow {
                        y_plane[i * ow + j] = window_argmax(x_plane, w, 2 * i * w + 2 * j).1;
                    }
                }
            }
        });
    y
}

pub(crate) fn pool_backward(dims: (usize, usize, usize, usize), x: &[f32], dy: &[f32]) -> Vec<f32> {
    let (b, c, h, w) = dims;
    let (oh, ow) = (h / 2, w / 2);
    let per_task = planes_per_task(h, w);
    let mut dx = vec![0.0f32; b * c * h * w];
    dx.par_chunks_mut(per_task * h * w)
        .zip(x.par_chunks(per_task * h * w))
        .zip(dy.par_chunks(per_task * oh * ow))
        .for_each(|((dx_planes, x_planes), dy_planes)| {
            let planes = dx_planes
                .chunks_exact_mut(h * w)
                .zip(x_planes.chunks_exact(h * w))
                .zip(dy_planes.chunks_exact(oh * ow));
            for ((dx_plane, x_plane), dy_plane) in planes {
                for i in 0..oh {
                    for j in 0..ow {
                        let (at, _) = window_argmax(x_plane, w, 2 * i * w + 2 * j);
                        dx_plane[at] = dy_plane[i * ow + j];
                    }
                }
            }
        });
    dx
}

impl CustomOp1 for MaxPool2x2Op {
    fn name(&self) -> &'static str {
        "noprop-max-pool2x2"
    }

    fn cpu_fwd(&self, x: &CpuStorage, x_l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = cpu_f32(x, x_l, "max_pool2x2 input")?;
        let (b, c, h, w) = self.dims;
        let y = pool_forward(self.dims, x);
        Ok((CpuStorage::F32(y), Shape::from((b, c, h / 2, w / 2))))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        if !x.track_op() {
            return Ok(None);
        }
        let dy = dy.contiguous()?;
        let dx = {
            let (xg, dyg) = (
                F32Guard::new(x, "max_pool2x2 input"),
                F32Guard::new(&dy, "max_pool2x2 output gradient"),
            );
            pool_backward(self.dims, xg.data()?, dyg.data()?)
        };
        Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
    }
}
