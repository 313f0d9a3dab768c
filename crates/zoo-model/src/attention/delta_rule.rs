//! The delta rule: DeltaNet (Yang, Wang, Zhang, Shen & Kim 2024, "Parallelizing Linear
//! Transformers with the Delta Rule over Sequence Length", arXiv 2406.06484) and Gated DeltaNet
//! (Yang, Kautz & Hatamizadeh 2024, "Gated Delta Networks: Improving Mamba2 with Delta Rule",
//! arXiv 2412.06464). Per head, a state S [d_k, d_v] read as o_t = S_tᵀ q_t and written by
//!
//!   S_t = α_t (I − β_t k_t k_tᵀ) S_{t−1} + β_t k_t v_tᵀ
//!       = α_t S_{t−1} + k_t u_tᵀ,   u_t = β_t (v_t − α_t S_{t−1}ᵀ k_t)
//!
//! with q, k L2-normalised (q also by 1/√d_k), β_t = σ(W_β x_t), and α_t = 1 (DeltaNet) or
//! α_t = exp(−e^{A_log} · softplus(W_α x_t + dt_bias)) per head (Gated DeltaNet, Mamba-2's
//! decay). Unlike linear attention's S += k vᵀ, the update first subtracts what the memory
//! already returns for k_t, so a key written twice is overwritten rather than blurred: the
//! mechanism that closed most of linear attention's recall gap. q, k, v pass the papers'
//! short causal convolutions (width `conv_size`) and SiLU; the output is RMS-normalised per head
//! and gated, o ← RMSNorm(o) ⊙ SiLU(W_g x), before W_o.
//!
//! Three forms with one contract:
//! - recurrent: the token loop above (decoding, and the reference the others are tested on);
//! - chunked (training off flex, O(n) in length): inside a chunk of C tokens with g_t = Σ_{s≤t} ln α_s,
//!   the pseudo-values solve the unit lower-triangular system (the WY / UT transform)
//!   (I + A) U = diag(β) V − diag(β e^{g}) K S₀,   A_{ti} = β_t e^{g_t−g_i} k_t·k_i  (i < t),
//!   then O = diag(e^{g}) Q S₀ + (Q Kᵀ ⊙ e^{g_t−g_i})_{i≤t} U and
//!   S_C = e^{g_C} S₀ + (K ⊙ e^{g_C−g})ᵀ U. (I + A)⁻¹ is built by blockwise doubling
//!   (block forward substitution: no alternating power series to cancel in f32);
//! - fused (flex): everything between the projections — convolution, SiLU, norms, the exact
//!   recurrence, RMSNorm and gate — in one kernel with a hand-written backward
//!   (`crate::kernels::delta_layer`; without a convolution, the recurrence alone,
//!   `crate::kernels::gated_delta`).

use crate::dense::Linear;
use burn::module::{Module, Param};
use burn::prelude::*;
use burn::tensor::activation::{sigmoid, silu, softplus};
use serde::{Deserialize, Serialize};

use super::{
    Mixer, MixerSpec, MixerState, TokenMixer, check_sizes, host_table, pad_axis,
    recurrent_mixer_checks, require_positive, split_heads,
};
use crate::config::{ModelConfig, limits};
use crate::error::ModelError;
use crate::init::Init;
use crate::kernels;
use crate::short_conv::ShortConv;

/// ε of the L2 normalisation of q and k (x / √(Σx² + ε)).
pub const L2_EPS: f64 = 1e-6;
/// ε of the per-head output RMSNorm.
pub const RMS_EPS: f64 = 1e-5;

/// `kind = "deltanet"` (`GATED = false`, α = 1) and `kind = "gated_deltanet"` (`GATED = true`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeltaRuleConfig<const GATED: bool> {
    /// Chunk length C of the chunked (UT-transform) training form.
    #[serde(default = "default_chunk")]
    pub chunk_size: usize,
    /// Width of the short causal convolutions on q, k and v (the papers use 4; 0 = none).
    #[serde(default = "default_conv")]
    pub conv_size: usize,
}

/// DeltaNet (α = 1).
pub type DeltaNetConfig = DeltaRuleConfig<false>;
/// Gated DeltaNet (data-dependent α).
pub type GatedDeltaNetConfig = DeltaRuleConfig<true>;

fn default_chunk() -> usize {
    64
}
fn default_conv() -> usize {
    4
}

