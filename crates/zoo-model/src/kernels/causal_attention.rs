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
//! The same tiles serve the sparse patterns (`KeyPattern`): a query tile lists the key ranges it
//! can see (sliding window: the globals and the band; BigBird: its key blocks), scores are built
//! range by range with one gemm each (no gathering copies), and `pattern.rs`'s predicate masks
//! inside the ranges. Cost and memory are then O(n · keys per tile) like the banded forms.
//!
//! Layout: q, k, v, o, dO are [heads_total, n, d] row-major (heads_total = batch · heads, head
//! index h = row % heads), ℓ is [heads_total, n].

use std::ops::Range;

use burn::backend::TensorMetadata;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::flex::FlexTensor;
use burn::prelude::Shape;
use rayon::prelude::*;

use super::gemm::View;
use super::simd::{self, exp, multiversion};
use super::tile_gemm::{Transposed, matmul};
use super::{AutodiffFlex, SavedForBackward, contiguous, flex_tensor, register_op, values};
use crate::attention::pattern::{BigBirdPattern, WindowPattern};

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

/// Which keys each query sees (always j ≤ i).
#[derive(Clone, Debug)]
pub enum KeyPattern {
    Causal,
    Window(WindowPattern),
    BigBird(BigBirdPattern),
}

/// One query tile: its rows, the key ranges it reads, and (sparse patterns) the visibility mask.
pub(super) struct Tile {
    pub(super) row0: usize,
    pub(super) rows: usize,
    ranges: Vec<Range<usize>>,
    /// Key position of each score column.
    keys: Vec<f32>,
    /// rows × cols, 1 where the query sees the key; None for the causal prefix.
    visible: Option<Vec<u8>>,
}

impl Tile {
    fn cols(&self) -> usize {
        self.keys.len()
    }
}

impl KeyPattern {
    pub(super) fn query_block(&self) -> usize {
        match self {
            KeyPattern::BigBird(p) => p.block_size,
            _ => QUERY_BLOCK,
        }
    }

    fn tile(&self, row0: usize, rows: usize) -> Tile {
        let end = row0 + rows;
        let ranges = match self {
            KeyPattern::Causal => std::iter::once(0..end).collect(),
            KeyPattern::Window(p) => {
                let lo = row0.saturating_sub(p.span() - 1);
                let globals = p.global_tokens.min(lo);
                if globals > 0 {
                    vec![0..globals, lo..end]
                } else {
                    std::iter::once(lo..end).collect()
                }
            }
            KeyPattern::BigBird(p) => {
                let b = p.block_size;
                let mut ranges: Vec<Range<usize>> = Vec::new();
                for block in p.key_blocks(row0 / b) {
                    let r = block * b..((block + 1) * b).min(end);
                    match ranges.last_mut() {
                        Some(last) if last.end == r.start => last.end = r.end,
                        _ => ranges.push(r),
                    }
                }
                ranges
            }
        };
        let keys: Vec<f32> = ranges
            .iter()
            .flat_map(|r| r.clone())
            .map(|j| j as f32)
            .collect();
        let visible = match self {
            KeyPattern::Causal => None,
            KeyPattern::Window(p) => Some(self.mask(row0, rows, &ranges, |i, j| p.allowed(i, j))),
            KeyPattern::BigBird(_) => Some(self.mask(row0, rows, &ranges, |i, j| j <= i)),
        };
        Tile {
            row0,
            rows,
            ranges,
            keys,
            visible,
        }
    }

    fn mask(
        &self,
        row0: usize,
        rows: usize,
        ranges: &[Range<usize>],
        sees: impl Fn(usize, usize) -> bool,
    ) -> Vec<u8> {
        let mut mask = Vec::new();
        for i in row0..row0 + rows {
            mask.extend(
                ranges
                    .iter()
                    .flat_map(|r| r.clone())
                    .map(|j| sees(i, j) as u8),
            );
        }
        mask
    }
}

/// Each key range with the score column where it starts.
fn segments(ranges: &[Range<usize>]) -> impl Iterator<Item = (usize, &Range<usize>)> {
    ranges.iter().scan(0, |c0, r| {
        let start = *c0;
        *c0 += r.len();
        Some((start, r))
    })
}

/// Columns c0..c0+width of a rows × cols row-major block.
fn columns(p: &[f32], rows: usize, cols: usize, c0: usize, width: usize) -> View<'_> {
    View {
        data: &p[c0..],
        rows,
        cols: width,
        row_stride: cols,
        col_stride: 1,
    }
}

/// The rows of a [n, d] head matrix that a key range covers.
fn range_rows<'a>(all: &'a [f32], d: usize, r: &Range<usize>) -> View<'a> {
    View::rows(&all[r.start * d..], r.len(), d)
}

