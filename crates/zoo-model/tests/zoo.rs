//! Every mixer × position encoding through the whole model: causality, step-by-step decoding ≡
//! full forward, state carry, refusal of nonsense combinations, overfitting a batch, and the
//! safetensors round trip.

mod common;

use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use common::*;
use zoo_model::{FeatureMap, Lm, MixerConfig, MlpKind, ModelConfig, PositionConfig, checkpoint};

const VOCAB: usize = 29;

fn mixers() -> Vec<MixerConfig> {
    MixerConfig::examples()
}

fn positions() -> Vec<PositionConfig> {
    vec![
        PositionConfig::None,
        PositionConfig::Sinusoidal,
        PositionConfig::Learned,
        PositionConfig::Rope {
            theta: 10_000.0,
            interpolation: 1.0,
            ntk_factor: 1.0,
        },
        PositionConfig::Alibi,
    ]
}

fn tiny(mixer: MixerConfig, position: PositionConfig) -> ModelConfig {
    ModelConfig {
        vocab_size: Some(VOCAB),
        d_model: 16,
        n_layers: 2,
        n_heads: 2,
        n_kv_heads: if mixer.allows_grouped_kv() {
            Some(1)
        } else {
            None
        },
        mlp_ratio: 2.0,
        mixer,
        position,
        max_seq_len: 64,
        train_len: Some(8),
        init_seed: 3,
        ..ModelConfig::default()
    }
}

/// Every valid (mixer, position) model, and every mixer in Zoology's block (short
/// convolution, no MLP) with its first valid position encoding.
fn models() -> Vec<(String, ModelConfig)> {
    let mut out = Vec::new();
    for m in mixers() {
        let mut zoology = None;
        for p in positions() {
            let cfg = tiny(m.clone(), p.clone());
            if cfg.validate().is_ok() {
                out.push((format!("{} + {}", m.kind(), p.kind()), cfg.clone()));
                zoology.get_or_insert(ModelConfig {
                    short_conv: 3,
                    mlp: MlpKind::None,
                    ..cfg
                });
            }
        }
        let cfg = zoology.expect("every mixer has a valid position encoding");
        out.push((
            format!(
                "{} + {} + short_conv 3, no MLP",
                m.kind(),
                cfg.position.kind()
            ),
            cfg,
        ));
    }
    out
}

#[test]
fn nonsense_combinations_are_refused_with_field_names() {
    let cases = [
        (
            tiny(mixers()[2].clone(), PositionConfig::Alibi),
            "model.mixer.kind + model.position.kind",
        ),
        (
            tiny(mixers()[5].clone(), PositionConfig::Alibi),
            "model.position.kind",
        ),
        (
            tiny(mixers()[5].clone(), positions()[3].clone()),
            "rwkv with rope",
        ),
        (
            tiny(
                MixerConfig::Linear(zoo_model::LinearConfig {
                    feature_map: FeatureMap::Identity,
                    normalize: true,
                    chunk_size: 8,
                    feature_dim: None,
                }),
                PositionConfig::None,
            ),
            "model.mixer.normalize",
        ),
        (
            ModelConfig {
                d_model: 18,
                n_heads: 4,
                ..tiny(mixers()[0].clone(), PositionConfig::None)
            },
            "model.d_model",
        ),
        (
            ModelConfig {
                n_kv_heads: Some(3),
                n_heads: 4,
                ..tiny(mixers()[0].clone(), PositionConfig::None)
            },
            "model.n_kv_heads",
        ),
        (
            ModelConfig {
                mixers: vec![mixers()[0].clone(); 3],
                ..tiny(mixers()[0].clone(), PositionConfig::None)
            },
            "model.mixers",
        ),
    ];
    for (cfg, needle) in cases {
        let err = Lm::new(&cfg, &device())
            .err()
            .unwrap_or_else(|| panic!("{needle}: accepted"))
            .to_string();
        assert!(err.contains(needle), "error `{err}` should name `{needle}`");
        assert!(!err.contains('\n'), "error must be one line: {err}");
    }
    // Valid matrix is not empty and covers every mixer.
    assert!(
        models().len() >= 30,
        "{} valid combinations",
        models().len()
    );
    let err = tiny(mixers()[0].clone(), PositionConfig::Learned)
        .check_length(65)
        .unwrap_err()
        .to_string();
    assert!(err.contains("model.max_seq_len"), "{err}");
}

