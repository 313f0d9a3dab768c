//! Token mixers: the enum-of-modules that makes attention pluggable, the trait every mixer
//! implements, and the decoding state they carry.
//!
//! Every mixer maps x: [batch, seq, d_model] → [batch, seq, d_model] causally and supports
//! - `forward`: the whole sequence from position 0 (training form: fused, chunked or banded);
//! - `forward_with_state`: continue from a state (KV cache or recurrent matrix state) and
//!   return the new state — `step` is the one-token case used by incremental decoding; from an
//!   empty state (a prompt) the attention mixers run their `forward` form (fused O(n) memory on
//!   flex) and keep its keys/values, so a long prompt never builds n×n scores;
//! - `state_size_bytes(seq_len)`: the memory a decoder must keep after seq_len tokens;
//! - `attention_weights`: the [batch, heads, seq, seq] weights for diagnostics (for linear
//!   mixers the implied normalised weights φ(q_i)·φ(k_j) / Σ_j φ(q_i)·φ(k_j)).

pub mod bigbird;
pub mod delta_rule;
pub mod feature_map;
pub mod linear;
pub mod mamba2;
pub mod pattern;
pub mod reference;
pub mod rwkv;
pub mod sliding_window;
pub mod softmax;

use burn::prelude::*;
use burn::tensor::activation::softmax as softmax_fn;

use crate::config::{MixerConfig, ModelConfig};
use crate::init::Init;

pub use bigbird::BigBirdAttention;
pub use delta_rule::DeltaNet;
pub use linear::LinearAttention;
pub use mamba2::Mamba2;
pub use rwkv::RwkvTimeMix;
pub use sliding_window::SlidingWindowAttention;
pub use softmax::SoftmaxAttention;

/// What a mixer carries between calls when decoding incrementally.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum MixerState {
    /// Keys and values of every earlier position (softmax, BigBird): [batch, kv_heads, t, head_dim].
    Kv {
        k: Option<Tensor<4>>,
        v: Option<Tensor<4>>,
        pos: usize,
    },
    /// Sliding window: the first `global_tokens` keys/values and a rolling cache of the last
    /// (span − 1) positions, so the state stays O(w + g) however long the context.
    Window {
        global_k: Option<Tensor<4>>,
        global_v: Option<Tensor<4>>,
        recent_k: Option<Tensor<4>>,
        recent_v: Option<Tensor<4>>,
        pos: usize,
    },
    /// Linear attention: S = Σ φ(k)ᵀv [batch, heads, feature, head_dim] and z = Σ φ(k) [batch, heads, feature].
    Linear {
        s: Tensor<4>,
        z: Tensor<3>,
        pos: usize,
    },
    /// RWKV: the WKV matrix state [batch, heads, head_dim, head_dim] and the last input [batch, d_model].
    Rwkv {
        s: Tensor<4>,
        last_x: Tensor<2>,
        pos: usize,
    },
    /// DeltaNet / Gated DeltaNet: S [batch, heads, head_dim, head_dim] and the last K−1 inputs
    /// of the q, k, v convolutions ([batch, K−1, d_model]; None before the first token).
    Delta {
        s: Tensor<4>,
        convs: [Option<Tensor<3>>; 3],
        pos: usize,
    },
    /// Mamba-2: H [batch, heads, N, P] and the last K−1 inputs of the x/B/C convolution.
    Ssd {
        s: Tensor<4>,
        conv: Option<Tensor<3>>,
        pos: usize,
    },
}

impl MixerState {
    pub fn pos(&self) -> usize {
        match self {
            MixerState::Kv { pos, .. }
            | MixerState::Window { pos, .. }
            | MixerState::Linear { pos, .. }
            | MixerState::Rwkv { pos, .. }
            | MixerState::Delta { pos, .. }
            | MixerState::Ssd { pos, .. } => *pos,
        }
    }
}