impl<const GATED: bool> Default for DeltaRuleConfig<GATED> {
    fn default() -> Self {
        DeltaRuleConfig {
            chunk_size: default_chunk(),
            conv_size: default_conv(),
        }
    }
}

impl<const GATED: bool> DeltaRuleConfig<GATED> {
    pub fn kind(&self) -> &'static str {
        if GATED { "gated_deltanet" } else { "deltanet" }
    }
}

impl<const GATED: bool> MixerSpec for DeltaRuleConfig<GATED> {
    fn build(&self, model: &ModelConfig, init: &mut Init) -> Mixer {
        Mixer::DeltaNet(DeltaNet::new(self, model, init))
    }

    fn check_limits(&self, path: &str) -> Result<(), ModelError> {
        check_sizes(
            path,
            &[
                ("chunk_size", self.chunk_size, limits::CHUNK),
                ("conv_size", self.conv_size, limits::SHORT_CONV),
            ],
        )
    }

    fn validate(&self, model: &ModelConfig, path: &str) -> Result<(), ModelError> {
        require_positive(path, &[("chunk_size", self.chunk_size)])?;
        recurrent_mixer_checks(
            model,
            path,
            self.kind(),
            "the delta rule encodes position through its recurrence and convolution; use none, sinusoidal or learned",
        )
    }

    fn param_count(&self, model: &ModelConfig) -> u128 {
        let (d, h) = (model.d_model as u128, model.n_heads as u128);
        let dh = model.head_dim() as u128;
        let bias = if model.bias { d } else { 0 };
        let linear = d.saturating_mul(d).saturating_add(bias);
        let projections = linear.saturating_mul(5); // q, k, v, gate, out
        let convs = (self.conv_size as u128 + 1)
            .saturating_mul(d)
            .saturating_mul(3)
            * u128::from(self.conv_size > 0);
        let beta = d.saturating_mul(h);
        let decay = if GATED {
            d.saturating_mul(h).saturating_add(2 * h)
        } else {
            0
        };
        projections
            .saturating_add(convs)
            .saturating_add(beta)
            .saturating_add(decay)
            .saturating_add(dh)
    }

    /// S per head and the convolutions' last K−1 inputs.
    fn state_bytes(&self, model: &ModelConfig, _n: f64) -> f64 {
        let (d, h, dh) = (
            model.d_model as f64,
            model.n_heads as f64,
            model.head_dim() as f64,
        );
        4.0 * (h * dh * dh + 3.0 * self.conv_size.saturating_sub(1) as f64 * d)
    }

    fn activation_values(&self, model: &ModelConfig, _n: f64, train: bool, fused: bool) -> f64 {
        let (d, h) = (model.d_model as f64, model.n_heads as f64);
        let dh = model.head_dim() as f64;
        let c = self.chunk_size as f64;
        let conv = 3.0 * (self.conv_size as f64 + 2.0) * d;
        // Projections, SiLU / normalisation outputs, gate, norm, β and α.
        let projections = 14.0 * d + 6.0 * h + conv;
        if !train {
            return projections;
        }
        if fused {
            // The kernel's saved writes u_t and output, and its states every 64 tokens.
            return projections + 2.0 * d + h * dh * dh / 64.0;
        }
        // Chunk matrices (Γ, A, T, the doubling blocks, QKᵀ) and the chunked W, U, decayed q/k.
        projections + 12.0 * h * c + 8.0 * d + 2.0 * h * dh * dh / c
    }

    /// Read S for k, rank-1 update, read S for q: three d_k × d_v passes of two FLOPs per head.
    fn flops_per_token(&self, model: &ModelConfig, _n: f64) -> f64 {
        let (h, dh) = (model.n_heads as f64, model.head_dim() as f64);
        2.0 * 3.0 * h * dh * dh
    }

    fn allows_grouped_kv(&self) -> bool {
        false
    }

    /// Small chunks so tests cross them; one without convolutions.
    fn examples() -> Vec<Self> {
        vec![
            DeltaRuleConfig {
                chunk_size: 8,
                conv_size: 4,
            },
            DeltaRuleConfig {
                chunk_size: 5,
                conv_size: 0,
            },
        ]
    }
}

