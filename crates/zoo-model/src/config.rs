//! Model configuration: the serde schema users write in TOML (`[model]`), its defaults, and the
//! cross-field checks that turn nonsense combinations into one-line errors naming the fields.
//!
//! The structs are strict (`deny_unknown_fields`) so a misspelt key is an error, never silently
//! ignored. Tagged enums (`kind = "softmax"`) select mixers and position encodings.

use serde::{Deserialize, Serialize};

use crate::attention::MixerSpec;
pub use crate::attention::bigbird::BigBirdConfig;
pub use crate::attention::delta_rule::{DeltaNetConfig, GatedDeltaNetConfig};
pub use crate::attention::linear::LinearConfig;
pub use crate::attention::mamba2::Mamba2Config;
pub use crate::attention::rwkv::RwkvConfig;
pub use crate::attention::sliding_window::SlidingWindowConfig;
pub use crate::attention::softmax::SoftmaxConfig;
use crate::error::ModelError;

/// Hard bounds on sizes, checked by [`ModelConfig::validate`] (and by the run config and the
/// evaluation commands) before any memory estimate or allocation: far above anything this
/// project trains on one machine, far below anything that overflows. A value above its bound
/// is refused with one line naming the key and the bound.
pub mod limits {
    use crate::error::ModelError;

    pub const D_MODEL: usize = 65_536;
    pub const N_LAYERS: usize = 1024;
    pub const N_HEADS: usize = 1024;
    /// Vocabulary size (2^24).
    pub const VOCAB: usize = 1 << 24;
    /// Sequence lengths: training stages, evaluation lengths, position tables (2^24).
    pub const SEQ_LEN: usize = 1 << 24;
    /// Sequences per batch (2^20).
    pub const BATCH: usize = 1 << 20;
    pub const MLP_RATIO: f64 = 64.0;
    /// Feature width of linear attention before φ (Taylor-2 squares it).
    pub const FEATURE_DIM: usize = 1024;
    /// Chunk lengths of the chunked training forms.
    pub const CHUNK: usize = 65_536;
    pub const DECAY_RANK: usize = 65_536;
    /// Width of the short causal convolution before the mixer.
    pub const SHORT_CONV: usize = 1024;

    /// Refuses `value > max` with one line naming `path`.
    pub fn check(path: &str, value: usize, max: usize) -> Result<(), ModelError> {
        if value > max {
            return Err(ModelError::config(
                path,
                &format!("{value} is above the limit of {max} (lower it)"),
            ));
        }
        Ok(())
    }
}

/// Which normalisation the pre-norm blocks use.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum NormKind {
    Rms,
    Layer,
}

/// Which feed-forward network the blocks use.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MlpKind {
    Gelu,
    Swiglu,
    /// No feed-forward network: blocks with a token mixer only (Zoology's MQAR models use an
    /// identity state mixer).
    None,
}

/// How the weights are drawn at initialisation (`crate::init`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum InitScheme {
    /// PyTorch's module defaults: embeddings N(0, 1), linear layers U(±1/√fan_in), the residual
    /// output projections included.
    Pytorch,
    /// GPT-2 / nanoGPT / Zoology: embeddings N(0, 0.02), linear layers U(±1/√fan_in) and the
    /// residual output projections N(0, 0.02/√(2·n_layers)).
    Gpt2,
}

/// Feature maps φ of kernelised linear attention (Katharopoulos et al. 2020; Based, Arora et al. 2024).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FeatureMap {
    /// φ(x) = elu(x) + 1 (Katharopoulos et al.).
    Elu,
    /// φ(x) = max(x, 0).
    Relu,
    /// φ(x) = x: plain (unnormalised) linear attention.
    Identity,
    /// φ(x) = [1, x/d^¼, vec(x xᵀ)/(√2·√d)]: second-order Taylor expansion of exp(q·k/√d) (Based).
    Taylor2,
}

