//! A bounds-checked front for the `gemm` crate (the matmul behind Burn's flex backend), for the
//! small per-block products of the fused kernels. Each operand is a strided view, so transposes
//! (Kᵀ, Pᵀ, dSᵀ) cost nothing; every call runs on the calling thread (the kernels parallelise
//! across heads and blocks themselves).

/// A read-only matrix view: element (r, c) is `data[r * row_stride + c * col_stride]`.
#[derive(Clone, Copy)]
pub struct View<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> View<'a> {
    /// A row-major rows × cols matrix at the start of `data`.
    pub fn rows(data: &'a [f32], rows: usize, cols: usize) -> Self {
        View {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The transpose of this view (no copy).
    pub fn t(self) -> Self {
        View {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }

    pub(super) fn check(&self) {
        if self.rows > 0 && self.cols > 0 {
            let last = (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride;
            assert!(last < self.data.len(), "matrix view out of bounds");
        }
    }
}

/// dst (row-major m × n, row stride `dst_stride`) = [dst +] scale · lhs · rhs, on the calling
/// thread.
pub fn matmul(
    dst: &mut [f32],
    dst_stride: usize,
    lhs: View,
    rhs: View,
    scale: f32,
    accumulate: bool,
) {
    matmul_on(
        dst,
        dst_stride,
        lhs,
        rhs,
        scale,
        accumulate,
        gemm::Parallelism::None,
    );
}

/// [`matmul`] split over rayon's pool (for whole-batch products such as the linear layers).
pub fn matmul_parallel(
    dst: &mut [f32],
    dst_stride: usize,
    lhs: View,
    rhs: View,
    scale: f32,
    accumulate: bool,
) {
    let threads = gemm::Parallelism::Rayon(rayon::current_num_threads());
    matmul_on(dst, dst_stride, lhs, rhs, scale, accumulate, threads);
}

fn matmul_on(
    dst: &mut [f32],
    dst_stride: usize,
    lhs: View,
    rhs: View,
    scale: f32,
    accumulate: bool,
    parallelism: gemm::Parallelism,
) {
    let (m, n) = (lhs.rows, rhs.cols);
    if m > 0 && n > 0 {
        assert!(
            (m - 1) * dst_stride + n <= dst.len(),
            "destination out of bounds"
        );
    }
    // SAFETY: `dst` holds the m × n destination (checked above) and is borrowed mutably, so it
    // aliases neither input.
    unsafe {
        matmul_raw(
            dst.as_mut_ptr(),
            dst_stride,
            lhs,
            rhs,
            scale,
            accumulate,
            parallelism,
        )
    }
}

/// A new row-major m × n matrix = scale · lhs · rhs, split over rayon's pool. The product writes
/// every element, so the buffer is not zero-filled first (a `memset` pass per output saved).
pub fn product_parallel(lhs: View, rhs: View, scale: f32) -> Vec<f32> {
    product_on(lhs, rhs, scale, rayon::current_num_threads())
}

/// [`product_parallel`] on `threads` of rayon's threads (1: on the calling thread) — for two
/// independent products run side by side, each on half of the pool.
pub fn product_on(lhs: View, rhs: View, scale: f32, threads: usize) -> Vec<f32> {
    let (m, n) = (lhs.rows, rhs.cols);
    let len = m * n;
    if lhs.cols == 0 {
        return vec![0.0; len];
    }
    let mut out: Vec<f32> = Vec::with_capacity(len);
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: `out` owns `len` = m · n elements of capacity and aliases nothing; with
    // `accumulate = false` and k > 0, gemm writes each of them before reading it, so all `len`
    // are initialised when the length is set.
    unsafe {
        matmul_raw(out.as_mut_ptr(), n, lhs, rhs, scale, false, parallelism);
        out.set_len(len);
    }
    out
}

/// dst = [dst +] scale · lhs · rhs through raw `dst`.
///
/// # Safety
/// `dst` must be valid for writes (and, with `accumulate`, reads of initialised values) of the
/// m × n destination at row stride `dst_stride`, and must not alias `lhs` or `rhs`.
unsafe fn matmul_raw(
    dst: *mut f32,
    dst_stride: usize,
    lhs: View,
    rhs: View,
    scale: f32,
    accumulate: bool,
    parallelism: gemm::Parallelism,
) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    assert_eq!(rhs.rows, k, "inner dimensions differ");
    lhs.check();
    rhs.check();
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                // SAFETY: row r of the destination lies inside it (caller's contract).
                unsafe { std::ptr::write_bytes(dst.add(r * dst_stride), 0, n) };
            }
        }
        return;
    }
    // SAFETY: the two views were checked above to lie inside their slices, the destination is
    // the caller's (contract above), and gemm reads/writes exactly those index ranges.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_stride as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            1.0,
            scale,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strided_products_match_the_definition() {
        let (m, k, n) = (5, 7, 3);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.91).cos()).collect(); // stored n × k
        let mut dst = vec![1.0f32; m * n];
        // dst = 1 + 2 · A · Bᵀ
        matmul(
            &mut dst,
            n,
            View::rows(&a, m, k),
            View::rows(&b, n, k).t(),
            2.0,
            true,
        );
        for r in 0..m {
            for c in 0..n {
                let want: f32 =
                    1.0 + 2.0 * (0..k).map(|i| a[r * k + i] * b[c * k + i]).sum::<f32>();
                assert!((dst[r * n + c] - want).abs() < 1e-5, "({r},{c})");
            }
        }
    }

    #[test]
    fn a_new_product_matches_the_definition() {
        // Sizes past gemm's register and cache blocks, so every edge path writes its part.
        for (m, k, n) in [(1, 1, 1), (37, 5, 19), (130, 300, 70), (3, 0, 4)] {
            let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.91).cos()).collect();
            let got = product_parallel(View::rows(&a, m, k), View::rows(&b, k, n), 0.5);
            assert_eq!(got.len(), m * n);
            for r in 0..m {
                for c in 0..n {
                    let want: f64 = 0.5
                        * (0..k)
                            .map(|i| a[r * k + i] as f64 * b[i * n + c] as f64)
                            .sum::<f64>();
                    let err = (got[r * n + c] as f64 - want).abs();
                    assert!(err < 1e-4, "({m},{k},{n}) at ({r},{c}): {err}");
                }
            }
        }
    }
}