/// S [batch, heads, head_dim, head_dim] and the last K−1 inputs of the q, k, v convolution
/// ([batch, K−1, 3·d_model]; None before the first token or without a convolution).
#[derive(Clone, Debug)]
pub struct DeltaState {
    pub s: Tensor<4>,
    pub conv: Option<Tensor<3>>,
    pub pos: usize,
}

/// α_t's parameters (Gated DeltaNet; Mamba-2's Δ-parameterised decay).
#[derive(Module, Debug)]
pub struct DecayGate {
    /// W_α [d_model, heads]
    pub proj: Linear,
    /// ln A [heads], A ~ U(1, 16)
    pub a_log: Param<Tensor<1>>,
    /// [heads]: softplus⁻¹ of Δ ~ logU(1e-3, 1e-1)
    pub dt_bias: Param<Tensor<1>>,
}

impl DecayGate {
    pub fn new(d_in: usize, heads: usize, init: &mut Init) -> Self {
        DecayGate {
            proj: init.linear(d_in, heads, false),
            a_log: a_log_init(heads, init),
            dt_bias: dt_bias_init(heads, init),
        }
    }

    /// ln α = −e^{A_log} · softplus(W_α x + dt_bias): x [b, n, d] → [b, n, heads] (≤ 0).
    pub fn log_alpha(&self, x: Tensor<3>) -> Tensor<3> {
        token_major_decay(self.proj.forward(x), &self.a_log, &self.dt_bias).1
    }
}

/// Mamba's Δ-parameterised decay: Δ = softplus(raw + dt_bias) and ln α = −e^{A_log}·Δ, from raw
/// [b, n, heads] → (Δ, ln α), each [b, heads, n].
pub fn discretised_decay(
    raw: Tensor<3>,
    a_log: &Param<Tensor<1>>,
    dt_bias: &Param<Tensor<1>>,
) -> (Tensor<3>, Tensor<3>) {
    let (dt, log_alpha) = token_major_decay(raw, a_log, dt_bias);
    (dt.swap_dims(1, 2), log_alpha.swap_dims(1, 2))
}

/// [`discretised_decay`] without the transpose: each [b, n, heads].
fn token_major_decay(
    raw: Tensor<3>,
    a_log: &Param<Tensor<1>>,
    dt_bias: &Param<Tensor<1>>,
) -> (Tensor<3>, Tensor<3>) {
    let h = a_log.dims()[0];
    let dt = softplus(raw + dt_bias.val().reshape([1, 1, h]), 1.0); // [b, n, h]
    let log_alpha = (dt.clone() * a_log.val().exp().reshape([1, 1, h])).neg();
    (dt, log_alpha)
}

/// ln A with A ~ U(1, 16) (Mamba-2's initialisation).
pub fn a_log_init(heads: usize, init: &mut Init) -> Param<Tensor<1>> {
    let values = init
        .uniform_vec(heads, 1.0, 16.0)
        .into_iter()
        .map(f32::ln)
        .collect();
    Param::from_tensor(init.tensor(values, [heads]))
}

/// softplus⁻¹(Δ) with Δ log-uniform in [1e-3, 1e-1] (Mamba's dt initialisation).
pub fn dt_bias_init(heads: usize, init: &mut Init) -> Param<Tensor<1>> {
    let values = init
        .uniform_vec(heads, 1e-3f64.ln(), 1e-1f64.ln())
        .into_iter()
        .map(|log_dt| {
            let dt = (log_dt as f64).exp();
            (dt + (-(-dt).exp_m1()).ln()) as f32
        })
        .collect();
    Param::from_tensor(init.tensor(values, [heads]))
}

#[derive(Module, Debug)]
pub struct DeltaNet {
    /// x [d_model] → [q, k, v, g] (4 · d_model): one GEMM for the four projections.
    pub in_proj: Linear,
    /// The short convolution over the 3 · d_model channels of q, k, v (absent with
    /// conv_size = 0); depthwise, so it equals one convolution per projection.
    pub conv: Option<ShortConv>,
    /// W_β [d_model, heads]
    pub beta: Linear,
    /// Gated DeltaNet's α_t; absent for DeltaNet (α = 1).
    pub decay: Option<DecayGate>,
    /// RMSNorm weight [head_dim], shared by the heads.
    pub norm_weight: Param<Tensor<1>>,
    pub out: Linear,
    #[module(skip)]
    heads: usize,
    #[module(skip)]
    chunk_size: usize,
}

