//! RWKV-6 time mixing (Peng et al. 2024, "Eagle and Finch: RWKV with Matrix-Valued States and
//! Dynamic Recurrence"), per head with a d_head × d_head state:
//!
//!   x̃_□ = x_t + μ_□ ⊙ (x_{t−1} − x_t)                          (token shift, □ ∈ r,k,v,g,w)
//!   r, k, v = W_r x̃_r, W_k x̃_k, W_v x̃_v;   g = SiLU(W_g x̃_g)
//!   w_t = exp(−exp(w₀ + tanh(x̃_w A) B))                        (data-dependent decay, per channel)
//!   o_t = r_t (S_{t−1} + diag(u) k_tᵀ v_t),   S_t = diag(w_t) S_{t−1} + k_tᵀ v_t
//!   y_t = W_o (GroupNorm_heads(o_t) ⊙ g)
//!
//! With `data_dependent_decay = false` the decay is the learned constant exp(−exp(w₀)) (RWKV-5 /
//! RetNet style). The WKV recurrence has a chunked training form: inside a chunk the pairwise
//! decays exp(b_{t−1} − b_s) (b = running sum of log w, exponent ≤ 0, so stable for any decay)
//! weight r_t·k_s; across chunks the state is carried by S ← diag(e^{B_c}) S + Σ_s (k_s e^{B_c−b_s})ᵀ v_s.
//! On flex, training runs the exact recurrence as a fused kernel instead
//! (`crate::kernels::wkv`: O(n) time and memory, hand-written backward).

use crate::dense::Linear;
use burn::module::{Module, Param};
use burn::prelude::*;
use burn::tensor::activation::silu;

use super::{
    Mixer, MixerSpec, MixerState, TokenMixer, check_sizes, pad_axis, recurrent_mixer_checks,
    require_positive, split_heads,
};
use serde::{Deserialize, Serialize};

use crate::config::{ModelConfig, limits};
use crate::error::ModelError;
use crate::init::Init;

const GROUP_NORM_EPS: f64 = 64e-5;

/// Floor of log w. A decay of e^−20 ≈ 2e−9 already erases the state to f32 resolution, and the
/// floor keeps the within-chunk prefix sums b_t small enough that differences b_{t−1} − b_s
/// do not cancel catastrophically in f32 (a raw log w of −e^15 would).
pub const LOG_W_MIN: f64 = -20.0;

/// Tokens between the states the fused kernel keeps for its backward pass (kernels/wkv.rs).
const KERNEL_CHECKPOINT_EVERY: f64 = 64.0;

/// `kind = "rwkv"`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RwkvConfig {
    #[serde(default = "default_chunk")]
    pub chunk_size: usize,
    /// RWKV-6 data-dependent decay w_t; false gives a learned constant decay (RetNet / RWKV-5).
    #[serde(default = "yes")]
    pub data_dependent_decay: bool,
    /// Rank of the low-rank decay projection (RWKV-6 "LoRA").
    #[serde(default = "default_decay_rank")]
    pub decay_rank: usize,
}

fn default_chunk() -> usize {
    32
}
fn yes() -> bool {
    true
}
fn default_decay_rank() -> usize {
    32
}

impl Default for RwkvConfig {
    fn default() -> Self {
        RwkvConfig {
            chunk_size: default_chunk(),
            data_dependent_decay: true,
            decay_rank: default_decay_rank(),
        }
    }
}

impl MixerSpec for RwkvConfig {
    fn build(&self, model: &ModelConfig, init: &mut Init) -> Mixer {
        Mixer::Rwkv(RwkvTimeMix::new(self, model, init))
    }

