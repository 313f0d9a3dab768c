//! The delta rule (DeltaNet / Gated DeltaNet) and Mamba-2's SSD: chunked ≡ recurrent in outputs,
//! final state and gradients, against the f64 token-by-token reference (outputs) and f64 central
//! differences of it (gradients), at lengths that straddle the chunk (1, 7, 8, 9, 17, 41 with
//! chunks of 8), from a non-zero state, with decays from ≈ 1 to ≈ e⁻⁸ per token; the
//! unit-triangular inverse of the UT transform, including the all-equal-keys case where a
//! power series would cancel catastrophically.

mod common;

use burn::prelude::*;
use common::*;
use zoo_model::attention::{delta_rule, mamba2, reference};

const B: usize = 2;
const H: usize = 2;
const DK: usize = 4;
const DV: usize = 3;
const CHUNK: usize = 8;

struct Inputs {
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    beta: Tensor<3>,
    log_alpha: Tensor<3>,
    s0: Tensor<4>,
}

/// Realistic inputs: k L2-normalised (the layer normalises it), β ∈ (0, 1), ln α ∈ (−8, 0).
fn inputs(n: usize, seed: u64, device: &Device) -> Inputs {
    let k = randn([B, H, n, DK], seed + 1, device);
    let k = k.clone() / (k.square().sum_dim(3) + 1e-6).sqrt();
    Inputs {
        q: randn([B, H, n, DK], seed, device),
        k,
        v: randn([B, H, n, DV], seed + 2, device),
        beta: burn::tensor::activation::sigmoid(randn([B, H, n], seed + 3, device).mul_scalar(2.0)),
        log_alpha: randn([B, H, n], seed + 4, device)
            .mul_scalar(1.5)
            .exp()
            .neg()
            .clamp_min(-8.0),
        s0: randn([B, H, DK, DV], seed + 5, device),
    }
}

fn host(x: &Inputs) -> [Vec<f64>; 6] {
    let f4 = |t: &Tensor<4>| to_f64(&values(t.clone()));
    let f3 = |t: &Tensor<3>| to_f64(&values(t.clone()));
    [
        f4(&x.q),
        f4(&x.k),
        f4(&x.v),
        f3(&x.beta),
        f3(&x.log_alpha),
        f4(&x.s0),
    ]
}

/// The f64 reference over every (batch, head): (out [B,H,n,DV], state [B,H,DK,DV]).
fn reference_run(x: &[Vec<f64>; 6], n: usize, delta: bool) -> (Vec<f64>, Vec<f64>) {
    let [q, k, v, beta, la, s0] = x;
    let (mut out, mut state) = (Vec::new(), Vec::new());
    for bh in 0..B * H {
        let (o, s) = reference::gated_delta_recurrent(
            &q[bh * n * DK..(bh + 1) * n * DK],
            &k[bh * n * DK..(bh + 1) * n * DK],
            &v[bh * n * DV..(bh + 1) * n * DV],
            &beta[bh * n..(bh + 1) * n],
            &la[bh * n..(bh + 1) * n],
            n,
            DK,
            DV,
            &s0[bh * DK * DV..(bh + 1) * DK * DV],
            delta,
        );
        out.extend(o);
        state.extend(s);
    }
    (out, state)
}

type Form = fn(&Inputs) -> (Tensor<4>, Tensor<4>);

fn delta_chunked(x: &Inputs) -> (Tensor<4>, Tensor<4>) {
    let x = clone(x);
    delta_rule::chunked(x.q, x.k, x.v, x.beta, x.log_alpha, x.s0, CHUNK)
}
fn delta_recurrent(x: &Inputs) -> (Tensor<4>, Tensor<4>) {
    let x = clone(x);
    delta_rule::recurrent(x.q, x.k, x.v, x.beta, x.log_alpha, x.s0, true)
}
/// SSD with per-head B and C: the test feeds each head its own q/k through a batch of B·H
/// single-head sequences (the layer shares them across heads; the form is the same).
fn ssd_chunked(x: &Inputs) -> (Tensor<4>, Tensor<4>) {
    let x = clone(x);
    let n = x.q.dims()[2];
    let flat = |t: Tensor<4>, w: usize| t.reshape([B * H, 1, n, w]);
    let (y, s) = mamba2::ssd_chunked(
        flat(x.q, DK),
        flat(x.k, DK),
        flat(x.v, DV),
        x.beta.reshape([B * H, 1, n]),
        x.log_alpha.reshape([B * H, 1, n]),
        x.s0.reshape([B * H, 1, DK, DV]),
        CHUNK,
    );
    (y.reshape([B, H, n, DV]), s.reshape([B, H, DK, DV]))
}
fn ssd_recurrent(x: &Inputs) -> (Tensor<4>, Tensor<4>) {
    let x = clone(x);
    delta_rule::recurrent(x.q, x.k, x.v, x.beta, x.log_alpha, x.s0, false)
}

