//! Fused core of the delta-rule layer (DeltaNet, Yang et al. 2024, arXiv 2406.06484; Gated
//! DeltaNet, Yang, Kautz & Hatamizadeh 2024, arXiv 2412.06464) for the CPU, forward and
//! backward: everything between the input projection and the output projection in one pass
//! per (sequence, head), so none of its intermediates makes a round trip through memory.
//! From the projection P = [x_q, x_k, x_v, x_g] [b, n, 4d], the short-convolution taps W [K, 3d]
//! and bias c [3d], the raw write strengths b_t and log-decays ln α_t [b, n, heads] and the
//! RMSNorm weight w [d_h], per head and token:
//!
//!   z_t = c + Σ_{j<K} W_j ⊙ x_{t−K+1+j}           (causal depthwise convolution, x_{<0} = 0)
//!   a_t = SiLU(z_t) = z_t σ(z_t)                  (for each of the q, k, v channel groups)
//!   q_t = a_q / (√d_h √(Σ a_q² + ε₂)),  k_t = a_k / √(Σ a_k² + ε₂),  v_t = a_v
//!   β_t = σ(b_t),  then the delta rule (gated_delta.rs) → o_t
//!   y_t = o_t / √(mean o_t² + ε_r) ⊙ w ⊙ SiLU(g_t)
//!
//! Backward, per token walking back: through the gate and norm (ô = o/r,
//! do = (dô − ô·mean(dô ⊙ ô))/r with dô = dy ⊙ w ⊙ SiLU(g), dg = dy ⊙ ô ⊙ w ⊙ SiLU′(g),
//! dw += dy ⊙ ô ⊙ SiLU(g)), the recurrence (gated_delta.rs's token backward), dβ_raw =
//! dβ·β(1−β), the L2 normalisations (da = s/N·(dq − â(â·dq)), â = a/N), SiLU′(z) =
//! σ(z)(1 + z(1 − σ(z))) and the convolution (dx_{t−K+1+j} += W_j ⊙ dz_t, dW_j += x_{t−K+1+j} ⊙
//! dz_t, dc += dz_t). The recurrence inputs are recomputed from P a chunk of 64 tokens at a time
//! (the states are rebuilt the same way), so the forward saves only o and the writes u [b, n, d]
//! and the states at chunk starts.
//!
//! Why: composed, this stretch of the layer is ~25 elementwise passes forward and more backward
//! over [b, n, 3d]-sized tensors plus the head split / merge copies, which took ~40 % of a Gated
//! DeltaNet training step on the reference workload (docs/benchmarks.md).
//!
//! Layout: the inputs and y token-major and contiguous — P [b, n, 4d], b_t and ln α [b, n, heads],
//! y [b, n, d]; the saved o and u head-major [b, heads, n, d_h], states [b, heads, ⌈n/64⌉, d_h,
//! d_h]. Parallel over (sequence, head), as the recurrence is.

use burn::backend::TensorMetadata;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::flex::FlexTensor;
use burn::prelude::Shape;
use rayon::prelude::*;

use super::gated_delta::{token_backward, token_forward, token_state};
use super::simd::{self, exp, multiversion};
use super::{
    AutodiffFlex, DisjointColumns, SavedForBackward, contiguous, flex_tensor, register_op, values,
};
use crate::attention::delta_rule::{L2_EPS, RMS_EPS};

/// Tokens between saved states (and the length of the recomputed stretches).
const CHUNK: usize = 64;

#[derive(Clone, Copy, Debug)]
pub struct DeltaLayerShape {
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    pub head_dim: usize,
    /// Width K of the short convolution (≥ 1).
    pub conv_width: usize,
}

impl DeltaLayerShape {
    fn d(&self) -> usize {
        self.heads * self.head_dim
    }
    /// Columns of the projection P: q, k, v and the gate.
    fn row(&self) -> usize {
        4 * self.d()
    }
    fn chunks(&self) -> usize {
        self.seq.div_ceil(CHUNK)
    }
    fn state_len(&self) -> usize {
        self.head_dim * self.head_dim
    }
    fn is_empty(&self) -> bool {
        self.batch * self.seq * self.heads * self.head_dim == 0
    }
}

