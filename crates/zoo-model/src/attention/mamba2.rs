//! Mamba-2's SSD layer (Dao & Gu 2024, "Transformers are SSMs: Generalized Models and Efficient
//! Algorithms Through Structured State Space Duality", arXiv 2405.21060). Per head h with a
//! scalar data-dependent decay and a state H [N, P] (N = `state_size`, P = head width):
//!
//!   [z, x, B, C, Δ] = W_in u;   x, B, C ← SiLU(conv(x, B, C));   Δ_t = softplus(Δ_t + dt_bias)
//!   a_t = exp(−e^{A_log} Δ_t),   H_t = a_t H_{t−1} + Δ_t B_t x_tᵀ,   y_t = H_tᵀ C_t + D x_t
//!   out = W_out (RMSNorm(y ⊙ SiLU(z)))
//!
//! with x of width d_inner = `expand`·d_model split into the model's heads, and B, C of width N
//! shared by all heads (one group). The recurrence is the delta rule's without the delta
//! correction (`delta_rule::recurrent` with `delta = false`, B as key, C as query, Δ as the
//! write strength), so decoding is that loop. Training uses the chunked SSD form, linear in n:
//! inside a chunk the masked "attention" (C Bᵀ ⊙ e^{g_t − g_s})_{s≤t} (Δx), across chunks the
//! state H carried by H ← e^{g_C} H + (B ⊙ e^{g_C − g})ᵀ (Δx), g the running sum of ln a.
//! On flex the fused recurrence kernel (`crate::kernels::gated_delta`, `delta = false`) runs it.

use crate::dense::Linear;
use burn::module::{Module, Param};
use burn::prelude::*;
use burn::tensor::activation::silu;
use serde::{Deserialize, Serialize};

use super::delta_rule::{self, a_log_init, chunk_decays, discretised_decay, dt_bias_init};
use super::{
    Mixer, MixerSpec, MixerState, TokenMixer, check_sizes, merge_heads, pad_axis,
    recurrent_mixer_checks, require_positive, split_heads,
};
use crate::config::{ModelConfig, limits};
use crate::error::ModelError;
use crate::init::Init;
use crate::kernels;
use crate::short_conv::ShortConv;

/// ε of the gated output RMSNorm.
pub const RMS_EPS: f64 = 1e-5;

/// `kind = "mamba2"`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Mamba2Config {
    /// N: rows of each head's state (the width of B and C).
    #[serde(default = "default_state_size")]
    pub state_size: usize,
    /// d_inner = expand · d_model, split over `model.n_heads`.
    #[serde(default = "default_expand")]
    pub expand: usize,
    /// Width of the short causal convolution on x, B, C (Mamba-2 uses 4; 0 = none).
    #[serde(default = "default_conv")]
    pub conv_size: usize,
    /// Chunk length of the chunked SSD training form.
    #[serde(default = "default_chunk")]
    pub chunk_size: usize,
}

fn default_state_size() -> usize {
    64
}
fn default_expand() -> usize {
    2
}
fn default_conv() -> usize {
    4
}
fn default_chunk() -> usize {
    64
}

impl Default for Mamba2Config {
    fn default() -> Self {
        Mamba2Config {
            state_size: default_state_size(),
            expand: default_expand(),
            conv_size: default_conv(),
            chunk_size: default_chunk(),
        }
    }
}

impl Mamba2Config {
    pub fn inner(&self, model: &ModelConfig) -> usize {
        self.expand.saturating_mul(model.d_model)
    }
}

impl MixerSpec for Mamba2Config {
    fn build(&self, model: &ModelConfig, init: &mut Init) -> Mixer {
        Mixer::Mamba2(Mamba2::new(self, model, init))
    }

    /// Small chunks so tests cross them; one without the convolution.
    fn examples() -> Vec<Self> {
        vec![
            Mamba2Config {
                state_size: 8,
                expand: 2,
                conv_size: 4,
                chunk_size: 8,
            },
            Mamba2Config {
                state_size: 4,
                expand: 1,
                conv_size: 0,
                chunk_size: 5,
            },
        ]
    }

    fn check_limits(&self, path: &str) -> Result<(), ModelError> {
        check_sizes(
            path,
            &[
                ("state_size", self.state_size, limits::FEATURE_DIM),
                ("expand", self.expand, 64),
                ("conv_size", self.conv_size, limits::SHORT_CONV),
                ("chunk_size", self.chunk_size, limits::CHUNK),
            ],
        )
    }

    fn validate(&self, model: &ModelConfig, path: &str) -> Result<(), ModelError> {
        require_positive(
            path,
            &[
                ("state_size", self.state_size),
                ("expand", self.expand),
                ("chunk_size", self.chunk_size),
            ],
        )?;
        recurrent_mixer_checks(
            model,
            path,
            "mamba2",
            "Mamba-2 encodes position through its decay and convolution; use none, sinusoidal or learned",
        )
    }

