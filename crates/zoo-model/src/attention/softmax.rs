//! Causal multi-head softmax attention (Vaswani et al. 2017) with grouped-query heads
//! (Ainslie et al. 2023, GQA):
//!
//!   o_i = Σ_{j≤i} softmax_j(s·q_i·k_j + b(i, j)) v_j,   s = logit_scale (default 1/√d_head)
//!
//! with RoPE rotating q/k, ALiBi supplying b(i, j) = −m_h(i − j), and optional log-n scaling
//! (Chiang & Cholak 2022; Su 2021, "entropy-invariant" attention) multiplying the logits of query
//! i by max(1, ln(i+1)/ln(L_train)) so the softmax does not flatten past the training length.
//! The sequence path runs the project's fused causal kernel on flex (tiled, masked half skipped,
//! O(n) memory in training too, `crate::kernels::causal_attention`); elsewhere Burn's fused
//! `attention` op on plain devices and an explicit masked softmax under autodiff. A prompt
//! decoded from an empty cache (the prefill of `forward_with_state`) takes the same path and
//! keeps its keys/values as the cache; continuing from a cache masks [n, pos + n] explicitly.

use crate::dense::Linear;
use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig};
use burn::prelude::*;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;

use super::{
    MixerState, TokenMixer, dense_weights, host_mask, log_n_factors, log_n_values, merge_heads,
    repeat_kv, split_heads,
};
use serde::{Deserialize, Serialize};

use super::{Mixer, MixerSpec};
use crate::config::{ModelConfig, PositionConfig};
use crate::error::ModelError;
use crate::init::Init;
use crate::kernels;
use crate::position::{Alibi, Rope};

#[derive(Module, Debug)]
pub struct SoftmaxAttention {
    pub query: Linear,
    pub key: Linear,
    pub value: Linear,
    pub out: Linear,
    /// Dropout on the attention probabilities (`model.attention_dropout`, training only).
    pub prob_dropout: Dropout,
    #[module(skip)]
    attn: AttentionHeads,
    /// L_train of log-n scaling when enabled.
    #[module(skip)]
    log_n_train_len: Option<usize>,
}

/// `kind = "softmax"`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct SoftmaxConfig {
    /// Multiplier of q·k; default 1/√head_dim.
    #[serde(default)]
    pub logit_scale: Option<f64>,
    /// Multiply the logits of the query at position i by max(1, ln(i+1)/ln(train_len)).
    #[serde(default)]
    pub log_n_scaling: bool,
}

impl MixerSpec for SoftmaxConfig {
    fn build(&self, model: &ModelConfig, init: &mut Init) -> Mixer {
        Mixer::Softmax(SoftmaxAttention::new(self, model, init))
    }

    fn validate(&self, _model: &ModelConfig, path: &str) -> Result<(), ModelError> {
        if self.logit_scale.is_some_and(|s| s <= 0.0) {
            return Err(ModelError::config(
                &format!("{path}.logit_scale"),
                "must be positive",
            ));
        }
        Ok(())
    }
    fn param_count(&self, model: &ModelConfig) -> u128 {
        attention_params(model)
    }
    fn state_bytes(&self, model: &ModelConfig, n: f64) -> f64 {
        n * kv_bytes_per_token(model)
    }
    fn activation_values(&self, model: &ModelConfig, n: f64, _train: bool, fused: bool) -> f64 {
        attention_activation_values(model, self.keys_per_query(n), fused)
    }
    fn flops_per_token(&self, model: &ModelConfig, n: f64) -> f64 {
        // Scores and the weighted sum over the (n + 1) / 2 keys a query sees on average.
        2.0 * 2.0 * model.d_model as f64 * (n + 1.0) / 2.0
    }
    fn keys_per_query(&self, n: f64) -> Option<f64> {
        Some(n)
    }
    fn examples() -> Vec<Self> {
        vec![
            SoftmaxConfig::default(),
            SoftmaxConfig {
                logit_scale: Some(0.3),
                log_n_scaling: true,
            },
        ]
    }
}

/// Parameters of the attention family's q, k, v, o projections (grouped k/v heads).
pub fn attention_params(model: &ModelConfig) -> u128 {
    let d = model.d_model as u128;
    let kv = (model.kv_heads() as u128).saturating_mul(model.head_dim() as u128);
    let linear = |d_out: u128| {
        d.saturating_mul(d_out)
            .saturating_add(if model.bias { d_out } else { 0 })
    };
    linear(d)
        .saturating_add(linear(kv).saturating_mul(2))
        .saturating_add(linear(d))
}