multiversion! {
    // The convolution of head `head`'s q, k, v channels at token t, then SiLU and the L2
    // normalisations. `x` is the sequence's P rows [n, 4d].
    #[allow(clippy::too_many_arguments)]
    fn prepare_token(
        x: &[f32],
        t: usize,
        head: usize,
        dims: [usize; 3],
        taps: &[f32],
        bias: &[f32],
        z: &mut [f32],
        inv_norm: &mut [f32; 2],
        qkv: &mut [f32],
    ) {
        let [d, dh, width] = dims;
        let row = 4 * d;
        let channels = 3 * d;
        for (part, (zp, ap)) in z.chunks_exact_mut(dh).zip(qkv.chunks_exact_mut(dh)).enumerate() {
            let col = part * d + head * dh;
            zp.copy_from_slice(&bias[col..col + dh]);
            for j in 0..width {
                if let Some(src) = (t + j).checked_sub(width - 1) {
                    let xs = &x[src * row + col..][..dh];
                    let ws = &taps[j * channels + col..][..dh];
                    zp.iter_mut()
                        .zip(xs)
                        .zip(ws)
                        .for_each(|((z, x), w)| *z = simd::madd(*w, *x, *z));
                }
            }
            ap.iter_mut().zip(zp.iter()).for_each(|(a, &z)| *a = z / (1.0 + exp(-z)));
        }
        let scale = [1.0 / (dh as f32).sqrt(), 1.0];
        for part in 0..2 {
            let a = &mut qkv[part * dh..][..dh];
            let inv = 1.0 / (simd::dot(a, a) + L2_EPS as f32).sqrt();
            inv_norm[part] = inv;
            let s = inv * scale[part];
            a.iter_mut().for_each(|x| *x *= s);
        }
    }
}

multiversion! {
    // From dq, dk, dv of the normalised inputs (in `grads`, [3·d_h]) to dz of the
    // pre-activations, in place; `qkv` holds the normalised q, k.
    fn prepare_backward(z: &[f32], inv_norm: &[f32; 2], qkv: &[f32], grads: &mut [f32]) {
        let dh = z.len() / 3;
        let scale = [1.0 / (dh as f32).sqrt(), 1.0];
        for part in 0..2 {
            // â = normalised a = qkv / scale; da = scale/N·(dq − â(â·dq)).
            let unit = &qkv[part * dh..][..dh];
            let g = &mut grads[part * dh..][..dh];
            let s = scale[part];
            let proj = simd::dot(unit, g) / (s * s);
            let factor = s * inv_norm[part];
            g.iter_mut().zip(unit).for_each(|(g, u)| *g = factor * (*g - u * proj));
        }
        grads.iter_mut().zip(z).for_each(|(g, &z)| {
            let sig = 1.0 / (1.0 + exp(-z));
            *g *= sig * (1.0 + z * (1.0 - sig));
        });
    }
}

multiversion! {
    // y = o/r ⊙ w ⊙ SiLU(g), r = √(mean o² + ε).
    fn gate_forward(o: &[f32], g: &[f32], w: &[f32], y: &mut [f32]) {
        let inv_r = 1.0 / (simd::dot(o, o) / o.len() as f32 + RMS_EPS as f32).sqrt();
        for (((y, o), g), w) in y.iter_mut().zip(o).zip(g).zip(w) {
            *y = o * inv_r * w * (g / (1.0 + exp(-g)));
        }
    }
}