fn clone(x: &Inputs) -> Inputs {
    Inputs {
        q: x.q.clone(),
        k: x.k.clone(),
        v: x.v.clone(),
        beta: x.beta.clone(),
        log_alpha: x.log_alpha.clone(),
        s0: x.s0.clone(),
    }
}

/// (name, delta, forms: chunked first)
const FAMILIES: [(&str, bool, [Form; 2]); 2] = [
    ("delta rule", true, [delta_chunked, delta_recurrent]),
    ("ssd", false, [ssd_chunked, ssd_recurrent]),
];
const LENGTHS: [usize; 6] = [1, 7, 8, 9, 17, 41];

#[test]
fn chunked_and_recurrent_forms_equal_the_f64_reference() {
    let device = device();
    for (family, delta, forms) in FAMILIES {
        for n in LENGTHS {
            let x = inputs(n, 10 + n as u64, &device);
            let (ro, rs) = reference_run(&host(&x), n, delta);
            for (form, name) in forms.iter().zip(["chunked", "recurrent"]) {
                let (o, s) = form(&x);
                let what = format!("{family} {name} n={n}");
                assert_close(&values(o), &ro, 2e-4, 2e-4, &format!("{what} output"));
                assert_close(&values(s), &rs, 2e-4, 2e-4, &format!("{what} state"));
            }
        }
    }
}

/// Scalar loss ⟨o, R⟩ + 0.1·Σ S whose gradients the forms must agree on.
fn loss_weights(n: usize, device: &Device) -> Tensor<4> {
    randn([B, H, n, DV], 99, device)
}

#[test]
fn chunked_and_recurrent_gradients_equal_central_differences() {
    let device = device().autodiff();
    for (family, delta, forms) in FAMILIES {
        for n in [9usize, 17] {
            let base = inputs(n, 7 + n as u64, &device);
            let weights = loss_weights(n, &device);
            let mut grads: Vec<Vec<Vec<f32>>> = Vec::new();
            for form in forms {
                let x = Inputs {
                    q: base.q.clone().detach().require_grad(),
                    k: base.k.clone().detach().require_grad(),
                    v: base.v.clone().detach().require_grad(),
                    beta: base.beta.clone().detach().require_grad(),
                    log_alpha: base.log_alpha.clone().detach().require_grad(),
                    s0: base.s0.clone().detach().require_grad(),
                };
                let (o, s) = form(&x);
                let loss = (o * weights.clone()).sum() + s.sum().mul_scalar(0.1);
                let g = loss.backward();
                grads.push(vec![
                    values(x.q.grad(&g).unwrap()),
                    values(x.k.grad(&g).unwrap()),
                    values(x.v.grad(&g).unwrap()),
                    values(x.beta.grad(&g).unwrap()),
                    values(x.log_alpha.grad(&g).unwrap()),
                    values(x.s0.grad(&g).unwrap()),
                ]);
            }
            // f64 central differences of the same loss through the reference, at probes spread
            // over every input (first, middle, last coordinates).
            let h64 = host(&base);
            let w64 = to_f64(&values(weights.clone()));
            let loss64 = |x: &[Vec<f64>; 6]| {
                let (o, s) = reference_run(x, n, delta);
                o.iter().zip(&w64).map(|(a, b)| a * b).sum::<f64>() + 0.1 * s.iter().sum::<f64>()
            };
            let names = ["q", "k", "v", "beta", "log_alpha", "s0"];
            for (which, name) in names.iter().enumerate() {
                let len = h64[which].len();
                let probes = [0, len / 3, len / 2, len - 1];
                let expected: Vec<f64> = probes
                    .iter()
                    .map(|&i| {
                        let (mut plus, mut minus) = (h64.clone(), h64.clone());
                        plus[which][i] += 1e-5;
                        minus[which][i] -= 1e-5;
                        (loss64(&plus) - loss64(&minus)) / 2e-5
                    })
                    .collect();
                for (form_grads, form) in grads.iter().zip(["chunked", "recurrent"]) {
                    let got: Vec<f32> = probes.iter().map(|&i| form_grads[which][i]).collect();
                    assert_close(
                        &got,
                        &expected,
                        2e-3,
                        2e-3,
                        &format!("{family} {form} n={n}: d{name} vs central differences"),
                    );
                }
                assert_close_f32(
                    &grads[0][which],
                    &grads[1][which],
                    2e-3,
                    2e-3,
                    &format!("{family} n={n}: d{name} chunked vs recurrent"),
                );
            }
        }
    }
}

