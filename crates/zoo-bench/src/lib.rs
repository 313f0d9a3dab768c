//! The benchmark setup shared by `zoo bench` and the criterion benches in `benches/`
//! (`cargo bench -p zoo-bench`): one mixer layer of d_model 128 with 4 heads, and each mixer
//! with the parameters the benchmarks use.

use zoo_model::attention::delta_rule::DeltaRuleConfig;
use zoo_model::attention::mamba2::Mamba2Config;
use zoo_model::{FeatureMap, MixerConfig, ModelConfig, PositionConfig};

/// Every mixer with its benchmark parameters.
pub fn mixers() -> Vec<MixerConfig> {
    vec![
        MixerConfig::Softmax(zoo_model::SoftmaxConfig {
            logit_scale: None,
            log_n_scaling: false,
        }),
        MixerConfig::Linear(zoo_model::LinearConfig {
            feature_map: FeatureMap::Elu,
            normalize: true,
            chunk_size: 64,
            feature_dim: None,
        }),
        MixerConfig::Rwkv(zoo_model::RwkvConfig {
            chunk_size: 32,
            data_dependent_decay: true,
            decay_rank: 32,
        }),
        MixerConfig::SlidingWindow(zoo_model::SlidingWindowConfig {
            window: 128,
            dilation: 1,
            global_tokens: 4,
        }),
        MixerConfig::Bigbird(zoo_model::BigBirdConfig {
            block_size: 32,
            window_blocks: 3,
            global_blocks: 1,
            random_blocks: 2,
            seed: 0,
        }),
        MixerConfig::Deltanet(DeltaRuleConfig::default()),
        MixerConfig::GatedDeltanet(DeltaRuleConfig::default()),
        MixerConfig::Mamba2(Mamba2Config::default()),
    ]
}

/// The one-layer model config a benchmarked mixer is built from (no position encoding).
pub fn layer_model(mixer: MixerConfig) -> ModelConfig {
    ModelConfig {
        vocab_size: Some(512),
        d_model: 128,
        n_layers: 1,
        n_heads: 4,
        mixer,
        position: PositionConfig::None,
        max_seq_len: 1 << 16,
        ..ModelConfig::default()
    }
}
