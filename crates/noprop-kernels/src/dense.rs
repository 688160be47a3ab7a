//! Row-major f32 matrix products on plain slices, for inference loops that
//! keep their activations in reused buffers instead of tensors (the CT/FM
//! ODE steps: thousands of small products per batch, where a tensor per
//! intermediate would cost an allocation and a graph node each time).
//!
//! `dst [rows, n] = (accumulate ? dst : 0) + lhs [rows, k] · rhs [k, n]`,
//! every matrix dense and row-major. Single-threaded (`gemm` with
//! `Parallelism::None`): callers thread over fixed groups of rows, so each
//! row's result does not depend on the thread count.

use crate::matmul::{matmul, MatRef};

/// `dst = (accumulate ? dst : 0) + lhs · rhs` with `lhs [rows, k]`,
/// `rhs [k, n]`, `dst [rows, n]`, all dense row-major.
///
/// Panics if a slice's length is not its shape's element count (a caller's
/// geometry bug, not a data condition).
pub fn matmul_rows(
    dst: &mut [f32],
    lhs: &[f32],
    rhs: &[f32],
    rows: usize,
    k: usize,
    n: usize,
    accumulate: bool,
) {
    assert_eq!(lhs.len(), rows * k, "matmul_rows: lhs is not [{rows}, {k}]");
    assert_eq!(rhs.len(), k * n, "matmul_rows: rhs is not [{k}, {n}]");
    assert_eq!(dst.len(), rows * n, "matmul_rows: dst is not [{rows}, {n}]");
    matmul(
        dst,
        n,
        accumulate,
        MatRef::row_major(lhs, rows, k),
        MatRef::row_major(rhs, k, n),
    );
}

/// The transpose of a row-major `[rows, cols]` matrix, row-major
/// `[cols, rows]`: a linear layer's weight `[out, in]` becomes the `rhs`
/// `[in, out]` of [`matmul_rows`].
pub fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    assert_eq!(data.len(), rows * cols, "transpose: not [{rows}, {cols}]");
    let mut out = vec![0.0; data.len()];
    for (i, row) in data.chunks_exact(cols).enumerate() {
        for (j, &v) in row.iter().enumerate() {
            out[j * rows + i] = v;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_and_transposes_by_hand() {
        // [[1, 2, 3], [4, 5, 6]] · [[1, 0], [0, 1], [1, 1]] = [[4, 5], [10, 11]].
        let lhs = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let rhs = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0];
        let mut dst = [0.5; 4];
        matmul_rows(&mut dst, &lhs, &rhs, 2, 3, 2, false);
        assert_eq!(dst, [4.0, 5.0, 10.0, 11.0]);
        matmul_rows(&mut dst, &lhs, &rhs, 2, 3, 2, true);
        assert_eq!(dst, [8.0, 10.0, 20.0, 22.0]);
        assert_eq!(transpose(&lhs, 2, 3), [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
        // lhs · lhs^T = [[14, 32], [32, 77]].
        let mut gram = [0.0; 4];
        matmul_rows(&mut gram, &lhs, &transpose(&lhs, 2, 3), 2, 3, 2, false);
        assert_eq!(gram, [14.0, 32.0, 32.0, 77.0]);
    }

    #[test]
    #[should_panic(expected = "rhs is not")]
    fn wrong_geometry_panics() {
        matmul_rows(&mut [0.0; 4], &[0.0; 6], &[0.0; 5], 2, 3, 2, false);
    }
}