/// The recurrence inputs of a stretch of tokens.
struct Inputs {
    q: Tensor<4>,         // [b, h, n, dk]
    k: Tensor<4>,         // [b, h, n, dk]
    v: Tensor<4>,         // [b, h, n, dv]
    beta: Tensor<3>,      // [b, h, n]
    log_alpha: Tensor<3>, // [b, h, n]
    gate: Tensor<3>,      // [b, n, d]
}

/// x / √(Σ x² + ε) over the last axis.
pub fn l2_normalize(x: Tensor<4>) -> Tensor<4> {
    let norm = (x.clone().square().sum_dim(3) + L2_EPS).sqrt();
    x / norm
}

/// RMSNorm over each head's channels with a shared weight: o [b, h, n, dh] → [b, n, h·dh].
pub fn head_rms_norm(o: Tensor<4>, weight: Tensor<1>) -> Tensor<3> {
    let [b, h, n, dh] = o.dims();
    let o = o.swap_dims(1, 2); // [b, n, h, dh]
    let rms = (o.clone().square().mean_dim(3) + RMS_EPS).sqrt();
    (o / rms * weight.reshape([1, 1, 1, dh])).reshape([b, n, h * dh])
}

/// Inclusive decays inside a chunk, Γ_{ti} = e^{g_t − g_i} for i ≤ t and 0 above the diagonal:
/// g [.., C, 1] (running sums of ln α) → [.., C, C].
pub fn chunk_decays(g: Tensor<5>) -> Tensor<5> {
    let [b, h, nc, c, _] = g.dims();
    let diff = g.clone() - g.swap_dims(3, 4); // [b, h, nc, C(t), C(i)]
    // Above the diagonal g_t − g_i ≥ 0 could overflow e^·: mask before the exponential.
    let above = Tensor::<2>::ones([c, c], &diff.device())
        .triu(1)
        .bool()
        .reshape([1, 1, 1, c, c])
        .expand([b, h, nc, c, c]);
    diff.mask_fill(above, f32::NEG_INFINITY).exp()
}

/// (I + A)⁻¹ for strictly lower-triangular A [m, C, C], by blockwise doubling: the inverses of
/// the diagonal blocks of size s give those of size 2s through
/// [[T₁, 0], [A₂₁, T₂]]-blocks ↦ [[T₁, 0], [−T₂ A₂₁ T₁, T₂]] — block forward substitution, as
/// stable as the row-by-row solve, in log₂ C batched steps.
pub fn unit_lower_inverse(a: Tensor<3>) -> Tensor<3> {
    let [m, c, _] = a.dims();
    let p = c.next_power_of_two();
    let device = a.device();
    // Zero padding extends I + A by an identity block; the top-left C × C of the inverse is unchanged.
    let a = pad_axis(pad_axis(a, 1, 0, p - c), 2, 0, p - c); // [m, p, p]
    let mut t = Tensor::<4>::ones([m, p, 1, 1], &device); // [m, p/s, s, s] at s = 1
    let mut s = 1;
    while s < p {
        let blocks = p / (2 * s);
        // The diagonal 2s-blocks of A: keep block (j, j) of the [blocks × blocks] grid.
        let same_block = host_table(
            [1, blocks, 1, blocks, 1],
            |ix| if ix[1] == ix[3] { 1.0 } else { 0.0 },
            &device,
        );
        let diagonal = (a.clone().reshape([m, blocks, 2 * s, blocks, 2 * s]) * same_block)
            .sum_dim(3)
            .reshape([m, blocks, 2 * s, 2 * s]);
        let a21 = diagonal.narrow(2, s, s).narrow(3, 0, s); // [m, blocks, s, s]
        let pairs = t.reshape([m, blocks, 2, s, s]);
        let t1 = pairs.clone().narrow(2, 0, 1).reshape([m, blocks, s, s]);
        let t2 = pairs.narrow(2, 1, 1).reshape([m, blocks, s, s]);
        let t21 = t2.clone().matmul(a21).matmul(t1.clone()).neg();
        let top = Tensor::cat(vec![t1, Tensor::zeros([m, blocks, s, s], &device)], 3);
        let bottom = Tensor::cat(vec![t21, t2], 3);
        t = Tensor::cat(vec![top, bottom], 2); // [m, blocks, 2s, 2s]
        s *= 2;
    }
    t.reshape([m, p, p]).narrow(1, 0, c).narrow(2, 0, c)
}

