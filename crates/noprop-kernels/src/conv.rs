//! Valid, stride-1 2-D convolution with bias and optional fused ReLU, as a
//! candle custom op with its own backward pass.
//!
//! Shapes: `x [B, C_in, H, W]`, `w [C_out, C_in, K_h, K_w]`, `b [C_out]`,
//! `y [B, C_out, OH, OW]` with `OH = H-K_h+1`, `OW = W-K_w+1`.
//!
//! - forward: `y = act(w ⋆ x + b)`, `act` the identity or ReLU, computed per
//!   group of images as `w [C_out, C_in*K_h*K_w] · cols` (see [`crate::im2col`]).
//! - backward, with `g = dL/dy ⊙ [y > 0]` for ReLU (`g = dL/dy` otherwise):
//!   `db = Σ_{b,p} g`, `dw = Σ_groups g · colsᵀ`, `dx = col2im(wᵀ · g)`.
//!   A gradient is computed only for the operands that need one
//!   (`Tensor::track_op`): the first layer's input never does.
//!
//! Threading: the batch is cut into groups of a fixed number of images that
//! depends only on the layer's shape; groups run in parallel on rayon's
//! current pool, each single-threaded. Per-group weight and bias gradients
//! are summed in group order, so results are bitwise identical for any thread
//! count.

use std::sync::Arc;

use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::cpu_data::{cpu_f32, F32Guard};
use crate::im2col::{col2im_add, im2col, ConvGeometry};
use crate::matmul::{matmul, MatRef};
use crate::scratch::with_scratch;

/// Columns (images x output pixels) per group: large enough for an efficient
/// matrix product, small enough that a group's patch matrix stays near the
/// cache and the batch splits into many groups for load balancing.
const TARGET_GROUP_COLUMNS: usize = 512;

/// Images per group; a function of the layer shape only (reproducibility).
pub(crate) fn images_per_group(geo: &ConvGeometry) -> usize {
    (TARGET_GROUP_COLUMNS / geo.out_pixels().max(1)).max(1)
}