/// The interface of every token mixer.
pub trait TokenMixer {
    /// x: [batch, seq, d_model] from position 0 → [batch, seq, d_model].
    fn forward(&self, x: Tensor<3>) -> Tensor<3>;
    /// The state before the first token.
    fn init_state(&self, batch: usize, device: &Device) -> MixerState;
    /// Continue from `state`: x holds positions state.pos()..state.pos()+seq.
    fn forward_with_state(&self, x: Tensor<3>, state: MixerState) -> (Tensor<3>, MixerState);
    /// Decode one token: x [batch, d_model].
    fn step(&self, x: Tensor<2>, state: MixerState) -> (Tensor<2>, MixerState) {
        let (y, state) = self.forward_with_state(x.unsqueeze_dim::<3>(1), state);
        (y.squeeze_dim::<2>(1), state)
    }
    /// Bytes of decoding state per sequence after `seq_len` tokens (f32).
    fn state_size_bytes(&self, seq_len: usize) -> usize;
    /// Attention weights [batch, heads, seq, seq] of a full forward (rows sum to 1 over j ≤ i).
    fn attention_weights(&self, x: Tensor<3>) -> Option<Tensor<4>>;
}

#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Mixer {
    Softmax(SoftmaxAttention),
    Linear(LinearAttention),
    Rwkv(RwkvTimeMix),
    SlidingWindow(SlidingWindowAttention),
    BigBird(BigBirdAttention),
    DeltaNet(DeltaNet),
    Mamba2(Mamba2),
}

impl Mixer {
    pub fn new(mixer: &MixerConfig, model: &ModelConfig, init: &mut Init) -> Mixer {
        match mixer {
            MixerConfig::Softmax { .. } => {
                Mixer::Softmax(SoftmaxAttention::new(mixer, model, init))
            }
            MixerConfig::Linear { .. } => Mixer::Linear(LinearAttention::new(mixer, model, init)),
            MixerConfig::Rwkv { .. } => Mixer::Rwkv(RwkvTimeMix::new(mixer, model, init)),
            MixerConfig::SlidingWindow { .. } => {
                Mixer::SlidingWindow(SlidingWindowAttention::new(mixer, model, init))
            }
            MixerConfig::Bigbird { .. } => {
                Mixer::BigBird(BigBirdAttention::new(mixer, model, init))
            }
            MixerConfig::Deltanet(c) => Mixer::DeltaNet(DeltaNet::new(c, false, model, init)),
            MixerConfig::GatedDeltanet(c) => Mixer::DeltaNet(DeltaNet::new(c, true, model, init)),
            MixerConfig::Mamba2(c) => Mixer::Mamba2(Mamba2::new(c, model, init)),
        }
    }

    fn inner(&self) -> &dyn TokenMixer {
        match self {
            Mixer::Softmax(m) => m,
            Mixer::Linear(m) => m,
            Mixer::Rwkv(m) => m,
            Mixer::SlidingWindow(m) => m,
            Mixer::BigBird(m) => m,
            Mixer::DeltaNet(m) => m,
            Mixer::Mamba2(m) => m,
        }
    }
}

impl TokenMixer for Mixer {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.inner().forward(x)
    }
    fn init_state(&self, batch: usize, device: &Device) -> MixerState {
        self.inner().init_state(batch, device)
    }
    fn forward_with_state(&self, x: Tensor<3>, state: MixerState) -> (Tensor<3>, MixerState) {
        self.inner().forward_with_state(x, state)
    }
    fn step(&self, x: Tensor<2>, state: MixerState) -> (Tensor<2>, MixerState) {
        self.inner().step(x, state)
    }
    fn state_size_bytes(&self, seq_len: usize) -> usize {
        self.inner().state_size_bytes(seq_len)
    }
    fn attention_weights(&self, x: Tensor<3>) -> Option<Tensor<4>> {
        self.inner().attention_weights(x)
    }
}

// ---- helpers shared by the attention mixers -------------------------------------------------

/// [batch, seq, heads·head_dim] → [batch, heads, seq, head_dim]
pub fn split_heads(x: Tensor<3>, heads: usize) -> Tensor<4> {
    let [b, n, d] = x.dims();
    x.reshape([b, n, heads, d / heads]).swap_dims(1, 2)
}

/// [batch, heads, seq, head_dim] → [batch, seq, heads·head_dim]
pub fn merge_heads(x: Tensor<4>) -> Tensor<3> {
    let [b, h, n, dh] = x.dims();
    x.swap_dims(1, 2).reshape([b, n, h * dh])
}

/// Grouped-query attention: repeat each of the kv heads `groups` times → [batch, heads, seq, dh].
pub fn repeat_kv(x: Tensor<4>, groups: usize) -> Tensor<4> {
    if groups == 1 {
        return x;
    }
    let [b, hk, n, dh] = x.dims();
    x.unsqueeze_dim::<5>(2)
        .expand([b, hk, groups, n, dh])
        .reshape([b, hk * groups, n, dh])
}