    fn check_limits(&self, path: &str) -> Result<(), ModelError> {
        check_sizes(
            path,
            &[
                ("chunk_size", self.chunk_size, limits::CHUNK),
                ("decay_rank", self.decay_rank, limits::DECAY_RANK),
            ],
        )
    }
    fn validate(&self, model: &ModelConfig, path: &str) -> Result<(), ModelError> {
        recurrent_mixer_checks(
            model,
            path,
            "rwkv",
            "RWKV encodes position through its decay; use none, sinusoidal or learned",
        )?;
        require_positive(
            path,
            &[
                ("chunk_size", self.chunk_size),
                ("decay_rank", self.decay_rank),
            ],
        )
    }
    fn param_count(&self, model: &ModelConfig) -> u128 {
        let d = model.d_model as u128;
        let r = self.decay_rank as u128;
        let linear = d
            .saturating_mul(d)
            .saturating_add(if model.bias { d } else { 0 });
        let lora = if self.data_dependent_decay {
            d.saturating_mul(2).saturating_mul(r)
        } else {
            0
        };
        // mix_r, mix_k, mix_v, mix_g, mix_w, decay_base, norm weight and bias: 8 vectors of d;
        // the bonus u, one per head channel: d.
        linear
            .saturating_mul(5)
            .saturating_add(d.saturating_mul(9))
            .saturating_add(lora)
    }
    fn state_bytes(&self, model: &ModelConfig, _n: f64) -> f64 {
        let (h, dh) = (model.n_heads as f64, model.head_dim() as f64);
        4.0 * (h * dh * dh + h * dh)
    }
    fn activation_values(&self, model: &ModelConfig, _n: f64, _train: bool, fused: bool) -> f64 {
        let (d, h, dh) = (
            model.d_model as f64,
            model.n_heads as f64,
            model.head_dim() as f64,
        );
        let c = (self.chunk_size as f64).max(1.0);
        let states = h * dh * dh / KERNEL_CHECKPOINT_EVERY;
        let chunks = if fused {
            0.0
        } else {
            3.0 * h * c + 2.0 * h * dh * dh / c
        };
        20.0 * d + 2.0 * self.decay_rank as f64 + states + chunks
    }
    fn flops_per_token(&self, model: &ModelConfig, _n: f64) -> f64 {
        let (h, dh) = (model.n_heads as f64, model.head_dim() as f64);
        2.0 * 3.0 * h * dh * dh
    }
    fn allows_grouped_kv(&self) -> bool {
        false
    }
    fn examples() -> Vec<Self> {
        vec![
            RwkvConfig {
                chunk_size: 8,
                data_dependent_decay: true,
                decay_rank: 4,
            },
            RwkvConfig {
                chunk_size: 8,
                data_dependent_decay: false,
                decay_rank: 4,
            },
        ]
    }
}

/// The WKV matrix state [batch, heads, head_dim, head_dim] and the last input [batch, d_model]
/// (the token shift's x_{t−1}).
#[derive(Clone, Debug)]
pub struct RwkvState {
    pub s: Tensor<4>,
    pub last_x: Tensor<2>,
    pub pos: usize,
}

#[derive(Module, Debug)]
pub struct RwkvTimeMix {
    pub mix_r: Param<Tensor<1>>,
    pub mix_k: Param<Tensor<1>>,
    pub mix_v: Param<Tensor<1>>,
    pub mix_g: Param<Tensor<1>>,
    pub mix_w: Param<Tensor<1>>,
    pub receptance: Linear,
    pub key: Linear,
    pub value: Linear,
    pub gate: Linear,
    pub out: Linear,
    /// w₀ [d_model]
    pub decay_base: Param<Tensor<1>>,
    /// A [d_model, rank] and B [rank, d_model] of the data-dependent decay.
    pub decay_down: Option<Linear>,
    pub decay_up: Option<Linear>,
    /// u [heads, head_dim]
    pub bonus: Param<Tensor<2>>,
    pub norm_weight: Param<Tensor<1>>,
    pub norm_bias: Param<Tensor<1>>,
    #[module(skip)]
    heads: usize,
    #[module(skip)]
    chunk_size: usize,
}

/// Exactly the recurrence, token by token: r, k, lw [b,h,n,dk], v [b,h,n,dv], u [h,dk],
/// s [b,h,dk,dv] → (o [b,h,n,dv], s).
pub fn wkv_recurrent(
    r: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    log_w: Tensor<4>,
    u: Tensor<2>,
    mut s: Tensor<4>,
) -> (Tensor<4>, Tensor<4>) {
    let [_, h, n, dk] = r.dims();
    let log_w = log_w.clamp_min(LOG_W_MIN);
    let u = u.reshape([1, h, dk, 1]);
    let mut outs = Vec::with_capacity(n);
    for t in 0..n {
        let r_t = r.clone().narrow(2, t, 1); // [b, h, 1, dk]
        let kv = k
            .clone()
            .narrow(2, t, 1)
            .swap_dims(2, 3)
            .matmul(v.clone().narrow(2, t, 1)); // [b, h, dk, dv]
        outs.push(r_t.matmul(s.clone() + u.clone() * kv.clone())); // [b, h, 1, dv]
        let w_t = log_w.clone().narrow(2, t, 1).exp().swap_dims(2, 3); // [b, h, dk, 1]
        s = w_t * s + kv;
    }
    (Tensor::cat(outs, 2), s)
}

