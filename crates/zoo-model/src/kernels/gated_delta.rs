//! Fused gated delta rule for the CPU, forward and backward, from a zero state: DeltaNet (Yang et
//! al. 2024, "Parallelizing Linear Transformers with the Delta Rule over Sequence Length",
//! arXiv 2406.06484), Gated DeltaNet (Yang, Kautz & Hatamizadeh 2024, "Gated Delta Networks:
//! Improving Mamba2 with Delta Rule", arXiv 2412.06464) and, without the delta correction,
//! Mamba-2's scalar-decay recurrence (Dao & Gu 2024, "Transformers are SSMs", arXiv 2405.21060).
//! Per head, with state S [d_k, d_v], α_t = e^{log α_t} and β_t a scalar write strength:
//!
//!   delta:     u_t = β_t (v_t − α_t S_{t−1}ᵀ k_t)     (S_t = α_t (I − β_t k_t k_tᵀ) S_{t−1} + β_t k_t v_tᵀ)
//!   no delta:  u_t = β_t v_t
//!   both:      S_t = α_t S_{t−1} + k_t u_tᵀ,   o_t = S_tᵀ q_t
//!
//! Backward, walking t down with G = ∂L/∂S_t from the future (zero after the last token),
//! P = S_{t−1}, r = Pᵀ k_t and G_t = G + q_t dO_tᵀ (o_t reads S_t):
//!
//!   dq_t = S_t dO_t = α_t P dO_t + k_t (u_t·dO_t),   dk_t = G_t u_t,   du = G_tᵀ k_t,
//!   dα_t = ⟨G_t, P⟩,   ∂L/∂P = α_t G_t,
//!   delta:     dβ_t = du·(v_t − α_t r),  dv_t = β_t du,  dr = −α_t β_t du,  dα_t −= β_t du·r,
//!              dk_t += P dr,  ∂L/∂P += k_t drᵀ,
//!   no delta:  dβ_t = du·v_t,  dv_t = β_t du,
//!   d log α_t = α_t dα_t, then G ← ∂L/∂P.
//!
//! The token loop is the exact recurrence: O(n·d_k·d_v) time per head (two passes over the state
//! per token forward; four back: one to rebuild S_{t−1}, two for the gradients). Memory is
//! O(n·d + (n/C)·d_k·d_v): the state is kept only at chunk starts (C = 64 tokens) plus the
//! writes u_t [n, d_v]; inside a chunk the states are rebuilt from its start with the saved
//! writes, which repeats the forward's arithmetic exactly (bit-identical states).
//!
//! Layout (head-major, contiguous): q, k [heads_total, n, d_k]; v, o, u [heads_total, n, d_v];
//! β, log α [heads_total, n]; states [heads_total, ⌈n/C⌉, d_k, d_v]; heads_total = batch·heads.

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
pub struct GatedDeltaShape {
    pub heads_total: usize,
    pub seq: usize,
    pub key_dim: usize,
    pub value_dim: usize,
    /// The delta rule's correction −α_t β_t k_t k_tᵀ S_{t−1} (false: Mamba-2's plain write).
    pub delta: bool,
}

multiversion! {
    // One token: u = β(v − α Sᵀk) (or βv), then S ← α S + k uᵀ and o = Sᵀ q in one pass.
    #[allow(clippy::too_many_arguments)]
    fn token_forward(
        s: &mut [f32],
        q: &[f32],
        k: &[f32],
        v: &[f32],
        alpha_beta: [f32; 2],
        delta: bool,
        u: &mut [f32],
        o: &mut [f32],
    ) {
        let [alpha, beta] = alpha_beta;
        let dv = v.len();
        if delta {
            u.fill(0.0);
            for (row, &ka) in s.chunks_exact(dv).zip(k) {
                u.iter_mut().zip(row).for_each(|(r, s)| *r += ka * s);
            }
            u.iter_mut().zip(v).for_each(|(x, v)| *x = beta * (v - alpha * *x));
        } else {
            u.iter_mut().zip(v).for_each(|(x, v)| *x = beta * v);
        }
        o.fill(0.0);
        for ((row, &ka), &qa) in s.chunks_exact_mut(dv).zip(k).zip(q) {
            for ((sij, oj), uj) in row.iter_mut().zip(o.iter_mut()).zip(u.iter()) {
                *sij = alpha * *sij + ka * uj;
                *oj += qa * *sij;
            }
        }
    }
}