/// f32 bytes of one position's keys and values.
pub fn kv_bytes_per_token(model: &ModelConfig) -> f64 {
    2.0 * model.kv_heads() as f64 * model.head_dim() as f64 * 4.0
}

/// f32 values per token of an attention-family layer: projections and heads, plus the scores
/// and probabilities when they are materialised (not with the fused kernel).
pub fn attention_activation_values(model: &ModelConfig, keys: Option<f64>, fused: bool) -> f64 {
    let d = model.d_model as f64;
    let h = model.n_heads as f64;
    let kv = model.kv_heads() as f64 * model.head_dim() as f64;
    let projections = 5.0 * d + 4.0 * kv + h;
    let scores = match keys {
        Some(k) if !fused => 2.0 * d + 3.0 * h * k,
        _ => 0.0,
    };
    projections + scores
}

/// The keys and values of every earlier position: [batch, kv_heads, t, head_dim] (None before
/// the first token).
#[derive(Clone, Debug)]
pub struct KvState {
    pub k: Option<Tensor<4>>,
    pub v: Option<Tensor<4>>,
    pub pos: usize,
}

impl KvState {
    pub fn empty() -> MixerState {
        MixerState::Kv(KvState {
            k: None,
            v: None,
            pos: 0,
        })
    }
}

/// What the softmax-family mixers (softmax, sliding window, BigBird) share besides their
/// q, k, v, o projections: the head layout, the logit scale and the position encoding applied
/// to q/k (RoPE) or to the scores (ALiBi).
#[derive(Clone, Debug)]
pub struct AttentionHeads {
    pub layout: HeadLayout,
    pub scale: f64,
    pub rope: Option<Rope>,
    pub alibi: Option<Alibi>,
}

impl AttentionHeads {
    /// `logit_scale`: None = 1/√head_dim.
    pub fn new(model: &ModelConfig, logit_scale: Option<f64>) -> Self {
        let layout = HeadLayout::new(model);
        AttentionHeads {
            layout,
            scale: logit_scale.unwrap_or(1.0 / (layout.head_dim as f64).sqrt()),
            rope: Rope::from_config(&model.position, layout.head_dim),
            alibi: matches!(model.position, PositionConfig::Alibi)
                .then(|| Alibi::new(model.n_heads)),
        }
    }

    /// Project x at positions start.. into rotated heads: q [b,h,n,dh], k and v [b,kv_heads,n,dh].
    pub fn project(
        &self,
        (query, key, value): (&Linear, &Linear, &Linear),
        x: Tensor<3>,
        start: usize,
    ) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
        project_heads(
            (query, key, value),
            self.layout,
            self.rope.as_ref(),
            x,
            start,
        )
    }

    /// ALiBi's per-head slopes (empty without ALiBi), as the fused kernels take them.
    pub fn slopes(&self) -> &[f32] {
        self.alibi.as_ref().map_or(&[][..], |a| &a.slopes[..])
    }

    /// Attention of positions 0..n of x [b, n, d] over themselves, from the projections to the
    /// merged heads [b, n, h·dh], as one token-major CPU kernel (kernels/qkv_attention.rs): one
    /// product for q, k and v, RoPE and the log-n factors (`log_n_train_len`) applied inside,
    /// no head permutes. Callers check `kernels::fused_on` (flex) first.
    pub fn attend_token_major(
        &self,
        (query, key, value): (&Linear, &Linear, &Linear),
        x: Tensor<3>,
        pattern: kernels::KeyPattern,
        log_n_train_len: Option<usize>,
    ) -> Tensor<3> {
        let n = x.dims()[1];
        let qkv = Linear::forward_side_by_side(&[query, key, value], x); // [b, n, (h + 2·hk)·dh]
        let (cos, sin) = self
            .rope
            .as_ref()
            .map(|rope| rope.host_tables(0, n))
            .unwrap_or_default();
        let query_factors = log_n_train_len
            .map(|train_len| log_n_values(0, n, train_len))
            .unwrap_or_default();
        let spec = kernels::QkvAttention {
            heads: self.layout.heads,
            kv_heads: self.layout.kv_heads,
            scale: self.scale as f32,
            slopes: self.slopes().to_vec(),
            positions: kernels::Positions {
                cos,
                sin,
                query_factors,
            },
            pattern,
        };
        kernels::qkv_attention(qkv, spec) // [b, n, h·dh]
    }
}