    /// Learned parameters of one layer (saturating, as the other estimates).
    fn param_count(&self, model: &ModelConfig) -> u128 {
        let (d, h) = (model.d_model as u128, model.n_heads as u128);
        let di = (self.expand as u128).saturating_mul(d);
        let n = self.state_size as u128;
        let bias = |k: u128| if model.bias { k } else { 0 };
        let width = di.saturating_mul(2).saturating_add(2 * n).saturating_add(h);
        let channels = di.saturating_add(2 * n);
        let conv =
            (self.conv_size as u128 + 1).saturating_mul(channels) * u128::from(self.conv_size > 0);
        d.saturating_mul(width)
            .saturating_add(bias(width))
            .saturating_add(conv)
            .saturating_add(3 * h)
            .saturating_add(di)
            .saturating_add(di.saturating_mul(d))
            .saturating_add(bias(d))
    }

    /// Decoding state per sequence (f32 bytes): H per head and the convolution's last K−1 inputs.
    fn state_bytes(&self, model: &ModelConfig, _n: f64) -> f64 {
        let di = self.inner(model) as f64;
        let n = self.state_size as f64;
        let conv = self.conv_size.saturating_sub(1) as f64 * (di + 2.0 * n);
        4.0 * (n * di + conv)
    }

    /// f32 values one layer keeps per token for the backward pass (training) or at its widest.
    fn activation_values(&self, model: &ModelConfig, _n: f64, train: bool, fused: bool) -> f64 {
        let (d, h) = (model.d_model as f64, model.n_heads as f64);
        let di = self.inner(model) as f64;
        let n = self.state_size as f64;
        let width = 2.0 * di + 2.0 * n + h;
        let conv = (self.conv_size as f64 + 2.0) * (di + 2.0 * n);
        let projections = 2.0 * width + conv + 8.0 * di + 2.0 * h * n + d;
        if !train || fused {
            return projections + n * di / 64.0;
        }
        let c = self.chunk_size as f64;
        projections + 4.0 * h * c + 4.0 * h * n + 2.0 * n * di / c
    }

    /// Forward FLOPs per token of the recurrence (projections are counted with the parameters).
    fn flops_per_token(&self, model: &ModelConfig, _n: f64) -> f64 {
        // Rank-1 write and the read by C: two N × d_inner passes of two FLOPs.
        2.0 * 2.0 * self.state_size as f64 * self.inner(model) as f64
    }

    fn allows_grouped_kv(&self) -> bool {
        false
    }
}

/// H [batch, heads, N, P] and the last K−1 inputs of the x/B/C convolution
/// ([batch, K−1, d_inner + 2N]; None before the first token or without the convolution).
#[derive(Clone, Debug)]
pub struct SsdState {
    pub s: Tensor<4>,
    pub conv: Option<Tensor<3>>,
    pub pos: usize,
}

#[derive(Module, Debug)]
pub struct Mamba2 {
    /// u [d_model] → [z (d_inner), x (d_inner), B (N), C (N), Δ (heads)]
    pub in_proj: Linear,
    /// Over the d_inner + 2N channels of x, B, C.
    pub conv: Option<ShortConv>,
    /// ln A [heads]
    pub a_log: Param<Tensor<1>>,
    /// [heads]
    pub dt_bias: Param<Tensor<1>>,
    /// D [heads]: the skip connection y += D x.
    pub skip: Param<Tensor<1>>,
    /// RMSNorm weight [d_inner]
    pub norm_weight: Param<Tensor<1>>,
    pub out: Linear,
    #[module(skip)]
    heads: usize,
    #[module(skip)]
    state_size: usize,
    #[module(skip)]
    chunk_size: usize,
}