/// Checks the operand shapes and returns the convolution's geometry.
pub(crate) fn conv_geometry(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<ConvGeometry> {
    let Ok((batch, c_in, h, w)) = x.dims4() else {
        bail!(
            "conv2d: input must be [B, C_in, H, W], got shape {:?}",
            x.dims()
        )
    };
    let Ok((c_out, w_c_in, kh, kw)) = weight.dims4() else {
        bail!(
            "conv2d: weight must be [C_out, C_in, K_h, K_w], got shape {:?}",
            weight.dims()
        )
    };
    if w_c_in != c_in {
        bail!("conv2d: weight expects {w_c_in} input channels, input has {c_in}")
    }
    if bias.dims() != [c_out] {
        bail!(
            "conv2d: bias must be [{c_out}], got shape {:?}",
            bias.dims()
        )
    }
    if c_in == 0 || c_out == 0 {
        bail!("conv2d: channel counts must be positive, got C_in = {c_in}, C_out = {c_out}")
    }
    if kh == 0 || kw == 0 || h < kh || w < kw {
        bail!("conv2d: kernel {kh}x{kw} does not fit the {h}x{w} input (valid convolution)")
    }
    Ok(ConvGeometry {
        batch,
        c_in,
        h,
        w,
        c_out,
        kh,
        kw,
    })
}

/// The custom op: convolution + bias (+ ReLU) on contiguous f32 CPU tensors.
pub(crate) struct Conv2dOp {
    pub geo: ConvGeometry,
    pub relu: bool,
}

impl Conv2dOp {
    pub fn apply(self, x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
        let op: Arc<Box<dyn CustomOp3 + Send + Sync>> = Arc::new(Box::new(self));
        x.contiguous()?
            .apply_op3_arc(&weight.contiguous()?, &bias.contiguous()?, op)
    }
}

impl CustomOp3 for Conv2dOp {
    fn name(&self) -> &'static str {
        if self.relu {
            "noprop-conv2d-relu"
        } else {
            "noprop-conv2d"
        }
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_l: &Layout,
        w: &CpuStorage,
        w_l: &Layout,
        b: &CpuStorage,
        b_l: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let geo = &self.geo;
        let x = cpu_f32(x, x_l, "conv2d input")?;
        let w = cpu_f32(w, w_l, "conv2d weight")?;
        let b = cpu_f32(b, b_l, "conv2d bias")?;
        let y = conv_forward(geo, self.relu, x, w, b);
        let shape = Shape::from((geo.batch, geo.c_out, geo.out_h(), geo.out_w()));
        Ok((CpuStorage::F32(y), shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let need = Needs {
            dx: x.track_op(),
            dw: w.track_op(),
            db: b.track_op(),
        };
        let dy = dy.contiguous()?;
        let grads = {
            let (xg, wg, yg, dyg) = (
                F32Guard::new(x, "conv2d input"),
                F32Guard::new(w, "conv2d weight"),
                F32Guard::new(y, "conv2d output"),
                F32Guard::new(&dy, "conv2d output gradient"),
            );
            let y = if self.relu { Some(yg.data()?) } else { None };
            conv_backward(&self.geo, need, xg.data()?, wg.data()?, y, dyg.data()?)
        };
        let dev = x.device();
        let dx = grads
            .dx
            .map(|v| Tensor::from_vec(v, x.shape(), dev))
            .transpose()?;
        let dw = grads
            .dw
            .map(|v| Tensor::from_vec(v, w.shape(), dev))
            .transpose()?;
        let db = grads
            .db
            .map(|v| Tensor::from_vec(v, b.shape(), dev))
            .transpose()?;
        Ok((dx, dw, db))
    }
}

/// Forward pass over the whole batch; `y` is `[B, C_out, OH, OW]` row-major.
pub(crate) fn conv_forward(
    geo: &ConvGeometry,
    relu: bool,
    x: &[f32],
    w: &[f32],
    b: &[f32],
) -> Vec<f32> {
    let (p, patch, c_out) = (geo.out_pixels(), geo.patch_len(), geo.c_out);
    let per_group = images_per_group(geo);
    let mut y = vec![0.0f32; geo.batch * geo.out_image_len()];
    y.par_chunks_mut(per_group * geo.out_image_len())
        .zip(x.par_chunks(per_group * geo.in_image_len()))
        .for_each(|(y_group, x_group)| {
            let n_cols = (x_group.len() / geo.in_image_len()) * p;
            with_scratch([patch * n_cols, c_out * n_cols], |[cols, prod]| {
                im2col(geo, x_group, cols);
                matmul(
                    prod,
                    n_cols,
                    false,
                    MatRef::row_major(w, c_out, patch),
                    MatRef::row_major(cols, patch, n_cols),
                );
                // prod is [C_out, (image, pixel)]; y is [image, C_out, pixel].
                for (i, y_image) in y_group.chunks_exact_mut(geo.out_image_len()).enumerate() {
                    for (co, y_plane) in y_image.chunks_exact_mut(p).enumerate() {
                        let src = &prod[co * n_cols + i * p..co * n_cols + (i + 1) * p];
                        let bias = b[co];
                        if relu {
                            for (d, s) in y_plane.iter_mut().zip(src) {
                                *d = (s + bias).max(0.0);
                            }
                        } else {
                            for (d, s) in y_plane.iter_mut().zip(src) {
                                *d = s + bias;
                            }
                        }
                    }
                }
            });
        });
    y
}

/// Which gradients to compute.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Needs {
    pub dx: bool,
    pub dw: bool,
    pub db: bool,
}

/// Gradients of the three operands, each only if requested.
pub(crate) struct ConvGrads {
    pub dx: Option<Vec<f32>>,
    pub dw: Option<Vec<f32>>,
    pub db: Option<Vec<f32>>,
}

/// One group's share of the outputs.
struct GroupOut<'a> {
    first_image: usize,
    n_images: usize,
    dx: Option<&'a mut [f32]>,
    dw: Option<&'a mut [f32]>,
    db: &'a mut [f32],
}