#[test]
fn state_carry_equals_one_run() {
    let device = device();
    let n = 41;
    let x = inputs(n, 5, &device);
    let (full, s_full) = delta_chunked(&x);
    let cut = 13; // not a chunk boundary
    let part = |a: usize, len: usize| Inputs {
        q: x.q.clone().narrow(2, a, len),
        k: x.k.clone().narrow(2, a, len),
        v: x.v.clone().narrow(2, a, len),
        beta: x.beta.clone().narrow(2, a, len),
        log_alpha: x.log_alpha.clone().narrow(2, a, len),
        s0: x.s0.clone(),
    };
    let (o1, s1) = delta_chunked(&part(0, cut));
    let second = Inputs {
        s0: s1,
        ..part(cut, n - cut)
    };
    let (o2, s2) = delta_chunked(&second);
    assert_close_f32(
        &values(Tensor::cat(vec![o1, o2], 2)),
        &values(full),
        1e-4,
        1e-4,
        "carried output",
    );
    assert_close_f32(&values(s2), &values(s_full), 1e-4, 1e-4, "carried state");
}

#[test]
fn unit_lower_inverse_inverts_including_equal_keys() {
    let device = device();
    for c in [1usize, 3, 8, 13, 64] {
        // Random strictly-lower A, and the worst case of the delta rule: every key equal and
        // β = 1, so A is the all-ones strictly-lower matrix whose powers grow like binomials.
        let random = randn([2, c, c], c as u64, &device).mul_scalar(0.3);
        let ones = Tensor::<3>::ones([1, c, c], &device);
        for (what, a) in [("random", random), ("equal keys", ones)] {
            let a = a.tril(-1);
            let m = a.dims()[0];
            let eye = Tensor::<2>::eye(c, &device)
                .unsqueeze::<3>()
                .expand([m, c, c]);
            let t = delta_rule::unit_lower_inverse(a.clone());
            let product = (eye.clone() + a).matmul(t);
            let expected = to_f64(&values(eye));
            assert_close(
                &values(product),
                &expected,
                1e-4,
                1e-4,
                &format!("(I + A)·T = I, {what}, C = {c}"),
            );
        }
    }
}

/// Host f64 values of a parameter.
fn host_param<const D: usize>(p: &burn::module::Param<Tensor<D>>) -> Vec<f64> {
    to_f64(&values(p.val()))
}

/// x [n, d_in] · W [d_in, d_out] + b, in f64.
fn affine(
    x: &[f64],
    n: usize,
    w: &[f64],
    b: Option<&[f64]>,
    d_in: usize,
    d_out: usize,
) -> Vec<f64> {
    let mut y = vec![0.0; n * d_out];
    for t in 0..n {
        for o in 0..d_out {
            let dot: f64 = (0..d_in).map(|i| x[t * d_in + i] * w[i * d_out + o]).sum();
            y[t * d_out + o] = dot + b.map_or(0.0, |b| b[o]);
        }
    }
    y
}

