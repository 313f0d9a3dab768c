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