/// Chunked form (linear in n); same contract as [`wkv_recurrent`].
pub fn wkv_chunked(
    r: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    log_w: Tensor<4>,
    u: Tensor<2>,
    s0: Tensor<4>,
    chunk: usize,
) -> (Tensor<4>, Tensor<4>) {
    let [b, h, n, dk] = r.dims();
    let dv = v.dims()[3];
    let nc = n.div_ceil(chunk);
    let pad = nc * chunk - n;
    // Padding behind the sequence: k = 0 adds nothing and log w = 0 keeps the state as it is.
    let split = |t: Tensor<4>, d: usize| pad_axis(t, 2, 0, pad).reshape([b, h, nc, chunk, d]);
    let log_w = log_w.clamp_min(LOG_W_MIN);
    let (r, k, v, log_w) = (split(r, dk), split(k, dk), split(v, dv), split(log_w, dk));

    let cum = log_w.clone().cumsum(3); // [b, h, nc, C, dk]  b_t (inclusive)
    let excl = cum.clone() - log_w; //                      b_{t−1}
    let total = cum.clone().narrow(3, chunk - 1, 1); //     [b, h, nc, 1, dk]  B_c

    // Intra-chunk: A[t, s] = Σ_c r_t,c · exp(b_{t−1,c} − b_{s,c}) · k_s,c for s < t.
    let diff = excl.clone().unsqueeze_dim::<6>(4) - cum.clone().unsqueeze_dim::<6>(3); // [b, h, nc, C(t), C(s), dk]
    let future = Tensor::<2>::ones([chunk, chunk], &r.device())
        .triu(0)
        .bool()
        .reshape([1, 1, 1, chunk, chunk, 1])
        .expand([b, h, nc, chunk, chunk, dk]);
    let decay = diff.mask_fill(future, f32::NEG_INFINITY).exp();
    let a = (r.clone().unsqueeze_dim::<6>(4) * decay * k.clone().unsqueeze_dim::<6>(3))
        .sum_dim(5)
        .reshape([b, h, nc, chunk, chunk]);
    let intra = a.matmul(v.clone()); // [b, h, nc, C, dv]
    let bonus = (r.clone() * u.reshape([1, h, 1, 1, dk]) * k.clone()).sum_dim(4) * v.clone(); // [b, h, nc, C, dv]

    // Inter-chunk: carry the state across chunk boundaries.
    let contribution = (k * (total.clone() - cum).exp()).swap_dims(3, 4).matmul(v); // [b, h, nc, dk, dv]
    let chunk_decay = total.exp().swap_dims(3, 4); // [b, h, nc, dk, 1]
    // Under autodiff every slice's backward writes a zero tensor the size of its source, so
    // slicing nc chunks straight out of [b, h, nc, ..] would cost O(nc²). Slicing groups of
    // ≈√nc chunks first, then chunks out of the group, keeps it at O(nc·√nc) small copies.
    let group = (nc as f64).sqrt().ceil() as usize;
    let mut s = s0;
    let mut before = Vec::with_capacity(nc);
    for g in (0..nc).step_by(group) {
        let len = group.min(nc - g);
        let decays = chunk_decay.clone().narrow(2, g, len); // [b, h, len, dk, 1]
        let adds = contribution.clone().narrow(2, g, len); // [b, h, len, dk, dv]
        for c in 0..len {
            before.push(s.clone());
            let decay_c = decays.clone().narrow(2, c, 1).squeeze_dim::<4>(2); // [b, h, dk, 1]
            let add_c = adds.clone().narrow(2, c, 1).squeeze_dim::<4>(2); // [b, h, dk, dv]
            s = decay_c * s + add_c;
        }
    }
    let before: Tensor<5> = Tensor::stack(before, 2); // [b, h, nc, dk, dv]
    let inter = (r * excl.exp()).matmul(before); // [b, h, nc, C, dv]

    let o = (inter + intra + bonus)
        .reshape([b, h, nc * chunk, dv])
        .narrow(2, 0, n);
    (o, s)
}

/// The masked parallel form: one chunk covering the whole input.
pub fn wkv_parallel(
    r: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    log_w: Tensor<4>,
    u: Tensor<2>,
    s0: Tensor<4>,
) -> (Tensor<4>, Tensor<4>) {
    let n = r.dims()[2];
    wkv_chunked(r, k, v, log_w, u, s0, n)
}

fn lerp(x: &Tensor<3>, prev: &Tensor<3>, mix: &Param<Tensor<1>>) -> Tensor<3> {
    let d = mix.dims()[0];
    x.clone() + (prev.clone() - x.clone()) * mix.val().reshape([1, 1, d])
}

