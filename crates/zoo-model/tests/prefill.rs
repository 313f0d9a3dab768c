//! Prompt prefill from an empty state (`forward_with_state` at pos 0, `Lm::prefill`) against the
//! slow, obviously correct paths: on flex the attention mixers read a prompt through the fused
//! O(n)-memory kernel; the same weights on ndarray read it through the composed tensor ops
//! (Burn's causal op, banded, block-gathered) and token by token through the decoding step.
//! Outputs, the returned state and the decoding that continues from it must agree, and so must
//! the training forward (`TokenMixer::forward`, the token-major kernel on flex).

mod common;

use burn::prelude::*;
use common::*;
use zoo_model::init::Init;
use zoo_model::{Lm, Mixer, MixerConfig, MixerState, ModelConfig, PositionConfig, TokenMixer};

const D_MODEL: usize = 32;

#[allow(deprecated)]
fn ndarray() -> Device {
    Device::ndarray()
}

fn rope() -> PositionConfig {
    PositionConfig::Rope {
        theta: 10_000.0,
        interpolation: 1.0,
        ntk_factor: 1.0,
    }
}

fn model(mixer: MixerConfig, position: PositionConfig, kv_heads: usize) -> ModelConfig {
    ModelConfig {
        vocab_size: Some(29),
        d_model: D_MODEL,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: Some(kv_heads),
        mlp_ratio: 2.0,
        mixer,
        position,
        max_seq_len: 256,
        // Short, so log-n scaling is active (> 1) over most of the prompt.
        train_len: Some(32),
        init_seed: 5,
        // The tolerances below were set for bias-free projections (biases shift the logits'
        // scale, not the paths' agreement, which backends.rs covers with biases on).
        bias: false,
        ..ModelConfig::default()
    }
}

/// (name, config, prompt length): lengths straddle the kernel's 64-row query tiles and end in
/// partial windows / blocks.
fn cases() -> Vec<(&'static str, ModelConfig, usize)> {
    let window = |window, dilation, global_tokens| {
        MixerConfig::SlidingWindow(zoo_model::SlidingWindowConfig {
            window,
            dilation,
            global_tokens,
        })
    };
    let bigbird = |block_size, seed| {
        MixerConfig::Bigbird(zoo_model::BigBirdConfig {
            block_size,
            window_blocks: 2,
            global_blocks: 1,
            random_blocks: 2,
            seed,
        })
    };
    vec![
        (
            "softmax + ALiBi + log-n + GQA",
            model(
                MixerConfig::Softmax(zoo_model::SoftmaxConfig {
                    logit_scale: Some(0.3),
                    log_n_scaling: true,
                }),
                PositionConfig::Alibi,
                2,
            ),
            130,
        ),
        (
            "softmax + RoPE",
            model(
                MixerConfig::Softmax(zoo_model::SoftmaxConfig {
                    logit_scale: None,
                    log_n_scaling: false,
                }),
                rope(),
                4,
            ),
            97,
        ),
        (
            "sliding window (5, dilation 2, 3 globals) + ALiBi + GQA",
            model(window(5, 2, 3), PositionConfig::Alibi, 2),
            150,
        ),
        (
            "sliding window (40, no globals) + RoPE",
            model(window(40, 1, 0), rope(), 4),
            150,
        ),
        (
            "sliding window (70, 2 globals) + RoPE, prompt shorter than the span",
            model(window(70, 1, 2), rope(), 1),
            33,
        ),
        (
            "bigbird (block 8) + ALiBi + GQA",
            model(bigbird(8, 7), PositionConfig::Alibi, 2),
            130,
        ),
        (
            "bigbird (block 16) + RoPE",
            model(bigbird(16, 3), rope(), 4),
            150,
        ),
    ]
}

fn mixer(cfg: &ModelConfig, device: &Device) -> Mixer {
    // Init draws every weight from the project's own RNG: the same mixer on every backend.
    Mixer::new(&cfg.mixer, cfg, &mut Init::new(cfg.init_seed, device))
}

