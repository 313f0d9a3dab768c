//! Causal sliding-window attention with dilation and global tokens (Beltagy et al. 2020,
//! "Longformer"):
//!
//!   o_i = Σ_{j ∈ N(i)} softmax_j(s·q_i·k_j + b(i, j)) v_j,
//!   N(i) = {j ≤ i : j < g} ∪ {i − m·δ : 0 ≤ m < w}            (pattern.rs, `WindowPattern`)
//!
//! Computed banded: queries in blocks of B ≥ span = (w−1)δ+1; block q's window keys all lie in key
//! blocks q−1 and q, so scores are [n/B, B, 2B] plus [n, g] for the globals — cost and memory
//! O(n·(B + g)) = O(n·w) for fixed dilation (on flex, the fused tiled kernel of
//! `crate::kernels::causal_attention` reads the same globals + band, with hand-written backward).
//! Decoding keeps only the globals and a rolling cache of the last span−1 positions, so the state
//! stays bounded however long the context; a prompt from an empty state runs the banded / fused
//! forward once and cuts that state from its keys/values.

use crate::dense::Linear;
use burn::module::Module;
use burn::prelude::*;
use burn::tensor::activation::softmax;

use super::pattern::WindowPattern;
use super::softmax::{
    AttentionHeads, append, attention_activation_values, attention_params, init_qkvo,
    kv_bytes_per_token,
};
use super::{
    Mixer, MixerSpec, MixerState, TokenMixer, attend_listed, check_sizes, dense_weights, host_mask,
    host_table, merge_heads, pad_axis, repeat_kv, require_positive,
};
use serde::{Deserialize, Serialize};

use crate::config::{ModelConfig, limits};
use crate::error::ModelError;
use crate::init::Init;

#[derive(Module, Debug)]
pub struct SlidingWindowAttention {
    pub query: Linear,
    pub key: Linear,
    pub value: Linear,
    pub out: Linear,
    #[module(skip)]
    attn: AttentionHeads,
    #[module(skip)]
    pattern: WindowPattern,
}

/// `kind = "sliding_window"`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SlidingWindowConfig {
    /// Number of window keys each query sees (itself included).
    pub window: usize,
    /// Distance between window keys (Longformer's dilation); 1 = contiguous.
    #[serde(default = "one")]
    pub dilation: usize,
    /// The first `global_tokens` positions are global: all tokens see them.
    #[serde(default)]
    pub global_tokens: usize,
}

fn one() -> usize {
    1
}

impl SlidingWindowConfig {
    /// Positions from the oldest window key to the query: (w − 1)·δ + 1.
    fn span(&self) -> f64 {
        (self.window as f64 - 1.0).max(0.0) * self.dilation as f64 + 1.0
    }
}

impl MixerSpec for SlidingWindowConfig {
    fn build(&self, model: &ModelConfig, init: &mut Init) -> Mixer {
        Mixer::SlidingWindow(SlidingWindowAttention::new(self, model, init))
    }

    fn check_limits(&self, path: &str) -> Result<(), ModelError> {
        check_sizes(
            path,
            &[
                ("window", self.window, limits::SEQ_LEN),
                ("dilation", self.dilation, limits::SEQ_LEN),
                ("global_tokens", self.global_tokens, limits::SEQ_LEN),
            ],
        )
    }
    fn validate(&self, _model: &ModelConfig, path: &str) -> Result<(), ModelError> {
        require_positive(
            path,
            &[("window", self.window), ("dilation", self.dilation)],
        )
    }
    fn param_count(&self, model: &ModelConfig) -> u128 {
        attention_params(model)
    }
    /// The globals and the last span − 1 positions after them.
    fn state_bytes(&self, model: &ModelConfig, n: f64) -> f64 {
        let g = self.global_tokens as f64;
        (n.min(g) + (self.span() - 1.0).min((n - g).max(0.0))) * kv_bytes_per_token(model)
    }
    fn activation_values(&self, model: &ModelConfig, n: f64, _train: bool, fused: bool) -> f64 {
        attention_activation_values(model, self.keys_per_query(n), fused)
    }
    fn flops_per_token(&self, model: &ModelConfig, n: f64) -> f64 {
        2.0 * 2.0 * model.d_model as f64 * ((self.window + self.global_tokens) as f64).min(n)
    }
    fn keys_per_query(&self, n: f64) -> Option<f64> {
        Some((self.span() + self.global_tokens as f64).min(n))
    }
    fn examples() -> Vec<Self> {
        vec![SlidingWindowConfig {
            window: 4,
            dilation: 2,
            global_tokens: 2,
        }]
    }
}