#[test]
fn causality_every_mixer_and_position() {
    let device = device();
    let n = 23;
    let t = 11;
    for (name, cfg) in models() {
        let model = Lm::new(&cfg, &device).unwrap();
        let a = tokens(1, n, VOCAB, 1, &device);
        let mut v = a.to_data().try_into_vec_as::<i64>().unwrap();
        v[t] = (v[t] + 5) % VOCAB as i64;
        let b = Tensor::<2, Int>::from_data(TensorData::new(v, [1, n]), &device);
        let la = values(model.forward(a));
        let lb = values(model.forward(b));
        let before = t * VOCAB;
        assert_close_f32(
            &lb[..before],
            &la[..before],
            1e-5,
            1e-5,
            &format!("{name}: logits before the changed token"),
        );
        let changed = la[before..]
            .iter()
            .zip(&lb[before..])
            .any(|(x, y)| (x - y).abs() > 1e-4);
        assert!(
            changed,
            "{name}: changing token {t} changed nothing after it (the test would be vacuous)"
        );
    }
}

#[test]
fn step_by_step_decoding_equals_full_forward() {
    let device = device();
    let n = 19;
    for (name, cfg) in models() {
        let model = Lm::new(&cfg, &device).unwrap();
        let toks = tokens(2, n, VOCAB, 2, &device);
        let full = model.forward(toks.clone()); // [2, n, V]
        let mut state = model.init_state(2, &device);
        let mut steps = Vec::new();
        for i in 0..n {
            let (logits, s) = model.step(toks.clone().narrow(1, i, 1).reshape([2]), state);
            steps.push(logits.unsqueeze_dim::<3>(1));
            state = s;
        }
        let stepped = Tensor::cat(steps, 1);
        assert_close_f32(
            &values(stepped),
            &values(full),
            1e-4,
            1e-4,
            &format!("{name}: step vs forward"),
        );
    }
}

#[test]
fn carried_state_equals_one_run() {
    let device = device();
    let n = 21;
    let t = 9;
    for (name, cfg) in models() {
        let model = Lm::new(&cfg, &device).unwrap();
        let toks = tokens(1, n, VOCAB, 4, &device);
        let full = model.forward(toks.clone());
        let state = model.init_state(1, &device);
        let (first, state) = model.forward_with_state(toks.clone().narrow(1, 0, t), state);
        let (second, state) = model.forward_with_state(toks.narrow(1, t, n - t), state);
        assert_eq!(state.pos, n);
        let joined = Tensor::cat(vec![first, second], 1);
        assert_close_f32(
            &values(joined),
            &values(full),
            1e-4,
            1e-4,
            &format!("{name}: carried state"),
        );
    }
}

