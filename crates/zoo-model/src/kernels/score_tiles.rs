//! The score block of tiled attention, S = c · Q Kᵀ for a tile of queries Q [rows, d] against
//! a run of keys, register-blocked for AVX-512 on a transposed copy of the head's keys:
//!
//!   S[r, j] = c · Σ_x Q[r, x] · Kᵀ[x, key0 + j]
//!
//! Four query rows × 64 keys (sixteen 512-bit accumulators) per block: for each x one row of
//! Kᵀ is loaded once (four vectors) and multiplied by four broadcast query values.
//!
//! Why: with a head dimension of 16–64 this product's inner dimension is tiny, so a general
//! GEMM spends a large share of each call packing its operands and storing partial tiles
//! (gemm 0.19 reaches 70–78 GFLOP/s on one Zen 4 core at [64, 32] × [32, 512], this block
//! 102–110, docs/benchmarks.md). Kᵀ is built once per head and pass (n·d copies against the
//! n²·d multiply-adds of the scores). Only the AVX-512 build runs it: compiled for AVX2 the
//! same block needs 16-key columns to fit the 16 registers and then measured 69 GFLOP/s, no
//! better than the GEMM it would replace, so other CPUs keep the GEMM.

use super::gemm::View;

/// Query rows per register block.
const ROWS: usize = 4;
/// Keys per register block: four 512-bit vectors.
const KEYS: usize = 64;

/// Whether this CPU runs the block (AVX-512; checked once by std and cached).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A head's [n, d] rows transposed to [d, stride], stride = n + KEYS: the block reads whole
/// 64-key runs, and the padding keeps a run that starts near the end inside the buffer.
pub struct Transposed {
    data: Vec<f32>,
    stride: usize,
}

impl Transposed {
    pub fn of(rows: &[f32], n: usize, d: usize) -> Self {
        assert_eq!(rows.len(), n * d, "transposed: rows are [n, d]");
        let stride = n + KEYS;
        let mut data = vec![0.0f32; d * stride];
        for (j, row) in rows.chunks_exact(d).enumerate() {
            for (x, &value) in row.iter().enumerate() {
                data[x * stride + j] = value;
            }
        }
        Transposed { data, stride }
    }
}

/// dst[r, c0 + j] = scale · Σ_x q[r, x] · kᵀ[x, key0 + j] for r < q.rows, j < width, where dst
/// has rows of `dst_stride`. Panics unless `available()` (callers check).
#[allow(clippy::too_many_arguments)]
pub fn scores(
    dst: &mut [f32],
    dst_stride: usize,
    c0: usize,
    q: View,
    keys: &Transposed,
    key0: usize,
    width: usize,
    scale: f32,
) {
    assert!(available(), "score_tiles::scores needs AVX-512");
    assert_eq!(q.col_stride, 1, "query rows must be contiguous");
    let d = q.cols;
    assert!(
        keys.data.len() >= d * keys.stride,
        "keys have fewer than d rows"
    );
    assert!(
        key0 + width <= keys.stride - KEYS,
        "key run past the last key"
    );
    if q.rows == 0 || width == 0 {
        return;
    }
    assert!(
        (q.rows - 1) * q.row_stride + d <= q.data.len(),
        "query rows out of bounds"
    );
    assert!(
        (q.rows - 1) * dst_stride + c0 + width <= dst.len(),
        "destination out of bounds"
    );
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `available()` was asserted, so the CPU has the features the function enables.
    unsafe {
        scores_avx512(dst, dst_stride, c0, q, keys, key0, width, scale)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn scores_avx512(
    dst: &mut [f32],
    dst_stride: usize,
    c0: usize,
    q: View,
    keys: &Transposed,
    key0: usize,
    width: usize,
    scale: f32,
) {
    let block = Block {
        q,
        keys,
        key0,
        width,
        scale,
    };
    let mut r0 = 0;
    while r0 + ROWS <= q.rows {
        block.rows::<ROWS>(r0, dst, dst_stride, c0);
        r0 += ROWS;
    }
    while r0 < q.rows {
        block.rows::<1>(r0, dst, dst_stride, c0);
        r0 += 1;
    }
}

struct Block<'a> {
    q: View<'a>,
    keys: &'a Transposed,
    key0: usize,
    width: usize,
    scale: f32,
}

impl Block<'_> {
    /// Query rows r0..r0 + R against every 64-key run of the block's keys.
    #[inline(always)]
    fn rows<const R: usize>(&self, r0: usize, dst: &mut [f32], dst_stride: usize, c0: usize) {
        let (d, stride) = (self.q.cols, self.keys.stride);
        let q_rows: [&[f32]; R] =
            std::array::from_fn(|r| &self.q.data[(r0 + r) * self.q.row_stride..][..d]);
        let keys = &self.keys.data[..d * stride];
        for j0 in (0..self.width).step_by(KEYS) {
            // Index loops over fixed-size arrays: the form LLVM keeps in sixteen registers
            // (iterator chains over `acc` made it spill every accumulator on every step).
            let mut acc = [[0.0f32; KEYS]; R];
            for x in 0..d {
                // The run may reach into the padding past the last key; those columns are
                // computed and dropped below.
                let at = x * stride + self.key0 + j0;
                let k_row: &[f32; KEYS] = keys[at..at + KEYS].try_into().unwrap();
                for r in 0..R {
                    let q_value = q_rows[r][x];
                    for t in 0..KEYS {
                        acc[r][t] = q_value.mul_add(k_row[t], acc[r][t]);
                    }
                }
            }
            // Scaled through a fixed-size copy: indexing `acc` itself by the run's length would
            // make LLVM keep it in memory for the whole loop above.
            let take = KEYS.min(self.width - j0);
            for r in 0..R {
                let mut scaled = [0.0f32; KEYS];
                for t in 0..KEYS {
                    scaled[t] = acc[r][t] * self.scale;
                }
                dst[(r0 + r) * dst_stride + c0 + j0..][..take].copy_from_slice(&scaled[..take]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_match_the_definition() {
        if !available() {
            return;
        }
        let (n, d) = (150, 24);
        let value = |i: usize| ((i * 37 % 101) as f32 - 50.0) / 25.0;
        let k: Vec<f32> = (0..n * d).map(value).collect();
        let q: Vec<f32> = (0..7 * 40).map(|i| value(i + 11)).collect();
        let keys = Transposed::of(&k, n, d);
        // Query rows of stride 40 (7 rows: a 4-row block and 3 single rows); runs that end
        // mid-block and at the last key; a destination wider than the run.
        for (key0, width) in [(0, 150), (3, 64), (100, 50), (149, 1), (10, 70)] {
            let cols = width + 5;
            let mut dst = vec![f32::NAN; 7 * cols];
            let view = View {
                data: &q,
                rows: 7,
                cols: d,
                row_stride: 40,
                col_stride: 1,
            };
            scores(&mut dst, cols, 2, view, &keys, key0, width, 0.5);
            for r in 0..7 {
                for c in 0..cols {
                    let got = dst[r * cols + c];
                    if c < 2 || c >= 2 + width {
                        assert!(got.is_nan(), "wrote outside the run at ({r}, {c})");
                        continue;
                    }
                    let j = key0 + c - 2;
                    let want: f64 = 0.5
                        * (0..d)
                            .map(|x| q[r * 40 + x] as f64 * k[j * d + x] as f64)
                            .sum::<f64>();
                    assert!(
                        (got as f64 - want).abs() <= 1e-5 * want.abs().max(1.0),
                        "({r}, {c}): {got} vs {want}"
                    );
                }
            }
        }
    }
}
