//! Causal BigBird block-sparse attention (Zaheer et al. 2020, "Big Bird: Transformers for Longer
//! Sequences"): with blocks of b tokens, query block q attends to
//!
//!   window blocks q−W+1..q  ∪  global blocks 0..G  ∪  R random earlier blocks (seeded),
//!
//! causally masked inside the blocks (pattern.rs, `BigBirdPattern`). Computed by gathering, for
//! every query block, its K = W+G+R key blocks into a [n/b, b, K·b] score tensor — cost and
//! memory O(n·b·(W+G+R)) (on flex, the fused tiled kernel of `crate::kernels::causal_attention`
//! reads the same key blocks range by range, with hand-written backward). The random blocks are a
//! pure function of (seed, query block), fixed when the model is built, identical across forwards
//! and after reload (unlike implementations that redraw them on every call). A prompt from an
//! empty cache runs the same gathered / fused forward and keeps its keys/values as the cache.

use crate::dense::Linear;
use burn::module::Module;
use burn::prelude::*;
use burn::tensor::activation::softmax;

use super::pattern::BigBirdPattern;
use super::softmax::{
    AttentionHeads, KvState, append, attention_activation_values, attention_params, init_qkvo,
    kv_bytes_per_token,
};
use super::{
    Mixer, MixerSpec, MixerState, TokenMixer, attend_listed, check_sizes, dense_weights, host_mask,
    merge_heads, pad_axis, repeat_kv, require_positive,
};
use serde::{Deserialize, Serialize};

use crate::config::{ModelConfig, limits};
use crate::error::ModelError;
use crate::init::Init;

#[derive(Module, Debug)]
pub struct BigBirdAttention {
    pub query: Linear,
    pub key: Linear,
    pub value: Linear,
    pub out: Linear,
    #[module(skip)]
    attn: AttentionHeads,
    #[module(skip)]
    pattern: BigBirdPattern,
}

/// `kind = "bigbird"`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BigBirdConfig {
    #[serde(default = "default_block")]
    pub block_size: usize,
    /// Window in blocks: the query's own block and the previous `window_blocks - 1`.
    #[serde(default = "default_window_blocks")]
    pub window_blocks: usize,
    /// The first `global_blocks` blocks are global.
    #[serde(default = "one")]
    pub global_blocks: usize,
    /// Random earlier blocks per query block, drawn from `seed`.
    #[serde(default = "one")]
    pub random_blocks: usize,
    #[serde(default)]
    pub seed: u64,
}

fn default_block() -> usize {
    16
}
fn default_window_blocks() -> usize {
    3
}
fn one() -> usize {
    1
}

impl Default for BigBirdConfig {
    fn default() -> Self {
        BigBirdConfig {
            block_size: default_block(),
            window_blocks: default_window_blocks(),
            global_blocks: 1,
            random_blocks: 1,
            seed: 0,
        }
    }
}

impl MixerSpec for BigBirdConfig {
    fn build(&self, model: &ModelConfig, init: &mut Init) -> Mixer {
        Mixer::BigBird(BigBirdAttention::new(self, model, init))
    }

    fn check_limits(&self, path: &str) -> Result<(), ModelError> {
        check_sizes(
            path,
            &[
                ("block_size", self.block_size, limits::SEQ_LEN),
                ("window_blocks", self.window_blocks, limits::SEQ_LEN),
                ("global_blocks", self.global_blocks, limits::SEQ_LEN),
                ("random_blocks", self.random_blocks, limits::SEQ_LEN),
            ],
        )
    }
    fn validate(&self, _model: &ModelConfig, path: &str) -> Result<(), ModelError> {
        require_positive(
            path,
            &[
                ("block_size", self.block_size),
                ("window_blocks", self.window_blocks),
            ],
        )
    }
    fn param_count(&self, model: &ModelConfig) -> u128 {
        attention_params(model)
    }
    fn state_bytes(&self, model: &ModelConfig, n: f64) -> f64 {
        // Random blocks can reach any earlier block: the whole cache is kept.
        n * kv_bytes_per_token(model)
    }
    fn activation_values(&self, model: &ModelConfig, n: f64, _train: bool, fused: bool) -> f64 {
        attention_activation_values(model, self.keys_per_query(n), fused)
    }
    fn flops_per_token(&self, model: &ModelConfig, n: f64) -> f64 {
        2.0 * 2.0 * model.d_model as f64 * self.keys_per_query(n).unwrap_or(n)
    }
    fn keys_per_query(&self, n: f64) -> Option<f64> {
        let blocks =
            self.window_blocks as f64 + self.global_blocks as f64 + self.random_blocks as f64;
        Some((self.block_size as f64 * blocks).min(n))
    }
    fn examples() -> Vec<Self> {
        vec![BigBirdConfig {
            block_size: 4,
            window_blocks: 2,
            global_blocks: 1,
            random_blocks: 1,
            seed: 7,
        }]
    }
}