impl RwkvTimeMix {
    pub fn new(config: &RwkvConfig, model: &ModelConfig, init: &mut Init) -> Self {
        let d = model.d_model;
        let heads = model.n_heads;
        let head_dim = model.head_dim();
        // Token-shift mixes and decays spread over channels as in RWKV's initialisation, so that
        // some channels remember for a long time and others forget fast.
        let ramp = |f: &dyn Fn(f64) -> f64| -> Param<Tensor<1>> {
            let v: Vec<f32> = (0..d)
                .map(|c| f(c as f64 / (d.max(2) - 1) as f64) as f32)
                .collect();
            Param::from_tensor(init.tensor(v, [d]))
        };
        let mix_r = ramp(&|x| 1.0 - x.powf(0.5));
        let mix_k = ramp(&|x| 1.0 - x.powf(0.7));
        let mix_v = ramp(&|x| 1.0 - x.powf(0.3));
        let mix_g = ramp(&|x| 1.0 - x.powf(0.5));
        let mix_w = ramp(&|x| 1.0 - x.powf(0.6));
        let decay_base = ramp(&|x| -6.0 + 5.0 * x.powf(0.85));
        let (decay_down, decay_up) = if config.data_dependent_decay {
            let down = init.linear(d, config.decay_rank, false);
            let up = Linear {
                weight: init.constant([config.decay_rank, d], 0.0),
                bias: None,
            };
            (Some(down), Some(up))
        } else {
            (None, None)
        };
        RwkvTimeMix {
            mix_r,
            mix_k,
            mix_v,
            mix_g,
            mix_w,
            receptance: init.linear(d, d, model.bias),
            key: init.linear(d, d, model.bias),
            value: init.linear(d, d, model.bias),
            gate: init.linear(d, d, model.bias),
            out: init.linear_out(d, d, model.bias, model.n_layers),
            decay_base,
            decay_down,
            decay_up,
            bonus: init.constant([heads, head_dim], 0.5),
            norm_weight: init.constant([d], 1.0),
            norm_bias: init.constant([d], 0.0),
            heads,
            chunk_size: config.chunk_size,
        }
    }

    /// r, k, v, log w as heads [b,h,n,dh] and the gate [b,n,d], given the previous token's input.
    fn projections(&self, x: Tensor<3>, last_x: Tensor<2>) -> ([Tensor<4>; 4], Tensor<3>) {
        let [b, n, d] = x.dims();
        let prev = if n == 1 {
            last_x.unsqueeze_dim::<3>(1)
        } else {
            Tensor::cat(
                vec![last_x.unsqueeze_dim::<3>(1), x.clone().narrow(1, 0, n - 1)],
                1,
            )
        }; // [b, n, d]
        let r = self.receptance.forward(lerp(&x, &prev, &self.mix_r));
        let k = self.key.forward(lerp(&x, &prev, &self.mix_k));
        let v = self.value.forward(lerp(&x, &prev, &self.mix_v));
        let g = silu(self.gate.forward(lerp(&x, &prev, &self.mix_g)));
        let base = self.decay_base.val().reshape([1, 1, d]);
        let exponent = match (&self.decay_down, &self.decay_up) {
            (Some(down), Some(up)) => {
                base + up.forward(down.forward(lerp(&x, &prev, &self.mix_w)).tanh())
            }
            _ => base.expand([b, n, d]),
        };
        let log_w = exponent.exp().neg(); // [b, n, d], log w_t ≤ 0
        let h = self.heads;
        (
            [
                split_heads(r, h),
                split_heads(k, h),
                split_heads(v, h),
                split_heads(log_w, h),
            ],
            g,
        )
    }

    /// GroupNorm over each head's channels, the gate, and the output projection.
    fn finish(&self, o: Tensor<4>, g: Tensor<3>) -> Tensor<3> {
        let [b, h, n, dh] = o.dims();
        let o = o.swap_dims(1, 2); // [b, n, h, dh]
        let mean = o.clone().mean_dim(3);
        let centred = o - mean;
        let var = centred.clone().square().mean_dim(3);
        let normed = (centred / (var + GROUP_NORM_EPS).sqrt()).reshape([b, n, h * dh]);
        let d = h * dh;
        let normed = normed * self.norm_weight.val().reshape([1, 1, d])
            + self.norm_bias.val().reshape([1, 1, d]);
        self.out.forward(normed * g)
    }

