//! Memory estimates of a model config, computed before anything is allocated, so that sizes
//! that cannot fit are refused with one line instead of aborting in the allocator.
//!
//! **Parameters** are counted exactly from the config (equal to `Lm::num_params`): token
//! embedding V·d; learned positions max_seq_len·d; per layer two norms (d for RMSNorm, 2d for
//! LayerNorm), the MLP (GELU: d·m + m·d with m = round(mlp_ratio·d); SwiGLU: three matrices of
//! m' = ⌈2m/3⌉) and the mixer (softmax / sliding window / BigBird: q, o d·d and k, v d·kv with
//! kv = kv_heads·head_dim; linear: q d·h·f, k d·hk·f, v d·kv, o d·d with f the feature width;
//! RWKV: r, k, v, g, o d·d, six mixes of d, the decay LoRA d·r + r·d, bonus h·dh and a group
//! norm 2d); a final norm; and an untied head d·V. Biases add the output width of every linear
//! layer.
//!
//! **Activations** are counted in f32 values per token, then multiplied by batch·seq_len·4 B:
//!
//!   training  = b·n·(Σ_layers a_train(layer) + max_layer a_train + 3d + 2V [+V unfused]) + T
//!   inference = b·n·(max_layer a_infer(layer) + 2d + 2V) + T
//!
//! a_train is what autodiff keeps per token of one block: norm inputs/outputs and residuals
//! (6d), the MLP (2m + d; SwiGLU 4m' + d), dropout masks (3d when dropout > 0) and the mixer
//! (projections, RoPE copies, outputs; linear attention adds its feature maps and the per-chunk
//! states h·F·dh/C; RWKV its token shift, decay and group norm ≈ 20d plus state checkpoints
//! h·dh²/64). The extra max_layer term is the gradient of one layer during backward; 2V is the
//! logits and their gradient. Without a fused attention kernel (flex's CPU kernels, the CubeCL
//! kernels on wgpu / cuda: `Kernels`) the attention family materialises scores: 3·h·k values per
//! token with k the keys a query sees (n for softmax, the band for sliding window, the blocks for
//! BigBird), and linear attention keeps its chunk matrices (3·h·C); RWKV keeps them without the
//! CPU kernels. With them, T adds the per-thread score tiles of the tiled attention
//! (3·64·k per thread). a_infer counts the same values for one layer only (nothing is kept
//! across layers without autodiff). These are deliberately upper-ish: the point is to refuse
//! sizes that cannot fit, not to predict the allocator to the byte.
//!
//! **Decoding state** per sequence is what `Lm::state_size_bytes` reports: KV caches 2·kv·4 B
//! per kept position, linear attention 4·h·(F·dh + F), RWKV 4·(h·dh² + h·dh) per layer.
//!
//! All arithmetic is in f64 (parameters saturate in u128), so absurd sizes give huge numbers,
//! never an overflow. [`available_memory`] reads `MemAvailable` from /proc/meminfo.

use crate::config::{MixerConfig, MlpKind, ModelConfig, NormKind, PositionConfig};
use crate::error::ModelError;

const F32: f64 = 4.0;
/// Rows of a query tile of the fused attention kernel.
const QUERY_BLOCK: f64 = crate::kernels::causal_attention::QUERY_BLOCK as f64;
/// Which of the project's fused kernels a device runs (`kernels::on_device`): all of the CPU
/// kernels (flex), only the attention kernels (the CubeCL softmax-family and chunked linear
/// attention kernels on wgpu / cuda), or none (ndarray, or any device with the kernels switched
/// off).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernels {
    None,
    Attention,
    Cpu,
}

impl Kernels {
    /// Attention keeps O(n) memory: no n×k scores are materialised.
    pub fn attention(self) -> bool {
        self != Kernels::None
    }
    /// The CPU kernels: fused loss, linear attention / RWKV without chunk matrices, score tiles
    /// in host memory.
    pub fn cpu(self) -> bool {
        self == Kernels::Cpu
    }
}

/// Training (autodiff keeps activations) or inference (one layer alive at a time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    Train,
    Infer,
}

fn sat_mul(a: u128, b: u128) -> u128 {
    a.saturating_mul(b)
}

/// Hidden width of the MLP, exactly as `Mlp::new` computes it.
fn mlp_hidden(config: &ModelConfig) -> u128 {
    let hidden = (config.mlp_ratio * config.d_model as f64).round() as usize as u128;
    match config.mlp {
        MlpKind::Gelu => hidden,
        MlpKind::Swiglu => sat_mul(2, hidden).div_ceil(3),
        MlpKind::None => 0,
    }
}