impl BigBirdAttention {
    pub fn new(config: &BigBirdConfig, model: &ModelConfig, init: &mut Init) -> Self {
        let (query, key, value, out) = init_qkvo(model, init);
        BigBirdAttention {
            query,
            key,
            value,
            out,
            attn: AttentionHeads::new(model, None),
            pattern: BigBirdPattern {
                block_size: config.block_size,
                window_blocks: config.window_blocks,
                global_blocks: config.global_blocks,
                random_blocks: config.random_blocks,
                seed: config.seed,
            },
        }
    }

    pub fn pattern(&self) -> &BigBirdPattern {
        &self.pattern
    }

    fn qkv(&self, x: Tensor<3>, start: usize) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
        self.attn
            .project((&self.query, &self.key, &self.value), x, start)
    }

    /// BigBird attention of positions 0..n over themselves: q [b, h, n, dh], k and v
    /// [b, kv_heads, n, dh] → [b, h, n, dh]; the fused kernel on flex and wgpu, gathered elsewhere.
    fn attend_from_start(&self, q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Tensor<4> {
        let g = self.attn.layout.groups();
        let (k, v) = (repeat_kv(k, g), repeat_kv(v, g));
        if crate::kernels::fused_attention_on(&q.device()) {
            let pattern = crate::kernels::KeyPattern::BigBird(self.pattern.clone());
            crate::kernels::sparse_attention(
                q,
                k,
                v,
                self.attn.scale as f32,
                self.attn.slopes(),
                pattern,
            )
        } else {
            self.gathered(q, k, v)
        }
    }

    /// Block-gathered attention over positions 0..n: q, k, v [b, h, n, dh] → [b, h, n, dh].
    pub fn gathered(&self, q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Tensor<4> {
        let [b, h, n, dh] = q.dims();
        let device = q.device();
        let bs = self.pattern.block_size;
        let nb = n.div_ceil(bs);
        let tail = nb * bs - n;
        let slots = self.pattern.max_key_blocks().min(nb);

        // Key block list of every query block, padded to `slots` with masked repeats.
        let lists: Vec<Vec<usize>> = (0..nb).map(|qb| self.pattern.key_blocks(qb)).collect();
        let mut index = Vec::with_capacity(nb * slots);
        for list in &lists {
            for s in 0..slots {
                index.push(*list.get(s).unwrap_or(&list[0]) as i64);
            }
        }
        let index = Tensor::<1, Int>::from_data(TensorData::new(index, [nb * slots]), &device);
        let gather = |t: Tensor<4>| {
            pad_axis(t, 2, 0, tail)
                .reshape([b, h, nb, bs, dh])
                .select(2, index.clone()) // [b, h, nb·slots, bs, dh]
                .reshape([b, h, nb, slots * bs, dh])
        };
        let (k_g, v_g) = (gather(k), gather(v));
        let q_blocks = pad_axis(q, 2, 0, tail).reshape([b, h, nb, bs, dh]);

        let key_pos = |qb: usize, c: usize| -> Option<usize> {
            lists[qb].get(c / bs).map(|blk| blk * bs + c % bs)
        };
        let blocked = host_mask(
            [1, 1, nb, bs, slots * bs],
            |ix| match key_pos(ix[2], ix[4]) {
                Some(j) => j > ix[2] * bs + ix[3],
                None => true,
            },
            &device,
        );
        let mut scores = q_blocks
            .matmul(k_g.swap_dims(3, 4))
            .mul_scalar(self.attn.scale); // [b, h, nb, bs, K·bs]
        if let Some(alibi) = &self.attn.alibi {
            let mut dist = Vec::with_capacity(nb * bs * slots * bs);
            for qb in 0..nb {
                for a in 0..bs {
                    for c in 0..slots * bs {
                        let i = (qb * bs + a) as f32;
                        dist.push(key_pos(qb, c).map_or(0.0, |j| i - j as f32));
                    }
                }
            }
            let dist =
                Tensor::<5>::from_data(TensorData::new(dist, [1, 1, nb, bs, slots * bs]), &device);
            scores = scores + alibi.bias_from_distances(dist);
        }
        let scores = scores.mask_fill(
            blocked.expand([b, h, nb, bs, slots * bs]),
            f32::NEG_INFINITY,
        );
        let o = softmax(scores, 4).matmul(v_g); // [b, h, nb, bs, dh]
        o.reshape([b, h, nb * bs, dh]).narrow(2, 0, n)
    }
}

impl TokenMixer for BigBirdAttention {
    fn kind(&self) -> &'static str {
        "bigbird"
    }

    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        if crate::kernels::fused_on(&x.device()) {
            let pattern = crate::kernels::KeyPattern::BigBird(self.pattern.clone());
            let projections = (&self.query, &self.key, &self.value);
            let o = self.attn.attend_token_major(projections, x, pattern, None);
            return self.out.forward(o);
        }
        let (q, k, v) = self.qkv(x, 0);
        let o = self.attend_from_start(q, k, v); // [b, h, n, dh]
        self.out.forward(merge_heads(o))
    }

    fn init_state(&self, _batch: usize, _device: &Device) -> MixerState {
        KvState::empty()
    }

    /// From an empty cache (a prompt): the gathered / fused forward, keeping its keys/values as
    /// the cache. Otherwise token by token over the full KV cache (random blocks can reach any
    /// earlier block).
    fn forward_with_state(&self, x: Tensor<3>, state: MixerState) -> (Tensor<3>, MixerState) {
        let MixerState::Kv(KvState {
            k: mut k_cache,
            v: mut v_cache,
            pos: start,
        }) = state
        else {
            panic!("bigbird was given a {state:?} state")
        };
        let n = x.dims()[1];
        if start == 0 && k_cache.is_none() && n > 0 {
            let (q, k, v) = self.qkv(x, 0);
            let o = self.attend_from_start(q, k.clone(), v.clone()); // [b, h, n, dh]
            let state = MixerState::Kv(KvState {
                k: Some(k),
                v: Some(v),
                pos: n,
            });
            return (self.out.forward(merge_heads(o)), state);
        }
        let g = self.attn.layout.groups();
        let mut outs = Vec::with_capacity(n);
        for t in 0..n {
            let pos = start + t;
            let (q, k, v) = self.qkv(x.clone().narrow(1, t, 1), pos);
            let k_all = append(k_cache, k);
            let v_all = append(v_cache, v);
            // The query's key blocks, expanded to positions ≤ pos: O(blocks · block_size) per step.
            let bs = self.pattern.block_size;
            let visible: Vec<usize> = self
                .pattern
                .key_blocks(pos / bs)
                .into_iter()
                .flat_map(|blk| blk * bs..((blk + 1) * bs).min(pos + 1))
                .collect();
            let index = Tensor::<1, Int>::from_data(
                TensorData::new(
                    visible.iter().map(|&j| j as i64).collect::<Vec<_>>(),
                    [visible.len()],
                ),
                &q.device(),
            );
            let o = attend_listed(
                q,
                repeat_kv(k_all.clone().select(2, index.clone()), g),
                repeat_kv(v_all.clone().select(2, index), g),
                vec![false; visible.len()],
                visible.iter().map(|&j| (pos - j) as f32).collect(),
                self.attn.alibi.as_ref(),
                self.attn.scale,
            );
            outs.push(self.out.forward(merge_heads(o)));
            k_cache = Some(k_all);
            v_cache = Some(v_all);
        }
        (
            Tensor::cat(outs, 1),
            MixerState::Kv(KvState {
                k: k_cache,
                v: v_cache,
                pos: start + n,
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
        let pattern = &self.pattern;
        let bs = pattern.block_size;
        let lists: Vec<Vec<usize>> = (0..n.div_ceil(bs))
            .map(|qb| pattern.key_blocks(qb))
            .collect();
        let blocked = host_mask(
            [1, 1, n, n],
            |ix| ix[3] > ix[2] || !lists[ix[2] / bs].contains(&(ix[3] / bs)),
            &device,
        );
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