fn on(device: &Device, v: &[f32], shape: [usize; 3]) -> Tensor<3> {
    Tensor::from_data(TensorData::new(v.to_vec(), shape), device)
}

/// The tensors of a state, in a fixed order, with their names (None where absent).
fn state_tensors(state: &MixerState) -> Vec<(&'static str, Option<Vec<f32>>)> {
    let v = |t: &Option<Tensor<4>>| t.clone().map(values);
    match state {
        MixerState::Kv(kv) => vec![("k", v(&kv.k)), ("v", v(&kv.v))],
        MixerState::Window(w) => vec![
            ("global_k", v(&w.global_k)),
            ("global_v", v(&w.global_v)),
            ("recent_k", v(&w.recent_k)),
            ("recent_v", v(&w.recent_v)),
        ],
        other => panic!("unexpected state {other:?}"),
    }
}

fn assert_states_close(actual: &MixerState, expected: &MixerState, what: &str) {
    assert_eq!(actual.pos(), expected.pos(), "{what}: pos");
    for ((name, a), (_, e)) in state_tensors(actual)
        .into_iter()
        .zip(state_tensors(expected))
    {
        match (a, e) {
            (Some(a), Some(e)) => {
                assert_eq!(a.len(), e.len(), "{what}: state {name} length");
                let (abs, rel) = errors(&a, &to_f64(&e));
                println!("{what}: state {name} max-abs {abs:.2e}, rel {rel:.2e}");
                assert_close_f32(&a, &e, 1e-5, 1e-5, &format!("{what}: state {name}"));
            }
            (None, None) => {}
            (a, e) => panic!(
                "{what}: state {name} present {} vs {}",
                a.is_some(),
                e.is_some()
            ),
        }
    }
}

fn report_close(actual: &[f32], expected: &[f32], what: &str) {
    let (abs, rel) = errors(actual, &to_f64(expected));
    let scale = expected.iter().fold(0f32, |m, x| m.max(x.abs()));
    println!("{what}: max-abs {abs:.2e}, rel {rel:.2e} (max |expected| {scale:.2e})");
    assert_close_f32(actual, expected, 1e-5, 1e-4, what);
}

#[test]
fn fused_prefill_equals_composed_and_stepwise_paths() {
    let flex = device();
    let nd = ndarray();
    assert!(
        zoo_model::kernels::fused_on(&flex) && !zoo_model::kernels::fused_on(&nd),
        "the test needs the fused path on flex and the composed one on ndarray"
    );
    let b = 2;
    let more = 3;
    for (name, cfg, n) in cases() {
        cfg.validate().unwrap();
        let (fused, composed) = (mixer(&cfg, &flex), mixer(&cfg, &nd));
        // Inputs of std 8 against weights of std ~0.02 give logits of order 1: peaked, not
        // near-uniform, attention, so the test sees the pattern, the scaling and the biases.
        let prompt = randn_vec(b * n * D_MODEL, 17, 8.0);
        let next = randn_vec(b * more * D_MODEL, 23, 8.0);

        // Prefill: fused on flex, composed on ndarray.
        let (y_fused, s_fused) = fused.forward_with_state(
            on(&flex, &prompt, [b, n, D_MODEL]),
            fused.init_state(b, &flex),
        );
        let (y_composed, s_composed) = composed.forward_with_state(
            on(&nd, &prompt, [b, n, D_MODEL]),
            composed.init_state(b, &nd),
        );
        // Token by token on ndarray: the decoding step, the obviously correct path.
        let x_nd = on(&nd, &prompt, [b, n, D_MODEL]);
        let mut s_stepped = composed.init_state(b, &nd);
        let mut stepped = Vec::with_capacity(n);
        for t in 0..n {
            let (y, s) = composed.step(
                x_nd.clone().narrow(1, t, 1).reshape([b, D_MODEL]),
                s_stepped,
            );
            stepped.push(y.unsqueeze_dim::<3>(1));
            s_stepped = s;
        }
        let stepped = values(Tensor::cat(stepped, 1));
        let y_fused = values(y_fused);
        report_close(
            &y_fused,
            &values(y_composed),
            &format!("{name}: fused vs composed prefill"),
        );
        report_close(
            &y_fused,
            &stepped,
            &format!("{name}: fused prefill vs token by token"),
        );
        // The training forward reads the prompt through the token-major kernel of the fused
        // q/k/v projection (kernels/qkv_attention.rs) on flex.
        report_close(
            &values(fused.forward(on(&flex, &prompt, [b, n, D_MODEL]))),
            &stepped,
            &format!("{name}: fused training forward vs token by token"),
        );
        assert_states_close(&s_fused, &s_composed, &format!("{name}: fused vs composed"));
        assert_states_close(
            &s_fused,
            &s_stepped,
            &format!("{name}: fused vs token by token"),
        );

        // Decoding continues from the prefilled state as from the stepped one.
        let (y_next, _) = fused.forward_with_state(on(&flex, &next, [b, more, D_MODEL]), s_fused);
        let (y_ref, _) = composed.forward_with_state(on(&nd, &next, [b, more, D_MODEL]), s_stepped);
        report_close(
            &values(y_next),
            &values(y_ref),
            &format!("{name}: tokens after the prompt"),
        );
    }
}