/// Declares `MixerConfig` — one newtype variant per mixer kind, each holding the config struct
/// that the mixer's own file defines (with its defaults, checks, sizes and examples through
/// `attention::MixerSpec`) — together with the dispatch to that struct and the list of every
/// kind's examples. The enum and the list come from the same table, so a mixer added here is in
/// every every-mixer test and bench without a second list to keep.
macro_rules! mixer_configs {
    ($($(#[$doc:meta])* $variant:ident($config:ty) = $kind:literal,)*) => {
        /// Token mixer of one layer: `kind = "..."` selects the variant, the other keys are the
        /// variant's fields (unknown keys are refused).
        #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
        #[serde(tag = "kind")]
        pub enum MixerConfig {
            $($(#[$doc])* #[serde(rename = $kind)] $variant($config),)*
        }

        impl MixerConfig {
            /// The config name (`kind = "..."`).
            pub fn kind(&self) -> &'static str {
                match self {
                    $(MixerConfig::$variant(_) => $kind,)*
                }
            }

            /// The mixer's own config struct, for its checks, sizes and cost.
            pub fn spec(&self) -> &dyn MixerSpec {
                match self {
                    $(MixerConfig::$variant(c) => c,)*
                }
            }

            /// Configurations of every kind (each kind's `MixerSpec::examples`), for the
            /// every-mixer tests and the benches.
            pub fn examples() -> Vec<MixerConfig> {
                let mut all = Vec::new();
                $(all.extend(<$config as MixerSpec>::examples().into_iter().map(MixerConfig::$variant));)*
                all
            }

            /// Every kind's name, in declaration order.
            pub const KINDS: &'static [&'static str] = &[$($kind,)*];
        }
    };
}

mixer_configs! {
    /// Causal softmax attention (`attention::softmax`).
    Softmax(SoftmaxConfig) = "softmax",
    /// Kernelised linear attention (`attention::linear`).
    Linear(LinearConfig) = "linear",
    /// RWKV-6 time mixing (`attention::rwkv`).
    Rwkv(RwkvConfig) = "rwkv",
    /// Longformer's sliding window with globals (`attention::sliding_window`).
    SlidingWindow(SlidingWindowConfig) = "sliding_window",
    /// BigBird's window + global + random blocks (`attention::bigbird`).
    Bigbird(BigBirdConfig) = "bigbird",
    /// The delta rule, DeltaNet (`attention::delta_rule`).
    Deltanet(DeltaNetConfig) = "deltanet",
    /// The gated delta rule, Gated DeltaNet (`attention::delta_rule`).
    GatedDeltanet(GatedDeltaNetConfig) = "gated_deltanet",
    /// Mamba-2's SSD layer (`attention::mamba2`).
    Mamba2(Mamba2Config) = "mamba2",
}

impl MixerConfig {
    /// Whether the mixer shares keys/values across query heads (grouped-query attention).
    pub fn allows_grouped_kv(&self) -> bool {
        self.spec().allows_grouped_kv()
    }
}

/// Position encoding of the model.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PositionConfig {
    None,
    Sinusoidal,
    Learned,
    Rope {
        #[serde(default = "default_theta")]
        theta: f64,
        /// Position interpolation (Chen et al. 2023): positions are divided by this factor.
        #[serde(default = "one_f")]
        interpolation: f64,
        /// NTK-aware scaling: base θ' = θ·s^(d/(d−2)).
        #[serde(default = "one_f")]
        ntk_factor: f64,
    },
    Alibi,
}

impl PositionConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            PositionConfig::None => "none",
            PositionConfig::Sinusoidal => "sinusoidal",
            PositionConfig::Learned => "learned",
            PositionConfig::Rope { .. } => "rope",
            PositionConfig::Alibi => "alibi",
        }
    }
}

/// The decoder-only language model.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Vocabulary size; when absent it is taken from the task.
    #[serde(default)]
    pub vocab_size: Option<usize>,
    #[serde(default = "default_d_model")]
    pub d_model: usize,
    #[serde(default = "default_layers")]
    pub n_layers: usize,
    #[serde(default = "default_heads")]
    pub n_heads: usize,
    /// Key/value heads (grouped-query attention); default = n_heads.
    #[serde(default)]
    pub n_kv_heads: Option<usize>,
    #[serde(default = "default_mlp_ratio")]
    pub mlp_ratio: f64,
    #[serde(default = "default_mlp")]
    pub mlp: MlpKind,
    #[serde(default = "default_norm")]
    pub norm: NormKind,
    /// Residual dropout: on the output of every mixer and MLP.
    #[serde(default)]
    pub dropout: f64,
    /// Dropout on the input embeddings (token + absolute position); default = `dropout`.
    #[serde(default)]
    pub embed_dropout: Option<f64>,
    /// Dropout on the attention probabilities of softmax mixers (Zoology's MHA `dropout`).
    #[serde(default)]
    pub attention_dropout: f64,
    /// Width K of a causal depthwise convolution on each mixer's input (Zoology / Based's
    /// short convolution); 0 = none.
    #[serde(default)]
    pub short_conv: usize,
    #[serde(default = "default_init")]
    pub init: InitScheme,
    /// Share the token embedding with the output projection. Off by default: with PyTorch's
    /// N(0, 1) embeddings a tied head starts at logits of size √d_model (loss ≈ 60 at d 64), and
    /// untied heads learn recall several times faster in 600 steps (docs/model-definition.md).
    #[serde(default)]
    pub tie_embeddings: bool,
    /// Biases in the linear layers (on by default, as PyTorch's `nn.Linear`, GPT-2 and Zoology's
    /// attention; MLP-free MQAR models learned faster with them: 0.97 against 0.87 at step 600
    /// for the slowest of three seeds, docs/model-definition.md §1.6).
    #[serde(default = "yes")]
    pub bias: bool,
    /// The mixer of every layer, unless `mixers` is given.
    #[serde(default = "default_mixer")]
    pub mixer: MixerConfig,
    /// Per-layer mixers: n_layers entries, or a shorter pattern tiled over the layers.
    #[serde(default)]
    pub mixers: Vec<MixerConfig>,
    #[serde(default = "default_position")]
    pub position: PositionConfig,
    /// Size of the learned position table; also the longest length `zoo info` reports by default.
    #[serde(default = "default_max_seq_len")]
    pub max_seq_len: usize,
    /// Length of the final training stage (L_train of log-n scaling); filled in by the trainer.
    #[serde(default)]
    pub train_len: Option<usize>,
    /// Seed of the parameter initialisation (the trainer sets it from run.seed).
    #[serde(default)]
    pub init_seed: u64,
}