fn silu64(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

/// The whole Gated DeltaNet layer from its definition (delta_rule.rs's header), in f64 on host
/// vectors, from the module's own weights: projections, the causal convolution of width K over
/// q, k, v, SiLU, L2 normalisation (q also by 1/√d_head), β = σ(W_β x), ln α =
/// −e^{A_log}·softplus(W_α x + dt_bias), the recurrence, per-head RMSNorm, the SiLU gate and W_o.
/// Against the module's forward on flex (fused kernel) and on ndarray (chunked form), and its
/// step-by-step decoding.
#[test]
fn gated_deltanet_layer_matches_its_definition() {
    use zoo_model::attention::{DeltaNet, TokenMixer};
    use zoo_model::init::Init;
    use zoo_model::{GatedDeltaNetConfig, MixerConfig, ModelConfig, PositionConfig};
    let (d, h, n, width) = (8usize, 2usize, 19usize, 4usize);
    let dh = d / h;
    let config = GatedDeltaNetConfig {
        chunk_size: 8,
        conv_size: width,
    };
    let model = ModelConfig {
        vocab_size: Some(16),
        d_model: d,
        n_heads: h,
        mixer: MixerConfig::GatedDeltanet(config.clone()),
        position: PositionConfig::None,
        ..ModelConfig::default()
    };
    let flex = device();
    let layer = DeltaNet::new(&config, &model, &mut Init::new(5, &flex));
    let x = randn([1, n, d], 77, &flex);
    let x64 = to_f64(&values(x.clone()));

    // The definition, step by step.
    let w_in = host_param(&layer.in_proj.weight);
    let b_in = host_param(layer.in_proj.bias.as_ref().unwrap());
    let projected = affine(&x64, n, &w_in, Some(&b_in), d, 4 * d);
    let conv = layer.conv.as_ref().unwrap();
    let (taps, conv_bias) = (host_param(&conv.weight), host_param(&conv.bias));
    let mut qkv = vec![0.0; n * 3 * d];
    for t in 0..n {
        for c in 0..3 * d {
            let mut acc = conv_bias[c];
            for j in 0..width {
                if let Some(src) = (t + j).checked_sub(width - 1) {
                    acc += taps[j * 3 * d + c] * projected[src * 4 * d + c];
                }
            }
            qkv[t * 3 * d + c] = silu64(acc);
        }
    }
    let w_beta = host_param(&layer.beta.weight);
    let beta_all = affine(&x64, n, &w_beta, None, d, h);
    let decay = layer.decay.as_ref().unwrap();
    let a_in = affine(&x64, n, &host_param(&decay.proj.weight), None, d, h);
    let (a_log, dt_bias) = (host_param(&decay.a_log), host_param(&decay.dt_bias));
    let norm_w = host_param(&layer.norm_weight);
    let mut gated = vec![0.0; n * d];
    for head in 0..h {
        let take = |part: usize, t: usize| -> Vec<f64> {
            let start = t * 3 * d + part * d + head * dh;
            qkv[start..start + dh].to_vec()
        };
        let unit = |v: Vec<f64>, scale: f64| {
            let norm = (v.iter().map(|a| a * a).sum::<f64>() + 1e-6).sqrt();
            v.into_iter()
                .map(|a| a / norm * scale)
                .collect::<Vec<f64>>()
        };
        let (mut q, mut k, mut v) = (Vec::new(), Vec::new(), Vec::new());
        let (mut beta, mut log_alpha) = (Vec::new(), Vec::new());
        for t in 0..n {
            q.extend(unit(take(0, t), 1.0 / (dh as f64).sqrt()));
            k.extend(unit(take(1, t), 1.0));
            v.extend(take(2, t));
            beta.push(1.0 / (1.0 + (-beta_all[t * h + head]).exp()));
            let z = a_in[t * h + head] + dt_bias[head];
            let softplus = if z > 20.0 { z } else { z.exp().ln_1p() };
            log_alpha.push(-a_log[head].exp() * softplus);
        }
        let zero = vec![0.0; dh * dh];
        let (o, _) =
            reference::gated_delta_recurrent(&q, &k, &v, &beta, &log_alpha, n, dh, dh, &zero, true);
        for t in 0..n {
            let row = &o[t * dh..(t + 1) * dh];
            let rms = (row.iter().map(|a| a * a).sum::<f64>() / dh as f64 + 1e-5).sqrt();
            for c in 0..dh {
                let g = silu64(projected[t * 4 * d + 3 * d + head * dh + c]);
                gated[t * d + head * dh + c] = row[c] / rms * norm_w[c] * g;
            }
        }
    }
    let w_out = host_param(&layer.out.weight);
    let b_out = host_param(layer.out.bias.as_ref().unwrap());
    let expected = affine(&gated, n, &w_out, Some(&b_out), d, d);

    let fused = values(layer.forward(x.clone()));
    assert_close(
        &fused,
        &expected,
        1e-4,
        1e-4,
        "layer on flex (fused kernel)",
    );
    // ndarray runs the composed chunked form (flex runs the fused kernel).
    #[allow(deprecated)]
    let nd = Device::ndarray();
    let layer_nd = DeltaNet::new(&config, &model, &mut Init::new(5, &nd));
    let x_nd = Tensor::<3>::from_data(x.to_data(), &nd);
    let chunked = values(layer_nd.forward(x_nd));
    assert_close(
        &chunked,
        &expected,
        1e-4,
        1e-4,
        "layer on ndarray (chunked form)",
    );
    let mut state = layer.init_state(1, &flex);
    let mut stepped = Vec::new();
    for t in 0..n {
        let (y, s) = layer.step(x.clone().narrow(1, t, 1).reshape([1, d]), state);
        stepped.extend(values(y));
        state = s;
    }
    assert_close(
        &stepped,
        &expected,
        1e-4,
        1e-4,
        "layer decoded token by token",
    );
}
