//! Kernelised causal linear attention (Katharopoulos et al. 2020; Zoology/Based, Arora et al.):
//!
//!   o_t = φ(q_t) S_t / φ(q_t)·z_t,   S_t = Σ_{s≤t} φ(k_s)ᵀ v_s,   z_t = Σ_{s≤t} φ(k_s)
//!
//! (or o_t = φ(q_t) S_t unnormalised). Three equal forms:
//! - parallel: A = tril(φQ φKᵀ), O = A V / rowsum(A) — O(n²), reference and short inputs;
//! - chunked: split into chunks of C; inside a chunk the masked parallel form, across chunks the
//!   exclusive prefix sum of per-chunk states Σ φKᵀV — O(n·C·f + n·f·d), linear in n, training
//!   (on flex the fused kernel `crate::kernels::chunked_linear_attention` computes the same, on
//!   wgpu / cuda the CubeCL kernel `crate::kernels::cube_linear_attention`);
//! - recurrent: S, z updated token by token — O(1) per token, decoding.
//!
//! The state is f×d per head whatever the context: the "fixed d×d memory" whose recall limit the
//! project measures.

use crate::dense::Linear;
use burn::module::Module;
use burn::prelude::*;

use super::softmax::HeadLayout;
use super::{
    Mixer, MixerSpec, MixerState, TokenMixer, check_sizes, feature_map, merge_heads, pad_axis,
    refuse_position, repeat_kv, require_positive, split_heads,
};
use serde::{Deserialize, Serialize};

use crate::config::{FeatureMap, ModelConfig, PositionConfig, limits};
use crate::error::ModelError;
use crate::init::Init;
use crate::kernels;
use crate::position::Rope;

/// Lower bound of the normaliser φ(q)·z (as in the reference PyTorch peer).
pub const NORM_EPS: f64 = 1e-6;

/// `kind = "linear"`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LinearConfig {
    #[serde(default = "default_feature_map")]
    pub feature_map: FeatureMap,
    /// Divide by φ(q)·Σφ(k) (true) or not.
    #[serde(default = "yes")]
    pub normalize: bool,
    /// Chunk length of the training form.
    #[serde(default = "default_chunk")]
    pub chunk_size: usize,
    /// Project q and k to this many dimensions per head before φ (Based uses 16 with Taylor-2).
    #[serde(default)]
    pub feature_dim: Option<usize>,
}

fn default_feature_map() -> FeatureMap {
    FeatureMap::Elu
}
fn yes() -> bool {
    true
}
fn default_chunk() -> usize {
    64
}

impl Default for LinearConfig {
    fn default() -> Self {
        LinearConfig {
            feature_map: default_feature_map(),
            normalize: true,
            chunk_size: default_chunk(),
            feature_dim: None,
        }
    }
}

impl LinearConfig {
    /// Width f of q and k per head before φ (Taylor-2 defaults to min(head_dim, 16)).
    pub fn feature_dim(&self, model: &ModelConfig) -> usize {
        let default = match self.feature_map {
            FeatureMap::Taylor2 => model.head_dim().min(16),
            _ => model.head_dim(),
        };
        self.feature_dim.unwrap_or(default)
    }

    /// Width F of φ's output, in f64 (Taylor-2 squares the width).
    pub fn phi_dim(&self, model: &ModelConfig) -> f64 {
        let f = self.feature_dim(model) as f64;
        match self.feature_map {
            FeatureMap::Taylor2 => 1.0 + f + f * f,
            _ => f,
        }
    }
}

impl MixerSpec for LinearConfig {
    fn build(&self, model: &ModelConfig, init: &mut Init) -> Mixer {
        Mixer::Linear(LinearAttention::new(self, model, init))
    }

