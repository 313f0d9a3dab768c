//! Register-blocked products for the small per-tile matrices of the fused kernels (AVX-512):
//!
//!   dst[r, c] = [dst[r, c] +] scale · Σ_x A[r, x] · B[x, c]
//!
//! for any strided A (its values are broadcast one at a time, so Aᵀ views cost nothing) and a B
//! whose rows are contiguous. A block of R rows × W = 16·V columns lives in R·V 512-bit
//! accumulators; for each x one row of B is loaded once (V vectors) and multiplied by R broadcast
//! values of A. Blocks: 4 × 64 while more than 32 columns are left, then 8 × 32 (the head
//! dimension of most heads) or 8 × 16 for the last 17–32 or 1–16 columns, one row at a time for
//! the rows left over; the lanes past the last column are masked off in loads and stores.
//! Where A is known to be triangular (`Lhs::Lower` / `Lhs::Upper`: the masked products of
//! chunked attention, A V with A = tril(Q Kᵀ) and their transposes) each row block runs only
//! over the inner range its rows can be non-zero in, and `matmul_lower_part` computes only the
//! 16-row groups' lower part of a square product (Q Kᵀ before the mask): 9/16 and 5/8 of the
//! full work at 64 rows.
//!
//! Why: the tiles of causal attention ([64, d] × [d, keys], P V, dS K, Pᵀ dO) and of chunked
//! linear attention ([C, f] × [f, C], A V, Q S, Kᵀ V, …) have inner dimensions of 16–512 and
//! outputs of a few thousand values, where a general GEMM spends a large share of each call
//! packing its operands. One Zen 4 core, 100 products in a row, data in cache (machine D,
//! docs/benchmarks.md): [64, 32] × [32, 64] gemm 0.19 84–89 GFLOP/s, these blocks 105;
//! [64, 32] × [32, 32] 78–85 against 101; [64, 512] × [512, 32] 94–99 against 108. The inner
//! dimension is taken in pieces of 256 ([`K_BLOCK`]), so a long one (the linear layer's
//! dW = xᵀ dy over a batch's 8,192 rows, P V over thousands of keys) keeps its piece of B in
//! L2. Only AVX-512 CPUs run the blocks (a tuned choice): compiled for AVX2 the same scheme
//! has half the registers, needs 16-column blocks, and measured 69 GFLOP/s, no better than
//! gemm, so [`matmul`] sends every other CPU (and any B with strided rows) to gemm.

use super::gemm::{self, View};

/// Lanes of one 512-bit vector of f32.
const LANES: usize = 16;

/// Whether the blocks run: the kernels' instruction set (`simd::isa`, the CPU's widest unless
/// `ZOO_CPU_ISA` caps it) is AVX-512.
pub fn available() -> bool {
    cfg!(target_arch = "x86_64") && super::simd::isa() == super::simd::Isa::Avx512
}

/// dst (row-major m × n, row stride `dst_stride`) = [dst +] scale · lhs · rhs on the calling
/// thread: the register blocks where the CPU has AVX-512 and rhs has contiguous rows, gemm
/// otherwise.
pub fn matmul(
    dst: &mut [f32],
    dst_stride: usize,
    lhs: View,
    rhs: View,
    scale: f32,
    accumulate: bool,
) {
    matmul_shaped(dst, dst_stride, lhs, rhs, scale, accumulate, Lhs::Full);
}

/// Where lhs is known to hold zeros, so that the blocks skip those multiply-adds (gemm, on other
/// CPUs, reads the zeros): the masked products of chunked attention, A V with A = tril(Q Kᵀ),
/// and their transposes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lhs {
    Full,
    /// lhs[r, x] = 0 for x > r.
    Lower,
    /// lhs[r, x] = 0 for x < r.
    Upper,
}

