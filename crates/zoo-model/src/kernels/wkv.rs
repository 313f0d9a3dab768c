//! Fused RWKV-6 WKV recurrence for the CPU (Peng et al. 2024, "Eagle and Finch"), forward and
//! backward, from a zero state. Per head, with state S [d_k, d_v] and w_t = e^{log w_t}:
//!
//!   o_t = r_t (S_{t−1} + diag(u) k_tᵀ v_t),   S_t = diag(w_t) S_{t−1} + k_tᵀ v_t
//!
//! Backward, walking t down with G = ∂L/∂S_t (zero after the last token) and a_t = dO_t·v_t:
//!
//!   dr_t = S_{t−1} dO_t + u∘k_t a_t,   du += r_t∘k_t a_t,   dk_t = u∘r_t a_t + G v_t,
//!   dv_t = (r_t·(u∘k_t)) dO_t + Gᵀ k_t,   d(log w_t) = w_t ∘ rowsum(G ∘ S_{t−1}),
//!   then G ← diag(w_t) G + r_tᵀ dO_t.
//!
//! The token loop is the exact recurrence (no pairwise decays e^{b_t − b_s} to cancel in f32),
//! O(n·d_k·d_v) time and, with the state kept only at chunk starts and recomputed inside a chunk
//! on the way back, O(n·d + (n/C)·d_k·d_v) memory. The composed chunked form materialises
//! per-chunk pairwise-decay tensors as autodiff nodes, which is what grew faster than n.
//!
//! Layout: r, k, log w [heads_total, n, d_k], v and o [heads_total, n, d_v], u [heads, d_k].

use burn::backend::TensorMetadata;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::flex::FlexTensor;
use burn::prelude::Shape;
use rayon::prelude::*;

use super::simd::{self, exp, multiversion};
use super::{AutodiffFlex, SavedForBackward, contiguous, flex_tensor, register_op, values};

/// Tokens between saved states.
const CHECKPOINT_EVERY: usize = 64;

#[derive(Clone, Copy, Debug)]
pub struct WkvShape {
    pub heads_total: usize,
    pub heads: usize,
    pub seq: usize,
    pub key_dim: usize,
    pub value_dim: usize,
}

multiversion! {
    // o_t and S_t for one token: s ← diag(w) s + k vᵀ after reading o = r s + (r·(u∘k)) v.
    fn token_forward(s: &mut [f32], r: &[f32], k: &[f32], v: &[f32], w: &[f32], u: &[f32], o: &mut [f32]) {
        let dv = v.len();
        let ruk: f32 = r.iter().zip(k).zip(u).map(|((r, k), u)| r * u * k).sum();
        o.iter_mut().zip(v).for_each(|(o, v)| *o = ruk * v);
        for (i, row) in s.chunks_exact_mut(dv).enumerate() {
            let (ri, ki, wi) = (r[i], k[i], w[i]);
            for ((sij, oj), vj) in row.iter_mut().zip(o.iter_mut()).zip(v) {
                *oj += ri * *sij;
                *sij = wi * *sij + ki * vj;
            }
        }
    }
}

multiversion! {
    // S_t from S_{t−1} only (the backward pass's recomputation inside a chunk).
    fn token_state(s_prev: &[f32], s: &mut [f32], k: &[f32], v: &[f32], w: &[f32]) {
        let dv = v.len();
        for (i, (row, prev)) in s.chunks_exact_mut(dv).zip(s_prev.chunks_exact(dv)).enumerate() {
            let (ki, wi) = (k[i], w[i]);
            for ((sij, pij), vj) in row.iter_mut().zip(prev).zip(v) {
                *sij = wi * pij + ki * vj;
            }
        }
    }
}

multiversion! {
    // Gradients of one token; `g` is ∂L/∂S_t on entry and ∂L/∂S_{t−1} on exit.
    #[allow(clippy::too_many_arguments)]
    fn token_backward(
        g: &mut [f32],
        s_prev: &[f32],
        inputs: [&[f32]; 6],
        grads: [&mut [f32]; 5],
    ) {
        let [r, k, v, w, u, d_o] = inputs;
        let [dr, dk, dv, dlw, du] = grads;
        let n_v = v.len();
        let a = simd::dot(d_o, v);
        let ruk: f32 = r.iter().zip(k).zip(u).map(|((r, k), u)| r * u * k).sum();
        dv.iter_mut().zip(d_o).for_each(|(x, o)| *x = ruk * o);
        for (i, (g_row, s_row)) in g.chunks_exact_mut(n_v).zip(s_prev.chunks_exact(n_v)).enumerate() {
            let (ri, ki, wi, ui) = (r[i], k[i], w[i], u[i]);
            dr[i] = simd::dot(s_row, d_o) + ui * ki * a;
            du[i] += ri * ki * a;
            dk[i] = ui * ri * a + simd::dot(g_row, v);
            dlw[i] = wi * simd::dot(g_row, s_row);
            for ((gij, dvj), oj) in g_row.iter_mut().zip(dv.iter_mut()).zip(d_o) {
                *dvj += *gij * ki;
                *gij = wi * *gij + ri * oj;
            }
        }
    }
}