    fn check_limits(&self, path: &str) -> Result<(), ModelError> {
        check_sizes(
            path,
            &[
                ("chunk_size", self.chunk_size, limits::CHUNK),
                (
                    "feature_dim",
                    self.feature_dim.unwrap_or(0),
                    limits::FEATURE_DIM,
                ),
            ],
        )
    }
    fn validate(&self, model: &ModelConfig, path: &str) -> Result<(), ModelError> {
        if matches!(model.position, PositionConfig::Alibi) {
            return Err(refuse_position(
                model,
                path,
                "linear",
                "ALiBi biases softmax logits, and kernelised attention has none (use none, sinusoidal, learned or rope)",
            ));
        }
        if self.feature_map == FeatureMap::Identity && self.normalize {
            return Err(ModelError::config(
                &format!("{path}.normalize"),
                "the identity feature map is not positive, so φ(q)·Σφ(k) can be 0: set normalize = false or use elu/relu/taylor2",
            ));
        }
        require_positive(path, &[("chunk_size", self.chunk_size)])?;
        if self.feature_dim == Some(0) {
            return Err(ModelError::config(
                &format!("{path}.feature_dim"),
                "must be positive",
            ));
        }
        // RoPE rotates q and k in the feature space, in pairs of channels.
        if let (Some(f), PositionConfig::Rope { .. }) = (self.feature_dim, &model.position)
            && f % 2 == 1
        {
            return Err(ModelError::config(
                &format!("{path}.feature_dim"),
                &format!(
                    "{f} is odd, and RoPE rotates pairs of feature channels (use an even feature_dim)"
                ),
            ));
        }
        Ok(())
    }
    fn param_count(&self, model: &ModelConfig) -> u128 {
        let d = model.d_model as u128;
        let f = self.feature_dim(model) as u128;
        let linear = |d_out: u128| {
            d.saturating_mul(d_out)
                .saturating_add(if model.bias { d_out } else { 0 })
        };
        let kv = (model.kv_heads() as u128).saturating_mul(model.head_dim() as u128);
        linear((model.n_heads as u128).saturating_mul(f))
            .saturating_add(linear((model.kv_heads() as u128).saturating_mul(f)))
            .saturating_add(linear(kv))
            .saturating_add(linear(d))
    }
    fn state_bytes(&self, model: &ModelConfig, _n: f64) -> f64 {
        let big_f = self.phi_dim(model);
        let (h, dh) = (model.n_heads as f64, model.head_dim() as f64);
        4.0 * h * (big_f * dh + if self.normalize { big_f } else { 0.0 })
    }
    fn activation_values(&self, model: &ModelConfig, _n: f64, _train: bool, fused: bool) -> f64 {
        let (d, h, hk) = (
            model.d_model as f64,
            model.n_heads as f64,
            model.kv_heads() as f64,
        );
        let dh = model.head_dim() as f64;
        let f = self.feature_dim(model) as f64;
        let big_f = self.phi_dim(model);
        let c = (self.chunk_size as f64).max(1.0);
        let features = 2.0 * (h + hk) * f + 2.0 * h * big_f + 2.0 * h * dh + 2.0 * d + h;
        let states = h * big_f * (dh + 1.0) / c;
        let chunks = if fused { 0.0 } else { 3.0 * h * c + states };
        features + states + chunks
    }
    fn flops_per_token(&self, model: &ModelConfig, _n: f64) -> f64 {
        // Write φ(k)ᵀv into the F × d_head state and read it with φ(q), per head.
        2.0 * 2.0 * model.n_heads as f64 * self.phi_dim(model) * model.head_dim() as f64
    }
    fn examples() -> Vec<Self> {
        vec![
            LinearConfig {
                feature_map: FeatureMap::Elu,
                normalize: true,
                chunk_size: 8,
                feature_dim: None,
            },
            LinearConfig {
                feature_map: FeatureMap::Taylor2,
                normalize: true,
                chunk_size: 8,
                feature_dim: Some(4),
            },
            LinearConfig {
                feature_map: FeatureMap::Identity,
                normalize: false,
                chunk_size: 8,
                feature_dim: None,
            },
        ]
    }
}

/// S = Σ φ(k)ᵀv [batch, heads, F, head_dim] and z = Σ φ(k) [batch, heads, F] after `pos` tokens.
#[derive(Clone, Debug)]
pub struct LinearState {
    pub s: Tensor<4>,
    pub z: Tensor<3>,
    pub pos: usize,
}