multiversion! {
    // S_t = α S_{t−1} + k uᵀ from the saved write (the backward pass's recomputation).
    fn token_state(s_prev: &[f32], s: &mut [f32], k: &[f32], u: &[f32], alpha: f32) {
        let dv = u.len();
        for ((row, prev), &ka) in s.chunks_exact_mut(dv).zip(s_prev.chunks_exact(dv)).zip(k) {
            for ((sij, pij), uj) in row.iter_mut().zip(prev).zip(u) {
                *sij = alpha * pij + ka * uj;
            }
        }
    }
}

multiversion! {
    // Gradients of one token; `g` is ∂L/∂S_t on entry and ∂L/∂S_{t−1} on exit, `p` is S_{t−1}.
    // Returns (dβ_t, d log α_t); `scratch` is three d_v buffers and one d_k buffer.
    #[allow(clippy::too_many_arguments)]
    fn token_backward(
        g: &mut [f32],
        p: &[f32],
        inputs: [&[f32]; 5],
        alpha_beta: [f32; 2],
        delta: bool,
        grads: [&mut [f32]; 3],
        scratch: [&mut [f32]; 4],
    ) -> [f32; 2] {
        let [alpha, beta] = alpha_beta;
        let [q, k, v, u, d_o] = inputs;
        let [dq, dk, dv] = grads;
        let [r, du, gp, p_dr] = scratch;
        r.fill(0.0);
        du.fill(0.0);
        gp.fill(0.0);
        // P dO, the rows' dot products batched (see `simd::row_dots`).
        simd::row_dots(p, d_o, dq);
        // Pass 1: G_t = G + q dOᵀ, du = G_tᵀ k, r = Pᵀ k, and G_t ⊙ P summed over the rows (one
        // horizontal sum for ⟨G_t, P⟩ instead of one per row).
        let n_v = v.len();
        for (a, (g_row, p_row)) in g.chunks_exact_mut(n_v).zip(p.chunks_exact(n_v)).enumerate() {
            let (qa, ka) = (q[a], k[a]);
            if delta {
                r.iter_mut().zip(p_row).for_each(|(r, p)| *r += ka * p);
            }
            for ((((gij, duj), oj), pij), sj) in g_row
                .iter_mut()
                .zip(du.iter_mut())
                .zip(d_o)
                .zip(p_row)
                .zip(gp.iter_mut())
            {
                *gij += qa * oj;
                *duj += ka * *gij;
                *sj += *gij * pij;
            }
        }
        let mut d_alpha = simd::sum(gp);
        let u_do = simd::dot(u, d_o);
        dq.iter_mut().zip(k).for_each(|(x, ka)| *x = alpha * *x + ka * u_do);
        dv.iter_mut().zip(du.iter()).for_each(|(x, d)| *x = beta * d);
        let d_beta = if delta {
            // dβ = du·(v − α r), dα −= β du·r, and r becomes dr = −αβ du.
            let du_r = simd::dot(du, r);
            d_alpha -= beta * du_r;
            r.iter_mut().zip(du.iter()).for_each(|(r, d)| *r = -alpha * beta * d);
            simd::dot(du, v) - alpha * du_r
        } else {
            simd::dot(du, v)
        };
        // Pass 2: dk = G_t u (+ P dr), then G ← α G_t (+ k drᵀ).
        simd::row_dots(g, u, dk);
        if delta {
            simd::row_dots(p, r, p_dr);
            dk.iter_mut().zip(p_dr.iter()).for_each(|(x, y)| *x += y);
            for (g_row, &ka) in g.chunks_exact_mut(n_v).zip(k) {
                g_row.iter_mut().zip(r.iter()).for_each(|(g, dr)| *g = alpha * *g + ka * dr);
            }
        } else {
            g.iter_mut().for_each(|g| *g *= alpha);
        }
        [d_beta, alpha * d_alpha]
    }
}

/// The `len` values of head `index` in a head-major buffer.
fn head(t: &[f32], index: usize, len: usize) -> &[f32] {
    &t[index * len..][..len]
}