multiversion! {
    // Backward of `gate_forward`: dO into `d_o`, dg into `d_g`, dw accumulated into `d_w`.
    fn gate_backward(
        o: &[f32],
        g: &[f32],
        w: &[f32],
        dy: &[f32],
        d_o: &mut [f32],
        d_g: &mut [f32],
        d_w: &mut [f32],
    ) {
        let n = o.len() as f32;
        let inv_r = 1.0 / (simd::dot(o, o) / n + RMS_EPS as f32).sqrt();
        // Elementwise first (vectorises; one exponential per channel): dô into d_o.
        for i in 0..o.len() {
            let sig = 1.0 / (1.0 + exp(-g[i]));
            let silu = g[i] * sig;
            let dy_o_hat = dy[i] * o[i] * inv_r;
            d_g[i] = dy_o_hat * w[i] * sig * (1.0 + g[i] * (1.0 - sig));
            d_w[i] += dy_o_hat * silu;
            d_o[i] = dy[i] * w[i] * silu;
        }
        // mean(dô ⊙ ô), then do = (dô − ô·mean)/r.
        let mean = simd::dot(d_o, o) * inv_r / n;
        d_o.iter_mut().zip(o).for_each(|(d, o)| *d = (*d - o * inv_r * mean) * inv_r);
    }
}