/// Head counts shared by the attention mixers.
#[derive(Clone, Copy, Debug)]
pub struct HeadLayout {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

impl HeadLayout {
    pub fn new(model: &ModelConfig) -> Self {
        HeadLayout {
            heads: model.n_heads,
            kv_heads: model.kv_heads(),
            head_dim: model.head_dim(),
        }
    }
    pub fn groups(&self) -> usize {
        self.heads / self.kv_heads
    }
    /// f32 bytes of one position's keys and values.
    pub fn kv_bytes_per_token(&self) -> usize {
        2 * self.kv_heads * self.head_dim * 4
    }
}

/// q, k, v projections shared by the softmax and sparse mixers.
pub fn init_qkvo(model: &ModelConfig, init: &mut Init) -> (Linear, Linear, Linear, Linear) {
    let d = model.d_model;
    let kv = model.kv_heads() * model.head_dim();
    (
        init.linear(d, d, model.bias),
        init.linear(d, kv, model.bias),
        init.linear(d, kv, model.bias),
        init.linear_out(d, d, model.bias, model.n_layers),
    )
}

/// Project x at positions start.. into rotated heads: q [b,h,n,dh], k and v [b,kv_heads,n,dh].
pub fn project_heads(
    (query, key, value): (&Linear, &Linear, &Linear),
    heads: HeadLayout,
    rope: Option<&Rope>,
    x: Tensor<3>,
    start: usize,
) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
    let q = split_heads(query.forward(x.clone()), heads.heads); // [b, h, n, dh]
    let k = split_heads(key.forward(x.clone()), heads.kv_heads); // [b, hk, n, dh]
    let v = split_heads(value.forward(x), heads.kv_heads); // [b, hk, n, dh]
    match rope {
        Some(rope) => (rope.apply(q, start), rope.apply(k, start), v),
        None => (q, k, v),
    }
}

/// Append new keys/values to an optional cache along the sequence axis.
pub fn append(cache: Option<Tensor<4>>, new: Tensor<4>) -> Tensor<4> {
    match cache {
        Some(c) => Tensor::cat(vec![c, new], 2),
        None => new,
    }
}

impl SoftmaxAttention {
    pub fn new(config: &SoftmaxConfig, model: &ModelConfig, init: &mut Init) -> Self {
        let (query, key, value, out) = init_qkvo(model, init);
        SoftmaxAttention {
            query,
            key,
            value,
            out,
            prob_dropout: DropoutConfig::new(model.attention_dropout).init(),
            attn: AttentionHeads::new(model, config.logit_scale),
            log_n_train_len: config
                .log_n_scaling
                .then(|| model.train_len.unwrap_or(model.max_seq_len)),
        }
    }

    /// q (log-n scaled), k, v (repeated to all heads) for positions start..start+n.
    fn qkv(&self, x: Tensor<3>, start: usize) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
        let n = x.dims()[1];
        let (mut q, k, v) = self
            .attn
            .project((&self.query, &self.key, &self.value), x, start);
        if let Some(train_len) = self.log_n_train_len {
            let device = q.device();
            q = q * log_n_factors(start, n, train_len, &device);
        }
        (q, k, v)
    }

    /// Causal attention of positions 0..n over themselves: q [b, h, n, dh], k and v
    /// [b, kv_heads, n, dh] → [b, h, n, dh]. Shared by `forward` and the prefill of
    /// `forward_with_state`, so a prompt takes the same O(n)-memory fused kernel on flex and wgpu.
    fn attend_from_start(&self, q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Tensor<4> {
        let [b, _, n, _] = q.dims();
        let g = self.attn.layout.groups();
        let device = q.device();
        if self.prob_dropout.prob > 0.0 && q.is_autodiff() {
            // Dropping probabilities needs them materialised: the fused kernels never form them.
            let blocked = host_mask([1, 1, n, n], |ix| ix[3] > ix[2], &device);
            let bias = self
                .attn
                .alibi
                .as_ref()
                .map(|a| a.bias(0, n, 0, n, &device));
            let weights = dense_weights(q, repeat_kv(k, g), blocked, bias, self.attn.scale);
            self.prob_dropout.forward(weights).matmul(repeat_kv(v, g))
        } else if kernels::fused_attention_on(&device) {
            kernels::causal_attention(
                q,
                repeat_kv(k, g),
                repeat_kv(v, g),
                self.attn.scale as f32,
                self.attn.slopes(),
            )
        } else if q.is_autodiff() {
            // Under autodiff Burn's fused op falls back to materialised scores anyway, and the
            // explicit masked softmax is faster there (docs/benchmarks.md).
            let blocked = host_mask([1, 1, n, n], |ix| ix[3] > ix[2], &device);
            let bias = self
                .attn
                .alibi
                .as_ref()
                .map(|a| a.bias(0, n, 0, n, &device));
            dense_weights(q, repeat_kv(k, g), blocked, bias, self.attn.scale)
                .matmul(repeat_kv(v, g))
        } else {
            // Burn's fused op with `is_causal`: no n×n mask is built (ALiBi still needs its bias).
            let bias = self.attn.alibi.as_ref().map(|a| {
                a.bias(0, n, 0, n, &device)
                    .expand([b, self.attn.layout.heads, n, n])
            });
            attention(
                q,
                repeat_kv(k, g),
                repeat_kv(v, g),
                None,
                bias,
                self.options(true),
            )
        }
    }

    fn options(&self, is_causal: bool) -> AttentionModuleOptions {
        AttentionModuleOptions {
            scale: Some(self.attn.scale),
            softcap: None,
            is_causal,
        }
    }
}