#[derive(Module, Debug)]
pub struct LinearAttention {
    pub query: Linear,
    pub key: Linear,
    pub value: Linear,
    pub out: Linear,
    #[module(skip)]
    heads: HeadLayout,
    #[module(skip)]
    feature_map: FeatureMap,
    /// Width of q/k per head before φ.
    #[module(skip)]
    feature_dim: usize,
    #[module(skip)]
    normalize: bool,
    #[module(skip)]
    chunk_size: usize,
    #[module(skip)]
    rope: Option<Rope>,
}

/// Parallel (masked, O(n²)) form on feature-mapped inputs, continuing from (s0, z0):
/// φq, φk [b,h,n,f], v [b,h,n,dv], s0 [b,h,f,dv], z0 [b,h,f] → (out [b,h,n,dv], s, z).
pub fn parallel(
    phi_q: Tensor<4>,
    phi_k: Tensor<4>,
    v: Tensor<4>,
    s0: Tensor<4>,
    z0: Tensor<3>,
    normalize: bool,
) -> (Tensor<4>, Tensor<4>, Tensor<3>) {
    let n = phi_q.dims()[2];
    let causal = Tensor::<2>::ones([n, n], &phi_q.device())
        .tril(0)
        .unsqueeze::<4>(); // [1, 1, n, n]
    let att = phi_q.clone().matmul(phi_k.clone().swap_dims(2, 3)) * causal; // [b, h, n, n]
    let num = att.clone().matmul(v.clone()) + phi_q.clone().matmul(s0.clone()); // [b, h, n, dv]
    let out = if normalize {
        let den = att.sum_dim(3) + (phi_q * z0.clone().unsqueeze_dim::<4>(2)).sum_dim(3); // [b, h, n, 1]
        num / den.clamp_min(NORM_EPS)
    } else {
        num
    };
    let s = s0 + phi_k.clone().swap_dims(2, 3).matmul(v); // [b, h, f, dv]
    let z = z0 + phi_k.sum_dim(2).squeeze_dim::<3>(2); // [b, h, f]
    (out, s, z)
}

/// Chunked form, cost linear in n: same contract as [`parallel`].
pub fn chunked(
    phi_q: Tensor<4>,
    phi_k: Tensor<4>,
    v: Tensor<4>,
    s0: Tensor<4>,
    z0: Tensor<3>,
    chunk: usize,
    normalize: bool,
) -> (Tensor<4>, Tensor<4>, Tensor<3>) {
    let [b, h, n, f] = phi_q.dims();
    let dv = v.dims()[3];
    let nc = n.div_ceil(chunk);
    let pad = nc * chunk - n;
    // Zero rows after φ contribute nothing to any state; padded queries are cut off below.
    let pad_seq = |t: Tensor<4>| pad_axis(t, 2, 0, pad);
    let q = pad_seq(phi_q).reshape([b, h, nc, chunk, f]);
    let k = pad_seq(phi_k).reshape([b, h, nc, chunk, f]);
    let v = pad_seq(v).reshape([b, h, nc, chunk, dv]);

    let kv = k.clone().swap_dims(3, 4).matmul(v.clone()); // [b, h, nc, f, dv] per-chunk Σ φkᵀv
    let kv_incl = kv.clone().cumsum(2);
    let s_prev = kv_incl.clone() - kv + s0.clone().unsqueeze_dim::<5>(2); // state before each chunk
    let k_sum = k.clone().sum_dim(3); // [b, h, nc, 1, f]
    let k_incl = k_sum.clone().cumsum(2);
    let z_prev = k_incl.clone() - k_sum + z0.clone().unsqueeze_dim::<4>(2).unsqueeze_dim::<5>(3); // [b, h, nc, 1, f]

    let causal = Tensor::<2>::ones([chunk, chunk], &q.device())
        .tril(0)
        .unsqueeze::<5>(); // [1,1,1,C,C]
    let att = q.clone().matmul(k.swap_dims(3, 4)) * causal; // [b, h, nc, C, C]
    let num = att.clone().matmul(v) + q.clone().matmul(s_prev); // [b, h, nc, C, dv]
    let out = if normalize {
        let den = att.sum_dim(4) + (q * z_prev).sum_dim(4); // [b, h, nc, C, 1]
        num / den.clamp_min(NORM_EPS)
    } else {
        num
    };
    let out = out.reshape([b, h, nc * chunk, dv]).narrow(2, 0, n);
    let s = kv_incl.narrow(2, nc - 1, 1).squeeze_dim::<4>(2) + s0; // [b, h, f, dv]
    let z = k_incl.narrow(2, nc - 1, 1).reshape([b, h, f]) + z0; // [b, h, f]
    (out, s, z)
}

