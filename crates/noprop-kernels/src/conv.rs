//! Valid, stride-1 2-D convolution with bias and a fused epilogue (nothing,
//! ReLU, or ReLU then 2x2 max pooling), as a candle custom op with its own
//! backward pass.
//!
//! Shapes: `x [B, C_in, H, W]`, `w [C_out, C_in, K_h, K_w]`, `b [C_out]`,
//! pre-activation `a [B, C_out, OH, OW]` with `OH = H-K_h+1`, `OW = W-K_w+1`;
//! the output is `a`, `relu(a)`, or `pool(relu(a)) [B, C_out, OH/2, OW/2]`.
//!
//! An optional constant `mask` of the output's shape multiplies the output
//! (`y = epilogue(a) ⊙ mask`, e.g. an inverted-dropout mask): the dropout
//! that follows every convolution of the blocks then costs no tensor and no
//! graph node of its own.
//!
//! - forward: `a = w ⋆ x + b`, computed per group of images as
//!   `w [C_out, C_in*K_h*K_w] · cols` (see [`crate::im2col`]); the epilogue
//!   (and the mask) is applied while copying the product out. With pooling, the full-size
//!   `a` is never stored: only the pooled output and, when a gradient will
//!   be needed, each window's argmax (one byte per output).
//! - backward: `g = dL/da` is `dL/dy`, `dL/dy ⊙ [y > 0]` (ReLU), or, with
//!   pooling, `dL/dy` placed at each window's argmax where `y > 0` and zero
//!   elsewhere (`relu` and `max` commute, so this is exactly the gradient of
//!   the unfused ops); with a mask, `dL/dy ⊙ mask` takes the place of
//!   `dL/dy` (where the mask is zero so is `y`, and the gradient). Then `db = Σ_{b,p} g`, `dw = Σ_groups g · colsᵀ`,
//!   `dx = col2im(wᵀ · g)`. A gradient is computed only for the operands
//!   that need one (`Tensor::track_op`): the first layer's input never does.
//!
//! Threading: the batch is cut into groups of a fixed number of images that
//! depends only on the layer's shape; groups run in parallel on rayon's
//! current pool, each single-threaded. Per-group weight and bias gradients
//! are summed in group order, so results are bitwise identical for any thread
//! count.

use std::sync::{Arc, OnceLock};

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

/// What is applied to `a = w ⋆ x + b` before it is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Epilogue {
    /// `y = a`.
    None,
    /// `y = relu(a)`.
    Relu,
    /// `y = maxpool2x2(relu(a))` (odd last row/column dropped).
    ReluMaxPool,
}

impl Epilogue {
    /// Output `(height, width)` of one plane.
    fn out_hw(self, geo: &ConvGeometry) -> (usize, usize) {
        match self {
            Epilogue::None | Epilogue::Relu => (geo.out_h(), geo.out_w()),
            Epilogue::ReluMaxPool => (geo.out_h() / 2, geo.out_w() / 2),
        }
    }

    fn out_image_len(self, geo: &ConvGeometry) -> usize {
        let (h, w) = self.out_hw(geo);
        geo.c_out * h * w
    }
}

/// The custom op on contiguous f32 CPU tensors.
pub(crate) struct Conv2dOp {
    geo: ConvGeometry,
    epilogue: Epilogue,
    /// With pooling and a gradient to come: each window's argmax, filled by
    /// the forward pass (`0..4`, row-major in the window).
    argmax: Option<OnceLock<Vec<u8>>>,
    /// The constant output multiplier (contiguous f32 CPU, output shape).
    mask: Option<Tensor>,
}

impl Conv2dOp {
    /// Applies the op; with pooling, argmaxes are kept only if some operand
    /// will need a gradient. `mask` must be an f32 CPU tensor of the output's
    /// shape (checked).
    pub fn apply(
        geo: ConvGeometry,
        epilogue: Epilogue,
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let needs_grad = x.track_op() || weight.track_op() || bias.track_op();
        let argmax = (epilogue == Epilogue::ReluMaxPool && needs_grad).then(OnceLock::new);
        let mask = match mask {
            Some(m) => {
                let (oh, ow) = epilogue.out_hw(&geo);
                check_mask(m, &[geo.batch, geo.c_out, oh, ow])?;
                Some(m.detach().contiguous()?)
            }
            None => None,
        };
        let op: Arc<Box<dyn CustomOp3 + Send + Sync>> = Arc::new(Box::new(Self {
            geo,
            epilogue,
            argmax,
            mask,
        }));
        x.contiguous()?
            .apply_op3_arc(&weight.contiguous()?, &bias.contiguous()?, op)
    }
}