/// Token-by-token recurrence (decoding; the reference of the other forms), continuing from s
/// [b, h, dk, dv]: q, k [b,h,n,dk], v [b,h,n,dv], beta, log_alpha [b,h,n] → (o [b,h,n,dv], s).
/// `delta = false` drops the correction: S_t = α_t S_{t−1} + β_t k_t v_tᵀ (Mamba-2).
pub fn recurrent(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    beta: Tensor<3>,
    log_alpha: Tensor<3>,
    mut s: Tensor<4>,
    delta: bool,
) -> (Tensor<4>, Tensor<4>) {
    let n = q.dims()[2];
    let mut outs = Vec::with_capacity(n);
    for t in 0..n {
        let q_t = q.clone().narrow(2, t, 1); // [b, h, 1, dk]
        let k_t = k.clone().narrow(2, t, 1); // [b, h, 1, dk]
        let v_t = v.clone().narrow(2, t, 1); // [b, h, 1, dv]
        let beta_t = beta.clone().narrow(2, t, 1).unsqueeze_dim::<4>(3); // [b, h, 1, 1]
        let alpha_t = log_alpha
            .clone()
            .narrow(2, t, 1)
            .exp()
            .unsqueeze_dim::<4>(3); // [b, h, 1, 1]
        s = s * alpha_t;
        let u_t = if delta {
            (v_t - k_t.clone().matmul(s.clone())) * beta_t // [b, h, 1, dv]
        } else {
            v_t * beta_t
        };
        s = s + k_t.swap_dims(2, 3).matmul(u_t); // [b, h, dk, dv]
        outs.push(q_t.matmul(s.clone())); // [b, h, 1, dv]
    }
    (Tensor::cat(outs, 2), s)
}

/// Chunked (UT-transform) form, linear in n; same contract as [`recurrent`] with `delta = true`.
pub fn chunked(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    beta: Tensor<3>,
    log_alpha: Tensor<3>,
    s0: Tensor<4>,
    chunk: usize,
) -> (Tensor<4>, Tensor<4>) {
    let [b, h, n, dk] = q.dims();
    let dv = v.dims()[3];
    let c = chunk.min(n).max(1);
    let nc = n.div_ceil(c);
    let pad = nc * c - n;
    // Padding behind the sequence: β = 0 writes nothing and ln α = 0 keeps the state.
    let split = |t: Tensor<4>, width: usize| pad_axis(t, 2, 0, pad).reshape([b, h, nc, c, width]);
    let per_token = |t: Tensor<3>| split(t.unsqueeze_dim::<4>(3), 1); // [b, h, nc, C, 1]
    let (q, k, v) = (split(q, dk), split(k, dk), split(v, dv));
    let (beta, log_alpha) = (per_token(beta), per_token(log_alpha));

    let g = log_alpha.cumsum(3); // [b, h, nc, C, 1]
    let g_last = g.clone().narrow(3, c - 1, 1); // [b, h, nc, 1, 1]
    let decays = chunk_decays(g.clone()); // [b, h, nc, C, C], zero above the diagonal
    let strictly_lower = Tensor::<2>::ones([c, c], &q.device())
        .tril(-1)
        .reshape([1, 1, 1, c, c]);
    let a = k.clone().matmul(k.clone().swap_dims(3, 4))
        * decays.clone()
        * strictly_lower
        * beta.clone(); // [b, h, nc, C, C]: A_{ti} = β_t e^{g_t−g_i} k_t·k_i
    let t = unit_lower_inverse(a.reshape([b * h * nc, c, c])).reshape([b, h, nc, c, c]);
    let w = t
        .clone()
        .matmul(k.clone() * (beta.clone() * g.clone().exp())); // [b, h, nc, C, dk]
    let u_free = t.matmul(v * beta); // [b, h, nc, C, dv]: U for S₀ = 0
    let scores = q.clone().matmul(k.clone().swap_dims(3, 4)) * decays; // [b, h, nc, C, C]
    let q_decayed = q * g.clone().exp(); // [b, h, nc, C, dk]
    let k_to_end = k * (g_last.clone() - g).exp(); // [b, h, nc, C, dk]
    let chunk_decay = g_last.exp().reshape([b, h, nc, 1, 1]);

    // The state crosses chunks one by one. Slicing chunk c straight out of [b, h, nc, ..] would
    // cost O(nc²) under autodiff (each slice's backward writes a zero tensor the size of its
    // source); slicing groups of ≈√nc chunks first keeps it at O(nc·√nc) small copies.
    let group = (nc as f64).sqrt().ceil() as usize;
    let mut s = s0;
    let mut outs = Vec::with_capacity(nc);
    for start in (0..nc).step_by(group) {
        let len = group.min(nc - start);
        let take = |t: &Tensor<5>| t.clone().narrow(2, start, len);
        let (w_g, u_g, scores_g) = (take(&w), take(&u_free), take(&scores));
        let (q_g, k_g, decay_g) = (take(&q_decayed), take(&k_to_end), take(&chunk_decay));
        for i in 0..len {
            let at = |t: &Tensor<5>| t.clone().narrow(2, i, 1).squeeze_dim::<4>(2);
            let u = at(&u_g) - at(&w_g).matmul(s.clone()); // [b, h, C, dv]
            outs.push(at(&q_g).matmul(s.clone()) + at(&scores_g).matmul(u.clone())); // [b, h, C, dv]
            s = at(&decay_g) * s + at(&k_g).swap_dims(2, 3).matmul(u); // [b, h, dk, dv]
        }
    }
    let o = Tensor::cat(outs, 2).narrow(2, 0, n); // [b, h, n, dv]
    (o, s)
}