fn yes() -> bool {
    true
}
fn one_f() -> f64 {
    1.0
}
fn default_theta() -> f64 {
    10_000.0
}
fn default_d_model() -> usize {
    128
}
fn default_layers() -> usize {
    2
}
fn default_heads() -> usize {
    4
}
fn default_mlp_ratio() -> f64 {
    4.0
}
fn default_mlp() -> MlpKind {
    MlpKind::Gelu
}
/// LayerNorm, as GPT-2, Zoology and PyTorch's references use: with RMSNorm the MQAR
/// calibration run (docs/model-definition.md) reached 0.71 at step 600 against 0.98 with LayerNorm.
fn default_norm() -> NormKind {
    NormKind::Layer
}
fn default_mixer() -> MixerConfig {
    MixerConfig::Softmax(SoftmaxConfig::default())
}
fn default_position() -> PositionConfig {
    PositionConfig::Rope {
        theta: default_theta(),
        interpolation: 1.0,
        ntk_factor: 1.0,
    }
}
fn default_init() -> InitScheme {
    InitScheme::Pytorch
}
fn default_max_seq_len() -> usize {
    2048
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            vocab_size: None,
            d_model: default_d_model(),
            n_layers: default_layers(),
            n_heads: default_heads(),
            n_kv_heads: None,
            mlp_ratio: default_mlp_ratio(),
            mlp: default_mlp(),
            norm: default_norm(),
            dropout: 0.0,
            embed_dropout: None,
            attention_dropout: 0.0,
            short_conv: 0,
            init: default_init(),
            tie_embeddings: false,
            bias: true,
            mixer: default_mixer(),
            mixers: Vec::new(),
            position: default_position(),
            max_seq_len: default_max_seq_len(),
            train_len: None,
            init_seed: 0,
        }
    }
}

impl ModelConfig {
    pub fn head_dim(&self) -> usize {
        self.d_model / self.n_heads.max(1)
    }

    /// The dropout probability of the input embeddings.
    pub fn embed_dropout_p(&self) -> f64 {
        self.embed_dropout.unwrap_or(self.dropout)
    }

    /// Whether any dropout is active in training (the trainer then seeds Burn's RNG per step).
    pub fn uses_dropout(&self) -> bool {
        self.dropout > 0.0 || self.embed_dropout_p() > 0.0 || self.attention_dropout > 0.0
    }

    pub fn kv_heads(&self) -> usize {
        self.n_kv_heads.unwrap_or(self.n_heads)
    }

    pub fn vocab(&self) -> Result<usize, ModelError> {
        self.vocab_size.ok_or_else(|| {
            ModelError::config(
                "model.vocab_size",
                "is not set (set it, or let the task fill it)",
            )
        })
    }

    /// The mixer of every layer after tiling `mixers` (or repeating `mixer`).
    pub fn layer_mixers(&self) -> Vec<MixerConfig> {
        if self.mixers.is_empty() {
            vec![self.mixer.clone(); self.n_layers]
        } else {
            (0..self.n_layers)
                .map(|i| self.mixers[i % self.mixers.len()].clone())
                .collect()
        }
    }