/// Chunked SSD, linear in n, continuing from s0 [b, h, N, P]: c, b_in [b, 1, n, N] (shared by the
/// heads), x [b, h, n, P], dt and log_a [b, h, n] → (y [b, h, n, P] without the D skip, state).
pub fn ssd_chunked(
    c_in: Tensor<4>,
    b_in: Tensor<4>,
    x: Tensor<4>,
    dt: Tensor<3>,
    log_a: Tensor<3>,
    s0: Tensor<4>,
    chunk: usize,
) -> (Tensor<4>, Tensor<4>) {
    let [batch, h, n, p] = x.dims();
    let big_n = c_in.dims()[3];
    let c = chunk.min(n).max(1);
    let nc = n.div_ceil(c);
    let pad = nc * c - n;
    // Padding behind the sequence: Δ = 0 writes nothing and ln a = 0 keeps the state.
    let split = |t: Tensor<4>, heads: usize, width: usize| {
        pad_axis(t, 2, 0, pad).reshape([batch, heads, nc, c, width])
    };
    let per_token = |t: Tensor<3>| split(t.unsqueeze_dim::<4>(3), h, 1); // [b, h, nc, C, 1]
    let (cq, bk) = (split(c_in, 1, big_n), split(b_in, 1, big_n)); // [b, 1, nc, C, N]
    let u = split(x, h, p) * per_token(dt); // [b, h, nc, C, P]: Δ x
    let g = per_token(log_a).cumsum(3); // [b, h, nc, C, 1]
    let g_last = g.clone().narrow(3, c - 1, 1); // [b, h, nc, 1, 1]

    // Inside chunks: the masked decayed scores, C Bᵀ shared by the heads.
    let scores = cq.clone().matmul(bk.clone().swap_dims(3, 4)) * chunk_decays(g.clone()); // [b, h, nc, C, C]
    let intra = scores.matmul(u.clone()); // [b, h, nc, C, P]

    // Across chunks: each chunk's write, then the states before every chunk by the scalar scan.
    let writes = (bk * (g_last.clone() - g.clone()).exp())
        .swap_dims(3, 4)
        .matmul(u); // [b, h, nc, N, P]
    let chunk_decay = g_last.exp(); // [b, h, nc, 1, 1]
    let group = (nc as f64).sqrt().ceil() as usize; // see delta_rule::chunked on √nc groups
    let mut s = s0;
    let mut before = Vec::with_capacity(nc);
    for start in (0..nc).step_by(group) {
        let len = group.min(nc - start);
        let writes_g = writes.clone().narrow(2, start, len);
        let decay_g = chunk_decay.clone().narrow(2, start, len);
        for i in 0..len {
            before.push(s.clone());
            let decay = decay_g.clone().narrow(2, i, 1).squeeze_dim::<4>(2); // [b, h, 1, 1]
            s = decay * s + writes_g.clone().narrow(2, i, 1).squeeze_dim::<4>(2); // [b, h, N, P]
        }
    }
    let before: Tensor<5> = Tensor::stack(before, 2); // [b, h, nc, N, P]
    let inter = (cq * g.exp()).matmul(before); // [b, h, nc, C, P]
    let y = (intra + inter)
        .reshape([batch, h, nc * c, p])
        .narrow(2, 0, n);
    (y, s)
}

impl Mamba2 {
    pub fn new(config: &Mamba2Config, model: &ModelConfig, init: &mut Init) -> Self {
        let d = model.d_model;
        let heads = model.n_heads;
        let di = config.inner(model);
        let n = config.state_size;
        Mamba2 {
            in_proj: init.linear(d, 2 * di + 2 * n + heads, model.bias),
            conv: (config.conv_size > 0)
                .then(|| ShortConv::new(config.conv_size, di + 2 * n, init)),
            a_log: a_log_init(heads, init),
            dt_bias: dt_bias_init(heads, init),
            skip: init.constant([heads], 1.0),
            norm_weight: init.constant([di], 1.0),
            out: init.linear_out(di, d, model.bias, model.n_layers),
            heads,
            state_size: n,
            chunk_size: config.chunk_size,
        }
    }

    fn inner(&self) -> usize {
        self.norm_weight.dims()[0]
    }

    /// The SSM inputs of u [b, n, d] (continuing the convolution from `conv`):
    /// (C, B [b, 1, n, N], x [b, h, n, P], Δ, ln a [b, h, n], z [b, n, d_inner], conv history).
    #[allow(clippy::type_complexity)]
    fn inputs(
        &self,
        u: Tensor<3>,
        conv: Option<Tensor<3>>,
    ) -> ([Tensor<4>; 3], [Tensor<3>; 2], Tensor<3>, Option<Tensor<3>>) {
        let [b, n, _] = u.dims();
        let (di, big_n, h) = (self.inner(), self.state_size, self.heads);
        let projected = self.in_proj.forward(u); // [b, n, 2di + 2N + h]
        let z = projected.clone().narrow(2, 0, di);
        let xbc = projected.clone().narrow(2, di, di + 2 * big_n);
        let dt_raw = projected.narrow(2, 2 * di + 2 * big_n, h); // [b, n, h]
        let (xbc, conv) = match &self.conv {
            Some(c) => c.forward_with_state(xbc, conv),
            None => (xbc, None),
        };
        let xbc = silu(xbc);
        let x = split_heads(xbc.clone().narrow(2, 0, di), h); // [b, h, n, P]
        let b_in = xbc.clone().narrow(2, di, big_n).reshape([b, 1, n, big_n]);
        let c_in = xbc.narrow(2, di + big_n, big_n).reshape([b, 1, n, big_n]);
        let (dt, log_a) = discretised_decay(dt_raw, &self.a_log, &self.dt_bias); // [b, h, n]
        ([c_in, b_in, x], [dt, log_a], z, conv)
    }

