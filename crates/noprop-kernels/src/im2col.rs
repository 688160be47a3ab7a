//! Lowering a valid, stride-1 2-D convolution to a matrix product.
//!
//! For `n` images `x [n, C_in, H, W]` and a `K_h x K_w` kernel, the patch
//! matrix ("im2col") is
//!
//! `cols [C_in*K_h*K_w, n*P]`, `cols[(c, i, j), (b, y, x)] = x[b, c, y+i, x+j]`,
//!
//! with `P = OH*OW`, `OH = H-K_h+1`, `OW = W-K_w+1`. Then, with the weight
//! viewed as `w [C_out, C_in*K_h*K_w]`:
//!
//! - forward: `y[:, (b, p)] = w · cols`
//! - weight gradient: `dw = dy · colsᵀ` (summed over the `n*P` columns)
//! - input gradient: `dcols = wᵀ · dy`, then "col2im" adds every entry of
//!   `dcols` back onto the input pixel it was copied from.
//!
//! Rows of `cols` are built from contiguous runs of `OW` input pixels, so both
//! directions are plain slice copies/adds.

/// Geometry of one valid (no padding), stride-1 convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ConvGeometry {
    pub batch: usize,
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub kh: usize,
    pub kw: usize,
}

impl ConvGeometry {
    pub fn out_h(&self) -> usize {
        self.h + 1 - self.kh
    }
    pub fn out_w(&self) -> usize {
        self.w + 1 - self.kw
    }
    /// Output pixels per channel, `P = OH*OW`.
    pub fn out_pixels(&self) -> usize {
        self.out_h() * self.out_w()
    }
    /// Elements of one input image, `C_in*H*W`.
    pub fn in_image_len(&self) -> usize {
        self.c_in * self.h * self.w
    }
    /// Rows of the patch matrix, `C_in*K_h*K_w`.
    pub fn patch_len(&self) -> usize {
        self.c_in * self.kh * self.kw
    }
}

/// Fills `cols [patch_len, n*P]` from the `n` contiguous images in `x`.
pub(crate) fn im2col(geo: &ConvGeometry, x: &[f32], cols: &mut [f32]) {
    let (oh, ow, p) = (geo.out_h(), geo.out_w(), geo.out_pixels());
    let n = x.len() / geo.in_image_len();
    let n_cols = n * p;
    debug_assert_eq!(cols.len(), geo.patch_len() * n_cols);
    for (b, image) in x.chunks_exact(geo.in_image_len()).enumerate() {
        for (c, plane) in image.chunks_exact(geo.h * geo.w).enumerate() {
            for i in 0..geo.kh {
                for j in 0..geo.kw {
                    let row = (c * geo.kh + i) * geo.kw + j;
                    let dst = &mut cols[row * n_cols + b * p..row * n_cols + (b + 1) * p];
                    for (y, dst_run) in dst.chunks_exact_mut(ow).enumerate().take(oh) {
                        let src = (y + i) * geo.w + j;
                        dst_run.copy_from_slice(&plane[src..src + ow]);
                    }
                }
            }
        }
    }
}

/// Adds `dcols [patch_len, n*P]` back onto the `n` contiguous images in `dx`
/// (the adjoint of [`im2col`]). Each pixel receives its contributions in a
/// fixed order, so the result does not depend on threading.
pub(crate) fn col2im_add(geo: &ConvGeometry, dcols: &[f32], dx: &mut [f32]) {
    let (oh, ow, p) = (geo.out_h(), geo.out_w(), geo.out_pixels());
    let n = dx.len() / geo.in_image_len();
    let n_cols = n * p;
    debug_assert_eq!(dcols.len(), geo.patch_len() * n_cols);
    for (b, image) in dx.chunks_exact_mut(geo.in_image_len()).enumerate() {
        for (c, plane) in image.chunks_exact_mut(geo.h * geo.w).enumerate() {
            for i in 0..geo.kh {
                for j in 0..geo.kw {
                    let row = (c * geo.kh + i) * geo.kw + j;
                    let src = &dcols[row * n_cols + b * p..row * n_cols + (b + 1) * p];
                    for (y, src_run) in src.chunks_exact(ow).enumerate().take(oh) {
                        let dst = (y + i) * geo.w + j;
                        for (d, s) in plane[dst..dst + ow].iter_mut().zip(src_run) {
                            *d += s;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn im2col_matches_its_definition_and_col2im_is_its_adjoint() {
        let geo = ConvGeometry {
            batch: 2,
            c_in: 3,
            h: 5,
            w: 4,
            c_out: 1,
            kh: 3,
            kw: 2,
        };
        let x: Vec<f32> = (0..2 * geo.in_image_len()).map(|v| v as f32).collect();
        let p = geo.out_pixels();
        let n_cols = 2 * p;
        let mut cols = vec![f32::NAN; geo.patch_len() * n_cols];
        im2col(&geo, &x, &mut cols);
        // The definition, entry by entry.
        for b in 0..2 {
            for c in 0..3 {
                for i in 0..3 {
                    for j in 0..2 {
                        for y in 0..geo.out_h() {
                            for xx in 0..geo.out_w() {
                                let row = (c * 3 + i) * 2 + j;
                                let col = b * p + y * geo.out_w() + xx;
                                let src = ((b * 3 + c) * 5 + y + i) * 4 + xx + j;
                                assert_eq!(cols[row * n_cols + col], x[src]);
                            }
                        }
                    }
                }
            }
        }
        // Adjoint: <im2col(x), d> == <x, col2im(d)> for any d (integers: exact).
        let d: Vec<f32> = (0..cols.len())
            .map(|v| ((v * 5) % 7) as f32 - 3.0)
            .collect();
        let mut dx = vec![0.0; x.len()];
        col2im_add(&geo, &d, &mut dx);
        let lhs: f64 = cols
            .iter()
            .zip(&d)
            .map(|(a, b)| (*a as f64) * (*b as f64))
            .sum();
        let rhs: f64 = x
            .iter()
            .zip(&dx)
            .map(|(a, b)| (*a as f64) * (*b as f64))
            .sum();
        assert_eq!(lhs, rhs);
    }
}