    /// Cross-field checks; every error names the offending field path.
    pub fn validate(&self) -> Result<(), ModelError> {
        let err = ModelError::config;
        self.check_limits()?;
        if let Some(v) = self.vocab_size
            && v < 2
        {
            return Err(err("model.vocab_size", "must be at least 2"));
        }
        if self.d_model == 0 || self.n_layers == 0 || self.n_heads == 0 {
            return Err(err(
                "model.d_model / model.n_layers / model.n_heads",
                "must be positive",
            ));
        }
        if !self.d_model.is_multiple_of(self.n_heads) {
            return Err(err(
                "model.d_model",
                &format!(
                    "{} is not divisible by model.n_heads = {}",
                    self.d_model, self.n_heads
                ),
            ));
        }
        let kv = self.kv_heads();
        if kv == 0 || !self.n_heads.is_multiple_of(kv) {
            return Err(err(
                "model.n_kv_heads",
                &format!(
                    "{kv} must divide model.n_heads = {} (grouped-query attention)",
                    self.n_heads
                ),
            ));
        }
        for (path, p) in [
            ("model.dropout", self.dropout),
            ("model.embed_dropout", self.embed_dropout_p()),
            ("model.attention_dropout", self.attention_dropout),
        ] {
            if !(0.0..1.0).contains(&p) {
                return Err(err(path, "must be in [0, 1)"));
            }
        }
        if self.attention_dropout > 0.0
            && !self
                .layer_mixers()
                .iter()
                .any(|m| matches!(m, MixerConfig::Softmax(_)))
        {
            return Err(err(
                "model.attention_dropout",
                "drops softmax attention probabilities, and no layer has a softmax mixer (set it to 0)",
            ));
        }
        if self.mlp_ratio <= 0.0 {
            return Err(err("model.mlp_ratio", "must be positive"));
        }
        if self.max_seq_len == 0 {
            return Err(err("model.max_seq_len", "must be positive"));
        }
        if !self.mixers.is_empty() && !self.n_layers.is_multiple_of(self.mixers.len()) {
            return Err(err(
                "model.mixers",
                &format!(
                    "has {} entries, which does not tile model.n_layers = {} (give n_layers entries or a divisor)",
                    self.mixers.len(),
                    self.n_layers
                ),
            ));
        }
        let head_dim = self.head_dim();
        if let PositionConfig::Rope {
            theta,
            interpolation,
            ntk_factor,
        } = &self.position
        {
            if !head_dim.is_multiple_of(2) {
                return Err(err(
                    "model.position",
                    "rope needs an even head_dim (d_model / n_heads)",
                ));
            }
            if *theta <= 1.0 || *interpolation < 1.0 || *ntk_factor < 1.0 {
                return Err(err(
                    "model.position",
                    "rope needs theta > 1, interpolation >= 1 and ntk_factor >= 1",
                ));
            }
        }
        for (path, mixer) in self.named_mixers() {
            mixer.spec().validate(self, &path)?;
        }
        Ok(())
    }

    /// The hard size bounds of [`limits`], checked first so that nothing later multiplies
    /// absurd numbers.
    fn check_limits(&self) -> Result<(), ModelError> {
        use limits::check;
        if let Some(v) = self.vocab_size {
            check("model.vocab_size", v, limits::VOCAB)?;
        }
        check("model.d_model", self.d_model, limits::D_MODEL)?;
        check("model.n_layers", self.n_layers, limits::N_LAYERS)?;
        check("model.n_heads", self.n_heads, limits::N_HEADS)?;
        if let Some(kv) = self.n_kv_heads {
            check("model.n_kv_heads", kv, limits::N_HEADS)?;
        }
        check("model.max_seq_len", self.max_seq_len, limits::SEQ_LEN)?;
        check("model.short_conv", self.short_conv, limits::SHORT_CONV)?;
        if let Some(len) = self.train_len {
            check("model.train_len", len, limits::SEQ_LEN)?;
        }
        if !(self.mlp_ratio.is_finite() && self.mlp_ratio <= limits::MLP_RATIO) {
            return Err(ModelError::config(
                "model.mlp_ratio",
                &format!(
                    "{} is above the limit of {} (lower it)",
                    if self.mlp_ratio.abs() < 1e6 {
                        self.mlp_ratio.to_string()
                    } else {
                        format!("{:e}", self.mlp_ratio)
                    },
                    limits::MLP_RATIO
                ),
            ));
        }
        for (path, mixer) in self.named_mixers() {
            mixer.spec().check_limits(&path)?;
        }
        Ok(())
    }

    /// Each configured mixer with the path that names it in errors.
    fn named_mixers(&self) -> Vec<(String, &MixerConfig)> {
        if self.mixers.is_empty() {
            vec![("model.mixer".to_string(), &self.mixer)]
        } else {
            self.mixers
                .iter()
                .enumerate()
                .map(|(i, m)| (format!("model.mixers.{i}"), m))
                .collect()
        }
    }

    /// Refuses lengths the model cannot encode (learned positions past their table).
    pub fn check_length(&self, seq_len: usize) -> Result<(), ModelError> {
        if matches!(self.position, PositionConfig::Learned) && seq_len > self.max_seq_len {
            return Err(ModelError::config(
                "model.max_seq_len",
                &format!(
                    "learned positions have a table of {} entries, so length {seq_len} cannot be encoded (evaluate at most {} tokens, or train with a larger max_seq_len)",
                    self.max_seq_len, self.max_seq_len
                ),
            ));
        }
        Ok(())
    }
}