/// The bounded decoding state: the first `global_tokens` keys/values and a rolling cache of the
/// last (span − 1) positions, so the state stays O(w + g) however long the context.
/// [batch, kv_heads, t, head_dim] each; None while empty.
#[derive(Clone, Debug)]
pub struct WindowState {
    pub global_k: Option<Tensor<4>>,
    pub global_v: Option<Tensor<4>>,
    pub recent_k: Option<Tensor<4>>,
    pub recent_v: Option<Tensor<4>>,
    pub pos: usize,
}

impl SlidingWindowAttention {
    pub fn new(config: &SlidingWindowConfig, model: &ModelConfig, init: &mut Init) -> Self {
        let (query, key, value, out) = init_qkvo(model, init);
        SlidingWindowAttention {
            query,
            key,
            value,
            out,
            attn: AttentionHeads::new(model, None),
            pattern: WindowPattern {
                window: config.window,
                dilation: config.dilation,
                global_tokens: config.global_tokens,
            },
        }
    }

    pub fn pattern(&self) -> &WindowPattern {
        &self.pattern
    }

    fn qkv(&self, x: Tensor<3>, start: usize) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
        self.attn
            .project((&self.query, &self.key, &self.value), x, start)
    }

    /// Block length of the banded form.
    fn block(&self) -> usize {
        self.pattern.span().max(16)
    }

    /// Banded attention over positions 0..n: q, k, v [b, h, n, dh] → [b, h, n, dh].
    pub fn banded(&self, q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Tensor<4> {
        let [b, h, n, dh] = q.dims();
        let device = q.device();
        let blk = self.block();
        let nb = n.div_ceil(blk);
        let tail = nb * blk - n;
        let g = self.pattern.global_tokens.min(n);

        // Key block q−1 and q side by side: padded index p ↔ position p − blk.
        let pair = |t: Tensor<4>| {
            let blocks = pad_axis(t, 2, blk, tail).reshape([b, h, nb + 1, blk, dh]);
            Tensor::cat(
                vec![blocks.clone().narrow(2, 0, nb), blocks.narrow(2, 1, nb)],
                3,
            ) // [b, h, nb, 2B, dh]
        };
        let (k_band, v_band) = (pair(k.clone()), pair(v.clone()));
        let q_blocks = pad_axis(q, 2, 0, tail).reshape([b, h, nb, blk, dh]);

        let pattern = &self.pattern;
        let band_blocked = host_mask(
            [1, 1, nb, blk, 2 * blk],
            |ix| {
                let i = ix[2] * blk + ix[3];
                let j = (ix[2] * blk + ix[4]) as isize - blk as isize;
                // Globals are scored once, in the global part below.
                j < g as isize || !pattern.in_window(i, j as usize)
            },
            &device,
        );
        let mut band = q_blocks
            .clone()
            .matmul(k_band.swap_dims(3, 4))
            .mul_scalar(self.attn.scale); // [b, h, nb, B, 2B]
        if let Some(alibi) = &self.attn.alibi {
            // i − j = a − c + B for query a and key slot c of any block.
            let dist = host_table(
                [1, 1, 1, blk, 2 * blk],
                |ix| ix[3] as f32 - ix[4] as f32 + blk as f32,
                &device,
            );
            band = band + alibi.bias_from_distances(dist);
        }
        let band = band.mask_fill(
            band_blocked.expand([b, h, nb, blk, 2 * blk]),
            f32::NEG_INFINITY,
        );

        if g == 0 {
            let w = softmax(band, 4);
            return w
                .matmul(v_band)
                .reshape([b, h, nb * blk, dh])
                .narrow(2, 0, n);
        }
        let k_glob = k.narrow(2, 0, g); // [b, h, g, dh]
        let v_glob = v.narrow(2, 0, g);
        let q_flat = q_blocks.reshape([b, h, nb * blk, dh]);
        let mut glob = q_flat
            .matmul(k_glob.swap_dims(2, 3))
            .mul_scalar(self.attn.scale); // [b, h, nB, g]
        if let Some(alibi) = &self.attn.alibi {
            let dist = host_table(
                [1, 1, nb * blk, g],
                |ix| ix[2] as f32 - ix[3] as f32,
                &device,
            );
            glob = glob + alibi.bias_from_distances(dist);
        }
        let glob_blocked = host_mask([1, 1, nb * blk, g], |ix| ix[3] > ix[2], &device);
        let glob = glob.mask_fill(glob_blocked.expand([b, h, nb * blk, g]), f32::NEG_INFINITY);
        let scores = Tensor::cat(vec![band, glob.reshape([b, h, nb, blk, g])], 4); // [b, h, nb, B, 2B+g]
        let w = softmax(scores, 4);
        let w_band = w.clone().narrow(4, 0, 2 * blk);
        let w_glob = w.narrow(4, 2 * blk, g).reshape([b, h, nb * blk, g]);
        let o = w_band.matmul(v_band).reshape([b, h, nb * blk, dh]) + w_glob.matmul(v_glob);
        o.narrow(2, 0, n)
    }

    /// Window attention of positions 0..n over themselves: q [b, h, n, dh], k and v
    /// [b, kv_heads, n, dh] → [b, h, n, dh]; the fused kernel on flex and wgpu, banded elsewhere.
    fn attend_from_start(&self, q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Tensor<4> {
        let g = self.attn.layout.groups();
        let (k, v) = (repeat_kv(k, g), repeat_kv(v, g));
        if crate::kernels::fused_attention_on(&q.device()) {
            let slopes = self.attn.slopes();
            let pattern = crate::kernels::KeyPattern::Window(self.pattern.clone());
            crate::kernels::sparse_attention(q, k, v, self.attn.scale as f32, slopes, pattern)
        } else {
            self.banded(q, k, v)
        }
    }

    /// The decoding state after positions 0..n whose keys/values are k, v [b, kv_heads, n, dh]:
    /// what `step_one` would have kept — the first `global_tokens` positions and the last
    /// span − 1 positions after them.
    fn state_after_prompt(&self, k: Tensor<4>, v: Tensor<4>) -> MixerState {
        let n = k.dims()[2];
        let globals = self.pattern.global_tokens.min(n);
        let keep = self.pattern.span() - 1;
        let recent_start = n.saturating_sub(keep).max(self.pattern.global_tokens);
        let global = |t: &Tensor<4>| (globals > 0).then(|| t.clone().narrow(2, 0, globals));
        let recent = |t: &Tensor<4>| {
            (keep > 0 && recent_start < n)
                .then(|| t.clone().narrow(2, recent_start, n - recent_start))
        };
        MixerState::Window(WindowState {
            global_k: global(&k),
            global_v: global(&v),
            recent_k: recent(&k),
            recent_v: recent(&v),
            pos: n,
        })
    }

    /// One decoding step at position `pos` from the bounded state.
    fn step_one(&self, x: Tensor<3>, state: MixerState) -> (Tensor<3>, MixerState) {
        let MixerState::Window(WindowState {
            global_k,
            global_v,
            recent_k,
            recent_v,
            pos,
        }) = state
        else {
            panic!("sliding window was given a {state:?} state")
        };
        let g = self.attn.layout.groups();
        let (q, k, v) = self.qkv(x, pos);
        let gt = self.pattern.global_tokens;
        let (global_k, global_v, recent_k, recent_v) = if pos < gt {
            (
                Some(append(global_k, k)),
                Some(append(global_v, v)),
                recent_k,
                recent_v,
            )
        } else {
            (
                global_k,
                global_v,
                Some(append(recent_k, k)),
                Some(append(recent_v, v)),
            )
        };
        let n_glob = global_k.as_ref().map_or(0, |t| t.dims()[2]);
        let n_recent = recent_k.as_ref().map_or(0, |t| t.dims()[2]);
        let recent_start = pos + 1 - n_recent;
        let positions: Vec<usize> = (0..n_glob).chain(recent_start..=pos).collect();
        let keys: Vec<Tensor<4>> = global_k.iter().chain(recent_k.iter()).cloned().collect();
        let values: Vec<Tensor<4>> = global_v.iter().chain(recent_v.iter()).cloned().collect();
        let blocked = positions
            .iter()
            .map(|&j| !self.pattern.allowed(pos, j))
            .collect();
        let distance = positions.iter().map(|&j| (pos - j) as f32).collect();
        let o = attend_listed(
            q,
            repeat_kv(Tensor::cat(keys, 2), g),
            repeat_kv(Tensor::cat(values, 2), g),
            blocked,
            distance,
            self.attn.alibi.as_ref(),
            self.attn.scale,
        );
        // The next query reaches back at most span − 1 positions.
        let keep = self.pattern.span() - 1;
        let trim = |t: Option<Tensor<4>>| {
            t.and_then(|t| {
                let len = t.dims()[2];
                (keep > 0).then(|| {
                    if len > keep {
                        t.narrow(2, len - keep, keep)
                    } else {
                        t
                    }
                })
            })
        };
        let state = MixerState::Window(WindowState {
            global_k,
            global_v,
            recent_k: trim(recent_k),
            recent_v: trim(recent_v),
            pos: pos + 1,
        });
        (self.out.forward(merge_heads(o)), state)
    }
}

impl TokenMixer for SlidingWindowAttention {
    fn kind(&self) -> &'static str {
        "sliding_window"
    }

    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        if crate::kernels::fused_on(&x.device()) {
            let pattern = crate::kernels::KeyPattern::Window(self.pattern.clone());
            let projections = (&self.query, &self.key, &self.value);
            let o = self.attn.attend_token_major(projections, x, pattern, None);
            return self.out.forward(o);
        }
        let (q, k, v) = self.qkv(x, 0);
        let o = self.attend_from_start(q, k, v); // [b, h, n, dh]
        self.out.forward(merge_heads(o))
    }

    fn init_state(&self, _batch: usize, _device: &Device) -> MixerState {
        MixerState::Window(WindowState {
            global_k: None,
            global_v: None,
            recent_k: None,
            recent_v: None,
            pos: 0,
        })
    }

    /// From an empty state (a prompt): the full banded / fused forward, then the bounded state
    /// cut from its keys/values. Otherwise token by token through the bounded state.
    fn forward_with_state(&self, x: Tensor<3>, mut state: MixerState) -> (Tensor<3>, MixerState) {
        let n = x.dims()[1];
        if matches!(&state, MixerState::Window(w) if w.pos == 0) && n > 0 {
            let (q, k, v) = self.qkv(x, 0);
            let o = self.attend_from_start(q, k.clone(), v.clone()); // [b, h, n, dh]
            return (
                self.out.forward(merge_heads(o)),
                self.state_after_prompt(k, v),
            );
        }
        let mut outs = Vec::with_capacity(n);
        for t in 0..n {
            let (y, s) = self.step_one(x.clone().narrow(1, t, 1), state);
            outs.push(y);
            state = s;
        }
        (Tensor::cat(outs, 1), state)
    }

    fn state_size_bytes(&self, seq_len: usize) -> usize {
        let kept = seq_len.min(self.pattern.global_tokens)
            + (self.pattern.span() - 1).min(seq_len.saturating_sub(self.pattern.global_tokens));
        kept * self.attn.layout.kv_bytes_per_token()
    }

    fn attention_weights(&self, x: Tensor<3>) -> Option<Tensor<4>> {
        let n = x.dims()[1];
        let (q, k, _) = self.qkv(x, 0);
        let device = q.device();
        let pattern = &self.pattern;
        let blocked = host_mask([1, 1, n, n], |ix| !pattern.allowed(ix[2], ix[3]), &device);
        let bias = self
            .attn
            .alibi
            .as_ref()
            .map(|a| a.bias(0, n, 0, n, &device));
        Some(dense_weights(
            q,
            repeat_kv(k, self.attn.layout.groups()),
            blocked,
            bias,
            self.attn.scale,
        ))
    }
}