impl CustomOp3 for Conv2dOp {
    fn name(&self) -> &'static str {
        match self.epilogue {
            Epilogue::None => "noprop-conv2d",
            Epilogue::Relu => "noprop-conv2d-relu",
            Epilogue::ReluMaxPool => "noprop-conv2d-relu-maxpool2x2",
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
        let mask_guard = self.mask.as_ref().map(|m| F32Guard::new(m, "conv2d mask"));
        let mask = mask_guard.as_ref().map(F32Guard::data).transpose()?;
        let (y, argmax) = conv_forward(geo, self.epilogue, self.argmax.is_some(), x, w, b, mask);
        if let (Some(cell), Some(argmax)) = (&self.argmax, argmax) {
            if cell.set(argmax).is_err() {
                bail!("noprop-conv2d: forward ran twice on one op")
            }
        }
        let (oh, ow) = self.epilogue.out_hw(geo);
        Ok((
            CpuStorage::F32(y),
            Shape::from((geo.batch, geo.c_out, oh, ow)),
        ))
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
            let mask_guard = self.mask.as_ref().map(|m| F32Guard::new(m, "conv2d mask"));
            let mask = mask_guard.as_ref().map(F32Guard::data).transpose()?;
            let (xg, wg, yg, dyg) = (
                F32Guard::new(x, "conv2d input"),
                F32Guard::new(w, "conv2d weight"),
                F32Guard::new(y, "conv2d output"),
                F32Guard::new(&dy, "conv2d output gradient"),
            );
            let (y, dy) = (yg.data()?, dyg.data()?);
            let kind = match self.epilogue {
                Epilogue::None => GradKind::Plain,
                Epilogue::Relu => GradKind::Relu { y },
                Epilogue::ReluMaxPool => {
                    let Some(argmax) = self.argmax.as_ref().and_then(OnceLock::get) else {
                        bail!("noprop-conv2d: pooling argmaxes missing in backward")
                    };
                    GradKind::ReluMaxPool { y, argmax }
                }
            };
            let out_grad = OutputGrad { kind, dy, mask };
            conv_backward(&self.geo, need, xg.data()?, wg.data()?, out_grad)
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

/// Index in `0..4` of the largest of four values, ties to the first.
#[inline]
fn argmax4(v: [f32; 4]) -> usize {
    let mut best = 0;
    for k in 1..4 {
        if v[k] > v[best] {
            best = k;
        }
    }
    best
}

/// Forward pass over the whole batch: the output (row-major, shape per the
/// epilogue, times `mask` if given) and, if `keep_argmax` (pooling only), the
/// argmaxes.
pub(crate) fn conv_forward(
    geo: &ConvGeometry,
    epilogue: Epilogue,
    keep_argmax: bool,
    x: &[f32],
    w: &[f32],
    b: &[f32],
    mask: Option<&[f32]>,
) -> (Vec<f32>, Option<Vec<u8>>) {
    let (p, patch, c_out) = (geo.out_pixels(), geo.patch_len(), geo.c_out);
    let per_group = images_per_group(geo);
    let out_image = epilogue.out_image_len(geo);
    let mut y = vec![0.0f32; geo.batch * out_image];
    // Pooling without a later backward still needs somewhere to write argmaxes.
    let mut argmax = vec![
        0u8;
        if epilogue == Epilogue::ReluMaxPool {
            y.len()
        } else {
            0
        }
    ];
    let argmax_chunk = if argmax.is_empty() {
        1
    } else {
        per_group * out_image
    };
    let mut argmax_chunks: Vec<&mut [u8]> = argmax.chunks_mut(argmax_chunk).collect();
    argmax_chunks.resize_with(geo.batch.div_ceil(per_group), Default::default);
    let mut mask_chunks: Vec<&[f32]> = mask
        .map(|m| m.chunks(per_group * out_image).collect())
        .unwrap_or_default();
    mask_chunks.resize_with(geo.batch.div_ceil(per_group), Default::default);
    y.par_chunks_mut(per_group * out_image)
        .zip(x.par_chunks(per_group * geo.in_image_len()))
        .zip(argmax_chunks.into_par_iter())
        .zip(mask_chunks.into_par_iter())
        .for_each(|(((y_group, x_group), argmax_group), mask_group)| {
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
                // prod is [C_out, (image, pixel)]; y is [image, C_out, ...].
                let planes = y_group.chunks_exact_mut(out_image / c_out).enumerate();
                for (plane, y_plane) in planes {
                    let (i, co) = (plane / c_out, plane % c_out);
                    let src = &prod[co * n_cols + i * p..co * n_cols + (i + 1) * p];
                    let bias = b[co];
                    match epilogue {
                        Epilogue::None => {
                            for (d, s) in y_plane.iter_mut().zip(src) {
                                *d = s + bias;
                            }
                        }
                        Epilogue::Relu => {
                            for (d, s) in y_plane.iter_mut().zip(src) {
                                *d = (s + bias).max(0.0);
                            }
                        }
                        Epilogue::ReluMaxPool => {
                            let (ow, pw) = (geo.out_w(), geo.out_w() / 2);
                            let am = &mut argmax_group
                                [plane * y_plane.len()..(plane + 1) * y_plane.len()];
                            for (k, (d, a)) in y_plane.iter_mut().zip(am).enumerate() {
                                let top = 2 * (k / pw) * ow + 2 * (k % pw);
                                // Bias before the comparison, so ties resolve exactly as
                                // in the unfused ops.
                                let v = [src[top], src[top + 1], src[top + ow], src[top + ow + 1]]
                                    .map(|s| s + bias);
                                let best = argmax4(v);
                                *d = v[best].max(0.0);
                                *a = best as u8;
                            }
                        }
                    }
                }
                // Same product as a separate multiplication by the mask.
                for (d, m) in y_group.iter_mut().zip(mask_group) {
                    *d *= m;
                }
            });
        });
    (y, keep_argmax.then_some(argmax))
}

