//! The CubeCL attention kernel (kernels/cube_attention.rs) on wgpu under autodiff against Burn's
//! composed path (dense scores, masked softmax, weighted sum; on flex, see `run`): outputs and
//! the gradients of q, k, v for causal attention (sequence lengths below, at, across and
//! between the 32-row tiles; head dims 8, 12, 16, 32 and 80), ALiBi, log-n scaling, sliding windows
//! with dilation and globals, and BigBird; the CubeCL chunked linear attention kernel
//! (kernels/cube_linear_attention.rs) against the dense masked (parallel) form, normalised or
//! not, chunks shorter and longer than and straddling the 32-row tiles, a denominator below ε;
//! then whole models (softmax with ALiBi and log-n scaling, sliding window, BigBird, linear
//! attention) on wgpu against flex.
//!
//! wgpu needs a GPU or a software driver (Mesa lavapipe); where none answers the tests print
//! why and pass, unless `ZOO_REQUIRE_WGPU=1`, which turns that into a failure.

mod common;

use burn::optim::GradientsParams;
use burn::prelude::*;
use common::{
    assert_close, composed_attention, errors, randn_vec, tensor, to_f64, tokens, values, wgpu,
};
use zoo_model::attention::linear::{NORM_EPS, parallel};
use zoo_model::attention::log_n_factors;
use zoo_model::attention::pattern::{BigBirdPattern, WindowPattern};
use zoo_model::config::{MixerConfig, ModelConfig, PositionConfig};
use zoo_model::kernels::{self, KeyPattern};
use zoo_model::{
    BigBirdConfig, LinearConfig, Lm, SlidingWindowConfig, SoftmaxConfig, masked_cross_entropy,
};

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
        // Head dims that the TX threads of a row do not split evenly (12 over 8; 80 over 16, with
        // the 16-row tiles of d > 64): each thread's last column slot is partly out of range.
        causal(1, 2, 45, 12),
        causal(1, 1, 40, 80),
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

/// Runs every case with the kernel on `device` and with the reference (`fused` false) on flex,
/// and asserts the output and the q, k, v gradients close (abs 2e-4 or rel 2e-3); returns the
/// worst max-abs and max-rel errors seen. The reference runs on flex: on wgpu every new shape
/// of the composed path's matmuls is autotuned (seconds each on lavapipe), which would take
/// the file past a minute.
fn compare_cases<C>(
    cases: &[C],
    first_seed: u64,
    device: &Device,
    describe: impl Fn(&C) -> String,
    run: impl Fn(&C, &Device, bool, u64) -> [Vec<f32>; 4],
) -> (f64, f64) {
    let mut worst = (0.0f64, 0.0f64);
    for (ci, c) in cases.iter().enumerate() {
        let seed = first_seed + 10 * ci as u64;
        let fused = run(c, device, true, seed);
        let reference = run(c, &Device::flex(), false, seed);
        for (name, (f, r)) in ["output", "dq", "dk", "dv"]
            .iter()
            .zip(fused.iter().zip(&reference))
        {
            let r = to_f64(r);
            let (abs, rel) = errors(f, &r);
            worst = (worst.0.max(abs), worst.1.max(rel));
            assert_close(f, &r, 2e-4, 2e-3, &format!("{name}, {}", describe(c)));
        }
    }
    worst
}