/// One head's keys or values [n, d], with the transposed copy the register blocks of
/// tile_gemm.rs read (Kᵀ for the scores, Vᵀ for dO Vᵀ) on CPUs that run them.
pub(super) struct HeadRows<'a> {
    rows: &'a [f32],
    transposed: Option<Transposed>,
}

impl<'a> HeadRows<'a> {
    pub(super) fn new(rows: &'a [f32], d: usize) -> Self {
        let n = rows.len() / d.max(1);
        HeadRows {
            rows,
            transposed: Transposed::for_blocks(View::rows(rows, n, d)),
        }
    }
}

/// dst[:, columns of each range] = scale · a · (rows of b in that range)ᵀ.
fn scores_by_range(
    dst: &mut [f32],
    cols: usize,
    a: View,
    b: &HeadRows,
    d: usize,
    ranges: &[Range<usize>],
    scale: f32,
) {
    for (c0, r) in segments(ranges) {
        let keys_t = match &b.transposed {
            Some(bt) => bt.columns(r.start, r.len()),
            None => range_rows(b.rows, d, r).t(),
        };
        matmul(&mut dst[c0..], cols, a, keys_t, scale, false);
    }
}

#[allow(clippy::too_many_arguments)]
/// dst = scale · Σ_ranges p[:, range columns] · (rows of b in that range).
fn weighted_rows(
    dst: &mut [f32],
    d: usize,
    p: &[f32],
    rows: usize,
    cols: usize,
    b_all: &[f32],
    ranges: &[Range<usize>],
    scale: f32,
) {
    for (n, (c0, r)) in segments(ranges).enumerate() {
        let pv = columns(p, rows, cols, c0, r.len());
        matmul(dst, d, pv, range_rows(b_all, d, r), scale, n > 0);
    }
}

#[allow(clippy::too_many_arguments)]
/// For each range, dst rows of that range += scale · p[:, range columns]ᵀ · b.
fn scatter_transposed(
    dst_all: &mut [f32],
    d: usize,
    p: &[f32],
    rows: usize,
    cols: usize,
    b: View,
    ranges: &[Range<usize>],
    scale: f32,
) {
    for (c0, r) in segments(ranges) {
        let pv = columns(p, rows, cols, c0, r.len());
        matmul(&mut dst_all[r.start * d..], d, pv.t(), b, scale, true);
    }
}

multiversion! {
    // Softmax of rows whose visible keys are flagged in `visible`; masked entries become 0.
    #[allow(clippy::too_many_arguments)]
    fn masked_softmax_rows(scores: &mut [f32], cols: usize, visible: &[u8], keys: &[f32], row0: usize, slope: f32, lse: &mut [f32]) {
        for (r, (row, vis)) in scores.chunks_exact_mut(cols).zip(visible.chunks_exact(cols)).enumerate() {
            let i = (row0 + r) as f32;
            // Bias and mask first, then a separate (vectorised) max: a max carried through the
            // masking loop keeps it scalar.
            for ((s, &m), &j) in row.iter_mut().zip(vis).zip(keys) {
                *s = if m != 0 { *s - slope * (i - j) } else { f32::NEG_INFINITY };
            }
            let max = simd::max(row);
            for (s, &m) in row.iter_mut().zip(vis) {
                *s = if m != 0 { exp(*s - max) } else { 0.0 };
            }
            let sum = simd::sum(row);
            let inv = 1.0 / sum;
            row.iter_mut().for_each(|s| *s *= inv);
            lse[r] = max + sum.ln();
        }
    }
}