/// Parameters of a linear layer d_in → d_out.
fn linear(d_in: u128, d_out: u128, bias: bool) -> u128 {
    sat_mul(d_in, d_out).saturating_add(if bias { d_out } else { 0 })
}

fn mixer_params(mixer: &MixerConfig, config: &ModelConfig) -> u128 {
    mixer.spec().param_count(config)
}

fn norm_params(config: &ModelConfig) -> u128 {
    let d = config.d_model as u128;
    match config.norm {
        NormKind::Rms => d,
        NormKind::Layer => sat_mul(2, d),
    }
}

fn mlp_params(config: &ModelConfig) -> u128 {
    let d = config.d_model as u128;
    let m = mlp_hidden(config);
    let matrices = match config.mlp {
        MlpKind::Gelu => linear(d, m, config.bias),
        MlpKind::Swiglu => sat_mul(2, linear(d, m, config.bias)),
        MlpKind::None => return 0,
    };
    matrices.saturating_add(linear(m, d, config.bias))
}

/// Parameters of a block apart from its mixer: norms, MLP and short convolution.
fn block_common_params(config: &ModelConfig) -> u128 {
    let norms: u128 = if config.mlp == MlpKind::None { 1 } else { 2 };
    let conv = sat_mul(config.short_conv as u128 + 1, config.d_model as u128);
    let conv = if config.short_conv == 0 { 0 } else { conv };
    sat_mul(norms, norm_params(config))
        .saturating_add(mlp_params(config))
        .saturating_add(conv)
}

/// Exact parameter count of the model the config builds (saturating at u128::MAX). Needs
/// `vocab_size`.
pub fn param_count(config: &ModelConfig) -> Result<u128, ModelError> {
    let vocab = config.vocab()? as u128;
    let d = config.d_model as u128;
    let mut total = sat_mul(vocab, d);
    if matches!(config.position, PositionConfig::Learned) {
        total = total.saturating_add(sat_mul(config.max_seq_len as u128, d));
    }
    let block_common = block_common_params(config);
    for (mixer, count) in mixer_counts(config) {
        let block = block_common.saturating_add(mixer_params(mixer, config));
        total = total.saturating_add(sat_mul(count as u128, block));
    }
    total = total.saturating_add(norm_params(config));
    if !config.tie_embeddings {
        total = total.saturating_add(linear(d, vocab, false));
    }
    Ok(total)
}

/// (mixer, how many layers use it): the tiled pattern collapsed, without materialising a list
/// of n_layers entries (n_layers may be absurd in a config being checked).
fn mixer_counts(config: &ModelConfig) -> Vec<(&MixerConfig, usize)> {
    let pattern: &[MixerConfig] = if config.mixers.is_empty() {
        std::slice::from_ref(&config.mixer)
    } else {
        &config.mixers
    };
    let len = pattern.len().max(1);
    pattern
        .iter()
        .enumerate()
        .map(|(i, m)| {
            (
                m,
                config.n_layers / len + usize::from(i < config.n_layers % len),
            )
        })
        .filter(|(_, c)| *c > 0)
        .collect()
}

/// f32 values per token one block holds (see the module docs), at length n.
fn layer_values(
    mixer: &MixerConfig,
    config: &ModelConfig,
    n: f64,
    pass: Pass,
    kernels: Kernels,
) -> f64 {
    let d = config.d_model as f64;
    let m = mlp_hidden(config) as f64;
    let mlp = match config.mlp {
        MlpKind::Gelu => 2.0 * m + d,
        MlpKind::Swiglu => 4.0 * m + d,
        MlpKind::None => 0.0,
    };
    let dropout = if config.dropout > 0.0 && pass == Pass::Train {
        3.0 * d
    } else {
        0.0
    };
    // The convolution's padded input and its K products.
    let conv = if config.short_conv > 0 {
        (config.short_conv as f64 + 2.0) * d
    } else {
        0.0
    };
    // The attention family (the mixers with keys per query) and chunked linear attention are
    // fused wherever an attention kernel runs; the others only with the CPU kernels. Attention
    // dropout needs the probabilities, so training takes the materialised path.
    let spec = mixer.spec();
    let fused = if spec.keys_per_query(n).is_some() {
        kernels.attention() && !(config.attention_dropout > 0.0 && pass == Pass::Train)
    } else if matches!(mixer, MixerConfig::Linear(_)) {
        kernels.attention()
    } else {
        kernels.cpu()
    };
    let mixer_values = spec.activation_values(config, n, pass == Pass::Train, fused);
    6.0 * d + mlp + dropout + conv + mixer_values
}

