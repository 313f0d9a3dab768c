//! Fused causal softmax attention for the CPU, forward and backward, tiled by query blocks as in
//! FlashAttention-2 (Dao 2023):
//!
//!   sᵢⱼ = c·qᵢ·kⱼ − m_h(i − j),  ℓᵢ = log Σ_{j≤i} e^{sᵢⱼ},  pᵢⱼ = e^{sᵢⱼ − ℓᵢ},  oᵢ = Σ_{j≤i} pᵢⱼ vⱼ
//!
//! backward, with Dᵢ = dOᵢ·Oᵢ:  dVⱼ = Σᵢ pᵢⱼ dOᵢ,  dPᵢⱼ = dOᵢ·vⱼ,  dSᵢⱼ = pᵢⱼ (dPᵢⱼ − Dᵢ),
//!   dQᵢ = c Σⱼ dSᵢⱼ kⱼ,  dKⱼ = c Σᵢ dSᵢⱼ qᵢ.
//!
//! Each block of `QUERY_BLOCK` queries only touches keys 0..=its last row, so the masked upper
//! triangle is never computed (half the FLOPs of a masked dense product), and only a block of
//! scores is alive at a time: memory is O(n·(d + block)), not O(n²). The backward pass keeps
//! the per-row log-sum-exp ℓ from the forward and recomputes the probabilities.
//! m_h is the ALiBi slope of the head (0 without ALiBi).
//!
//! Layout: q, k, v, o, dO are [heads_total, n, d] row-major (heads_total = batch · heads, head
//! index h = row % heads), ℓ is [heads_total, n].

use rayon::prelude::*;

use super::gemm::{View, matmul};
use super::simd::{self, exp, multiversion};

/// Queries per tile: 64 rows × d columns stay in L1 while a row block of scores is built.
pub const QUERY_BLOCK: usize = 64;

#[derive(Clone, Copy, Debug)]
pub struct AttentionShape {
    pub heads_total: usize,
    pub heads: usize,
    pub seq: usize,
    pub head_dim: usize,
}

impl AttentionShape {
    fn head_len(&self) -> usize {
        self.seq * self.head_dim
    }
    fn len(&self) -> usize {
        self.heads_total * self.head_len()
    }
}

multiversion! {
    // Row r of `scores` (query row0 + r, `cols` keys) becomes its causal softmax; returns ℓ in lse.
    fn softmax_rows(scores: &mut [f32], cols: usize, row0: usize, slope: f32, lse: &mut [f32]) {
        for (r, row) in scores.chunks_exact_mut(cols).enumerate() {
            let i = row0 + r;
            let (valid, masked) = row.split_at_mut(i + 1);
            if slope != 0.0 {
                for (j, s) in valid.iter_mut().enumerate() {
                    *s -= slope * (i - j) as f32;
                }
            }
            let max = simd::max(valid);
            for s in valid.iter_mut() {
                *s = exp(*s - max);
            }
            let sum = simd::sum(valid);
            let inv = 1.0 / sum;
            for s in valid.iter_mut() {
                *s *= inv;
            }
            masked.fill(0.0);
            lse[r] = max + sum.ln();
        }
    }
}

multiversion! {
    // Recompute probabilities from raw scores and ℓ; masked entries become 0.
    fn probability_rows(scores: &mut [f32], cols: usize, row0: usize, slope: f32, lse: &[f32]) {
        for (r, row) in scores.chunks_exact_mut(cols).enumerate() {
            let i = row0 + r;
            let (valid, masked) = row.split_at_mut(i + 1);
            let l = lse[r];
            if slope != 0.0 {
                for (j, s) in valid.iter_mut().enumerate() {
                    *s = exp(*s - slope * (i - j) as f32 - l);
                }
            } else {
                for s in valid.iter_mut() {
                    *s = exp(*s - l);
                }
            }
            masked.fill(0.0);
        }
    }
}

multiversion! {
    // dP ← P ∘ (dP − Dᵢ), row by row.
    fn score_grad_rows(probs: &[f32], dprobs: &mut [f32], cols: usize, delta: &[f32]) {
        for ((p_row, dp_row), &d) in probs
            .chunks_exact(cols)
            .zip(dprobs.chunks_exact_mut(cols))
            .zip(delta)
        {
            for (dp, &p) in dp_row.iter_mut().zip(p_row) {
                *dp = p * (*dp - d);
            }
        }
    }
}

multiversion! {
    // out[i] = a_i · b_i for the rows of two [rows, d] matrices.
    fn row_dots(a: &[f32], b: &[f32], d: usize, out: &mut [f32]) {
        for ((a, b), o) in a.chunks_exact(d).zip(b.chunks_exact(d)).zip(out.iter_mut()) {
            *o = simd::dot(a, b);
        }
    }
}

