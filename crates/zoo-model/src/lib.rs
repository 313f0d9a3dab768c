//! attention-zoo's model library: decoder-only LMs whose token mixer (softmax, linear, RWKV,
//! sliding window, BigBird, DeltaNet, Gated DeltaNet, Mamba-2) and position encoding (none, sinusoidal, learned, RoPE, ALiBi) are
//! chosen by configuration, with training forms linear in length where the mechanism allows,
//! exact incremental decoding, state-size accounting and attention weights for diagnostics.
//!
//! No CLI, plotting or TOML here: configs are serde structs the CLI fills.

pub mod attention;
pub mod block;
pub mod checkpoint;
pub mod config;
pub mod dense;
pub mod error;
pub mod init;
pub mod kernels;
pub mod lm;
pub mod manifest;
pub mod memory;
pub mod mlp;
pub mod position;
pub mod short_conv;
pub mod sync;

pub use attention::{Mixer, MixerState, TokenMixer};
pub use block::BlockState;
pub use config::{
    BigBirdConfig, DeltaNetConfig, FeatureMap, GatedDeltaNetConfig, InitScheme, LinearConfig,
    Mamba2Config, MixerConfig, MlpKind, ModelConfig, NormKind, PositionConfig, RwkvConfig,
    SlidingWindowConfig, SoftmaxConfig,
};
pub use error::ModelError;
pub use lm::{LayerState, Lm, LmState, masked_cross_entropy};