/// Recurrent form, one token at a time (decoding; and the third form of the equivalence tests).
pub fn recurrent(
    phi_q: Tensor<4>,
    phi_k: Tensor<4>,
    v: Tensor<4>,
    mut s: Tensor<4>,
    mut z: Tensor<3>,
    normalize: bool,
) -> (Tensor<4>, Tensor<4>, Tensor<3>) {
    let n = phi_q.dims()[2];
    let mut outs = Vec::with_capacity(n);
    for t in 0..n {
        let q_t = phi_q.clone().narrow(2, t, 1); // [b, h, 1, f]
        let k_t = phi_k.clone().narrow(2, t, 1);
        let v_t = v.clone().narrow(2, t, 1); // [b, h, 1, dv]
        s = s + k_t.clone().swap_dims(2, 3).matmul(v_t); // [b, h, f, dv]
        z = z + k_t.squeeze_dim::<3>(2);
        let num = q_t.clone().matmul(s.clone()); // [b, h, 1, dv]
        outs.push(if normalize {
            let den = (q_t * z.clone().unsqueeze_dim::<4>(2)).sum_dim(3); // [b, h, 1, 1]
            num / den.clamp_min(NORM_EPS)
        } else {
            num
        });
    }
    (Tensor::cat(outs, 2), s, z)
}

impl LinearAttention {
    pub fn new(config: &LinearConfig, model: &ModelConfig, init: &mut Init) -> Self {
        let heads = HeadLayout::new(model);
        let feature_dim = config.feature_dim(model);
        let d = model.d_model;
        LinearAttention {
            query: init.linear(d, heads.heads * feature_dim, model.bias),
            key: init.linear(d, heads.kv_heads * feature_dim, model.bias),
            value: init.linear(d, heads.kv_heads * heads.head_dim, model.bias),
            out: init.linear_out(d, d, model.bias, model.n_layers),
            heads,
            feature_map: config.feature_map,
            feature_dim,
            normalize: config.normalize,
            chunk_size: config.chunk_size,
            rope: Rope::from_config(&model.position, feature_dim),
        }
    }

    fn phi_dim(&self) -> usize {
        feature_map::output_dim(self.feature_map, self.feature_dim)
    }

    /// φq [b,h,n,F], φk [b,h,n,F], v [b,h,n,dv] for positions start..start+n.
    fn features(&self, x: Tensor<3>, start: usize) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
        let g = self.heads.groups();
        let mut q = split_heads(self.query.forward(x.clone()), self.heads.heads); // [b, h, n, f]
        let mut k = split_heads(self.key.forward(x.clone()), self.heads.kv_heads); // [b, hk, n, f]
        let v = split_heads(self.value.forward(x), self.heads.kv_heads); // [b, hk, n, dv]
        if let Some(rope) = &self.rope {
            q = rope.apply(q, start);
            k = rope.apply(k, start);
        }
        let phi_q = feature_map::apply(self.feature_map, q);
        let phi_k = feature_map::apply(self.feature_map, k);
        (phi_q, repeat_kv(phi_k, g), repeat_kv(v, g))
    }

    fn zero_state(&self, batch: usize, device: &Device) -> (Tensor<4>, Tensor<3>) {
        let (h, f, dv) = (self.heads.heads, self.phi_dim(), self.heads.head_dim);
        (
            Tensor::zeros([batch, h, f, dv], device),
            Tensor::zeros([batch, h, f], device),
        )
    }
}