/// Transient host bytes of the CPU attention kernel's score tiles (one layer at a time; the
/// GPU kernel's tiles live in on-chip memory).
fn fused_tiles(config: &ModelConfig, n: f64, kernels: Kernels) -> f64 {
    if !kernels.cpu() {
        return 0.0;
    }
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get()) as f64;
    mixer_counts(config)
        .iter()
        .filter_map(|(m, _)| m.spec().keys_per_query(n))
        .fold(0.0, f64::max)
        * 3.0
        * QUERY_BLOCK
        * threads
        * F32
}

/// Activation bytes of one forward (inference) or forward + backward (training) of `batch`
/// sequences of `seq_len` tokens, with the fused kernels the device runs.
pub fn activation_bytes(
    config: &ModelConfig,
    batch: usize,
    seq_len: usize,
    pass: Pass,
    kernels: Kernels,
) -> f64 {
    let n = seq_len as f64;
    let d = config.d_model as f64;
    let vocab = config.vocab_size.unwrap_or(0) as f64;
    let counts = mixer_counts(config);
    let per_layer = |m: &MixerConfig| layer_values(m, config, n, pass, kernels);
    let widest = counts.iter().map(|(m, _)| per_layer(m)).fold(0.0, f64::max);
    let per_token = match pass {
        Pass::Train => {
            let layers: f64 = counts.iter().map(|(m, c)| *c as f64 * per_layer(m)).sum();
            let logits = if kernels.cpu() {
                2.0 * vocab
            } else {
                3.0 * vocab
            };
            layers + widest + 3.0 * d + logits
        }
        Pass::Infer => widest + 2.0 * d + 2.0 * vocab,
    };
    batch as f64 * n * per_token * F32 + fused_tiles(config, n, kernels)
}

/// Decoding state of all layers per sequence after `seq_len` tokens, in bytes (equal to the sum
/// of `Lm::state_size_bytes`).
pub fn decode_state_bytes(config: &ModelConfig, seq_len: usize) -> f64 {
    let n = seq_len as f64;
    mixer_counts(config)
        .iter()
        .map(|(mixer, count)| {
            let bytes = mixer.spec().state_bytes(config, n);
            *count as f64 * bytes
        })
        .sum()
}

/// Bytes of the parameters (f32).
pub fn param_bytes(config: &ModelConfig) -> Result<f64, ModelError> {
    Ok(param_count(config)? as f64 * F32)
}

/// Peak bytes of one training step: parameters, gradients, the two AdamW moments (and the
/// gradient accumulator when `grad_accum > 1`), plus the activations.
pub fn training_bytes(
    config: &ModelConfig,
    batch: usize,
    seq_len: usize,
    grad_accum: usize,
    kernels: Kernels,
) -> Result<f64, ModelError> {
    let copies = if grad_accum > 1 { 5.0 } else { 4.0 };
    Ok(copies * param_bytes(config)?
        + activation_bytes(config, batch, seq_len, Pass::Train, kernels))
}

/// Peak bytes of evaluating `batch` sequences of `seq_len` tokens: parameters plus inference
/// activations.
pub fn inference_bytes(
    config: &ModelConfig,
    batch: usize,
    seq_len: usize,
    kernels: Kernels,
) -> Result<f64, ModelError> {
    Ok(param_bytes(config)? + activation_bytes(config, batch, seq_len, Pass::Infer, kernels))
}

/// Peak bytes of `zoo generate`: the prompt's forward pass from an empty state (`Lm::prefill`:
/// the mixers' full forward), then one token at a time; the state grows to prompt + max_tokens
/// tokens and is copied when it grows.
pub fn generation_bytes(
    config: &ModelConfig,
    prompt_len: usize,
    max_tokens: usize,
    kernels: Kernels,
) -> Result<f64, ModelError> {
    let total = prompt_len.saturating_add(max_tokens);
    Ok(inference_bytes(config, 1, prompt_len, kernels)? + 2.0 * decode_state_bytes(config, total))
}

/// Bytes of the attention diagnostics at `seq_len`: `Lm::attention_weights` returns the dense
/// [batch, heads, n, n] weights of every layer at once, and computing one layer's builds its
/// scores, mask and softmax.
pub fn attention_weights_bytes(
    config: &ModelConfig,
    batch: usize,
    seq_len: usize,
) -> Result<f64, ModelError> {
    let n = seq_len as f64;
    let maps = batch as f64 * config.n_heads as f64 * n * n * F32;
    Ok(inference_bytes(config, batch, seq_len, Kernels::None)?
        + maps * (config.n_layers as f64 + 3.0)
        + 2.0 * n * n)
}

