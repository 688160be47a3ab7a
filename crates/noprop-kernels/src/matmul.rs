//! Single-threaded f32 matrix product on strided views, a safe wrapper
//! around the `gemm` crate (the one candle's CPU matmul uses).
//!
//! `dst[m, n] = (accumulate ? dst[m, n] : 0) + Σ_k lhs[m, k] · rhs[k, n]`,
//! where a view's element `(i, j)` lives at `data[i * row_stride + j * col_stride]`,
//! so a transposed operand is the same buffer with its strides swapped.
//!
//! Always `Parallelism::None`: the kernels parallelise over groups of images
//! outside the product, so each product is computed by one thread, in a
//! fixed order, whatever the thread count (bitwise reproducibility).

/// A read-only strided matrix view.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MatRef<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// A row-major `rows x cols` matrix stored densely in `data`.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The transpose of this view (no copy).
    pub fn t(self) -> Self {
        Self {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }

    /// Whether every element the view addresses lies inside `data`.
    fn in_bounds(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride
                < self.data.len()
    }
}

/// `dst = (accumulate ? dst : 0) + lhs · rhs`, with `dst` row-major
/// (`lhs.rows x rhs.cols`, row stride `dst_row_stride`).
///
/// Panics if the shapes disagree or a view reaches outside its buffer: callers
/// build the views from validated geometry, so a mismatch is a bug in this
/// crate, and the check keeps the `unsafe` call below sound.
pub(crate) fn matmul(
    dst: &mut [f32],
    dst_row_stride: usize,
    accumulate: bool,
    lhs: MatRef<'_>,
    rhs: MatRef<'_>,
) {
    let (m, n, k) = (lhs.rows, rhs.cols, lhs.cols);
    assert_eq!(rhs.rows, k, "matmul: inner dimensions differ");
    assert!(
        lhs.in_bounds() && rhs.in_bounds(),
        "matmul: operand view out of bounds"
    );
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        (m == 1 || n <= dst_row_stride) && (m - 1) * dst_row_stride + n <= dst.len(),
        "matmul: destination view out of bounds"
    );
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                dst[i * dst_row_stride..i * dst_row_stride + n].fill(0.0);
            }
        }
        return;
    }
    // SAFETY: all three views were checked to lie inside their slices above;
    // `dst` is borrowed mutably, so it cannot alias `lhs` or `rhs`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_row_stride as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Naive triple loop, the independent reference.
    fn naive(lhs: MatRef<'_>, rhs: MatRef<'_>) -> Vec<f32> {
        let mut out = vec![0.0; lhs.rows * rhs.cols];
        for i in 0..lhs.rows {
            for j in 0..rhs.cols {
                let mut acc = 0.0f64;
                for k in 0..lhs.cols {
                    acc += lhs.data[i * lhs.row_stride + k * lhs.col_stride] as f64
                        * rhs.data[k * rhs.row_stride + j * rhs.col_stride] as f64;
                }
                out[i * rhs.cols + j] = acc as f32;
            }
        }
        out
    }

    #[test]
    fn strided_products_match_naive_loop() {
        // Deterministic, non-symmetric values; integers keep the sums exact.
        let a: Vec<f32> = (0..35).map(|i| ((i * 7) % 11) as f32 - 5.0).collect();
        let b: Vec<f32> = (0..35).map(|i| ((i * 3) % 13) as f32 - 6.0).collect();
        let lhs = MatRef::row_major(&a, 5, 7);
        let rhs = MatRef::row_major(&b, 7, 5);
        for (l, r) in [
            (lhs, rhs),
            (rhs.t(), lhs.t()),
            (lhs, lhs.t()),
            (rhs.t(), rhs),
        ] {
            let mut dst = vec![0.0; l.rows * r.cols];
            matmul(&mut dst, r.cols, false, l, r);
            assert_eq!(dst, naive(l, r));
            // Accumulating adds the product a second time.
            matmul(&mut dst, r.cols, true, l, r);
            let twice: Vec<f32> = naive(l, r).iter().map(|v| 2.0 * v).collect();
            assert_eq!(dst, twice);
        }
    }
}