impl TokenMixer for LinearAttention {
    fn kind(&self) -> &'static str {
        "linear"
    }

    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let device = x.device();
        let [b, n, _] = x.dims();
        if kernels::fused_on(&device) && self.rope.is_none() && self.heads.groups() == 1 {
            let (h, f, dv) = (self.heads.heads, self.feature_dim, self.heads.head_dim);
            if self.feature_map == FeatureMap::Elu {
                // One product for q, k and v, the feature map inside the kernel: no separate
                // feature-map passes and one input gradient instead of a sum of three.
                let projections = [&self.query, &self.key, &self.value];
                let qkv = Linear::forward_side_by_side(&projections, x); // [b, n, h·(2f + dv)]
                let set = kernels::QkvSettings {
                    heads: h,
                    feature_dim: f,
                    chunk: self.chunk_size,
                    normalize: self.normalize,
                    eps: NORM_EPS as f32,
                };
                let o = kernels::linear_attention_qkv(qkv, set); // [b, n, h·dv]
                return self.out.forward(o);
            }
            // The projections' own [b, n, h, ·] layout: no head split / merge copies around
            // the kernel, forward or backward.
            let features = |proj: &Linear| {
                let t = proj.forward(x.clone()).reshape([b, n, h, f]);
                feature_map::apply(self.feature_map, t) // [b, n, h, F]
            };
            let (phi_q, phi_k) = (features(&self.query), features(&self.key));
            let v = self.value.forward(x).reshape([b, n, h, dv]);
            let o = kernels::linear_attention_token_major(
                phi_q,
                phi_k,
                v,
                self.chunk_size,
                self.normalize,
                NORM_EPS as f32,
            ); // [b, n, h, dv]
            return self.out.forward(o.reshape([b, n, h * dv]));
        }
        let (phi_q, phi_k, v) = self.features(x, 0);
        // Flex (RoPE or grouped heads) and cube devices: the kernel on head-major features.
        let o = if kernels::fused_attention_on(&device) {
            kernels::linear_attention(
                phi_q,
                phi_k,
                v,
                self.chunk_size,
                self.normalize,
                NORM_EPS as f32,
            )
        } else {
            let (s0, z0) = self.zero_state(b, &device);
            chunked(phi_q, phi_k, v, s0, z0, self.chunk_size, self.normalize).0
        }; // [b, h, n, dv]
        self.out.forward(merge_heads(o))
    }

    fn init_state(&self, batch: usize, device: &Device) -> MixerState {
        let (s, z) = self.zero_state(batch, device);
        MixerState::Linear(LinearState { s, z, pos: 0 })
    }

    fn forward_with_state(&self, x: Tensor<3>, state: MixerState) -> (Tensor<3>, MixerState) {
        let MixerState::Linear(LinearState { s, z, pos }) = state else {
            panic!("linear attention was given a {state:?} state")
        };
        let n = x.dims()[1];
        let (phi_q, phi_k, v) = self.features(x, pos);
        // Short inputs (decoding steps) take the exact masked form; long ones the chunked form.
        let (o, s, z) = if n <= self.chunk_size {
            parallel(phi_q, phi_k, v, s, z, self.normalize)
        } else {
            chunked(phi_q, phi_k, v, s, z, self.chunk_size, self.normalize)
        };
        (
            self.out.forward(merge_heads(o)),
            MixerState::Linear(LinearState { s, z, pos: pos + n }),
        )
    }

    fn state_size_bytes(&self, _seq_len: usize) -> usize {
        let (h, f, dv) = (self.heads.heads, self.phi_dim(), self.heads.head_dim);
        4 * h * (f * dv + if self.normalize { f } else { 0 })
    }

    fn attention_weights(&self, x: Tensor<3>) -> Option<Tensor<4>> {
        let n = x.dims()[1];
        let (phi_q, phi_k, _) = self.features(x, 0);
        let causal = Tensor::<2>::ones([n, n], &phi_q.device())
            .tril(0)
            .unsqueeze::<4>();
        let att = phi_q.matmul(phi_k.swap_dims(2, 3)) * causal; // [b, h, n, n]
        // Unnormalised maps can give negative scores; the implied weights use their magnitudes.
        let att = if self.normalize { att } else { att.abs() };
        let den = att.clone().sum_dim(3).clamp_min(NORM_EPS);
        Some(att / den)
    }
}