multiversion! {
    // The convolution's backward at token t for one head: dx_{t−K+1+j} += W_j ⊙ dz,
    // dW_j += x_{t−K+1+j} ⊙ dz, dc += dz. `dx` is the whole P gradient; `base` is the
    // sequence's first element in it.
    #[allow(clippy::too_many_arguments)]
    fn conv_backward(
        x: &[f32],
        t: usize,
        head: usize,
        dims: [usize; 3],
        taps: &[f32],
        dz: &[f32],
        dx: DisjointColumns<'_>,
        base: usize,
        d_taps: &mut [f32],
        d_bias: &mut [f32],
    ) {
        let [d, dh, width] = dims;
        let row = 4 * d;
        let channels = 3 * d;
        for (part, g) in dz.chunks_exact(dh).enumerate() {
            let col = part * d + head * dh;
            d_bias[col..col + dh].iter_mut().zip(g).for_each(|(b, g)| *b += g);
            for j in 0..width {
                if let Some(src) = (t + j).checked_sub(width - 1) {
                    let at = src * row + col;
                    let ws = &taps[j * channels + col..][..dh];
                    // SAFETY: the columns of `head` (q, k or v part) in one row of this
                    // sequence: only this (sequence, head) task writes them, one slice at a time.
                    let dx_row = unsafe { dx.at(base + at, dh) };
                    dx_row
                        .iter_mut()
                        .zip(ws)
                        .zip(g)
                        .for_each(|((x, w), g)| *x = simd::madd(*w, *g, *x));
                    let xs = &x[at..at + dh];
                    d_taps[j * channels + col..][..dh]
                        .iter_mut()
                        .zip(xs)
                        .zip(g)
                        .for_each(|((dw, x), g)| *dw = simd::madd(*x, *g, *dw));
                }
            }
        }
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

fn check(inputs: &[&[f32]; 6], shape: DeltaLayerShape) {
    let [x, taps, bias, beta, log_alpha, norm] = inputs;
    let DeltaLayerShape {
        batch: b,
        seq: n,
        heads: h,
        head_dim: dh,
        conv_width: k,
    } = shape;
    let d = shape.d();
    assert!(k >= 1, "the fused delta-rule layer needs a convolution");
    assert_eq!(x.len(), b * n * 4 * d, "P must be [b, n, 4d]");
    assert!(
        taps.len() == k * 3 * d && bias.len() == 3 * d,
        "conv taps [K, 3d], bias [3d]"
    );
    assert!(beta.len() == b * n * h && log_alpha.len() == beta.len());
    assert_eq!(norm.len(), dh);
}

/// inputs = P, conv taps, conv bias, raw β, ln α, norm weight. Returns (y [b, n, d], and for the
/// backward o and the writes u, head-major [b, heads, n, d_h], and the states at chunk starts).
/// Parallel over (sequence, head).
pub fn forward(
    inputs: [&[f32]; 6],
    shape: DeltaLayerShape,
) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    check(&inputs, shape);
    let [x, taps, bias, beta, log_alpha, norm] = inputs;
    let (n, h, dh) = (shape.seq, shape.heads, shape.head_dim);
    let (d, row) = (shape.d(), shape.row());
    let dims = [d, dh, shape.conv_width];
    let head_states = shape.chunks() * shape.state_len();
    let mut y = vec![0.0f32; shape.batch * n * d];
    let mut o = vec![0.0f32; y.len()];
    let mut u = vec![0.0f32; y.len()];
    let mut states = vec![0.0f32; shape.batch * h * head_states];
    if shape.is_empty() {
        return (y, o, u, states);
    }
    let y_columns = DisjointColumns::new(&mut y);
    o.par_chunks_mut(n * dh)
        .zip(u.par_chunks_mut(n * dh))
        .zip(states.par_chunks_mut(head_states))
        .enumerate()
        .for_each(|(task, ((o_h, u_h), states_h))| {
            let (seq, head) = (task / h, task % h);
            let x_s = &x[seq * n * row..][..n * row];
            let mut z = vec![0.0f32; 3 * dh];
            let mut qkv = vec![0.0f32; 3 * dh];
            let mut inv_norm = [0.0f32; 2];
            let mut s = vec![0.0f32; dh * dh];
            for t in 0..n {
                if t % CHUNK == 0 {
                    states_h[t / CHUNK * dh * dh..][..dh * dh].copy_from_slice(&s);
                }
                prepare_token(
                    x_s,
                    t,
                    head,
                    dims,
                    taps,
                    bias,
                    &mut z,
                    &mut inv_norm,
                    &mut qkv,
                );
                let at = (seq * n + t) * h + head;
                let token = t * dh..(t + 1) * dh;
                token_forward(
                    &mut s,
                    &qkv[..dh],
                    &qkv[dh..2 * dh],
                    &qkv[2 * dh..],
                    [exp(log_alpha[at]), sigmoid(beta[at])],
                    true,
                    &mut u_h[token.clone()],
                    &mut o_h[token.clone()],
                );
                let gate = &x_s[t * row + 3 * d + head * dh..][..dh];
                // SAFETY: row (seq, t), columns of `head`: this task's alone.
                let y_t = unsafe { y_columns.at((seq * n + t) * d + head * dh, dh) };
                gate_forward(&o_h[token], gate, norm, y_t);
            }
        });
    (y, o, u, states)
}

/// The gradients of [`forward`]'s six inputs (same order and shapes) from dy [b, n, d] and
/// what the forward saved. Parallel over (sequence, head).
pub fn backward(
    inputs: [&[f32]; 6],
    saved: [&[f32]; 3],
    grad_out: &[f32],
    shape: DeltaLayerShape,
) -> [Vec<f32>; 6] {
    check(&inputs, shape);
    let [x, taps, bias, beta, log_alpha, norm] = inputs;
    let [o, u, states] = saved;
    let (n, h, dh, width) = (shape.seq, shape.heads, shape.head_dim, shape.conv_width);
    let (d, row) = (shape.d(), shape.row());
    let dims = [d, dh, width];
    let head_states = shape.chunks() * dh * dh;
    assert!(o.len() == shape.batch * n * d && u.len() == o.len() && grad_out.len() == o.len());
    assert_eq!(states.len(), shape.batch * h * head_states);
    let mut dx = vec![0.0f32; x.len()];
    let mut d_beta = vec![0.0f32; beta.len()];
    let mut d_la = vec![0.0f32; log_alpha.len()];
    let (mut d_taps, mut d_bias, mut d_norm) = (
        vec![0.0f32; taps.len()],
        vec![0.0f32; bias.len()],
        vec![0.0f32; norm.len()],
    );
    if shape.is_empty() {
        return [dx, d_taps, d_bias, d_beta, d_la, d_norm];
    }
    let dx_columns = DisjointColumns::new(&mut dx);
    let d_beta_columns = DisjointColumns::new(&mut d_beta);
    let d_la_columns = DisjointColumns::new(&mut d_la);
    // Each task accumulates its own parameter gradients; they are summed afterwards in task
    // order (deterministic).
    let partials: Vec<[Vec<f32>; 3]> = (0..shape.batch * h)
        .into_par_iter()
        .map(|task| {
            let (seq, head) = (task / h, task % h);
            let x_s = &x[seq * n * row..][..n * row];
            let (o_h, u_h) = (&o[task * n * dh..][..n * dh], &u[task * n * dh..][..n * dh]);
            let states_h = &states[task * head_states..][..head_states];
            let mut d_taps = vec![0.0f32; taps.len()];
            let mut d_bias = vec![0.0f32; bias.len()];
            let mut d_norm = vec![0.0f32; norm.len()];
            // The chunk's recomputed inputs and the states S_{t−1} of its tokens.
            let mut z = vec![0.0f32; CHUNK * 3 * dh];
            let mut qkv = vec![0.0f32; CHUNK * 3 * dh];
            let mut inv_norm = vec![[0.0f32; 2]; CHUNK];
            let mut alpha_beta = vec![[0.0f32; 2]; CHUNK];
            let mut chunk_states = vec![0.0f32; CHUNK * dh * dh];
            let mut g = vec![0.0f32; dh * dh];
            let mut scratch = [dh; 4].map(|len| vec![0.0f32; len]);
            let mut d_o = vec![0.0f32; dh];
            let mut grads = vec![0.0f32; 3 * dh];
            for c in (0..shape.chunks()).rev() {
                let t0 = c * CHUNK;
                let len = CHUNK.min(n - t0);
                for i in 0..len {
                    let t = t0 + i;
                    prepare_token(
                        x_s,
                        t,
                        head,
                        dims,
                        taps,
                        bias,
                        &mut z[i * 3 * dh..][..3 * dh],
                        &mut inv_norm[i],
                        &mut qkv[i * 3 * dh..][..3 * dh],
                    );
                    let at = (seq * n + t) * h + head;
                    alpha_beta[i] = [exp(log_alpha[at]), sigmoid(beta[at])];
                }
                chunk_states[..dh * dh].copy_from_slice(&states_h[c * dh * dh..][..dh * dh]);
                for i in 1..len {
                    let (before, after) = chunk_states.split_at_mut(i * dh * dh);
                    token_state(
                        &before[(i - 1) * dh * dh..],
                        &mut after[..dh * dh],
                        &qkv[(i - 1) * 3 * dh + dh..][..dh],
                        &u_h[(t0 + i - 1) * dh..][..dh],
                        alpha_beta[i - 1][0],
                    );
                }
                for i in (0..len).rev() {
                    let t = t0 + i;
                    let token = t * dh..(t + 1) * dh;
                    let gate_at = t * row + 3 * d + head * dh;
                    // SAFETY: the gate columns of `head` in row (seq, t): this task's alone.
                    let d_gate = unsafe { dx_columns.at(seq * n * row + gate_at, dh) };
                    gate_backward(
                        &o_h[token.clone()],
                        &x_s[gate_at..][..dh],
                        norm,
                        &grad_out[(seq * n + t) * d + head * dh..][..dh],
                        &mut d_o,
                        d_gate,
                        &mut d_norm,
                    );
                    let inputs_t = &qkv[i * 3 * dh..][..3 * dh];
                    let (dq, rest) = grads.split_at_mut(dh);
                    let (dk, dv) = rest.split_at_mut(dh);
                    let [alpha, beta_t] = alpha_beta[i];
                    let [d_beta_t, d_la_t] = token_backward(
                        &mut g,
                        &chunk_states[i * dh * dh..][..dh * dh],
                        [
                            &inputs_t[..dh],
                            &inputs_t[dh..2 * dh],
                            &inputs_t[2 * dh..],
                            &u_h[token],
                            &d_o,
                        ],
                        [alpha, beta_t],
                        true,
                        [dq, dk, dv],
                        scratch.each_mut().map(|s| s.as_mut_slice()),
                    );
                    let at = (seq * n + t) * h + head;
                    // SAFETY: element (seq, t, head): this task's alone.
                    unsafe {
                        d_beta_columns.at(at, 1)[0] = d_beta_t * beta_t * (1.0 - beta_t);
                        d_la_columns.at(at, 1)[0] = d_la_t;
                    }
                    prepare_backward(
                        &z[i * 3 * dh..][..3 * dh],
                        &inv_norm[i],
                        inputs_t,
                        &mut grads,
                    );
                    conv_backward(
                        x_s,
                        t,
                        head,
                        dims,
                        taps,
                        &grads,
                        dx_columns,
                        seq * n * row,
                        &mut d_taps,
                        &mut d_bias,
                    );
                }
            }
            [d_taps, d_bias, d_norm]
        })
        .collect();
    for [taps_p, bias_p, norm_p] in partials {
        for (total, part) in [
            (&mut d_taps, taps_p),
            (&mut d_bias, bias_p),
            (&mut d_norm, norm_p),
        ] {
            total.iter_mut().zip(part).for_each(|(t, p)| *t += p);
        }
    }
    [dx, d_taps, d_bias, d_beta, d_la, d_norm]
}

// ---- Burn plumbing: flex tensors in and out, and the autodiff registration -----------------

fn tensor_shape(inputs: &[FlexTensor; 6]) -> DeltaLayerShape {
    let [x, taps, _, beta, _, norm] = inputs;
    let [b, n, row] = x.shape().dims();
    let [width, channels] = taps.shape().dims();
    let heads = beta.shape().dims::<3>()[2];
    let head_dim = norm.shape().dims::<1>()[0];
    assert!(
        row == 4 * heads * head_dim && channels == 3 * heads * head_dim,
        "P must be [b, n, 4·heads·head_dim] and the taps [K, 3·heads·head_dim]"
    );
    DeltaLayerShape {
        batch: b,
        seq: n,
        heads,
        head_dim,
        conv_width: width,
    }
}

/// (y, [o, u, states]) for contiguous inputs.
fn flex_forward(inputs: &[FlexTensor; 6]) -> (FlexTensor, [FlexTensor; 3]) {
    let shape = tensor_shape(inputs);
    let (y, o, u, states) = forward(inputs.each_ref().map(values), shape);
    let out_shape = Shape::new([shape.batch, shape.seq, shape.d()]);
    let states_len = states.len();
    (
        flex_tensor(y, out_shape.clone()),
        [
            flex_tensor(o, out_shape.clone()),
            flex_tensor(u, out_shape),
            flex_tensor(states, Shape::new([states_len])),
        ],
    )
}

/// The plain flex op.
pub(super) fn flex(inputs: [FlexTensor; 6]) -> FlexTensor {
    flex_forward(&inputs.map(contiguous)).0
}

#[derive(Clone, Debug)]
struct DeltaLayerSaved {
    /// P, taps, bias, raw β, ln α, norm weight (contiguous).
    inputs: [FlexTensor; 6],
    /// o, u [b, n, d] and the states at chunk starts.
    saved: [FlexTensor; 3],
}

impl SavedForBackward<6> for DeltaLayerSaved {
    fn gradients(self, grad_out: &[f32]) -> [(Vec<f32>, Shape); 6] {
        let grads = backward(
            self.inputs.each_ref().map(values),
            self.saved.each_ref().map(values),
            grad_out,
            tensor_shape(&self.inputs),
        );
        let shapes = self.inputs.each_ref().map(|t| t.shape());
        let mut shapes = shapes.into_iter();
        grads.map(|g| (g, shapes.next().expect("six shapes")))
    }
}

/// The op under autodiff on flex: the forward saves its inputs, o, the writes and the states.
pub(super) fn autodiff<C: CheckpointStrategy>(inputs: [AutodiffFlex<C>; 6]) -> AutodiffFlex<C> {
    register_op::<C, _, _>(inputs, |inputs| {
        let (out, saved) = flex_forward(&inputs);
        (out, DeltaLayerSaved { inputs, saved })
    })
}