/// Forward: returns (o [heads_total, n, d], ℓ [heads_total, n]).
pub fn forward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    shape: AttentionShape,
    scale: f32,
    slopes: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    let AttentionShape {
        heads,
        seq,
        head_dim: d,
        ..
    } = shape;
    assert!(q.len() == shape.len() && k.len() == shape.len() && v.len() == shape.len());
    assert!(slopes.is_empty() || slopes.len() == heads);
    let mut out = vec![0.0f32; shape.len()];
    let mut lse = vec![0.0f32; shape.heads_total * seq];
    if shape.len() == 0 {
        return (out, lse);
    }
    let hl = shape.head_len();
    out.par_chunks_mut(hl)
        .zip(lse.par_chunks_mut(seq))
        .enumerate()
        .for_each(|(bh, (out_h, lse_h))| {
            let (q_h, k_h, v_h) = (
                &q[bh * hl..][..hl],
                &k[bh * hl..][..hl],
                &v[bh * hl..][..hl],
            );
            let slope = slopes.get(bh % heads).copied().unwrap_or(0.0);
            out_h
                .par_chunks_mut(QUERY_BLOCK * d)
                .zip(lse_h.par_chunks_mut(QUERY_BLOCK))
                .enumerate()
                .for_each(|(block, (out_b, lse_b))| {
                    let row0 = block * QUERY_BLOCK;
                    let rows = lse_b.len();
                    let cols = row0 + rows; // keys 0..=last row of the block
                    let mut scores = vec![0.0f32; rows * cols]; // [rows, cols]
                    let q_b = View::rows(&q_h[row0 * d..], rows, d);
                    let k_t = View::rows(k_h, cols, d).t(); // [d, cols]
                    matmul(&mut scores, cols, q_b, k_t, scale, false);
                    softmax_rows(&mut scores, cols, row0, slope, lse_b);
                    let v_b = View::rows(v_h, cols, d); // [cols, d]
                    matmul(out_b, d, View::rows(&scores, rows, cols), v_b, 1.0, false);
                });
        });
    (out, lse)
}

/// Backward: returns (dq, dk, dv), each [heads_total, n, d].
#[allow(clippy::too_many_arguments)]
pub fn backward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &[f32],
    lse: &[f32],
    grad_out: &[f32],
    shape: AttentionShape,
    scale: f32,
    slopes: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let AttentionShape {
        heads,
        seq,
        head_dim: d,
        ..
    } = shape;
    let len = shape.len();
    assert!([q, k, v, out, grad_out].iter().all(|t| t.len() == len));
    assert_eq!(lse.len(), shape.heads_total * seq);
    let (mut dq, mut dk, mut dv) = (vec![0.0f32; len], vec![0.0f32; len], vec![0.0f32; len]);
    if len == 0 {
        return (dq, dk, dv);
    }
    let hl = shape.head_len();
    // dK and dV of a head collect from every query block, so one task owns a whole head.
    dq.par_chunks_mut(hl)
        .zip(dk.par_chunks_mut(hl))
        .zip(dv.par_chunks_mut(hl))
        .enumerate()
        .for_each(|(bh, ((dq_h, dk_h), dv_h))| {
            fn head(t: &[f32], bh: usize, hl: usize) -> &[f32] {
                &t[bh * hl..][..hl]
            }
            let at = |t| head(t, bh, hl);
            let (q_h, k_h, v_h, o_h, do_h) = (at(q), at(k), at(v), at(out), at(grad_out));
            let lse_h = &lse[bh * seq..][..seq];
            let slope = slopes.get(bh % heads).copied().unwrap_or(0.0);
            let mut delta = vec![0.0f32; seq]; // Dᵢ = dOᵢ · Oᵢ, [n]
            row_dots(o_h, do_h, d, &mut delta);
            let mut probs = vec![0.0f32; QUERY_BLOCK * seq];
            let mut dprobs = vec![0.0f32; QUERY_BLOCK * seq];
            for row0 in (0..seq).step_by(QUERY_BLOCK) {
                let rows = QUERY_BLOCK.min(seq - row0);
                let cols = row0 + rows;
                let p = &mut probs[..rows * cols]; // [rows, cols]
                let dp = &mut dprobs[..rows * cols]; // [rows, cols]
                let q_b = View::rows(&q_h[row0 * d..], rows, d);
                let do_b = View::rows(&do_h[row0 * d..], rows, d);
                let k_all = View::rows(k_h, cols, d); // [cols, d]
                let v_all = View::rows(v_h, cols, d);
                matmul(p, cols, q_b, k_all.t(), scale, false);
                probability_rows(p, cols, row0, slope, &lse_h[row0..row0 + rows]);
                let p_view = View::rows(p, rows, cols);
                matmul(dv_h, d, p_view.t(), do_b, 1.0, true); // dV += Pᵀ dO
                matmul(dp, cols, do_b, v_all.t(), 1.0, false); // dP = dO Vᵀ
                score_grad_rows(p, dp, cols, &delta[row0..row0 + rows]);
                let ds = View::rows(dp, rows, cols);
                matmul(&mut dq_h[row0 * d..], d, ds, k_all, scale, false); // dQ = c dS K
                matmul(dk_h, d, ds.t(), q_b, scale, true); // dK += c dSᵀ Q
            }
        });
    (dq, dk, dv)
}
