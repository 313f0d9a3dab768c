//! Cross-backend agreement: the same model (init is a pure function of config and init_seed)
//! gives the same logits and the same embedding gradients on flex, ndarray and wgpu, and trains
//! on wgpu.
//!
//! wgpu needs a GPU or a software driver (Mesa lavapipe); where none answers, the wgpu parts
//! print why and are skipped, unless `ZOO_REQUIRE_WGPU=1`, which turns that into a failure.

mod common;

use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use common::{assert_close, errors, to_f64, tokens, values, wgpu};
use zoo_model::config::{FeatureMap, MixerConfig, ModelConfig, PositionConfig};
use zoo_model::{Lm, masked_cross_entropy};

const VOCAB: usize = 64;
const BATCH: usize = 2;
const SEQ: usize = 24;

#[allow(deprecated)]
fn ndarray() -> Device {
    Device::ndarray()
}

fn config(mixer: MixerConfig, position: PositionConfig) -> ModelConfig {
    ModelConfig {
        vocab_size: Some(VOCAB),
        d_model: 32,
        n_layers: 2,
        n_heads: 2,
        mlp_ratio: 2.0,
        mixer,
        position,
        max_seq_len: 64,
        init_seed: 11,
        ..ModelConfig::default()
    }
}

/// softmax + RoPE, softmax with the output head tied to the embedding, Katharopoulos linear
/// attention (elu + 1), Gated DeltaNet and Mamba-2, whose chunked training forms (ndarray, wgpu)
/// span several chunks of the 24 tokens and which run the fused kernels on flex.
fn configs() -> Vec<(&'static str, ModelConfig)> {
    vec![
        (
            "softmax+rope",
            config(
                MixerConfig::Softmax(zoo_model::SoftmaxConfig {
                    logit_scale: None,
                    log_n_scaling: false,
                }),
                PositionConfig::Rope {
                    theta: 10_000.0,
                    interpolation: 1.0,
                    ntk_factor: 1.0,
                },
            ),
        ),
        (
            "softmax, tied embedding",
            ModelConfig {
                tie_embeddings: true,
                ..config(
                    MixerConfig::Softmax(zoo_model::SoftmaxConfig {
                        logit_scale: None,
                        log_n_scaling: false,
                    }),
                    PositionConfig::None,
                )
            },
        ),
        (
            "linear(elu)+sinusoidal",
            config(
                MixerConfig::Linear(zoo_model::LinearConfig {
                    feature_map: FeatureMap::Elu,
                    normalize: true,
                    chunk_size: 8,
                    feature_dim: None,
                }),
                PositionConfig::Sinusoidal,
            ),
        ),
        (
            "gated_deltanet",
            config(
                MixerConfig::GatedDeltanet(zoo_model::GatedDeltaNetConfig {
                    chunk_size: 8,
                    conv_size: 4,
                }),
                PositionConfig::None,
            ),
        ),
        (
            "mamba2",
            config(
                MixerConfig::Mamba2(zoo_model::Mamba2Config {
                    state_size: 8,
                    expand: 2,
                    conv_size: 4,
                    chunk_size: 8,
                }),
                PositionConfig::None,
            ),
        ),
    ]
}

/// Token ids, targets and a loss mask (the last third of each row is masked out) on `device`.
fn batch(device: &Device) -> (Tensor<2, Int>, Tensor<2, Int>, Tensor<2>) {
    let inputs = tokens(BATCH, SEQ, VOCAB, 5, device);
    let targets = tokens(BATCH, SEQ, VOCAB, 6, device);
    let mask: Vec<f32> = (0..BATCH * SEQ)
        .map(|i| if i % SEQ < 2 * SEQ / 3 { 1.0 } else { 0.0 })
        .collect();
    (
        inputs,
        targets,
        Tensor::from_data(TensorData::new(mask, [BATCH, SEQ]), device),
    )
}

fn logits(cfg: &ModelConfig, device: &Device) -> Vec<f32> {
    let model = Lm::new(cfg, device).unwrap();
    let (inputs, _, _) = batch(device);
    values(model.forward(inputs))
}