impl DeltaNet {
    pub fn new<const GATED: bool>(
        config: &DeltaRuleConfig<GATED>,
        model: &ModelConfig,
        init: &mut Init,
    ) -> Self {
        let d = model.d_model;
        let heads = model.n_heads;
        DeltaNet {
            in_proj: init.linear(d, 4 * d, model.bias),
            conv: (config.conv_size > 0).then(|| ShortConv::new(config.conv_size, 3 * d, init)),
            beta: init.linear(d, heads, false),
            decay: GATED.then(|| DecayGate::new(d, heads, init)),
            norm_weight: init.constant([model.head_dim()], 1.0),
            out: init.linear_out(d, d, model.bias, model.n_layers),
            heads,
            chunk_size: config.chunk_size,
        }
    }

    pub fn gated(&self) -> bool {
        self.decay.is_some()
    }

    fn head_dim(&self) -> usize {
        self.norm_weight.dims()[0]
    }

    /// The projections of x [b, n, d]: P = [q, k, v, g] [b, n, 4d], the raw write strengths
    /// W_β x and ln α (zero for DeltaNet), each [b, n, heads].
    fn projections(&self, x: Tensor<3>) -> (Tensor<3>, Tensor<3>, Tensor<3>) {
        let [b, n, _] = x.dims();
        let projected = self.in_proj.forward(x.clone()); // [b, n, 4d]
        let beta = self.beta.forward(x.clone()); // [b, n, h]
        let log_alpha = match &self.decay {
            Some(decay) => decay.log_alpha(x),
            None => Tensor::zeros([b, n, self.heads], &x.device()),
        }; // [b, n, h]
        (projected, beta, log_alpha)
    }

    /// Projections, convolution (continuing from `conv`), SiLU and normalisation of x
    /// [b, n, d]; returns the recurrence inputs and the convolution's new history.
    fn inputs(&self, x: Tensor<3>, conv: Option<Tensor<3>>) -> (Inputs, Option<Tensor<3>>) {
        let d = x.dims()[2];
        let (projected, beta, log_alpha) = self.projections(x);
        let qkv = projected.clone().narrow(2, 0, 3 * d);
        let (qkv, conv) = match &self.conv {
            Some(c) => c.forward_with_state(qkv, conv),
            None => (qkv, None),
        };
        let qkv = silu(qkv); // [b, n, 3d]
        let head = |i: usize| split_heads(qkv.clone().narrow(2, i * d, d), self.heads); // [b, h, n, dh]
        let q = l2_normalize(head(0)) / (self.head_dim() as f64).sqrt();
        let k = l2_normalize(head(1));
        let v = head(2);
        let beta = sigmoid(beta).swap_dims(1, 2); // [b, h, n]
        let log_alpha = log_alpha.swap_dims(1, 2); // [b, h, n]
        let gate = silu(projected.narrow(2, 3 * d, d)); // [b, n, d]
        (
            Inputs {
                q,
                k,
                v,
                beta,
                log_alpha,
                gate,
            },
            conv,
        )
    }