/// Log-n ("entropy-invariant") scaling: max(1, ln(i+1)/ln(L_train)) for positions
/// start..start+len, as [1, 1, len, 1] to multiply the queries.
pub fn log_n_factors(start: usize, len: usize, train_len: usize, device: &Device) -> Tensor<4> {
    let denom = (train_len.max(2) as f64).ln();
    let v: Vec<f32> = (start..start + len)
        .map(|i| ((i as f64 + 1.0).ln() / denom).max(1.0) as f32)
        .collect();
    Tensor::<1>::from_data(TensorData::new(v, [len]), device).reshape([1, 1, len, 1])
}

/// A boolean mask tensor (true = blocked) from a host predicate over (row, col).
pub fn host_mask<const D: usize>(
    shape: [usize; D],
    blocked: impl Fn(&[usize; D]) -> bool,
    device: &Device,
) -> Tensor<D, Bool> {
    let total: usize = shape.iter().product();
    let mut values = Vec::with_capacity(total);
    let mut idx = [0usize; D];
    for _ in 0..total {
        values.push(blocked(&idx));
        for d in (0..D).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Tensor::from_bool(TensorData::new(values, shape), device)
}

/// A float tensor from a host function of the index.
pub fn host_table<const D: usize>(
    shape: [usize; D],
    value: impl Fn(&[usize; D]) -> f32,
    device: &Device,
) -> Tensor<D> {
    let total: usize = shape.iter().product();
    let mut values = Vec::with_capacity(total);
    let mut idx = [0usize; D];
    for _ in 0..total {
        values.push(value(&idx));
        for d in (0..D).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// Dense attention weights softmax(q·kᵀ·scale + bias) with `blocked` entries removed:
/// q [b,h,n_q,dh], k [b,h,n_k,dh], blocked [1|b, 1|h, n_q, n_k] → [b,h,n_q,n_k].
/// Used for diagnostics and as the reference the banded / gathered forms must equal.
pub fn dense_weights(
    q: Tensor<4>,
    k: Tensor<4>,
    blocked: Tensor<4, Bool>,
    bias: Option<Tensor<4>>,
    scale: f64,
) -> Tensor<4> {
    let [b, h, n_q, _] = q.dims();
    let n_k = k.dims()[2];
    let mut scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(scale); // [b, h, n_q, n_k]
    if let Some(bias) = bias {
        scores = scores + bias;
    }
    let scores = scores.mask_fill(blocked.expand([b, h, n_q, n_k]), f32::NEG_INFINITY);
    softmax_fn(scores, 3)
}

/// Zero-pad one axis: `before` entries in front, `after` behind.
pub fn pad_axis<const D: usize>(
    t: Tensor<D>,
    axis: usize,
    before: usize,
    after: usize,
) -> Tensor<D> {
    if before == 0 && after == 0 {
        return t;
    }
    let mut pairs = [(0usize, 0usize); D];
    pairs[axis] = (before, after);
    t.pad(pairs, burn::tensor::ops::PadMode::Constant(0.0))
}

/// Attention of one query per sequence over a listed set of keys, used by the sparse mixers'
/// decoding steps: q [b,h,1,dh], k/v [b,h,m,dh], `blocked[j]` removes key j, `distance[j]` = i − j
/// feeds ALiBi. → [b,h,1,dh]
pub fn attend_listed(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    blocked: Vec<bool>,
    distance: Vec<f32>,
    alibi: Option<&crate::position::Alibi>,
    scale: f64,
) -> Tensor<4> {
    let m = k.dims()[2];
    let device = q.device();
    let blocked = Tensor::<4, Bool>::from_bool(TensorData::new(blocked, [1, 1, 1, m]), &device);
    let bias = alibi.map(|a| {
        a.bias_from_distances(Tensor::<4>::from_data(
            TensorData::new(distance, [1, 1, 1, m]),
            &device,
        ))
    });
    dense_weights(q, k, blocked, bias, scale).matmul(v)
}

/// The config name of a mixer variant.
pub fn mixer_kind(mixer: &Mixer) -> &'static str {
    match mixer {
        Mixer::Softmax(_) => "softmax",
        Mixer::Linear(_) => "linear",
        Mixer::Rwkv(_) => "rwkv",
        Mixer::SlidingWindow(_) => "sliding_window",
        Mixer::BigBird(_) => "bigbird",
        Mixer::DeltaNet(m) => m.kind(),
        Mixer::Mamba2(_) => "mamba2",
    }
}