/// A mask must have the output's shape (the one check, for the fast and the
/// reference ops).
pub(crate) fn check_mask(mask: &Tensor, out_dims: &[usize]) -> Result<()> {
    if mask.dims() != out_dims {
        bail!(
            "conv2d: mask must have the output's shape {out_dims:?}, got {:?}",
            mask.dims()
        )
    }
    Ok(())
}

/// Which gradients to compute.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Needs {
    pub dx: bool,
    pub dw: bool,
    pub db: bool,
}

/// How the epilogue's backward turns `dL/dy` into `dL/da`.
#[derive(Clone, Copy)]
pub(crate) enum GradKind<'a> {
    Plain,
    Relu { y: &'a [f32] },
    ReluMaxPool { y: &'a [f32], argmax: &'a [u8] },
}

/// The gradient arriving at the op's output, with what the epilogue's
/// backward needs.
#[derive(Clone, Copy)]
pub(crate) struct OutputGrad<'a> {
    pub kind: GradKind<'a>,
    pub dy: &'a [f32],
    /// The forward's output multiplier, if any.
    pub mask: Option<&'a [f32]>,
}

impl OutputGrad<'_> {
    /// Writes `g = dL/da` of images `images` into `g [C_out, (image, pixel)]`.
    /// With a mask, `dL/dy ⊙ mask` stands for `dL/dy` (the same product as
    /// the backward of a separate multiplication by the mask).
    fn pre_activation_grad(
        &self,
        geo: &ConvGeometry,
        images: std::ops::Range<usize>,
        g: &mut [f32],
    ) {
        let (p, c_out) = (geo.out_pixels(), geo.c_out);
        let n_cols = images.len() * p;
        let (ow, pw) = (geo.out_w(), geo.out_w() / 2);
        let pooled = (geo.out_h() / 2) * pw;
        if matches!(self.kind, GradKind::ReluMaxPool { .. }) {
            g.fill(0.0);
        }
        for (i, image) in images.enumerate() {
            for co in 0..c_out {
                let dst = &mut g[co * n_cols + i * p..co * n_cols + (i + 1) * p];
                let plane = image * c_out + co;
                // This plane's slice of the output-side tensors.
                let out_len = match self.kind {
                    GradKind::ReluMaxPool { .. } => pooled,
                    _ => p,
                };
                let range = plane * out_len..(plane + 1) * out_len;
                let dy = &self.dy[range.clone()];
                let mask = self.mask.map(|m| &m[range.clone()]);
                match (self.kind, mask) {
                    (GradKind::Plain, None) => dst.copy_from_slice(dy),
                    (GradKind::Plain, Some(m)) => {
                        for ((d, &gy), &mv) in dst.iter_mut().zip(dy).zip(m) {
                            *d = gy * mv;
                        }
                    }
                    (GradKind::Relu { y }, None) => {
                        for ((d, &gy), &yv) in dst.iter_mut().zip(dy).zip(&y[range]) {
                            *d = if yv > 0.0 { gy } else { 0.0 };
                        }
                    }
                    (GradKind::Relu { y }, Some(m)) => {
                        let terms = dst.iter_mut().zip(dy).zip(&y[range]).zip(m);
                        for (((d, &gy), &yv), &mv) in terms {
                            *d = if yv > 0.0 { gy * mv } else { 0.0 };
                        }
                    }
                    (GradKind::ReluMaxPool { y, argmax }, mask) => {
                        let windows = y[range.clone()].iter().zip(&argmax[range]).zip(dy);
                        for (k, ((&yv, &a), &gy)) in windows.enumerate() {
                            if yv > 0.0 {
                                let a = a as usize;
                                dst[2 * (k / pw) * ow + 2 * (k % pw) + (a / 2) * ow + a % 2] =
                                    mask.map_or(gy, |m| gy * m[k]);
                            }
                        }
                    }
                }
            }
        }
    }
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

/// Backward pass from the gradient at the op's output.
pub(crate) fn conv_backward(
    geo: &ConvGeometry,
    need: Needs,
    x: &[f32],
    w: &[f32],
    out_grad: OutputGrad<'_>,
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
        with_scratch([c_out * n_cols, patch * n_cols], |[g, buf]| {
            out_grad.pre_activation_grad(geo, images.clone(), g);
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