/// Backward pass. `y` is the forward output when the ReLU is fused (its
/// positive entries pass the gradient), `None` otherwise.
pub(crate) fn conv_backward(
    geo: &ConvGeometry,
    need: Needs,
    x: &[f32],
    w: &[f32],
    y: Option<&[f32]>,
    dy: &[f32],
) -> ConvGrads {
    let (p, patch, c_out) = (geo.out_pixels(), geo.patch_len(), geo.c_out);
    let per_group = images_per_group(geo);
    let n_groups = geo.batch.div_ceil(per_group);
    let mut dx = need
        .dx
        .then(|| vec![0.0f32; geo.batch * geo.in_image_len()]);
    let mut dw_parts = need.dw.then(|| vec![0.0f32; n_groups * c_out * patch]);
    let mut db_parts = vec![0.0f32; n_groups * c_out];

    let mut dx_chunks = dx
        .as_mut()
        .map(|v| v.chunks_mut(per_group * geo.in_image_len()));
    let mut dw_chunks = dw_parts.as_mut().map(|v| v.chunks_mut(c_out * patch));
    let tasks: Vec<GroupOut<'_>> = db_parts
        .chunks_mut(c_out)
        .enumerate()
        .map(|(g, db)| {
            let first_image = g * per_group;
            GroupOut {
                first_image,
                n_images: per_group.min(geo.batch - first_image),
                dx: dx_chunks.as_mut().and_then(Iterator::next),
                dw: dw_chunks.as_mut().and_then(Iterator::next),
                db,
            }
        })
        .collect();

    tasks.into_par_iter().for_each(|task| {
        let n_cols = task.n_images * p;
        let images = task.first_image..task.first_image + task.n_images;
        let dy_group = &dy[images.start * geo.out_image_len()..images.end * geo.out_image_len()];
        let y_group =
            y.map(|y| &y[images.start * geo.out_image_len()..images.end * geo.out_image_len()]);
        with_scratch([c_out * n_cols, patch * n_cols], |[g, buf]| {
            // g = dL/d(pre-activation), rearranged to [C_out, (image, pixel)].
            for i in 0..task.n_images {
                for co in 0..c_out {
                    let src = (i * c_out + co) * p;
                    let dst = &mut g[co * n_cols + i * p..co * n_cols + (i + 1) * p];
                    match y_group {
                        Some(y) => {
                            for ((d, &gy), &yv) in dst
                                .iter_mut()
                                .zip(&dy_group[src..src + p])
                                .zip(&y[src..src + p])
                            {
                                *d = if yv > 0.0 { gy } else { 0.0 };
                            }
                        }
                        None => dst.copy_from_slice(&dy_group[src..src + p]),
                    }
                }
            }
            for (co, db) in task.db.iter_mut().enumerate() {
                *db = g[co * n_cols..(co + 1) * n_cols].iter().sum();
            }
            let g_mat = MatRef::row_major(g, c_out, n_cols);
            if let Some(dw) = task.dw {
                let x_group =
                    &x[images.start * geo.in_image_len()..images.end * geo.in_image_len()];
                im2col(geo, x_group, buf);
                matmul(
                    dw,
                    patch,
                    false,
                    g_mat,
                    MatRef::row_major(buf, patch, n_cols).t(),
                );
            }
            if let Some(dx) = task.dx {
                matmul(
                    buf,
                    n_cols,
                    false,
                    MatRef::row_major(w, c_out, patch).t(),
                    g_mat,
                );
                col2im_add(geo, buf, dx);
            }
        });
    });

    // Sum the per-group partial gradients in group order (deterministic).
    let sum_parts = |parts: &[f32], len: usize| -> Vec<f32> {
        let mut total = vec![0.0f32; len];
        for part in parts.chunks_exact(len) {
            for (t, v) in total.iter_mut().zip(part) {
                *t += v;
            }
        }
        total
    };
    ConvGrads {
        dx,
        dw: dw_parts.map(|parts| sum_parts(&parts, c_out * patch)),
        db: need.db.then(|| sum_parts(&db_parts, c_out)),
    }
}