/// (loss, ∂loss/∂embed.weight) on `device`.
fn embedding_grad(cfg: &ModelConfig, device: &Device) -> (f32, Vec<f32>) {
    let ad = device.clone().autodiff();
    let model = Lm::new(cfg, &ad).unwrap();
    let (inputs, targets, mask) = batch(&ad);
    let loss = masked_cross_entropy(model.forward(inputs), targets, mask);
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    let g = grads
        .get::<2>(model.embed.weight.id)
        .expect("the embedding has a gradient");
    (loss.into_scalar::<f32>(), values(g))
}

fn backends() -> Vec<(&'static str, Device)> {
    let mut out = vec![("ndarray", ndarray())];
    if let Some(device) = wgpu() {
        out.push(("wgpu", device));
    }
    out
}

#[test]
fn init_is_identical_on_every_backend() {
    let cfg = &configs()[0].1;
    let weights = |device: &Device| values(Lm::new(cfg, device).unwrap().embed.weight.val());
    let reference = weights(&Device::flex());
    for (name, device) in backends() {
        assert_eq!(
            weights(&device),
            reference,
            "{name}: the initial embedding differs from flex"
        );
    }
}

#[test]
fn logits_agree_across_backends() {
    for (label, cfg) in configs() {
        let reference = to_f64(&logits(&cfg, &Device::flex()));
        assert_eq!(reference.len(), BATCH * SEQ * VOCAB);
        for (name, device) in backends() {
            let actual = logits(&cfg, &device);
            let (abs, rel) = errors(&actual, &reference);
            println!("{label}: logits {name} vs flex: max-abs {abs:.3e}, max-rel {rel:.3e}");
            assert_close(
                &actual,
                &reference,
                1e-4,
                1e-4,
                &format!("{label}: logits {name} vs flex"),
            );
        }
    }
}

#[test]
fn embedding_gradients_agree_across_backends() {
    for (label, cfg) in configs() {
        let (loss, grad) = embedding_grad(&cfg, &Device::flex());
        let reference = to_f64(&grad);
        // A gradient that is all zeros would agree trivially.
        assert!(
            reference.iter().any(|g| g.abs() > 1e-4),
            "{label}: the embedding gradient is ~0"
        );
        for (name, device) in backends() {
            let (l, actual) = embedding_grad(&cfg, &device);
            let (abs, rel) = errors(&actual, &reference);
            println!(
                "{label}: loss {name} {l:.6} vs flex {loss:.6}; embedding grad max-abs {abs:.3e}, max-rel {rel:.3e}"
            );
            assert!(
                (l - loss).abs() <= 1e-4 * loss.abs().max(1.0),
                "{label}: loss {name} {l} vs flex {loss}"
            );
            assert_close(
                &actual,
                &reference,
                1e-3,
                1e-3,
                &format!("{label}: embedding grad {name} vs flex"),
            );
        }
    }
}

#[test]
fn wgpu_training_lowers_the_loss() {
    let Some(device) = wgpu() else { return };
    let ad = device.autodiff();
    let cfg = &configs()[0].1;
    let mut model = Lm::new(cfg, &ad).unwrap();
    let mut optim = AdamWConfig::new().with_weight_decay(0.0).init();
    let (inputs, targets, mask) = batch(&ad);
    let mut losses = Vec::new();
    for _ in 0..20 {
        let loss =
            masked_cross_entropy(model.forward(inputs.clone()), targets.clone(), mask.clone());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        losses.push(loss.into_scalar::<f32>());
        model = optim.step(1e-2, model, grads);
    }
    let (first, last) = (losses[0], *losses.last().unwrap());
    println!("wgpu: 20 AdamW steps on one batch: loss {first:.4} -> {last:.4}");
    assert!(
        losses.iter().all(|l| l.is_finite()),
        "non-finite loss on wgpu: {losses:?}"
    );
    assert!(
        last < 0.7 * first,
        "wgpu training lowered the loss by less than 30%: {losses:?}"
    );
}