#[test]
fn cube_attention_matches_the_composed_path() {
    let Some(device) = wgpu() else { return };
    assert!(kernels::fused_attention_on(&device));
    let worst = compare_cases(
        &cases(),
        500,
        &device,
        |c| {
            format!(
                "b={} h={} n={} d={} slopes={:?} log_n={:?} {:?}",
                c.b, c.h, c.n, c.d, c.slopes, c.log_n, c.pattern
            )
        },
        run,
    );
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

/// One linear-attention check: feature-mapped q, k [b, h, n, f] (positive, as every feature
/// map's output is), v [b, h, n, dv], chunk C; `feature_scale` shrinks q and k (1e-5 puts every
/// denominator below ε, the clamped path).
struct LinearCase {
    b: usize,
    h: usize,
    n: usize,
    f: usize,
    dv: usize,
    chunk: usize,
    normalize: bool,
    feature_scale: f32,
}

fn linear_cases() -> Vec<LinearCase> {
    let case = |b, h, n, f, dv, chunk, normalize| LinearCase {
        b,
        h,
        n,
        f,
        dv,
        chunk,
        normalize,
        feature_scale: 1.0,
    };
    vec![
        // A partial last chunk; tiles of 32 rows over chunks of 8.
        case(1, 2, 37, 8, 8, 8, true),
        // f ≠ d_v, three row tiles, two sequences.
        case(2, 1, 70, 16, 8, 16, true),
        // Shorter than one chunk: no state term at all.
        case(1, 1, 5, 4, 6, 8, true),
        // Chunks of one token: everything but the diagonal comes through the states.
        case(1, 2, 33, 8, 4, 1, true),
        // Unnormalised; one chunk longer than a tile; wide features.
        case(1, 1, 50, 40, 24, 64, false),
        // Chunks of 48 rows: row tiles straddle chunk boundaries.
        case(1, 1, 130, 6, 5, 48, true),
        // Every denominator below ε: o = num / ε and no gradient through the denominator.
        LinearCase {
            feature_scale: 1e-5,
            ..case(1, 2, 24, 8, 8, 8, true)
        },
    ]
}

/// Output and the gradients of Σ o∘w in q, k, v under autodiff: the cube kernel on `device`
/// (`fused`), or the dense masked form on flex.
fn linear_run(c: &LinearCase, device: &Device, fused: bool, seed: u64) -> [Vec<f32>; 4] {
    let device = device.clone().autodiff();
    let (qk, vs) = ([c.b, c.h, c.n, c.f], [c.b, c.h, c.n, c.dv]);
    let positive = |seed| -> Vec<f32> {
        randn_vec(c.b * c.h * c.n * c.f, seed, 1.0)
            .into_iter()
            .map(|x| x.abs() * c.feature_scale)
            .collect()
    };
    let q = tensor(&positive(seed), qk, &device).require_grad();
    let k = tensor(&positive(seed + 1), qk, &device).require_grad();
    let v = tensor(
        &randn_vec(c.b * c.h * c.n * c.dv, seed + 2, 1.0),
        vs,
        &device,
    )
    .require_grad();
    let w = tensor(
        &randn_vec(c.b * c.h * c.n * c.dv, seed + 3, 1.0),
        vs,
        &device,
    );
    let o = if fused {
        kernels::linear_attention(
            q.clone(),
            k.clone(),
            v.clone(),
            c.chunk,
            c.normalize,
            NORM_EPS as f32,
        )
    } else {
        let s0 = Tensor::zeros([c.b, c.h, c.f, c.dv], &device);
        let z0 = Tensor::zeros([c.b, c.h, c.f], &device);
        parallel(q.clone(), k.clone(), v.clone(), s0, z0, c.normalize).0
    };
    let grads = (o.clone() * w).sum().backward();
    let g = |t: &Tensor<4>| values(t.grad(&grads).expect("a gradient"));
    [values(o), g(&q), g(&k), g(&v)]
}

#[test]
fn cube_linear_attention_matches_the_dense_form() {
    let Some(device) = wgpu() else { return };
    assert!(kernels::fused_attention_on(&device));
    let worst = compare_cases(
        &linear_cases(),
        700,
        &device,
        |c| {
            format!(
                "b={} h={} n={} f={} dv={} chunk={} normalize={} scale={}",
                c.b, c.h, c.n, c.f, c.dv, c.chunk, c.normalize, c.feature_scale
            )
        },
        linear_run,
    );
    println!(
        "cube linear attention vs the dense form: worst max-abs {:.3e}, worst max-rel {:.3e}",
        worst.0, worst.1
    );
}

#[test]
fn cube_linear_attention_without_autodiff_matches() {
    // The plain (inference) op: the forward launches without the autodiff node.
    let Some(device) = wgpu() else { return };
    let (b, h, n, f, dv, chunk) = (2, 2, 45, 8, 16, 16);
    let positive = |seed| -> Vec<f32> {
        randn_vec(b * h * n * f, seed, 1.0)
            .into_iter()
            .map(f32::abs)
            .collect()
    };
    let inputs = |device: &Device| {
        (
            tensor(&positive(950), [b, h, n, f], device),
            tensor(&positive(951), [b, h, n, f], device),
            tensor(&randn_vec(b * h * n * dv, 952, 1.0), [b, h, n, dv], device),
        )
    };
    let (q, k, v) = inputs(&device);
    let fused = kernels::linear_attention(q, k, v, chunk, true, NORM_EPS as f32);
    let flex = Device::flex();
    let (q, k, v) = inputs(&flex);
    let s0 = Tensor::zeros([b, h, f, dv], &flex);
    let z0 = Tensor::zeros([b, h, f], &flex);
    let reference = parallel(q, k, v, s0, z0, true).0;
    assert_close(
        &values(fused),
        &to_f64(&values(reference)),
        2e-4,
        2e-3,
        "inference output",
    );
}

#[test]
fn cube_linear_attention_over_more_chunks_than_a_grid_axis_holds() {
    // Chunks of one token over 66,000 positions: more (head, chunk) pairs than the 65,535
    // workgroups one grid axis allows, so the chunk products spread over two axes, and a scan
    // longer than lavapipe's loop limit (LOOP_NOTE in kernels/cube_linear_attention.rs: without
    // the unrolled steps, positions from 65,535 on came out wrong). f = d_v = 1
    // keeps the f64 definition O(n): S_i = Σ_{j≤i} k_j v_j, z_i = Σ_{j≤i} k_j, den_i = q_i z_i,
    // o_i = q_i S_i / den_i; for L = Σ w_i o_i, ∂L/∂v_j = k_j Σ_{i≥j} w_i q_i / den_i and
    // ∂L/∂k_j = Σ_{i≥j} w_i q_i (v_j − o_i) / den_i (every den here is far above ε).
    let Some(device) = wgpu() else { return };
    let n = 66_000;
    let ad = device.autodiff();
    let positive = |seed| -> Vec<f32> {
        randn_vec(n, seed, 1.0)
            .into_iter()
            .map(|x| 0.5 + x.abs())
            .collect()
    };
    let (qv, kv, vv, wv) = (
        positive(31),
        positive(32),
        randn_vec(n, 33, 1.0),
        randn_vec(n, 34, 1.0),
    );
    let leaf = |v: &[f32]| tensor(v, [1, 1, n, 1], &ad).require_grad();
    let (q, k, v) = (leaf(&qv), leaf(&kv), leaf(&vv));
    let w = tensor(&wv, [1, 1, n, 1], &ad);
    let o = kernels::linear_attention(q, k.clone(), v.clone(), 1, true, NORM_EPS as f32);
    let grads = (o.clone() * w).sum().backward();
    let (o, dk, dv) = (
        values(o),
        values(k.grad(&grads).expect("dk")),
        values(v.grad(&grads).expect("dv")),
    );

    let [q64, k64, v64, w64] = [&qv, &kv, &vv, &wv].map(|x| to_f64(x));
    let (mut s, mut z) = (0.0f64, 0.0f64);
    let mut den = vec![0.0; n];
    let mut out = vec![0.0; n];
    for i in 0..n {
        s += k64[i] * v64[i];
        z += k64[i];
        den[i] = q64[i] * z;
        out[i] = q64[i] * s / den[i];
    }
    let (mut dk64, mut dv64) = (vec![0.0; n], vec![0.0; n]);
    let (mut after, mut after_o) = (0.0f64, 0.0f64); // Σ_{i≥j} w q / den, Σ_{i≥j} w q o / den
    for j in (0..n).rev() {
        after += w64[j] * q64[j] / den[j];
        after_o += w64[j] * q64[j] * out[j] / den[j];
        dv64[j] = k64[j] * after;
        dk64[j] = v64[j] * after - after_o;
    }
    for (name, actual, expected) in [("output", &o, &out), ("dk", &dk, &dk64), ("dv", &dv, &dv64)] {
        let (abs, rel) = errors(actual, expected);
        println!("{name} over {n} one-token chunks vs f64: max-abs {abs:.3e}, max-rel {rel:.3e}");
        assert_close(actual, expected, 1e-4, 1e-3, name);
    }
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
        (
            "linear",
            model(
                MixerConfig::Linear(LinearConfig {
                    chunk_size: 16,
                    ..LinearConfig::default()
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