/// Whether there is nothing to compute (and chunking by a zero length would panic).
fn is_empty(shape: GatedDeltaShape) -> bool {
    shape.heads_total * shape.seq * shape.key_dim * shape.value_dim == 0
}

/// inputs = q, k, v, β, log α. Returns (o, states at chunk starts, writes u).
pub fn forward(inputs: [&[f32]; 5], shape: GatedDeltaShape) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let [q, k, v, beta, log_alpha] = inputs;
    let GatedDeltaShape {
        heads_total,
        seq: n,
        key_dim: dk,
        value_dim: dv,
        delta,
    } = shape;
    assert!(q.len() == heads_total * n * dk && k.len() == q.len());
    assert!(v.len() == heads_total * n * dv);
    assert!(beta.len() == heads_total * n && log_alpha.len() == beta.len());
    let nc = n.div_ceil(CHECKPOINT_EVERY);
    let mut out = vec![0.0f32; heads_total * n * dv];
    let mut states = vec![0.0f32; heads_total * nc * dk * dv];
    let mut writes = vec![0.0f32; heads_total * n * dv];
    if is_empty(shape) {
        return (out, states, writes);
    }
    out.par_chunks_mut(n * dv)
        .zip(states.par_chunks_mut(nc * dk * dv))
        .zip(writes.par_chunks_mut(n * dv))
        .enumerate()
        .for_each(|(bh, ((o_h, states_h), u_h))| {
            let (q_h, k_h) = (head(q, bh, n * dk), head(k, bh, n * dk));
            let v_h = head(v, bh, n * dv);
            let (beta_h, la_h) = (head(beta, bh, n), head(log_alpha, bh, n));
            let mut s = vec![0.0f32; dk * dv];
            for t in 0..n {
                if t % CHECKPOINT_EVERY == 0 {
                    states_h[t / CHECKPOINT_EVERY * dk * dv..][..dk * dv].copy_from_slice(&s);
                }
                token_forward(
                    &mut s,
                    &q_h[t * dk..][..dk],
                    &k_h[t * dk..][..dk],
                    &v_h[t * dv..][..dv],
                    [exp(la_h[t]), beta_h[t]],
                    delta,
                    &mut u_h[t * dv..][..dv],
                    &mut o_h[t * dv..][..dv],
                );
            }
        });
    (out, states, writes)
}

/// inputs = q, k, v, β, log α; `writes` and `states` from [`forward`].
/// Returns (dq, dk, dv, dβ, d log α).
#[allow(clippy::type_complexity)]
pub fn backward(
    inputs: [&[f32]; 5],
    writes: &[f32],
    states: &[f32],
    grad_out: &[f32],
    shape: GatedDeltaShape,
) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    let [q, k, v, beta, log_alpha] = inputs;
    let GatedDeltaShape {
        heads_total,
        seq: n,
        key_dim: dk,
        value_dim: dv,
        delta,
    } = shape;
    let nc = n.div_ceil(CHECKPOINT_EVERY);
    assert_eq!(states.len(), heads_total * nc * dk * dv);
    assert!(writes.len() == heads_total * n * dv && grad_out.len() == writes.len());
    let (mut dq, mut dkk, mut dvv, mut dbeta, mut dla) = (
        vec![0.0f32; q.len()],
        vec![0.0f32; k.len()],
        vec![0.0f32; v.len()],
        vec![0.0f32; beta.len()],
        vec![0.0f32; log_alpha.len()],
    );
    if is_empty(shape) {
        return (dq, dkk, dvv, dbeta, dla);
    }
    dq.par_chunks_mut(n * dk)
        .zip(dkk.par_chunks_mut(n * dk))
        .zip(dvv.par_chunks_mut(n * dv))
        .zip(dbeta.par_chunks_mut(n))
        .zip(dla.par_chunks_mut(n))
        .enumerate()
        .for_each(|(bh, ((((dq_h, dk_h), dv_h), dbeta_h), dla_h))| {
            let (q_h, k_h) = (head(q, bh, n * dk), head(k, bh, n * dk));
            let (v_h, u_h, do_h) = (
                head(v, bh, n * dv),
                head(writes, bh, n * dv),
                head(grad_out, bh, n * dv),
            );
            let beta_h = head(beta, bh, n);
            let alpha_h: Vec<f32> = head(log_alpha, bh, n).iter().map(|&l| exp(l)).collect();
            let mut g = vec![0.0f32; dk * dv];
            let mut scratch = [dv, dv, dv, dk].map(|len| vec![0.0f32; len]);
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
                        &u_h[t * dv..][..dv],
                        alpha_h[t],
                    );
                }
                for i in (0..len).rev() {
                    let t = t0 + i;
                    let (kd, vd) = (t * dk..(t + 1) * dk, t * dv..(t + 1) * dv);
                    [dbeta_h[t], dla_h[t]] = token_backward(
                        &mut g,
                        &chunk_states[i * dk * dv..][..dk * dv],
                        [
                            &q_h[kd.clone()],
                            &k_h[kd.clone()],
                            &v_h[vd.clone()],
                            &u_h[vd.clone()],
                            &do_h[vd.clone()],
                        ],
                        [alpha_h[t], beta_h[t]],
                        delta,
                        [&mut dq_h[kd.clone()], &mut dk_h[kd], &mut dv_h[vd]],
                        scratch.each_mut().map(|s| s.as_mut_slice()),
                    );
                }
            }
        });
    (dq, dkk, dvv, dbeta, dla)
}

