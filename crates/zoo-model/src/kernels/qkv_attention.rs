//! Causal softmax attention read straight from the token-major output of one fused q/k/v
//! projection — the CPU training path of the softmax, sliding-window and BigBird mixers:
//!
//!   [q | k | v] = x [W_q | W_k | W_v] + [b_q | b_k | b_v]      (one product, `dense::Linear`)
//!   q̃ᵢ = fᵢ · R(i) qᵢ,   k̃ⱼ = R(j) kⱼ       (RoPE rotation R, log-n factor fᵢ; identity if off)
//!   oᵢ = Σ_{j ∈ keys(i)} softmax_j(c · q̃ᵢ·k̃ⱼ − m_h (i − j)) vⱼ
//!
//! with the tiles, masks and per-head passes of causal_attention.rs (FlashAttention-2 order,
//! masked half skipped, ℓ saved), and in the backward pass, R being orthogonal,
//!
//!   dqᵢ = fᵢ R(i)ᵀ dq̃ᵢ,   dkⱼ = R(j)ᵀ dk̃ⱼ.
//!
//! Why: around the head-major kernel the model splits the heads of q, k and v (a permute copy
//! each), rotates q and k (a pass each), merges the output heads (another permute), does all of
//! it again backwards, and adds the input gradients of three projections (two more passes).
//! Here each task copies its head's columns of the [b, n, (h + 2·h_kv)·d] rows into small
//! head-major buffers, rotating as it goes, and writes its output columns straight into the
//! token-major [b, n, h·d] result (d[q | k | v] in the backward): no pass over a whole tensor
//! besides the kernel's own.
//!
//! Grouped-query attention: query head h reads kv head h / (h / h_kv); the backward runs one
//! task per (sequence, kv head) over that head's query heads, so dK and dV are summed in the
//! task (no atomics, deterministic).

use burn::backend::TensorMetadata;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::flex::FlexTensor;
use burn::prelude::Shape;
use rayon::prelude::*;

use super::causal_attention::{self, HeadParams, HeadRows, KeyPattern, Scratch, grown};
use super::gemm::View;
use super::rotary::rotate_in_place;
use super::{
    AutodiffFlex, DisjointColumns, SavedForBackward, contiguous, flex_tensor, register_op, values,
};

/// Everything but the projection: head counts, logit scale, ALiBi slopes (empty for none),
/// position transforms and key pattern.
#[derive(Clone, Debug)]
pub struct QkvAttention {
    pub heads: usize,
    pub kv_heads: usize,
    pub scale: f32,
    pub slopes: Vec<f32>,
    pub positions: Positions,
    pub pattern: KeyPattern,
}

/// The position-dependent transforms of q and k for positions 0..n: RoPE's cos and sin tables
/// ([n, d/2] each; empty without RoPE) and the queries' log-n factors ([n]; empty without).
#[derive(Clone, Debug, Default)]
pub struct Positions {
    pub cos: Vec<f32>,
    pub sin: Vec<f32>,
    pub query_factors: Vec<f32>,
}

impl Positions {
    fn check(&self, seq: usize, head_dim: usize) {
        assert_eq!(self.cos.len(), self.sin.len(), "RoPE tables differ in size");
        assert!(
            self.cos.is_empty()
                || (head_dim.is_multiple_of(2) && self.cos.len() == seq * head_dim / 2),
            "RoPE tables must be [seq, head_dim / 2]"
        );
        assert!(
            self.query_factors.is_empty() || self.query_factors.len() == seq,
            "log-n factors must be [seq]"
        );
    }

    /// Rotates the head rows [rows, d] of positions p0.. in place (sign −1: back).
    fn rotate(&self, rows: &mut [f32], p0: usize, d: usize, sign: f32) {
        if self.cos.is_empty() || rows.is_empty() {
            return;
        }
        let half = d / 2;
        let count = rows.len() / d;
        let tables = p0 * half..(p0 + count) * half;
        rotate_in_place(
            rows,
            &self.cos[tables.clone()],
            &self.sin[tables],
            half,
            sign,
        );
    }

