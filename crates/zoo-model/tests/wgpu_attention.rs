//! The CubeCL attention kernel (kernels/cube_attention.rs) on wgpu under autodiff against Burn's
//! composed path (dense scores, masked softmax, weighted sum; on flex, see `run`): outputs and
//! the gradients of q, k, v for causal attention (sequence lengths below, at, across and
//! between the 32-row tiles; head dims 8, 16 and 32), ALiBi, log-n scaling, sliding windows
//! with dilation and globals, and BigBird; then whole models (softmax with ALiBi and log-n
//! scaling, sliding window, BigBird) on wgpu against flex.
//!
//! wgpu needs a GPU or a software driver (Mesa lavapipe); where none answers the tests print
//! why and pass, unless `ZOO_REQUIRE_WGPU=1`, which turns that into a failure.

mod common;

use burn::optim::GradientsParams;
use burn::prelude::*;
use common::{
    assert_close, composed_attention, errors, randn_vec, tensor, to_f64, tokens, values, wgpu,
};
use zoo_model::attention::log_n_factors;
use zoo_model::attention::pattern::{BigBirdPattern, WindowPattern};
use zoo_model::config::{MixerConfig, ModelConfig, PositionConfig};
use zoo_model::kernels::{self, KeyPattern};
use zoo_model::{BigBirdConfig, Lm, SlidingWindowConfig, SoftmaxConfig, masked_cross_entropy};

struct Case {
    b: usize,
    h: usize,
    n: usize,
    d: usize,
    scale: f32,
    slopes: Vec<f32>,
    /// L_train of log-n scaling: q is multiplied by max(1, ln(i+1)/ln L) first, as the
    /// softmax mixer does before calling the kernel.
    log_n: Option<usize>,
    pattern: KeyPattern,
}

impl Case {
    fn allowed(&self, i: usize, j: usize) -> bool {
        match &self.pattern {
            KeyPattern::Causal => j <= i,
            KeyPattern::Window(p) => p.allowed(i, j),
            KeyPattern::BigBird(p) => p.allowed(i, j),
        }
    }
    fn len(&self) -> usize {
        self.b * self.h * self.n * self.d
    }
    fn shape(&self) -> [usize; 4] {
        [self.b, self.h, self.n, self.d]
    }
}

fn causal(b: usize, h: usize, n: usize, d: usize) -> Case {
    Case {
        b,
        h,
        n,
        d,
        scale: 1.0 / (d as f32).sqrt(),
        slopes: vec![],
        log_n: None,
        pattern: KeyPattern::Causal,
    }
}

fn cases() -> Vec<Case> {
    let mut cases = vec![
        // Below, at, just past and across several 32-row tiles; head dims 8, 16 and 32.
        causal(1, 2, 1, 8),
        causal(2, 2, 31, 8),
        causal(1, 2, 32, 16),
        causal(2, 1, 33, 16),
        causal(1, 2, 100, 32),
        causal(1, 1, 200, 16),
        Case {
            slopes: vec![0.5, 0.0625],
            ..causal(1, 2, 97, 16)
        },
        Case {
            log_n: Some(16),
            ..causal(1, 2, 70, 16)
        },
        Case {
            slopes: vec![0.25, 0.125],
            log_n: Some(32),
            ..causal(1, 2, 90, 32)
        },
    ];
    // Windows shorter and longer than a tile, with dilation and globals.
    for (window, dilation, global_tokens, slopes) in [
        (5, 1, 3, vec![]),
        (20, 2, 0, vec![]),
        (45, 1, 34, vec![0.25, 0.5]),
    ] {
        cases.push(Case {
            pattern: KeyPattern::Window(WindowPattern {
                window,
                dilation,
                global_tokens,
            }),
            slopes,
            ..causal(1, 2, 150, 8)
        });
    }
    // BigBird blocks smaller and larger than a tile; the last query block is partial.
    for (block_size, slopes) in [(16, vec![]), (8, vec![0.125, 0.5]), (40, vec![])] {
        cases.push(Case {
            pattern: KeyPattern::BigBird(BigBirdPattern {
                block_size,
                window_blocks: 2,
                global_blocks: 1,
                random_blocks: 2,
                seed: 7,
            }),
            slopes,
            ..causal(1, 2, 190, 8)
        });
    }
    cases
}

/// Output and the gradients of Σ o∘w in q, k, v, on `device` under autodiff: the kernel
/// (`fused`) or the composed path.
fn run(c: &Case, device: &Device, fused: bool, seed: u64) -> [Vec<f32>; 4] {
    let device = device.clone().autodiff();
    let leaves: Vec<Tensor<4>> = (0..3)
        .map(|x| tensor(&randn_vec(c.len(), seed + x, 1.0), c.shape(), &device).require_grad())
        .collect();
    let w = tensor(&randn_vec(c.len(), seed + 3, 1.0), c.shape(), &device);
    let mut q = leaves[0].clone();
    if let Some(train_len) = c.log_n {
        q = q * log_n_factors(0, c.n, train_len, &device);
    }
    let (k, v) = (leaves[1].clone(), leaves[2].clone());
    let o = if fused {
        kernels::sparse_attention(q, k, v, c.scale, &c.slopes, c.pattern.clone())
    } else {
        composed_attention(q, k, v, c.scale.into(), &c.slopes, |i, j| c.allowed(i, j))
    };
    let grads = (o.clone() * w).sum().backward();
    let g = |t: &Tensor<4>| values(t.grad(&grads).expect("a gradient"));
    [values(o), g(&leaves[0]), g(&leaves[1]), g(&leaves[2])]
}