#[test]
fn every_mixer_overfits_one_batch() {
    let device = device().autodiff();
    let positions = [
        PositionConfig::None,
        PositionConfig::Rope {
            theta: 10_000.0,
            interpolation: 1.0,
            ntk_factor: 1.0,
        },
    ];
    for mixer in mixers() {
        // RoPE where the mixer takes it (the recurrent mixers encode position themselves).
        let position = if tiny(mixer.clone(), positions[1].clone()).validate().is_ok() {
            &positions[1]
        } else {
            &positions[0]
        };
        let cfg = ModelConfig {
            d_model: 32,
            n_kv_heads: None,
            ..tiny(mixer.clone(), position.clone())
        };
        let mut model = Lm::new(&cfg, &device).unwrap();
        let mut optim = AdamWConfig::new().with_weight_decay(0.0).init();
        let toks = tokens(4, 17, VOCAB, 9, &device);
        let inputs = toks.clone().narrow(1, 0, 16);
        let targets = toks.narrow(1, 1, 16);
        let mask = Tensor::<2>::ones([4, 16], &device);
        let mut first = None;
        let mut last = 0.0;
        for _ in 0..150 {
            let loss = model.loss(inputs.clone(), targets.clone(), mask.clone());
            last = loss.clone().into_scalar::<f32>() as f64;
            first.get_or_insert(last);
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(1e-2, model, grads);
        }
        let first = first.unwrap();
        assert!(
            last < 0.1 * first,
            "{}: loss {first:.3} → {last:.3}, not a 90% drop",
            mixer.kind()
        );
    }
}

#[test]
fn safetensors_round_trip_and_mismatch() {
    let device = device();
    let dir = std::env::temp_dir().join(format!("zoo-ckpt-{}", std::process::id()));
    for (name, cfg) in models().into_iter().step_by(3) {
        let model = Lm::new(&cfg, &device).unwrap();
        checkpoint::save(&model, &dir).unwrap();
        let loaded = checkpoint::load(&dir, &device).unwrap();
        let toks = tokens(1, 13, VOCAB, 5, &device);
        assert_eq!(
            values(model.forward(toks.clone())),
            values(loaded.forward(toks)),
            "{name}: logits after reload"
        );
    }
    // A checkpoint of one shape refuses a model of another, naming the tensor.
    // Without biases, so that the first tensor that differs is a weight matrix.
    let small_cfg = ModelConfig {
        bias: false,
        ..tiny(mixers()[0].clone(), PositionConfig::None)
    };
    let small = Lm::new(&small_cfg, &device).unwrap();
    checkpoint::save(&small, &dir).unwrap();
    let wider = ModelConfig {
        d_model: 32,
        ..small_cfg
    };
    let err = checkpoint::load_with_config(&dir, &wider, &device)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("has shape [16, 8]") && err.contains("expects [32, 16]"),
        "{err}"
    );
    let other = tiny(mixers()[2].clone(), PositionConfig::None);
    let err = checkpoint::load_with_config(&dir, &other, &device)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("has no tensor"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn training_path_equals_inference_path() {
    // Softmax trains through an explicit masked softmax and evaluates through the fused op;
    // every mixer must give the same logits on a plain and on an autodiff device.
    let plain = device();
    let ad = device().autodiff();
    for (name, cfg) in models() {
        let a = Lm::new(&cfg, &plain).unwrap();
        let b = Lm::new(&cfg, &ad).unwrap();
        let la = values(a.forward(tokens(2, 23, VOCAB, 8, &plain)));
        let lb = values(b.forward(tokens(2, 23, VOCAB, 8, &ad)));
        assert_close_f32(
            &lb,
            &la,
            1e-5,
            1e-5,
            &format!("{name}: autodiff vs plain forward"),
        );
    }
}

/// Every kind the config accepts has at least one example in the every-mixer list
/// (`MixerConfig::examples()` is generated from the same table as the enum, but a kind whose
/// `examples()` came back empty would silently skip every test above).
#[test]
fn examples_cover_every_mixer_kind() {
    let err = serde_json::from_str::<MixerConfig>(r#"{"kind": "no_such_mixer"}"#)
        .expect_err("an unknown kind is refused")
        .to_string();
    let examples: Vec<&str> = mixers().iter().map(|m| m.kind()).collect();
    for kind in MixerConfig::KINDS {
        assert!(
            err.contains(&format!("`{kind}`")),
            "serde does not accept `{kind}`: {err}"
        );
        assert!(
            examples.contains(kind),
            "MixerConfig::examples() has no `{kind}`: the every-mixer tests would skip it"
        );
    }
}
