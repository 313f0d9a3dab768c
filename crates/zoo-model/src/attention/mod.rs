//! Token mixers: the enum-of-modules that makes attention pluggable, the trait every mixer
//! implements (`TokenMixer`), the trait every mixer's config implements (`MixerSpec`: checks,
//! sizes, cost, examples, building the module), and the decoding state they carry. One file per
//! mixer holds all of these for that mixer (docs/adding-a-mixer.md); the tables below
//! (`mixer_states!`, `mixer_modules!`) and `mixer_configs!` in config.rs list them once.
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
use crate::error::ModelError;
use crate::init::Init;

pub use bigbird::BigBirdAttention;
pub use delta_rule::DeltaNet;
pub use linear::LinearAttention;
pub use mamba2::Mamba2;
pub use rwkv::RwkvTimeMix;
pub use sliding_window::SlidingWindowAttention;
pub use softmax::SoftmaxAttention;

/// Declares `MixerState` — what a mixer carries between calls when decoding incrementally —
/// with one newtype variant per kind of state, each defined beside the mixer that keeps it and
/// holding its position `pos`.
macro_rules! mixer_states {
    ($($(#[$doc:meta])* $variant:ident($state:ty),)*) => {
        #[derive(Clone, Debug)]
        #[allow(clippy::large_enum_variant)]
        pub enum MixerState {
            $($(#[$doc])* $variant($state),)*
        }

        impl MixerState {
            /// Tokens consumed so far.
            pub fn pos(&self) -> usize {
                match self {
                    $(MixerState::$variant(s) => s.pos,)*
                }
            }
        }
    };
}

mixer_states! {
    /// Softmax and BigBird: the keys and values of every earlier position.
    Kv(softmax::KvState),
    /// Sliding window: the global and the recent keys/values.
    Window(sliding_window::WindowState),
    /// Linear attention: S = Σ φ(k)ᵀv and z = Σ φ(k).
    Linear(linear::LinearState),
    /// RWKV: the WKV matrix state and the last input.
    Rwkv(rwkv::RwkvState),
    /// DeltaNet / Gated DeltaNet: S and the q, k, v convolution's history.
    Delta(delta_rule::DeltaState),
    /// Mamba-2: H and the x/B/C convolution's history.
    Ssd(mamba2::SsdState),
}

/// What a mixer's config knows before any module is built: its checks, its sizes and cost, and
/// the examples every-mixer tests and benches run. Each mixer file implements it for its config
/// struct; `MixerConfig` delegates to it (config.rs).
pub trait MixerSpec {
    /// Hard bounds of the mixer's own sizes (`config::limits`), checked before anything else
    /// multiplies them; `path` names the mixer (`model.mixer`, `model.mixers.1`).
    fn check_limits(&self, _path: &str) -> Result<(), ModelError> {
        Ok(())
    }
    /// Field checks and checks against the model it sits in (position encoding, heads).
    fn validate(&self, model: &ModelConfig, path: &str) -> Result<(), ModelError>;
    /// Learned parameters of one layer (saturating: estimates may run on unchecked sizes).
    fn param_count(&self, model: &ModelConfig) -> u128;
    /// Decoding state per sequence after n tokens, in bytes (f32): equal to the built mixer's
    /// `TokenMixer::state_size_bytes`.
    fn state_bytes(&self, model: &ModelConfig, n: f64) -> f64;
    /// f32 values per token one layer holds at length n: for the backward pass (`train`) or at
    /// its widest (inference), with the fused CPU kernels or the composed ops.
    fn activation_values(&self, model: &ModelConfig, n: f64, train: bool, fused: bool) -> f64;
    /// Forward FLOPs per token of the mixing itself at context n (projections are counted with
    /// the parameters).
    fn flops_per_token(&self, model: &ModelConfig, n: f64) -> f64;
    /// Keys one query scores at length n (the attention family); None for recurrent mixers.
    fn keys_per_query(&self, _n: f64) -> Option<f64> {
        None
    }
    /// Whether key/value heads may be shared by query heads (grouped-query attention).
    fn allows_grouped_kv(&self) -> bool {
        true
    }
    /// The module this config describes, its weights drawn from `init`.
    fn build(&self, model: &ModelConfig, init: &mut Init) -> Mixer;
    /// Configurations the every-mixer tests and benches run: small chunks and windows so that
    /// short test inputs cross them.
    fn examples() -> Vec<Self>
    where
        Self: Sized;
}

/// The one-line refusal of a mixer with the model's position encoding.
pub fn refuse_position(model: &ModelConfig, path: &str, kind: &str, why: &str) -> ModelError {
    ModelError::config(
        &format!("{path}.kind + model.position.kind"),
        &format!(
            "{kind} with {} position encoding: {why}",
            model.position.kind()
        ),
    )
}

/// The checks of a recurrent mixer that encodes position itself and has one key per head:
/// RoPE and ALiBi are refused (`why` says what to use), and so is `model.n_kv_heads`.
pub fn recurrent_mixer_checks(
    model: &ModelConfig,
    path: &str,
    kind: &str,
    why: &str,
) -> Result<(), ModelError> {
    if matches!(
        model.position,
        crate::config::PositionConfig::Alibi | crate::config::PositionConfig::Rope { .. }
    ) {
        return Err(refuse_position(model, path, kind, why));
    }
    if model.kv_heads() != model.n_heads {
        return Err(ModelError::config(
            "model.n_kv_heads",
            &format!("{kind} has one key/value per head: leave n_kv_heads unset"),
        ));
    }
    Ok(())
}

/// Refuses a zero in any of the named fields: "{path}.{a} / {path}.{b}: must be positive".
pub fn require_positive(path: &str, fields: &[(&str, usize)]) -> Result<(), ModelError> {
    if fields.iter().any(|(_, v)| *v == 0) {
        let names: Vec<String> = fields.iter().map(|(f, _)| format!("{path}.{f}")).collect();
        return Err(ModelError::config(&names.join(" / "), "must be positive"));
    }
    Ok(())
}

/// Checks each (field, value, bound) of a mixer against `config::limits`.
pub fn check_sizes(path: &str, sizes: &[(&str, usize, usize)]) -> Result<(), ModelError> {
    for (field, value, max) in sizes {
        crate::config::limits::check(&format!("{path}.{field}"), *value, *max)?;
    }
    Ok(())
}

/// The interface of every token mixer.
pub trait TokenMixer {
    /// The config name of the mixer (`kind = "..."`).
    fn kind(&self) -> &'static str;
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

/// Declares `Mixer`, the enum-of-modules that makes the token mixer pluggable: one newtype
/// variant per module type, and the dispatch of `TokenMixer` to it.
macro_rules! mixer_modules {
    ($($variant:ident($module:ty),)*) => {
        #[derive(Module, Debug)]
        #[allow(clippy::large_enum_variant)]
        pub enum Mixer {
            $($variant($module),)*
        }

        impl Mixer {
            fn inner(&self) -> &dyn TokenMixer {
                match self {
                    $(Mixer::$variant(m) => m,)*
                }
            }
        }
    };
}

mixer_modules! {
    Softmax(SoftmaxAttention),
    Linear(LinearAttention),
    Rwkv(RwkvTimeMix),
    SlidingWindow(SlidingWindowAttention),
    BigBird(BigBirdAttention),
    DeltaNet(DeltaNet),
    Mamba2(Mamba2),
}

impl Mixer {
    /// The module of `mixer` (each config builds its own: `MixerSpec::build`).
    pub fn new(mixer: &MixerConfig, model: &ModelConfig, init: &mut Init) -> Mixer {
        mixer.spec().build(model, init)
    }
}

impl TokenMixer for Mixer {
    fn kind(&self) -> &'static str {
        self.inner().kind()
    }
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
    let v = log_n_values(start, len, train_len);
    Tensor::<1>::from_data(TensorData::new(v, [len]), device).reshape([1, 1, len, 1])
}

/// [`log_n_factors`] as host values [len].
pub fn log_n_values(start: usize, len: usize, train_len: usize) -> Vec<f32> {
    let denom = (train_len.max(2) as f64).ln();
    (start..start + len)
        .map(|i| ((i as f64 + 1.0).ln() / denom).max(1.0) as f32)
        .collect()
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