#[test]
fn cube_attention_matches_the_composed_path() {
    let Some(device) = wgpu() else { return };
    assert!(kernels::fused_attention_on(&device));
    let mut worst = (0.0f64, 0.0f64);
    for (ci, c) in cases().iter().enumerate() {
        let seed = 500 + 10 * ci as u64;
        let what = format!(
            "b={} h={} n={} d={} slopes={:?} log_n={:?} {:?}",
            c.b, c.h, c.n, c.d, c.slopes, c.log_n, c.pattern
        );
        let fused = run(c, &device, true, seed);
        // The composed reference runs on flex: on wgpu every new shape of its matmuls is
        // autotuned (seconds each on lavapipe), which would take the file past a minute.
        let reference = run(c, &Device::flex(), false, seed);
        for (name, (f, r)) in ["output", "dq", "dk", "dv"]
            .iter()
            .zip(fused.iter().zip(&reference))
        {
            let r = to_f64(r);
            let (abs, rel) = errors(f, &r);
            worst = (worst.0.max(abs), worst.1.max(rel));
            assert_close(f, &r, 2e-4, 2e-3, &format!("{name}, {what}"));
        }
    }
    println!(
        "cube attention vs composed on wgpu: worst max-abs {:.3e}, worst max-rel {:.3e}",
        worst.0, worst.1
    );
}

#[test]
fn cube_attention_without_autodiff_matches() {
    // The plain (inference) op takes the same kernel without the autodiff node.
    let Some(device) = wgpu() else { return };
    let c = Case {
        slopes: vec![0.5, 0.25],
        ..causal(2, 2, 45, 16)
    };
    let x: Vec<Tensor<4>> = (0..3)
        .map(|s| tensor(&randn_vec(c.len(), 900 + s, 1.0), c.shape(), &device))
        .collect();
    let fused = kernels::sparse_attention(
        x[0].clone(),
        x[1].clone(),
        x[2].clone(),
        c.scale,
        &c.slopes,
        KeyPattern::Causal,
    );
    let reference = composed_attention(
        x[0].clone(),
        x[1].clone(),
        x[2].clone(),
        c.scale.into(),
        &c.slopes,
        |i, j| c.allowed(i, j),
    );
    assert_close(
        &values(fused),
        &to_f64(&values(reference)),
        2e-4,
        2e-3,
        "inference output",
    );
}

fn model(mixer: MixerConfig, position: PositionConfig) -> ModelConfig {
    ModelConfig {
        vocab_size: Some(48),
        d_model: 32,
        n_layers: 2,
        n_heads: 2,
        mlp_ratio: 2.0,
        mixer,
        position,
        max_seq_len: 96,
        train_len: Some(32),
        init_seed: 3,
        ..ModelConfig::default()
    }
}

/// (logits, loss, ∂loss/∂embed.weight) of one batch on `device` under autodiff.
fn model_pass(cfg: &ModelConfig, device: &Device) -> (Vec<f32>, f32, Vec<f32>) {
    let (b, n, vocab) = (2, 70, 48);
    let ad = device.clone().autodiff();
    let lm = Lm::new(cfg, &ad).unwrap();
    let inputs = tokens(b, n, vocab, 21, &ad);
    let targets = tokens(b, n, vocab, 22, &ad);
    let mask = Tensor::<2>::ones([b, n], &ad);
    let logits = lm.forward(inputs);
    let loss = masked_cross_entropy(logits.clone(), targets, mask);
    let grads = GradientsParams::from_grads(loss.backward(), &lm);
    let g = grads.get::<2>(lm.embed.weight.id).expect("embedding grad");
    (values(logits), loss.into_scalar::<f32>(), values(g))
}

#[test]
fn models_on_wgpu_match_flex() {
    let Some(device) = wgpu() else { return };
    let configs = [
        (
            "softmax+alibi+log-n",
            model(
                MixerConfig::Softmax(SoftmaxConfig {
                    logit_scale: None,
                    log_n_scaling: true,
                }),
                PositionConfig::Alibi,
            ),
        ),
        (
            "sliding_window",
            model(
                MixerConfig::SlidingWindow(SlidingWindowConfig {
                    window: 24,
                    dilation: 1,
                    global_tokens: 2,
                }),
                PositionConfig::Alibi,
            ),
        ),
        (
            "bigbird",
            model(
                MixerConfig::Bigbird(BigBirdConfig {
                    block_size: 8,
                    window_blocks: 2,
                    global_blocks: 1,
                    random_blocks: 1,
                    seed: 5,
                }),
                PositionConfig::None,
            ),
        ),
    ];
    for (label, cfg) in configs {
        let (logits_f, loss_f, grad_f) = model_pass(&cfg, &Device::flex());
        let (logits_w, loss_w, grad_w) = model_pass(&cfg, &device);
        let (abs, rel) = errors(&logits_w, &to_f64(&logits_f));
        let (gabs, grel) = errors(&grad_w, &to_f64(&grad_f));
        println!(
            "{label}: wgpu vs flex: logits max-abs {abs:.3e} max-rel {rel:.3e}; loss {loss_w:.6} vs {loss_f:.6}; embedding grad max-abs {gabs:.3e} max-rel {grel:.3e}"
        );
        assert_close(
            &logits_w,
            &to_f64(&logits_f),
            2e-4,
            2e-3,
            &format!("{label}: logits"),
        );
        assert!(
            (loss_w - loss_f).abs() <= 1e-4 * loss_f.abs().max(1.0),
            "{label}: loss {loss_w} vs {loss_f}"
        );
        assert_close(
            &grad_w,
            &to_f64(&grad_f),
            2e-4,
            2e-3,
            &format!("{label}: embedding grad"),
        );
    }
}