multiversion! {
    // Recompute probabilities of masked rows from raw scores and ℓ.
    #[allow(clippy::too_many_arguments)]
    fn masked_probability_rows(scores: &mut [f32], cols: usize, visible: &[u8], keys: &[f32], row0: usize, slope: f32, lse: &[f32]) {
        for (r, (row, vis)) in scores.chunks_exact_mut(cols).zip(visible.chunks_exact(cols)).enumerate() {
            let i = (row0 + r) as f32;
            let l = lse[r];
            for ((s, &m), &j) in row.iter_mut().zip(vis).zip(keys) {
                *s = if m != 0 { exp(*s - slope * (i - j) - l) } else { 0.0 };
            }
        }
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

/// The query tiles of a length-`seq` sequence under `pattern` (positions only: shared by every
/// head).
pub(super) fn tiles(pattern: &KeyPattern, seq: usize) -> Vec<Tile> {
    let qb = pattern.query_block();
    (0..seq)
        .step_by(qb)
        .map(|row0| pattern.tile(row0, qb.min(seq - row0)))
        .collect()
}

/// One head's sizes and position-dependent constants, as the per-tile and per-head passes
/// take them.
#[derive(Clone, Copy)]
pub(super) struct HeadParams {
    pub head_dim: usize,
    pub scale: f32,
    /// The head's ALiBi slope (0 without ALiBi).
    pub slope: f32,
}

/// Scratch buffers a task reuses across tiles (grown, never shrunk or cleared: every pass
/// writes the part it reads).
#[derive(Default)]
pub(super) struct Scratch {
    probs: Vec<f32>,
    dprobs: Vec<f32>,
}

/// A buffer of at least `len` values, as a slice of exactly `len`.
pub(super) fn grown(buffer: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buffer.len() < len {
        buffer.resize(len, 0.0);
    }
    &mut buffer[..len]
}

/// One query tile's forward: out_b [rows, d] = P V and ℓ into lse_b, for the tile's queries
/// q_b [rows, d] (rows of any stride) over the head's keys k_h and values v_h [n, d].
#[allow(clippy::too_many_arguments)]
pub(super) fn forward_tile(
    tile: &Tile,
    q_b: View,
    k_h: &HeadRows,
    v_h: &[f32],
    head: HeadParams,
    out_b: &mut [f32],
    lse_b: &mut [f32],
    scratch: &mut Scratch,
) {
    let (row0, rows, cols, d) = (tile.row0, tile.rows, tile.cols(), head.head_dim);
    let scores = grown(&mut scratch.probs, rows * cols); // [rows, cols]
    scores_by_range(scores, cols, q_b, k_h, d, &tile.ranges, head.scale);
    match &tile.visible {
        None => softmax_rows(scores, cols, row0, head.slope, lse_b),
        Some(vis) => masked_softmax_rows(scores, cols, vis, &tile.keys, row0, head.slope, lse_b),
    }
    weighted_rows(out_b, d, scores, rows, cols, v_h, &tile.ranges, 1.0);
}

/// One head's backward over all its tiles: dq_h [n, d] written, dk_h and dv_h [n, d]
/// accumulated into (the caller zeroes them, or carries another query head's sums for
/// grouped-query attention).
#[allow(clippy::too_many_arguments)]
pub(super) fn backward_head(
    tiles: &[Tile],
    [q_h, k_h, v_h, o_h, do_h]: [&[f32]; 5],
    lse_h: &[f32],
    head: HeadParams,
    [dq_h, dk_h, dv_h]: [&mut [f32]; 3],
    scratch: &mut Scratch,
) {
    let (d, scale) = (head.head_dim, head.scale);
    let seq = lse_h.len();
    let (keys, values) = (HeadRows::new(k_h, d), HeadRows::new(v_h, d));
    let mut delta = vec![0.0f32; seq]; // Dᵢ = dOᵢ · Oᵢ, [n]
    row_dots(o_h, do_h, d, &mut delta);
    for tile in tiles {
        let (row0, rows, cols) = (tile.row0, tile.rows, tile.cols());
        let ranges = &tile.ranges;
        let p = grown(&mut scratch.probs, rows * cols); // [rows, cols]
        let dp = grown(&mut scratch.dprobs, rows * cols); // [rows, cols]
        let q_b = View::rows(&q_h[row0 * d..], rows, d);
        let do_b = View::rows(&do_h[row0 * d..], rows, d);
        let lse_b = &lse_h[row0..row0 + rows];
        scores_by_range(p, cols, q_b, &keys, d, ranges, scale);
        match &tile.visible {
            None => probability_rows(p, cols, row0, head.slope, lse_b),
            Some(vis) => masked_probability_rows(p, cols, vis, &tile.keys, row0, head.slope, lse_b),
        }
        scatter_transposed(dv_h, d, p, rows, cols, do_b, ranges, 1.0); // dV += Pᵀ dO
        scores_by_range(dp, cols, do_b, &values, d, ranges, 1.0); // dP = dO Vᵀ
        score_grad_rows(p, dp, cols, &delta[row0..row0 + rows]);
        weighted_rows(&mut dq_h[row0 * d..], d, dp, rows, cols, k_h, ranges, scale); // dQ = c dS K
        scatter_transposed(dk_h, d, dp, rows, cols, q_b, ranges, scale); // dK += c dSᵀ Q
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
    pattern: &KeyPattern,
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
    let qb = pattern.query_block();
    let tiles = tiles(pattern, seq);
    out.par_chunks_mut(hl)
        .zip(lse.par_chunks_mut(seq))
        .enumerate()
        .for_each(|(bh, (out_h, lse_h))| {
            let (q_h, k_h, v_h) = (
                &q[bh * hl..][..hl],
                &k[bh * hl..][..hl],
                &v[bh * hl..][..hl],
            );
            let keys = HeadRows::new(k_h, d);
            let head = HeadParams {
                head_dim: d,
                scale,
                slope: slopes.get(bh % heads).copied().unwrap_or(0.0),
            };
            out_h
                .par_chunks_mut(qb * d)
                .zip(lse_h.par_chunks_mut(qb))
                .zip(&tiles)
                .for_each_init(Scratch::default, |scratch, ((out_b, lse_b), tile)| {
                    let q_b = View::rows(&q_h[tile.row0 * d..], tile.rows, d);
                    forward_tile(tile, q_b, &keys, v_h, head, out_b, lse_b, scratch);
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
    pattern: &KeyPattern,
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
    let tiles = tiles(pattern, seq);
    // dK and dV of a head collect from every query block, so one task owns a whole head.
    dq.par_chunks_mut(hl)
        .zip(dk.par_chunks_mut(hl))
        .zip(dv.par_chunks_mut(hl))
        .enumerate()
        .for_each_init(Scratch::default, |scratch, (bh, ((dq_h, dk_h), dv_h))| {
            fn head(t: &[f32], bh: usize, hl: usize) -> &[f32] {
                &t[bh * hl..][..hl]
            }
            let at = |t| head(t, bh, hl);
            let head = HeadParams {
                head_dim: d,
                scale,
                slope: slopes.get(bh % heads).copied().unwrap_or(0.0),
            };
            backward_head(
                &tiles,
                [at(q), at(k), at(v), at(out), at(grad_out)],
                &lse[bh * seq..][..seq],
                head,
                [dq_h, dk_h, dv_h],
                scratch,
            );
        });
    (dq, dk, dv)
}

// ---- Burn plumbing: flex tensors in and out, and the autodiff registration -----------------

fn tensor_shape(q: &FlexTensor) -> AttentionShape {
    let [b, h, n, d] = q.shape().dims();
    AttentionShape {
        heads_total: b * h,
        heads: h,
        seq: n,
        head_dim: d,
    }
}

/// (o, ℓ) for contiguous q, k, v.
fn flex_forward(
    [q, k, v]: &[FlexTensor; 3],
    scale: f32,
    slopes: &[f32],
    pattern: &KeyPattern,
) -> (FlexTensor, FlexTensor) {
    assert!(
        q.shape() == k.shape() && q.shape() == v.shape(),
        "q, k, v shapes differ"
    );
    let shape = tensor_shape(q);
    let (o, lse) = forward(
        values(q),
        values(k),
        values(v),
        shape,
        scale,
        slopes,
        pattern,
    );
    let lse_shape = Shape::new([shape.heads_total, shape.seq]);
    (flex_tensor(o, q.shape()), flex_tensor(lse, lse_shape))
}

/// The plain flex op.
pub(super) fn flex(
    inputs: [FlexTensor; 3],
    scale: f32,
    slopes: &[f32],
    pattern: &KeyPattern,
) -> FlexTensor {
    flex_forward(&inputs.map(contiguous), scale, slopes, pattern).0
}

/// What the forward keeps for the backward, on flex and on cube devices (cube_attention.rs):
/// q, k, v (contiguous), o and the row log-sum-exps ℓ — O(n·d), never the scores.
#[derive(Clone, Debug)]
pub(super) struct AttentionSaved<T> {
    pub(super) inputs: [T; 3],
    pub(super) out: T,
    pub(super) lse: T,
    pub(super) scale: f32,
    pub(super) slopes: Vec<f32>,
    pub(super) pattern: KeyPattern,
}

impl SavedForBackward<3> for AttentionSaved<FlexTensor> {
    fn gradients(self, grad_out: &[f32]) -> [(Vec<f32>, Shape); 3] {
        let [q, k, v] = &self.inputs;
        let (dq, dk, dv) = backward(
            values(q),
            values(k),
            values(v),
            values(&self.out),
            values(&self.lse),
            grad_out,
            tensor_shape(q),
            self.scale,
            &self.slopes,
            &self.pattern,
        );
        let shape = q.shape();
        [(dq, shape.clone()), (dk, shape.clone()), (dv, shape)]
    }
}

/// The op under autodiff on flex: the forward saves q, k, v, o and the row log-sum-exps.
pub(super) fn autodiff<C: CheckpointStrategy>(
    inputs: [AutodiffFlex<C>; 3],
    scale: f32,
    slopes: Vec<f32>,
    pattern: KeyPattern,
) -> AutodiffFlex<C> {
    register_op::<C, _, _>(inputs, |inputs| {
        let (out, lse) = flex_forward(&inputs, scale, &slopes, &pattern);
        let saved = AttentionSaved {
            inputs,
            out: out.clone(),
            lse,
            scale,
            slopes,
            pattern,
        };
        (out, saved)
    })
}