/// [`matmul`] with lhs of the given shape.
// Elsewhere than on x86-64 only the gemm branch remains, and the blocks' pieces go unused.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
pub fn matmul_shaped(
    dst: &mut [f32],
    dst_stride: usize,
    lhs: View,
    rhs: View,
    scale: f32,
    accumulate: bool,
    shape: Lhs,
) {
    if rhs.col_stride != 1 || !available() {
        gemm::matmul(dst, dst_stride, lhs, rhs, scale, accumulate);
        return;
    }
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    assert_eq!(rhs.rows, k, "inner dimensions differ");
    lhs.check();
    rhs.check();
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        (m - 1) * dst_stride + n <= dst.len(),
        "destination out of bounds"
    );
    // Long inner dimensions (dW = xᵀ dy over a batch's tokens, P V over thousands of keys) in
    // pieces of K_BLOCK, so that the piece of B a column block reads stays in L2 while every row
    // block passes over it; the pieces after the first accumulate.
    for x0 in (0..k.max(1)).step_by(K_BLOCK) {
        let width = K_BLOCK.min(k - x0.min(k));
        let lhs_piece = View {
            data: &lhs.data[(x0 * lhs.col_stride).min(lhs.data.len())..],
            cols: width,
            ..lhs
        };
        let rhs_piece = View {
            data: &rhs.data[(x0 * rhs.row_stride).min(rhs.data.len())..],
            rows: width,
            ..rhs
        };
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `available()` was checked, so the CPU has the features the function enables;
        // the pieces lie inside the checked views and the destination was checked to hold
        // every index the blocks touch.
        unsafe {
            blocks_avx512(
                lhs_piece,
                rhs_piece,
                Out {
                    ptr: dst.as_mut_ptr(),
                    stride: dst_stride,
                    scale,
                    accumulate: accumulate || x0 > 0,
                    shape,
                    x0,
                },
            )
        }
    }
}

/// The lower triangle (c ≤ r) of dst = scale · lhs · rhs for a square dst: on the register
/// blocks in groups of 16 rows, each only as wide as its last row needs (5/8 of the full
/// product's work at 64 rows); the entries above the diagonal are left unspecified (callers
/// overwrite them). Elsewhere one full product.
pub fn matmul_lower_part(dst: &mut [f32], dst_stride: usize, lhs: View, rhs: View, scale: f32) {
    assert_eq!(lhs.rows, rhs.cols, "the product is not square");
    if rhs.col_stride != 1 || !available() {
        gemm::matmul(dst, dst_stride, lhs, rhs, scale, false);
        return;
    }
    let m = lhs.rows;
    for g0 in (0..m).step_by(LANES) {
        let rows = LANES.min(m - g0);
        let group = View {
            data: &lhs.data[g0 * lhs.row_stride..],
            rows,
            ..lhs
        };
        let width = View {
            cols: g0 + rows,
            ..rhs
        };
        matmul(
            &mut dst[g0 * dst_stride..],
            dst_stride,
            group,
            width,
            scale,
            false,
        );
    }
}

/// The inner-dimension piece per pass of [`matmul`]: 256 rows of a 64-column B block are 64 KiB.
pub(super) const K_BLOCK: usize = 256;

/// A matrix's [n, d] rows (any strides) transposed to [d, stride], stride = n rounded up to 16:
/// the rows of Kᵀ or Vᵀ that [`matmul`] reads as contiguous B rows. Its buffer is kept across
/// [`Transposed::fill`]s.
#[derive(Default)]
pub struct Transposed {
    data: Vec<f32>,
    rows: usize,
    stride: usize,
}

impl Transposed {
    pub fn of(rows: View) -> Self {
        let mut t = Transposed::default();
        t.fill(rows);
        t
    }

    /// The transpose where the register blocks run (they read B by contiguous rows); `None`
    /// elsewhere, where gemm reads the strided view itself.
    pub fn for_blocks(rows: View) -> Option<Self> {
        (available() && rows.rows > 0 && rows.cols > 0).then(|| Transposed::of(rows))
    }

    /// Makes this the transpose of `rows` (reusing the buffer).
    pub fn fill(&mut self, rows: View) {
        rows.check();
        let (n, d) = (rows.rows, rows.cols);
        self.rows = d;
        self.stride = n.next_multiple_of(LANES);
        let len = d * self.stride;
        self.data.clear();
        #[cfg(target_arch = "x86_64")]
        if available() && rows.col_stride == 1 {
            // The blocks store every one of the d · stride values: no zero fill first.
            self.data.reserve(len);
            // SAFETY: AVX-512 is present; the view was checked; the buffer has capacity for d
            // rows of `stride` ≥ n rounded up to 16, all of which the 16 × 16 blocks write
            // before the length is set.
            unsafe {
                transpose_avx512(rows, self.data.as_mut_ptr(), self.stride);
                self.data.set_len(len);
            }
            return;
        }
        self.data.resize(len, 0.0);
        for j in 0..n {
            for x in 0..d {
                self.data[x * self.stride + j] =
                    rows.data[j * rows.row_stride + x * rows.col_stride];
            }
        }
    }