    /// Multiplies the query rows [rows, d] of positions p0.. by their log-n factors.
    fn scale_queries(&self, rows: &mut [f32], p0: usize, d: usize) {
        if self.query_factors.is_empty() {
            return;
        }
        for (row, f) in rows.chunks_exact_mut(d).zip(&self.query_factors[p0..]) {
            row.iter_mut().for_each(|x| *x *= f);
        }
    }
}

/// Sizes of the token-major projection [batch, seq, width].
#[derive(Clone, Copy, Debug)]
struct Sizes {
    batch: usize,
    seq: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl Sizes {
    fn new(qkv_dims: [usize; 3], spec: &QkvAttention) -> Self {
        let [batch, seq, width] = qkv_dims;
        let (heads, kv_heads) = (spec.heads, spec.kv_heads);
        assert!(
            kv_heads > 0 && heads.is_multiple_of(kv_heads),
            "heads must be a multiple of kv heads"
        );
        let parts = heads + 2 * kv_heads;
        assert!(
            width.is_multiple_of(parts),
            "the projection's width {width} is not (heads + 2·kv_heads)·head_dim"
        );
        assert!(
            spec.slopes.is_empty() || spec.slopes.len() == heads,
            "one ALiBi slope per head"
        );
        let sizes = Sizes {
            batch,
            seq,
            heads,
            kv_heads,
            head_dim: width / parts,
        };
        spec.positions.check(seq, sizes.head_dim);
        sizes
    }
    /// Values per token of the projection: q (heads), then k and v (kv heads each).
    fn width(&self) -> usize {
        (self.heads + 2 * self.kv_heads) * self.head_dim
    }
    fn out_width(&self) -> usize {
        self.heads * self.head_dim
    }
    fn groups(&self) -> usize {
        self.heads / self.kv_heads
    }
    fn q_col(&self, head: usize) -> usize {
        head * self.head_dim
    }
    fn k_col(&self, kv_head: usize) -> usize {
        (self.heads + kv_head) * self.head_dim
    }
    fn v_col(&self, kv_head: usize) -> usize {
        (self.heads + self.kv_heads + kv_head) * self.head_dim
    }
}

/// dst [rows, d] ← columns col..col + d of the token rows first.. of `src` (row length `width`).
fn gather(src: &[f32], width: usize, first: usize, col: usize, d: usize, dst: &mut [f32]) {
    for (r, row) in dst.chunks_exact_mut(d).enumerate() {
        row.copy_from_slice(&src[(first + r) * width + col..][..d]);
    }
}

/// Columns col..col + d of the token rows first.. of the writer's buffer (row length `width`)
/// ← src [rows, d].
///
/// # Safety
/// No other task may touch those columns of those rows.
unsafe fn scatter(
    dst: &DisjointColumns<'_>,
    width: usize,
    first: usize,
    col: usize,
    d: usize,
    src: &[f32],
) {
    for (r, row) in src.chunks_exact(d).enumerate() {
        // SAFETY: the caller's contract.
        unsafe { dst.write((first + r) * width + col, row) };
    }
}

fn head_params(spec: &QkvAttention, head_dim: usize, head: usize) -> HeadParams {
    HeadParams {
        head_dim,
        scale: spec.scale,
        slope: spec.slopes.get(head).copied().unwrap_or(0.0),
    }
}

/// Forward: qkv [b, n, (h + 2·h_kv)·d] → (o [b, n, h·d], ℓ [b, h, n]). Parallel over
/// (sequence, head) and, inside, over query tiles.
pub fn forward(qkv: &[f32], qkv_dims: [usize; 3], spec: &QkvAttention) -> (Vec<f32>, Vec<f32>) {
    let sizes = Sizes::new(qkv_dims, spec);
    let Sizes {
        batch,
        seq: n,
        heads: h,
        head_dim: d,
        ..
    } = sizes;
    let (width, out_width) = (sizes.width(), sizes.out_width());
    assert_eq!(qkv.len(), batch * n * width, "qkv size");
    let out_len = batch * n * out_width;
    let mut out = Vec::new();
    let out_columns = DisjointColumns::spare(&mut out, out_len);
    let mut lse = vec![0.0f32; batch * h * n];
    let pattern = &spec.pattern;
    let tiles = causal_attention::tiles(pattern, n);
    let positions = &spec.positions;
    lse.par_chunks_mut(n.max(1))
        .enumerate()
        .for_each(|(bh, lse_h)| {
            let (b, head) = (bh / h, bh % h);
            let kv = head / sizes.groups();
            let first = b * n;
            let mut k_h = vec![0.0f32; n * d]; // [n, d], rotated
            gather(qkv, width, first, sizes.k_col(kv), d, &mut k_h);
            positions.rotate(&mut k_h, 0, d, 1.0);
            let keys = HeadRows::new(&k_h, d);
            let mut v_h = vec![0.0f32; n * d]; // [n, d]
            gather(qkv, width, first, sizes.v_col(kv), d, &mut v_h);
            let params = head_params(spec, d, head);
            lse_h
                .par_chunks_mut(pattern.query_block())
                .zip(&tiles)
                .for_each_init(
                    || (Scratch::default(), Vec::new(), Vec::new()),
                    |(scratch, q_buffer, o_buffer), (lse_b, tile)| {
                        let (row0, rows) = (tile.row0, tile.rows);
                        let q_b = grown(q_buffer, rows * d); // [rows, d]
                        gather(qkv, width, first + row0, sizes.q_col(head), d, q_b);
                        positions.rotate(q_b, row0, d, 1.0);
                        positions.scale_queries(q_b, row0, d);
                        let o_b = grown(o_buffer, rows * d); // [rows, d]
                        let q_view = View::rows(q_b, rows, d);
                        causal_attention::forward_tile(
                            tile, q_view, &keys, &v_h, params, o_b, lse_b, scratch,
                        );
                        // SAFETY: this task owns head `head`'s columns of the tile's rows.
                        unsafe { scatter(&out_columns, out_width, first + row0, head * d, d, o_b) };
                    },
                );
        });
    // SAFETY: the tiles cover every row of every sequence and every head wrote its columns of
    // each, so all out_len values were written.
    unsafe { out.set_len(out_len) };
    (out, lse)
}

/// The per-task head buffers of the backward pass, [n, d] each.
#[derive(Default)]
struct HeadBuffers {
    k: Vec<f32>,
    v: Vec<f32>,
    dk: Vec<f32>,
    dv: Vec<f32>,
    q: Vec<f32>,
    o: Vec<f32>,
    d_o: Vec<f32>,
    dq: Vec<f32>,
}

/// Backward: d[q | k | v] [b, n, (h + 2·h_kv)·d] from dO [b, n, h·d]. Parallel over
/// (sequence, kv head).
pub fn backward(
    qkv: &[f32],
    qkv_dims: [usize; 3],
    spec: &QkvAttention,
    out: &[f32],
    lse: &[f32],
    grad_out: &[f32],
) -> Vec<f32> {
    let sizes = Sizes::new(qkv_dims, spec);
    let Sizes {
        batch,
        seq: n,
        heads: h,
        kv_heads,
        head_dim: d,
    } = sizes;
    let (width, out_width) = (sizes.width(), sizes.out_width());
    assert_eq!(qkv.len(), batch * n * width, "qkv size");
    assert!(out.len() == batch * n * out_width && grad_out.len() == out.len());
    assert_eq!(lse.len(), batch * h * n, "ℓ size");
    let len = qkv.len();
    let mut dqkv = Vec::new();
    let columns = DisjointColumns::spare(&mut dqkv, len);
    let tiles = causal_attention::tiles(&spec.pattern, n);
    let positions = &spec.positions;
    (0..batch * kv_heads).into_par_iter().for_each_init(
        || (Scratch::default(), HeadBuffers::default()),
        |(scratch, buffers), bk| {
            let (b, kv) = (bk / kv_heads, bk % kv_heads);
            let first = b * n;
            let HeadBuffers {
                k,
                v,
                dk,
                dv,
                q,
                o,
                d_o,
                dq,
            } = buffers;
            let (k, v) = (grown(k, n * d), grown(v, n * d));
            gather(qkv, width, first, sizes.k_col(kv), d, k);
            positions.rotate(k, 0, d, 1.0);
            gather(qkv, width, first, sizes.v_col(kv), d, v);
            let (dk, dv) = (grown(dk, n * d), grown(dv, n * d));
            dk.fill(0.0);
            dv.fill(0.0);
            let groups = sizes.groups();
            for head in kv * groups..(kv + 1) * groups {
                let (q, o, d_o, dq) = (
                    grown(q, n * d),
                    grown(o, n * d),
                    grown(d_o, n * d),
                    grown(dq, n * d),
                );
                gather(qkv, width, first, sizes.q_col(head), d, q);
                positions.rotate(q, 0, d, 1.0);
                positions.scale_queries(q, 0, d);
                gather(out, out_width, first, head * d, d, o);
                gather(grad_out, out_width, first, head * d, d, d_o);
                causal_attention::backward_head(
                    &tiles,
                    [&*q, &*k, &*v, &*o, &*d_o],
                    &lse[(b * h + head) * n..][..n],
                    head_params(spec, d, head),
                    [&mut *dq, &mut *dk, &mut *dv],
                    scratch,
                );
                // dq = f Rᵀ dq̃ (the factor and the rotation commute).
                positions.scale_queries(dq, 0, d);
                positions.rotate(dq, 0, d, -1.0);
                // SAFETY: this task owns query head `head`'s columns (its kv head's group).
                unsafe { scatter(&columns, width, first, sizes.q_col(head), d, dq) };
            }
            positions.rotate(dk, 0, d, -1.0);
            // SAFETY: this task owns kv head `kv`'s k and v columns of its sequence's rows.
            unsafe {
                scatter(&columns, width, first, sizes.k_col(kv), d, dk);
                scatter(&columns, width, first, sizes.v_col(kv), d, dv);
            }
        },
    );
    // SAFETY: every (sequence, kv head) task wrote the q columns of its query heads and its k
    // and v columns for all n rows, which together are every column of every row.
    unsafe { dqkv.set_len(len) };
    dqkv
}

// ---- Burn plumbing: flex tensors in and out, and the autodiff registration -----------------

fn flex_forward(qkv: &FlexTensor, spec: &QkvAttention) -> (FlexTensor, Vec<f32>) {
    let dims: [usize; 3] = qkv.shape().dims();
    let (out, lse) = forward(values(qkv), dims, spec);
    let out_width = spec.heads * (dims[2] / (spec.heads + 2 * spec.kv_heads));
    (
        flex_tensor(out, Shape::new([dims[0], dims[1], out_width])),
        lse,
    )
}

/// The plain flex op.
pub(super) fn flex(qkv: FlexTensor, spec: &QkvAttention) -> FlexTensor {
    flex_forward(&contiguous(qkv), spec).0
}

#[derive(Clone, Debug)]
struct QkvAttentionSaved {
    qkv: FlexTensor,
    out: FlexTensor,
    lse: Vec<f32>,
    spec: QkvAttention,
}

impl SavedForBackward<1> for QkvAttentionSaved {
    fn gradients(self, grad_out: &[f32]) -> [(Vec<f32>, Shape); 1] {
        let dims: [usize; 3] = self.qkv.shape().dims();
        let dqkv = backward(
            values(&self.qkv),
            dims,
            &self.spec,
            values(&self.out),
            &self.lse,
            grad_out,
        );
        [(dqkv, self.qkv.shape())]
    }
}

/// The op under autodiff on flex: the forward saves the projection, o and the row ℓ.
pub(super) fn autodiff<C: CheckpointStrategy>(
    qkv: AutodiffFlex<C>,
    spec: QkvAttention,
) -> AutodiffFlex<C> {
    register_op::<C, _, _>([qkv], |[qkv]| {
        let (out, lse) = flex_forward(&qkv, &spec);
        let saved = QkvAttentionSaved {
            qkv,
            out: out.clone(),
            lse,
            spec,
        };
        (out, saved)
    })
}