/// Every mixer, including the recurrent ones whose prefill did not change.
fn lm_configs() -> Vec<(String, ModelConfig)> {
    let mut mixers: Vec<(String, MixerConfig)> = cases()
        .into_iter()
        .map(|(name, c, _)| (name.split(" +").next().unwrap().to_string(), c.mixer))
        .collect();
    mixers.push((
        "linear".into(),
        MixerConfig::Linear(zoo_model::LinearConfig {
            feature_map: zoo_model::FeatureMap::Elu,
            normalize: true,
            chunk_size: 8,
            feature_dim: None,
        }),
    ));
    mixers.push((
        "rwkv".into(),
        MixerConfig::Rwkv(zoo_model::RwkvConfig {
            chunk_size: 8,
            data_dependent_decay: true,
            decay_rank: 4,
        }),
    ));
    let mut out = Vec::new();
    for (name, m) in mixers {
        for p in [PositionConfig::Alibi, rope(), PositionConfig::None] {
            let kv = if matches!(m, MixerConfig::Rwkv(_)) {
                4
            } else {
                2
            };
            let cfg = model(m.clone(), p.clone(), kv);
            if cfg.validate().is_ok() {
                out.push((format!("{name} + {}", p.kind()), cfg));
            }
        }
    }
    out
}

#[test]
fn lm_prefill_returns_the_last_logits_of_forward() {
    for device in [device(), ndarray()] {
        let (b, n) = (2, 77);
        for (name, cfg) in lm_configs() {
            let lm = Lm::new(&cfg, &device).unwrap();
            let vocab = cfg.vocab().unwrap();
            let toks = tokens(b, n + 1, vocab, 31, &device);
            let full = lm.forward(toks.clone()); // [b, n+1, V]
            let at = |t: usize| values(full.clone().narrow(1, t, 1).reshape([b, vocab]));

            let (last, state) = lm.prefill(toks.clone().narrow(1, 0, n), lm.init_state(b, &device));
            assert_eq!(last.dims(), [b, vocab], "{name}: prefill logits shape");
            assert_eq!(state.pos, n);
            report_close(
                &values(last),
                &at(n - 1),
                &format!("{name} on {device:?}: prefill last logits"),
            );
            // The returned state decodes the next token like the full forward.
            let (next, _) = lm.step(toks.clone().narrow(1, n, 1).reshape([b]), state);
            report_close(
                &values(next),
                &at(n),
                &format!("{name} on {device:?}: step after prefill"),
            );

            // A prompt read in two parts (the second from a non-empty state).
            let (_, state) = lm.prefill(toks.clone().narrow(1, 0, 40), lm.init_state(b, &device));
            let (last, state) = lm.prefill(toks.clone().narrow(1, 40, n - 40), state);
            assert_eq!(state.pos, n);
            report_close(
                &values(last),
                &at(n - 1),
                &format!("{name} on {device:?}: prefill in two parts"),
            );
        }
    }
}