    fn finish(&self, o: Tensor<4>, gate: Tensor<3>) -> Tensor<3> {
        self.out
            .forward(head_rms_norm(o, self.norm_weight.val()) * gate)
    }
}

impl TokenMixer for DeltaNet {
    fn kind(&self) -> &'static str {
        if self.gated() {
            "gated_deltanet"
        } else {
            "deltanet"
        }
    }

    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let device = x.device();
        if let (Some(conv), true) = (&self.conv, kernels::fused_on(&device)) {
            let (projected, beta, log_alpha) = self.projections(x);
            let core = kernels::delta_layer(
                projected,
                conv.weight.val(),
                conv.bias.val(),
                beta,
                log_alpha,
                self.norm_weight.val(),
            ); // [b, n, d]
            return self.out.forward(core);
        }
        let b = x.dims()[0];
        let (i, _) = self.inputs(x, None);
        let o = if kernels::fused_on(&device) {
            kernels::gated_delta(i.q, i.k, i.v, i.beta, i.log_alpha, true)
        } else {
            let dh = self.head_dim();
            let s0 = Tensor::zeros([b, self.heads, dh, dh], &device);
            chunked(i.q, i.k, i.v, i.beta, i.log_alpha, s0, self.chunk_size).0
        }; // [b, h, n, dv]
        self.finish(o, i.gate)
    }

    fn init_state(&self, batch: usize, device: &Device) -> MixerState {
        let dh = self.head_dim();
        MixerState::Delta(DeltaState {
            s: Tensor::zeros([batch, self.heads, dh, dh], device),
            conv: None,
            pos: 0,
        })
    }

    fn forward_with_state(&self, x: Tensor<3>, state: MixerState) -> (Tensor<3>, MixerState) {
        let MixerState::Delta(DeltaState { s, conv, pos }) = state else {
            panic!("{} was given a {state:?} state", self.kind())
        };
        let n = x.dims()[1];
        let (i, conv) = self.inputs(x, conv);
        let (o, s) = if n == 1 {
            recurrent(i.q, i.k, i.v, i.beta, i.log_alpha, s, true)
        } else {
            chunked(i.q, i.k, i.v, i.beta, i.log_alpha, s, self.chunk_size)
        };
        (
            self.finish(o, i.gate),
            MixerState::Delta(DeltaState {
                s,
                conv,
                pos: pos + n,
            }),
        )
    }

    fn state_size_bytes(&self, _seq_len: usize) -> usize {
        let dh = self.head_dim();
        let conv = self.conv.as_ref().map_or(0, |c| {
            let [k, channels] = c.weight.dims();
            (k - 1) * channels
        });
        4 * (self.heads * dh * dh + conv)
    }

    /// The implied weights: from a zero state the output is linear in the values,
    /// O = M V with M = (Q Kᵀ ⊙ Γ)(I + A)⁻¹ diag(β) (the chunked form with one chunk covering
    /// the input); the weights are |M| normalised per row (O(n²), diagnostics lengths only).
    fn attention_weights(&self, x: Tensor<3>) -> Option<Tensor<4>> {
        let [b, n, _] = x.dims();
        let (i, _) = self.inputs(x, None);
        let h = self.heads;
        let g = i
            .log_alpha
            .cumsum(2)
            .unsqueeze_dim::<4>(3)
            .unsqueeze_dim::<5>(2); // [b, h, 1, n, 1]
        let decays = chunk_decays(g).reshape([b, h, n, n]);
        let strictly_lower = Tensor::<2>::ones([n, n], &i.q.device())
            .tril(-1)
            .reshape([1, 1, n, n]);
        let beta = i.beta.unsqueeze_dim::<4>(3); // [b, h, n, 1]
        let a = i.k.clone().matmul(i.k.clone().swap_dims(2, 3))
            * decays.clone()
            * strictly_lower
            * beta.clone();
        let t = unit_lower_inverse(a.reshape([b * h, n, n])).reshape([b, h, n, n]);
        let scores = i.q.matmul(i.k.swap_dims(2, 3)) * decays; // [b, h, n, n]
        // o = scores · T · diag(β) · V: the operator mixing the values.
        let mixing = scores.matmul(t) * beta.swap_dims(2, 3);
        let mixing = mixing.abs();
        let den = mixing.clone().sum_dim(3).clamp_min(1e-12);
        Some(mixing / den)
    }
}