/// The `len` values of head `index` in a head-major buffer.
fn head(t: &[f32], index: usize, len: usize) -> &[f32] {
    &t[index * len..][..len]
}

fn decays(log_w: &[f32]) -> Vec<f32> {
    log_w.iter().map(|&l| exp(l)).collect()
}

/// Returns (o, states at chunk starts [heads_total, chunks, d_k, d_v]).
pub fn forward(
    r: &[f32],
    k: &[f32],
    v: &[f32],
    log_w: &[f32],
    u: &[f32],
    shape: WkvShape,
) -> (Vec<f32>, Vec<f32>) {
    let WkvShape {
        heads_total,
        heads,
        seq: n,
        key_dim: dk,
        value_dim: dv,
    } = shape;
    assert!(r.len() == heads_total * n * dk && k.len() == r.len() && log_w.len() == r.len());
    assert!(v.len() == heads_total * n * dv && u.len() == heads * dk);
    let nc = n.div_ceil(CHECKPOINT_EVERY);
    let mut out = vec![0.0f32; heads_total * n * dv];
    let mut states = vec![0.0f32; heads_total * nc * dk * dv];
    if out.is_empty() {
        return (out, states);
    }
    out.par_chunks_mut(n * dv)
        .zip(states.par_chunks_mut(nc * dk * dv))
        .enumerate()
        .for_each(|(bh, (o_h, states_h))| {
            let (r_h, k_h, lw_h) = (
                head(r, bh, n * dk),
                head(k, bh, n * dk),
                head(log_w, bh, n * dk),
            );
            let v_h = head(v, bh, n * dv);
            let u_h = &u[(bh % heads) * dk..][..dk];
            let w_h = decays(lw_h);
            let mut s = vec![0.0f32; dk * dv];
            for t in 0..n {
                if t % CHECKPOINT_EVERY == 0 {
                    states_h[t / CHECKPOINT_EVERY * dk * dv..][..dk * dv].copy_from_slice(&s);
                }
                token_forward(
                    &mut s,
                    &r_h[t * dk..][..dk],
                    &k_h[t * dk..][..dk],
                    &v_h[t * dv..][..dv],
                    &w_h[t * dk..][..dk],
                    u_h,
                    &mut o_h[t * dv..][..dv],
                );
            }
        });
    (out, states)
}