    /// Columns c0..c0 + width of the transpose (rows c0.. of the original) as a [d, width] view.
    pub fn columns(&self, c0: usize, width: usize) -> View<'_> {
        assert!(c0 + width <= self.stride, "columns past the last row");
        View {
            data: &self.data[c0.min(self.data.len())..],
            rows: self.rows,
            cols: width,
            row_stride: self.stride,
            col_stride: 1,
        }
    }
}

/// dst[x · stride + j] = rows[j, x] in 16 × 16 blocks held in registers (loads of row pieces,
/// three rounds of shuffles, stores of column pieces), the partial blocks through masks.
///
/// # Safety
/// AVX-512F is present, `rows` (contiguous columns) was checked against its slice, and `dst`
/// is valid for writes of d rows of `stride` ≥ n rounded up to 16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transpose_avx512(rows: View, dst: *mut f32, stride: usize) {
    use std::arch::x86_64::{
        _mm512_castpd_ps, _mm512_castps_pd, _mm512_shuffle_f32x4, _mm512_storeu_ps,
        _mm512_unpackhi_pd, _mm512_unpackhi_ps, _mm512_unpacklo_pd, _mm512_unpacklo_ps,
    };
    let (n, d) = (rows.rows, rows.cols);
    assert!(stride >= n.next_multiple_of(LANES));
    let src = rows.data.as_ptr();
    for j0 in (0..n).step_by(LANES) {
        for x0 in (0..d).step_by(LANES) {
            let valid = (d - x0).min(LANES);
            let mask = ((1u32 << valid) - 1) as __mmask16;
            // r[i] = row j0 + i, columns x0..x0 + 16 (zeros past n and d).
            let r: [__m512; LANES] = std::array::from_fn(|i| {
                if j0 + i < n {
                    // SAFETY: row j0 + i < n, columns under the mask < d: inside the view.
                    unsafe { _mm512_maskz_loadu_ps(mask, src.add((j0 + i) * rows.row_stride + x0)) }
                } else {
                    _mm512_setzero_ps()
                }
            });
            // Within each 128-bit lane: pairs of rows interleaved, then groups of four rows.
            let t: [__m512; LANES] = std::array::from_fn(|i| {
                let (a, b) = (r[i & !1], r[i | 1]);
                if i % 2 == 0 {
                    _mm512_unpacklo_ps(a, b)
                } else {
                    _mm512_unpackhi_ps(a, b)
                }
            });
            let u: [__m512; LANES] = std::array::from_fn(|i| {
                // u[4g + c] holds column 4·lane + c of rows 4g..4g + 4 in each 128-bit lane.
                let (g, c) = (i / 4, i % 4);
                let (a, b) = (
                    _mm512_castps_pd(t[4 * g + (c / 2)]),
                    _mm512_castps_pd(t[4 * g + 2 + (c / 2)]),
                );
                _mm512_castpd_ps(if c % 2 == 0 {
                    _mm512_unpacklo_pd(a, b)
                } else {
                    _mm512_unpackhi_pd(a, b)
                })
            });
            // Across lanes: v[c] (c < 4) = lanes 0, 2 of u[c], u[4 + c]; v[4 + c] = lanes 1, 3 —
            // for rows 0..8 in v[..8] and rows 8..16 in v[8..].
            let v: [__m512; LANES] = std::array::from_fn(|i| {
                let (h, c) = (i / 8, i % 4);
                let (a, b) = (u[8 * h + c], u[8 * h + 4 + c]);
                if i % 8 < 4 {
                    _mm512_shuffle_f32x4::<0x88>(a, b)
                } else {
                    _mm512_shuffle_f32x4::<0xdd>(a, b)
                }
            });
            for x in 0..valid {
                // Column x0 + x: lane 4y + c of it comes from v[..] as worked out above.
                let c = x % 4;
                let (lo, hi) = (v[(x / 4 % 2) * 4 + c], v[8 + (x / 4 % 2) * 4 + c]);
                let column = if x < 8 {
                    _mm512_shuffle_f32x4::<0x88>(lo, hi)
                } else {
                    _mm512_shuffle_f32x4::<0xdd>(lo, hi)
                };
                // SAFETY: row x0 + x < d of dst, columns j0..j0 + 16 ≤ stride.
                unsafe { _mm512_storeu_ps(dst.add((x0 + x) * stride + j0), column) };
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::{
    __m512, __mmask16, _mm512_add_ps, _mm512_fmadd_ps, _mm512_mask_storeu_ps,
    _mm512_maskz_loadu_ps, _mm512_mul_ps, _mm512_set1_ps, _mm512_setzero_ps,
};

/// The whole product (one piece of the inner dimension), block by block.
///
/// # Safety
/// The CPU has AVX-512F; `lhs` and `rhs` were checked to lie inside their slices, and `out.ptr`
/// is valid for reads and writes of m rows of n columns at `out.stride`, aliasing neither.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn blocks_avx512(lhs: View, rhs: View, out: Out) {
    let n = rhs.cols;
    let mut c0 = 0;
    // 64-column blocks while more than 32 columns are left, then one 32- or 16-column block at
    // a time; the lanes past n are masked off in every load and store.
    while c0 < n {
        let left = n - c0;
        // SAFETY: the caller's contract; the masks keep every access below column n.
        unsafe {
            if left > 2 * LANES {
                columns::<4, 4>(&lhs, &rhs, &out, c0);
                c0 += 4 * LANES;
            } else if left > LANES {
                columns::<8, 2>(&lhs, &rhs, &out, c0);
                c0 += 2 * LANES;
            } else {
                columns::<8, 1>(&lhs, &rhs, &out, c0);
                c0 += LANES;
            }
        }
    }
}

/// The destination and what is done to the block on the way in.
#[cfg(target_arch = "x86_64")]
struct Out {
    ptr: *mut f32,
    stride: usize,
    scale: f32,
    accumulate: bool,
    /// lhs's zeros, and where this piece of the inner dimension starts in it.
    shape: Lhs,
    x0: usize,
}

/// Every row of the columns c0..c0 + 16·V (those below n): R rows at a time, then one.
///
/// # Safety
/// As `blocks_avx512`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn columns<const R: usize, const V: usize>(lhs: &View, rhs: &View, out: &Out, c0: usize) {
    let masks: [__mmask16; V] = std::array::from_fn(|v| {
        let valid = rhs.cols.saturating_sub(c0 + v * LANES).min(LANES);
        ((1u32 << valid) - 1) as __mmask16
    });
    let mut r0 = 0;
    while r0 + R <= lhs.rows {
        // SAFETY: rows r0..r0 + R exist (loop bound); the rest is the caller's contract.
        unsafe { block::<R, V>(lhs, rhs, out, r0, c0, masks) };
        r0 += R;
    }
    while r0 < lhs.rows {
        // SAFETY: as above, for row r0.
        unsafe { block::<1, V>(lhs, rhs, out, r0, c0, masks) };
        r0 += 1;
    }
}

/// Rows r0..r0 + R × columns c0..c0 + 16·V, lanes outside `masks` neither read nor written.
///
/// # Safety
/// As `blocks_avx512`, and rows r0..r0 + R < m.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
// Index loops over the fixed-size accumulator arrays: fully unrolled into registers.
#[allow(clippy::needless_range_loop)]
unsafe fn block<const R: usize, const V: usize>(
    lhs: &View,
    rhs: &View,
    out: &Out,
    r0: usize,
    c0: usize,
    masks: [__mmask16; V],
) {
    let (a, b) = (lhs.data.as_ptr(), rhs.data.as_ptr());
    let a_rows: [usize; R] = std::array::from_fn(|r| (r0 + r) * lhs.row_stride);
    // The inner range where rows r0..r0 + R of lhs can be non-zero.
    let (x_lo, x_hi) = match out.shape {
        Lhs::Full => (0, lhs.cols),
        Lhs::Lower => (0, lhs.cols.min((r0 + R).saturating_sub(out.x0))),
        Lhs::Upper => (lhs.cols.min(r0.saturating_sub(out.x0)), lhs.cols),
    };
    let mut acc = [[_mm512_setzero_ps(); V]; R]; // R·V registers
    for x in x_lo..x_hi {
        // SAFETY: row x of rhs, columns c0.. under the masks, and element (r0 + r, x) of lhs lie
        // inside the checked views.
        unsafe {
            let b_row = b.add(x * rhs.row_stride + c0);
            let b_vectors: [__m512; V] =
                std::array::from_fn(|v| _mm512_maskz_loadu_ps(masks[v], b_row.add(v * LANES)));
            let a_col = x * lhs.col_stride;
            for r in 0..R {
                let a_value = _mm512_set1_ps(*a.add(a_rows[r] + a_col));
                for v in 0..V {
                    acc[r][v] = _mm512_fmadd_ps(a_value, b_vectors[v], acc[r][v]);
                }
            }
        }
    }
    let scale = _mm512_set1_ps(out.scale);
    for r in 0..R {
        for v in 0..V {
            // SAFETY: row r0 + r, columns c0 + 16v.. under the mask lie inside the destination.
            unsafe {
                let at = out.ptr.add((r0 + r) * out.stride + c0 + v * LANES);
                let mut value = _mm512_mul_ps(acc[r][v], scale);
                if out.accumulate {
                    value = _mm512_add_ps(value, _mm512_maskz_loadu_ps(masks[v], at));
                }
                _mm512_mask_storeu_ps(at, masks[v], value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(i: usize) -> f32 {
        ((i * 37 % 101) as f32 - 50.0) / 25.0
    }

    /// `got` against start + scale · Σ terms in f64, to a tolerance that grows with the terms'
    /// magnitudes (as f32 summation error does).
    fn assert_sum(got: f32, start: f64, scale: f64, terms: &[f64], at: &str) {
        let want = start + scale * terms.iter().sum::<f64>();
        let magnitude = start.abs() + scale.abs() * terms.iter().map(|t| t.abs()).sum::<f64>();
        assert!(
            (got as f64 - want).abs() <= 1e-6 * magnitude.max(1.0),
            "{at}: {got} vs {want}"
        );
    }

    /// Lower and upper triangular lhs (zeros stored where the shape says) over square and
    /// rectangular products, inner dimensions past a piece (K_BLOCK) and row counts that leave
    /// single rows; and the lower part of a square product.
    #[test]
    fn triangular_products_match_the_definition() {
        for &(m, k, n) in &[
            (64, 64, 32),
            (37, 37, 40),
            (9, 300, 70),
            (300, 300, 16),
            (5, 3, 17),
        ] {
            for shape in [Lhs::Lower, Lhs::Upper] {
                let a: Vec<f32> = (0..m * k)
                    .map(|i| {
                        let (r, x) = (i / k, i % k);
                        let zero = match shape {
                            Lhs::Lower => x > r,
                            Lhs::Upper => x < r,
                            Lhs::Full => false,
                        };
                        if zero { 0.0 } else { value(i + 7) }
                    })
                    .collect();
                let b: Vec<f32> = (0..k * n).map(|i| value(i + 1)).collect();
                let mut dst: Vec<f32> = (0..m * n).map(value).collect();
                let before = dst.clone();
                let (lhs, rhs) = (View::rows(&a, m, k), View::rows(&b, k, n));
                matmul_shaped(&mut dst, n, lhs, rhs, 2.0, true, shape);
                for r in 0..m {
                    for c in 0..n {
                        let terms: Vec<f64> = (0..k)
                            .map(|x| a[r * k + x] as f64 * b[x * n + c] as f64)
                            .collect();
                        let at = format!("{shape:?} [{m}, {k}] x [{k}, {n}] ({r}, {c})");
                        assert_sum(dst[r * n + c], before[r * n + c] as f64, 2.0, &terms, &at);
                    }
                }
            }
        }
        for m in [1, 16, 37, 64] {
            let (d, stride) = (24, m + 3);
            let q: Vec<f32> = (0..m * d).map(|i| value(i + 2)).collect();
            let k: Vec<f32> = (0..d * m).map(|i| value(i + 9)).collect();
            let mut dst = vec![f32::NAN; m * stride];
            matmul_lower_part(
                &mut dst,
                stride,
                View::rows(&q, m, d),
                View::rows(&k, d, m),
                0.5,
            );
            for r in 0..m {
                for c in 0..=r {
                    let want: f64 = 0.5
                        * (0..d)
                            .map(|x| q[r * d + x] as f64 * k[x * m + c] as f64)
                            .sum::<f64>();
                    let got = dst[r * stride + c] as f64;
                    assert!(
                        (got - want).abs() <= 1e-5 * want.abs().max(1.0),
                        "({r}, {c})"
                    );
                }
                assert!(
                    dst[r * stride + m..(r + 1) * stride]
                        .iter()
                        .all(|v| v.is_nan()),
                    "past n"
                );
            }
        }
    }

    /// Every block shape and tail: widths around 16, 32, 64 and past them, row counts that
    /// leave single rows, strided and transposed A, B at its slice's end, accumulate and not;
    /// against the f64 definition, and nothing written outside the m × n destination.
    #[test]
    fn products_match_the_definition() {
        for &(m, k, n) in &[
            (1, 1, 1),
            (7, 24, 150),
            (9, 32, 32),
            (13, 5, 17),
            (64, 32, 64),
            (3, 64, 48),
            (17, 40, 70),
            (8, 0, 20),
            (6, 600, 70),
        ] {
            for transposed_a in [false, true] {
                for accumulate in [false, true] {
                    let a: Vec<f32> = (0..m * k + 3).map(|i| value(i + 11)).collect();
                    let lhs = if transposed_a {
                        View {
                            data: &a,
                            rows: m,
                            cols: k,
                            row_stride: 1,
                            col_stride: m,
                        }
                    } else {
                        View::rows(&a, m, k)
                    };
                    // B's rows of stride n + 2, ending exactly at its slice's end.
                    let b_stride = n + 2;
                    let b: Vec<f32> = (0..(k.max(1) - 1) * b_stride + n)
                        .map(|i| value(i + 5))
                        .collect();
                    let rhs = View {
                        data: &b,
                        rows: k,
                        cols: n,
                        row_stride: b_stride,
                        col_stride: 1,
                    };
                    let cols = n + 5;
                    let mut dst: Vec<f32> = (0..m * cols).map(|i| value(i + 3)).collect();
                    let before = dst.clone();
                    matmul(&mut dst[2..], cols, lhs, rhs, 0.5, accumulate);
                    for r in 0..m {
                        for c in 0..cols {
                            let got = dst[r * cols + c];
                            if c < 2 || c >= 2 + n {
                                assert_eq!(
                                    got,
                                    before[r * cols + c],
                                    "wrote outside at ({r}, {c})"
                                );
                                continue;
                            }
                            let j = c - 2;
                            let terms: Vec<f64> = (0..k)
                                .map(|x| {
                                    let a_rx = a[r * lhs.row_stride + x * lhs.col_stride];
                                    a_rx as f64 * b[x * b_stride + j] as f64
                                })
                                .collect();
                            let start = if accumulate {
                                before[r * cols + c] as f64
                            } else {
                                0.0
                            };
                            let at = format!("[{m}, {k}] x [{k}, {n}] ({r}, {c})");
                            assert_sum(got, start, 0.5, &terms, &at);
                        }
                    }
                }
            }
        }
    }

    /// Partial 16 × 16 blocks in both directions (n = 70, d = 9 and d = 40), strided rows.
    #[test]
    fn transposed_columns_are_the_rows_of_the_original() {
        for d in [9, 40] {
            let (n, stride) = (70, d + 3);
            let rows: Vec<f32> = (0..n * stride).map(value).collect();
            let view = View {
                data: &rows,
                rows: n,
                cols: d,
                row_stride: stride,
                col_stride: 1,
            };
            let mut t = Transposed::of(view);
            let cols = t.columns(5, 60);
            for x in 0..d {
                for j in 0..60 {
                    assert_eq!(
                        cols.data[x * cols.row_stride + j],
                        rows[(5 + j) * stride + x]
                    );
                }
            }
            // Refilled with a smaller matrix: the buffer is reused, the view is the new one's.
            t.fill(View::rows(&rows[..3 * d], 3, d));
            let cols = t.columns(0, 3);
            assert_eq!(cols.rows, d);
            for x in 0..d {
                for j in 0..3 {
                    assert_eq!(cols.data[x * cols.row_stride + j], rows[j * d + x]);
                }
            }
        }
    }
}