    fn wkv(&self, [r, k, v, log_w]: [Tensor<4>; 4], s: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let n = r.dims()[2];
        if n == 1 {
            wkv_recurrent(r, k, v, log_w, self.bonus.val(), s)
        } else {
            wkv_chunked(r, k, v, log_w, self.bonus.val(), s, self.chunk_size.min(n))
        }
    }

    fn head_dim(&self) -> usize {
        self.bonus.dims()[1]
    }
}

impl TokenMixer for RwkvTimeMix {
    fn kind(&self) -> &'static str {
        "rwkv"
    }

    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let b = x.dims()[0];
        let MixerState::Rwkv(RwkvState { s, last_x, .. }) = self.init_state(b, &x.device()) else {
            unreachable!()
        };
        let device = x.device();
        let (heads, g) = self.projections(x, last_x);
        let o = if crate::kernels::fused_on(&device) {
            let [r, k, v, log_w] = heads;
            let log_w = log_w.clamp_min(LOG_W_MIN); // as in the tensor forms
            crate::kernels::wkv(r, k, v, log_w, self.bonus.val())
        } else {
            self.wkv(heads, s).0
        }; // [b, h, n, dh]
        self.finish(o, g)
    }

    fn init_state(&self, batch: usize, device: &Device) -> MixerState {
        let dh = self.head_dim();
        MixerState::Rwkv(RwkvState {
            s: Tensor::zeros([batch, self.heads, dh, dh], device),
            last_x: Tensor::zeros([batch, self.heads * dh], device),
            pos: 0,
        })
    }

    fn forward_with_state(&self, x: Tensor<3>, state: MixerState) -> (Tensor<3>, MixerState) {
        let MixerState::Rwkv(RwkvState { s, last_x, pos }) = state else {
            panic!("rwkv was given a {state:?} state")
        };
        let [b, n, d] = x.dims();
        let new_last = x.clone().narrow(1, n - 1, 1).reshape([b, d]);
        let (heads, g) = self.projections(x, last_x);
        let (o, s) = self.wkv(heads, s);
        (
            self.finish(o, g),
            MixerState::Rwkv(RwkvState {
                s,
                last_x: new_last,
                pos: pos + n,
            }),
        )
    }

    fn state_size_bytes(&self, _seq_len: usize) -> usize {
        let dh = self.head_dim();
        4 * (self.heads * dh * dh + self.heads * dh)
    }

    /// Implied weights |r_i · diag(Π_{j<t≤i} w_t) k_j| (and |r_i·diag(u)·k_i| on the diagonal),
    /// normalised per row; computed in row blocks so memory stays O(block·n·d_head).
    fn attention_weights(&self, x: Tensor<3>) -> Option<Tensor<4>> {
        let [b, n, d] = x.dims();
        let device = x.device();
        let ([r, k, _, log_w], _) = self.projections(x, Tensor::zeros([b, d], &device));
        let h = self.heads;
        let dk = self.head_dim();
        let log_w = log_w.clamp_min(LOG_W_MIN);
        let cum = log_w.clone().cumsum(2); // [b, h, n, dk]
        let excl = cum.clone() - log_w;
        let u = self.bonus.val().reshape([1, h, 1, dk]);
        let diag = (r.clone() * u * k.clone()).sum_dim(3).abs(); // [b, h, n, 1]
        let block = 32;
        let mut rows = Vec::new();
        for start in (0..n).step_by(block) {
            let len = block.min(n - start);
            let diff = excl.clone().narrow(2, start, len).unsqueeze_dim::<5>(3)
                - cum.clone().unsqueeze_dim::<5>(2); // [b, h, len, n, dk]
            let future = super::host_mask([1, 1, len, n, 1], |ix| ix[3] >= start + ix[2], &device)
                .expand([b, h, len, n, dk]);
            let decay = diff.mask_fill(future, f32::NEG_INFINITY).exp();
            let a = (r.clone().narrow(2, start, len).unsqueeze_dim::<5>(3)
                * decay
                * k.clone().unsqueeze_dim::<5>(2))
            .sum_dim(4)
            .reshape([b, h, len, n])
            .abs();
            let on_diag =
                super::host_mask([1, 1, len, n], |ix| ix[3] != start + ix[2], &device).bool_not();
            let a = a.mask_where(
                on_diag.expand([b, h, len, n]),
                diag.clone().narrow(2, start, len).expand([b, h, len, n]),
            );
            rows.push(a);
        }
        let a = Tensor::cat(rows, 2);
        let den = a.clone().sum_dim(3).clamp_min(1e-12);
        Some(a / den)
    }
}