/// Bytes the kernel says can still be allocated (`MemAvailable` in /proc/meminfo); None where
/// that cannot be read (not Linux, no /proc): callers then skip the comparison.
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_mem_available(&text)
}

fn parse_mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let mut words = line.split_whitespace().skip(1);
    let value: u64 = words.next()?.parse().ok()?;
    let scale = match words.next() {
        Some("kB") | Some("KB") => 1024,
        None => 1,
        Some(_) => return None,
    };
    value.checked_mul(scale)
}

/// Bytes for people: "3.2 GiB", "512 MiB", "1.5e6 TiB".
pub fn human_bytes(bytes: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    if !bytes.is_finite() {
        return "an unbounded amount".to_string();
    }
    let mut value = bytes.max(0.0);
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value >= 1e4 {
        format!("{value:.2e} {}", UNITS[unit])
    } else if value >= 100.0 || unit == 0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Refuses `needed` bytes above `available` with one line naming `key` and what was estimated;
/// `available = None` (unknown) accepts.
pub fn check_fits(
    key: &str,
    what: &str,
    needed: f64,
    available: Option<u64>,
    fix: &str,
) -> Result<(), ModelError> {
    match available {
        Some(avail) if needed > avail as f64 => Err(ModelError::config(
            key,
            &format!(
                "{what} needs about {} (estimated before allocating), but this machine has {} available (MemAvailable); {fix}",
                human_bytes(needed),
                human_bytes(avail as f64)
            ),
        )),
        _ => Ok(()),
    }
}

/// The key to blame when the parameters alone do not fit: the embedding or the layers.
pub fn dominant_size_key(config: &ModelConfig) -> &'static str {
    let d = config.d_model as f64;
    let embed = config.vocab_size.unwrap_or(0) as f64 * d;
    let layers = config.n_layers as f64 * 12.0 * d * d;
    if embed > layers {
        "model.vocab_size"
    } else if config.n_layers as f64 * 64.0 > d {
        "model.n_layers"
    } else {
        "model.d_model"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lm::Lm;
    use burn::prelude::*;

    fn mixers() -> Vec<MixerConfig> {
        let mut all = MixerConfig::examples();
        // Taylor-2 at its default feature width (the drifted size of the FLOPs table).
        all.push(MixerConfig::Linear(crate::config::LinearConfig {
            feature_map: crate::config::FeatureMap::Taylor2,
            normalize: true,
            chunk_size: 8,
            feature_dim: None,
        }));
        all
    }

    fn small(mixer: MixerConfig) -> ModelConfig {
        ModelConfig {
            vocab_size: Some(37),
            d_model: 32,
            n_layers: 2,
            n_heads: 4,
            max_seq_len: 64,
            mixer,
            position: PositionConfig::None,
            ..ModelConfig::default()
        }
    }

    fn variants() -> Vec<ModelConfig> {
        let mut out = Vec::new();
        for mixer in mixers() {
            let rwkv = !mixer.allows_grouped_kv();
            let base = small(mixer);
            out.push(base.clone());
            out.push(ModelConfig {
                tie_embeddings: false,
                bias: true,
                norm: NormKind::Layer,
                mlp: MlpKind::Swiglu,
                mlp_ratio: 2.7,
                position: PositionConfig::Learned,
                ..base.clone()
            });
            if !rwkv {
                out.push(ModelConfig {
                    n_kv_heads: Some(2),
                    n_layers: 3,
                    position: PositionConfig::Rope {
                        theta: 10_000.0,
                        interpolation: 1.0,
                        ntk_factor: 1.0,
                    },
                    ..base
                });
            }
        }
        // A hybrid: a pattern tiled over the layers.
        out.push(ModelConfig {
            n_layers: 4,
            mixers: vec![mixers()[0].clone(), mixers()[5].clone()],
            ..small(mixers()[0].clone())
        });
        out
    }

    #[test]
    fn param_count_equals_built_model() {
        let device = Device::flex();
        for config in variants() {
            let model = Lm::new(&config, &device).expect("valid test config");
            assert_eq!(
                param_count(&config).unwrap(),
                model.num_params() as u128,
                "{config:?}"
            );
        }
    }

    #[test]
    fn decode_state_equals_model_accounting() {
        let device = Device::flex();
        for config in variants() {
            let model = Lm::new(&config, &device).unwrap();
            for n in [1, 5, 64, 1000] {
                let reported: usize = model.state_size_bytes(n).iter().map(|l| l.bytes).sum();
                assert_eq!(
                    decode_state_bytes(&config, n),
                    reported as f64,
                    "{config:?}"
                );
            }
        }
    }

    #[test]
    fn absurd_sizes_give_huge_finite_numbers_without_panicking() {
        let config = ModelConfig {
            vocab_size: Some(usize::MAX),
            d_model: usize::MAX,
            n_layers: usize::MAX,
            n_heads: 1,
            mlp_ratio: 1e300,
            max_seq_len: usize::MAX,
            position: PositionConfig::Learned,
            tie_embeddings: false,
            ..ModelConfig::default()
        };
        assert_eq!(param_count(&config).unwrap(), u128::MAX);
        let train = training_bytes(&config, usize::MAX, usize::MAX, 2, Kernels::Cpu).unwrap();
        assert!(train > 1e30);
        assert!(generation_bytes(&config, usize::MAX, usize::MAX, Kernels::None).unwrap() > 1e30);
        assert!(attention_weights_bytes(&config, usize::MAX, usize::MAX).unwrap() > 1e30);
    }

    #[test]
    fn estimates_grow_with_sizes_and_softmax_is_quadratic_unfused() {
        let config = small(mixers()[0].clone());
        let a = activation_bytes(&config, 2, 1024, Pass::Train, Kernels::None);
        let b = activation_bytes(&config, 2, 2048, Pass::Train, Kernels::None);
        assert!(b > 3.5 * a, "{a} {b}");
        let c = activation_bytes(&config, 4, 1024, Pass::Train, Kernels::None);
        assert!((c / a - 2.0).abs() < 1e-9);
        let infer = activation_bytes(&config, 2, 1024, Pass::Infer, Kernels::None);
        assert!(infer < a);
    }

    #[test]
    fn a_gpu_attention_kernel_makes_softmax_linear_in_n_and_leaves_the_rest_unfused() {
        // wgpu / cuda run the CubeCL attention kernel but none of the CPU kernels.
        let softmax = small(mixers()[0].clone());
        let at = |n, kernels| activation_bytes(&softmax, 2, n, Pass::Train, kernels);
        let (a, b) = (at(1024, Kernels::Attention), at(2048, Kernels::Attention));
        assert!(
            b < 2.1 * a,
            "softmax with a GPU attention kernel: {a} → {b}"
        );
        assert!(a < at(1024, Kernels::None), "no scores are counted");
        // The loss and the other mixers' chunk matrices are unfused there, as on ndarray.
        for mixer in mixers().into_iter().skip(1) {
            let config = small(mixer.clone());
            let bytes = |kernels| activation_bytes(&config, 2, 1024, Pass::Train, kernels);
            if matches!(mixer, MixerConfig::Linear(_)) {
                // Chunked linear attention has a GPU kernel too: no chunk matrices there.
                assert!(
                    bytes(Kernels::Attention) < bytes(Kernels::None),
                    "{mixer:?}"
                );
            } else if mixer.spec().keys_per_query(1024.0).is_none() {
                assert_eq!(bytes(Kernels::Attention), bytes(Kernels::None), "{mixer:?}");
                assert!(bytes(Kernels::Cpu) < bytes(Kernels::None), "{mixer:?}");
            } else {
                assert!(
                    bytes(Kernels::Attention) < bytes(Kernels::None),
                    "{mixer:?}"
                );
            }
        }
    }

    #[test]
    fn refusal_is_one_line_naming_the_key() {
        let err = check_fits(
            "train.stages.0.seq_len",
            "training at batch 8 × seq_len 4096",
            3.0 * 1024f64.powi(3),
            Some(1 << 30),
            "lower it",
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("train.stages.0.seq_len: "), "{err}");
        assert!(err.contains("3.0 GiB") && err.contains("1.0 GiB"), "{err}");
        assert!(!err.contains('\n'));
        assert!(check_fits("k", "w", 1e30, None, "").is_ok());
        assert!(check_fits("k", "w", 10.0, Some(11), "").is_ok());
    }

    #[test]
    fn meminfo_is_parsed() {
        let text = "MemTotal:       32000000 kB\nMemFree:  1 kB\nMemAvailable:   23153512 kB\n";
        assert_eq!(parse_mem_available(text), Some(23153512 * 1024));
        assert_eq!(parse_mem_available("MemTotal: 5 kB\n"), None);
        assert_eq!(human_bytes(1536.0), "1.5 KiB");
        assert!(human_bytes(1e30).contains("TiB"));
    }
}