impl TokenMixer for SoftmaxAttention {
    fn kind(&self) -> &'static str {
        "softmax"
    }

    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        // Dropping probabilities needs them materialised; the token-major kernel never forms them.
        let drops_probabilities = self.prob_dropout.prob > 0.0 && x.is_autodiff();
        if kernels::fused_on(&x.device()) && !drops_probabilities {
            let o = self.attn.attend_token_major(
                (&self.query, &self.key, &self.value),
                x,
                kernels::KeyPattern::Causal,
                self.log_n_train_len,
            );
            return self.out.forward(o);
        }
        let (q, k, v) = self.qkv(x, 0);
        let o = self.attend_from_start(q, k, v); // [b, h, n, dh]
        self.out.forward(merge_heads(o))
    }

    fn init_state(&self, _batch: usize, _device: &Device) -> MixerState {
        KvState::empty()
    }

    fn forward_with_state(&self, x: Tensor<3>, state: MixerState) -> (Tensor<3>, MixerState) {
        let MixerState::Kv(KvState {
            k: k_cache,
            v: v_cache,
            pos,
        }) = state
        else {
            panic!("softmax attention was given a {state:?} state")
        };
        let [b, n, _] = x.dims();
        let (q, k, v) = self.qkv(x, pos);
        if pos == 0 && k_cache.is_none() && n > 0 {
            // A prompt from an empty cache is a full forward: the fused kernel (or Burn's causal
            // op) instead of the dense [n, total] mask below, which is n² for a long prompt.
            let o = self.attend_from_start(q, k.clone(), v.clone()); // [b, h, n, dh]
            let state = MixerState::Kv(KvState {
                k: Some(k),
                v: Some(v),
                pos: n,
            });
            return (self.out.forward(merge_heads(o)), state);
        }
        let k_all = append(k_cache, k); // [b, hk, pos+n, dh]
        let v_all = append(v_cache, v);
        let total = pos + n;
        let device = q.device();
        let h = self.attn.layout.heads;
        let bias = self
            .attn
            .alibi
            .as_ref()
            .map(|a| a.bias(pos, n, 0, total, &device).expand([b, h, n, total]));
        // Query i (absolute pos + i) sees keys j ≤ pos + i; a lone query sees the whole cache.
        let mask = (n > 1).then(|| {
            host_mask([1, 1, n, total], |ix| ix[3] > pos + ix[2], &device).expand([b, h, n, total])
        });
        let g = self.attn.layout.groups();
        let o = attention(
            q,
            repeat_kv(k_all.clone(), g),
            repeat_kv(v_all.clone(), g),
            mask,
            bias,
            self.options(false),
        );
        let y = self.out.forward(merge_heads(o));
        (
            y,
            MixerState::Kv(KvState {
                k: Some(k_all),
                v: Some(v_all),
                pos: total,
            }),
        )
    }

    fn state_size_bytes(&self, seq_len: usize) -> usize {
        seq_len * self.attn.layout.kv_bytes_per_token()
    }

    fn attention_weights(&self, x: Tensor<3>) -> Option<Tensor<4>> {
        let n = x.dims()[1];
        let (q, k, _) = self.qkv(x, 0);
        let device = q.device();
        let blocked = host_mask([1, 1, n, n], |ix| ix[3] > ix[2], &device);
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