    /// y + D x, the gated RMSNorm and the output projection.
    fn finish(&self, y: Tensor<4>, x: Tensor<4>, z: Tensor<3>) -> Tensor<3> {
        let h = self.heads;
        let y = merge_heads(y + x * self.skip.val().reshape([1, h, 1, 1])); // [b, n, d_inner]
        let gated = y * silu(z);
        let rms = (gated.clone().square().mean_dim(2) + RMS_EPS).sqrt();
        let di = self.inner();
        self.out
            .forward(gated / rms * self.norm_weight.val().reshape([1, 1, di]))
    }

    /// C and B shared by the heads [b, 1, n, N] as per-head inputs [b, h, n, N] (a broadcast,
    /// for the recurrence forms: 2·N per head and token against their N·P state arithmetic).
    fn per_head(&self, c_in: Tensor<4>, b_in: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let [b, _, n, big_n] = c_in.dims();
        let shape = [b, self.heads, n, big_n];
        (c_in.expand(shape), b_in.expand(shape))
    }

    fn zero_state(&self, batch: usize, device: &Device) -> Tensor<4> {
        Tensor::zeros(
            [
                batch,
                self.heads,
                self.state_size,
                self.inner() / self.heads,
            ],
            device,
        )
    }
}

impl TokenMixer for Mamba2 {
    fn kind(&self) -> &'static str {
        "mamba2"
    }

    fn forward(&self, u: Tensor<3>) -> Tensor<3> {
        let device = u.device();
        let b = u.dims()[0];
        let ([c_in, b_in, x], [dt, log_a], z, _) = self.inputs(u, None);
        let y = if kernels::fused_on(&device) {
            let (c_heads, b_heads) = self.per_head(c_in, b_in);
            kernels::gated_delta(c_heads, b_heads, x.clone(), dt, log_a, false)
        } else {
            let s0 = self.zero_state(b, &device);
            ssd_chunked(c_in, b_in, x.clone(), dt, log_a, s0, self.chunk_size).0
        }; // [b, h, n, P]
        self.finish(y, x, z)
    }

    fn init_state(&self, batch: usize, device: &Device) -> MixerState {
        MixerState::Ssd(SsdState {
            s: self.zero_state(batch, device),
            conv: None,
            pos: 0,
        })
    }

    fn forward_with_state(&self, u: Tensor<3>, state: MixerState) -> (Tensor<3>, MixerState) {
        let MixerState::Ssd(SsdState { s, conv, pos }) = state else {
            panic!("mamba2 was given a {state:?} state")
        };
        let n = u.dims()[1];
        let ([c_in, b_in, x], [dt, log_a], z, conv) = self.inputs(u, conv);
        let (y, s) = if n == 1 {
            let (c_heads, b_heads) = self.per_head(c_in, b_in);
            delta_rule::recurrent(c_heads, b_heads, x.clone(), dt, log_a, s, false)
        } else {
            ssd_chunked(c_in, b_in, x.clone(), dt, log_a, s, self.chunk_size)
        };
        (
            self.finish(y, x, z),
            MixerState::Ssd(SsdState {
                s,
                conv,
                pos: pos + n,
            }),
        )
    }

    fn state_size_bytes(&self, _seq_len: usize) -> usize {
        let conv = self.conv.as_ref().map_or(0, |c| {
            let [k, channels] = c.weight.dims();
            (k - 1) * channels
        });
        4 * (self.state_size * self.inner() + conv)
    }

    /// The implied weights |Δ_s (C_t·B_s) e^{g_t − g_s}| (s ≤ t), normalised per row.
    fn attention_weights(&self, u: Tensor<3>) -> Option<Tensor<4>> {
        let [b, n, _] = u.dims();
        let h = self.heads;
        let ([c_in, b_in, _], [dt, log_a], _, _) = self.inputs(u, None);
        let g = log_a.cumsum(2).unsqueeze_dim::<4>(3).unsqueeze_dim::<5>(2); // [b, h, 1, n, 1]
        let decays = chunk_decays(g).reshape([b, h, n, n]);
        let scores = c_in.matmul(b_in.swap_dims(2, 3)) * decays * dt.unsqueeze_dim::<4>(2); // [b, h, n, n]
        let scores = scores.abs();
        let den = scores.clone().sum_dim(3).clamp_min(1e-12);
        Some(scores / den)
    }
}