/// Returns (dr, dk, dv, d log w, du [heads, d_k]).
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
pub fn backward(
    r: &[f32],
    k: &[f32],
    v: &[f32],
    log_w: &[f32],
    u: &[f32],
    states: &[f32],
    grad_out: &[f32],
    shape: WkvShape,
) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    let WkvShape {
        heads_total,
        heads,
        seq: n,
        key_dim: dk,
        value_dim: dv,
    } = shape;
    let nc = n.div_ceil(CHECKPOINT_EVERY);
    assert_eq!(states.len(), heads_total * nc * dk * dv);
    assert_eq!(grad_out.len(), heads_total * n * dv);
    let (mut dr, mut dkk, mut dvv, mut dlw) = (
        vec![0.0f32; r.len()],
        vec![0.0f32; k.len()],
        vec![0.0f32; v.len()],
        vec![0.0f32; log_w.len()],
    );
    let mut du_parts = vec![0.0f32; heads_total * dk];
    if r.is_empty() && v.is_empty() {
        return (dr, dkk, dvv, dlw, vec![0.0; heads * dk]);
    }
    dr.par_chunks_mut(n * dk)
        .zip(dkk.par_chunks_mut(n * dk))
        .zip(dvv.par_chunks_mut(n * dv))
        .zip(dlw.par_chunks_mut(n * dk))
        .zip(du_parts.par_chunks_mut(dk))
        .enumerate()
        .for_each(|(bh, ((((dr_h, dk_h), dv_h), dlw_h), du_h))| {
            let (r_h, k_h, lw_h) = (
                head(r, bh, n * dk),
                head(k, bh, n * dk),
                head(log_w, bh, n * dk),
            );
            let (v_h, do_h) = (head(v, bh, n * dv), head(grad_out, bh, n * dv));
            let u_h = &u[(bh % heads) * dk..][..dk];
            let w_h = decays(lw_h);
            let mut g = vec![0.0f32; dk * dv];
            // S_{t−1} for every t of the chunk being walked back, rebuilt from its start state.
            let mut chunk_states = vec![0.0f32; CHECKPOINT_EVERY * dk * dv];
            for c in (0..nc).rev() {
                let t0 = c * CHECKPOINT_EVERY;
                let len = CHECKPOINT_EVERY.min(n - t0);
                let start = &states[(bh * nc + c) * dk * dv..][..dk * dv];
                chunk_states[..dk * dv].copy_from_slice(start);
                for i in 1..len {
                    let (before, after) = chunk_states.split_at_mut(i * dk * dv);
                    let t = t0 + i - 1;
                    token_state(
                        &before[(i - 1) * dk * dv..],
                        &mut after[..dk * dv],
                        &k_h[t * dk..][..dk],
                        &v_h[t * dv..][..dv],
                        &w_h[t * dk..][..dk],
                    );
                }
                for i in (0..len).rev() {
                    let t = t0 + i;
                    let (kd, vd) = (t * dk..(t + 1) * dk, t * dv..(t + 1) * dv);
                    token_backward(
                        &mut g,
                        &chunk_states[i * dk * dv..][..dk * dv],
                        [
                            &r_h[kd.clone()],
                            &k_h[kd.clone()],
                            &v_h[vd.clone()],
                            &w_h[kd.clone()],
                            u_h,
                            &do_h[vd.clone()],
                        ],
                        [
                            &mut dr_h[kd.clone()],
                            &mut dk_h[kd.clone()],
                            &mut dv_h[vd],
                            &mut dlw_h[kd],
                            du_h,
                        ],
                    );
                }
            }
        });
    // u is shared by the batch: sum the per-(batch, head) parts in batch order.
    let mut du = vec![0.0f32; heads * dk];
    for (bh, part) in du_parts.chunks_exact(dk).enumerate() {
        du[(bh % heads) * dk..][..dk]
            .iter_mut()
            .zip(part)
            .for_each(|(a, b)| *a += b);
    }
    (dr, dkk, dvv, dlw, du)
}

// ---- Burn plumbing: flex tensors in and out, and the autodiff registration -----------------

fn tensor_shape(r: &FlexTensor, v: &FlexTensor) -> WkvShape {
    let [b, h, n, dk] = r.shape().dims();
    let dv = v.shape().dims::<4>()[3];
    WkvShape {
        heads_total: b * h,
        heads: h,
        seq: n,
        key_dim: dk,
        value_dim: dv,
    }
}

/// (o, states at chunk starts) for contiguous r, k, v, log w, u.
fn flex_forward(inputs: &[FlexTensor; 5]) -> (FlexTensor, FlexTensor) {
    let [r, k, v, log_w, u] = inputs;
    assert!(
        r.shape() == k.shape() && r.shape() == log_w.shape(),
        "r, k, log w shapes differ"
    );
    let shape = tensor_shape(r, v);
    let (o, states) = forward(
        values(r),
        values(k),
        values(v),
        values(log_w),
        values(u),
        shape,
    );
    let len = states.len();
    (
        flex_tensor(o, v.shape()),
        flex_tensor(states, Shape::new([len])),
    )
}

/// The plain flex op.
pub(super) fn flex(inputs: [FlexTensor; 5]) -> FlexTensor {
    flex_forward(&inputs.map(contiguous)).0
}

#[derive(Clone, Debug)]
struct WkvSaved {
    /// r, k, v, log w, u (contiguous).
    inputs: [FlexTensor; 5],
    states: FlexTensor,
}

impl SavedForBackward<5> for WkvSaved {
    fn gradients(self, grad_out: &[f32]) -> [(Vec<f32>, Shape); 5] {
        let [r, k, v, log_w, u] = &self.inputs;
        let (dr, dk, dv, dlw, du) = backward(
            values(r),
            values(k),
            values(v),
            values(log_w),
            values(u),
            values(&self.states),
            grad_out,
            tensor_shape(r, v),
        );
        let [sr, sk, sv, slw, su] = self.inputs.each_ref().map(|t| t.shape());
        [(dr, sr), (dk, sk), (dv, sv), (dlw, slw), (du, su)]
    }
}

/// The op under autodiff on flex: the forward saves its inputs and the chunk-start states.
pub(super) fn autodiff<C: CheckpointStrategy>(inputs: [AutodiffFlex<C>; 5]) -> AutodiffFlex<C> {
    register_op::<C, _, _>(inputs, |inputs| {
        let (out, states) = flex_forward(&inputs);
        (out, WkvSaved { inputs, states })
    })
}