// ---- Burn plumbing: flex tensors in and out, and the autodiff registration -----------------

fn tensor_shape(inputs: &[FlexTensor; 5], delta: bool) -> GatedDeltaShape {
    let [q, k, v, beta, log_alpha] = inputs;
    let [b, h, n, dk] = q.shape().dims();
    let [vb, vh, vn, dv] = v.shape().dims();
    assert!(q.shape() == k.shape(), "q and k shapes differ");
    assert!((b, h, n) == (vb, vh, vn), "q and v shapes differ");
    let per_token = Shape::new([b, h, n]);
    assert!(
        beta.shape() == per_token && log_alpha.shape() == per_token,
        "beta and log_alpha must be [b, h, n]"
    );
    GatedDeltaShape {
        heads_total: b * h,
        seq: n,
        key_dim: dk,
        value_dim: dv,
        delta,
    }
}

/// (o, [states, writes]) for contiguous q, k, v, β, log α.
fn flex_forward(inputs: &[FlexTensor; 5], delta: bool) -> (FlexTensor, [FlexTensor; 2]) {
    let shape = tensor_shape(inputs, delta);
    let (o, states, writes) = forward(inputs.each_ref().map(values), shape);
    let len = states.len();
    let v_shape = inputs[2].shape();
    (
        flex_tensor(o, v_shape.clone()),
        [
            flex_tensor(states, Shape::new([len])),
            flex_tensor(writes, v_shape),
        ],
    )
}

/// The plain flex op.
pub(super) fn flex(inputs: [FlexTensor; 5], delta: bool) -> FlexTensor {
    flex_forward(&inputs.map(contiguous), delta).0
}

#[derive(Clone, Debug)]
struct GatedDeltaSaved {
    /// q, k, v, β, log α (contiguous).
    inputs: [FlexTensor; 5],
    /// States at chunk starts (flat) and the writes u [b, h, n, d_v].
    saved: [FlexTensor; 2],
    delta: bool,
}

impl SavedForBackward<5> for GatedDeltaSaved {
    fn gradients(self, grad_out: &[f32]) -> [(Vec<f32>, Shape); 5] {
        let [states, writes] = &self.saved;
        let (dq, dk, dv, dbeta, dla) = backward(
            self.inputs.each_ref().map(values),
            values(writes),
            values(states),
            grad_out,
            tensor_shape(&self.inputs, self.delta),
        );
        let [sq, sk, sv, sb, sla] = self.inputs.each_ref().map(|t| t.shape());
        [(dq, sq), (dk, sk), (dv, sv), (dbeta, sb), (dla, sla)]
    }
}

/// The op under autodiff on flex: the forward saves its inputs, chunk-start states and writes.
pub(super) fn autodiff<C: CheckpointStrategy>(
    inputs: [AutodiffFlex<C>; 5],
    delta: bool,
) -> AutodiffFlex<C> {
    register_op::<C, _, _>(inputs, |inputs| {
        let (out, saved) = flex_forward(&inputs, delta);
        let state = GatedDeltaSaved {
            inputs,
            saved,
            delta,
        };
        (out, state)
    })
}
