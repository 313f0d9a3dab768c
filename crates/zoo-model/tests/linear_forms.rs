//! Linear attention: parallel ≡ chunked ≡ recurrent (outputs, final state, gradients), against
//! the f64 token-by-token reference, for every feature map, odd lengths, lengths that are not a
//! multiple of the chunk, and a non-zero initial state.

mod common;

use burn::prelude::*;
use common::*;
use zoo_model::FeatureMap;
use zoo_model::attention::{feature_map, linear, reference};

const B: usize = 2;
const H: usize = 2;
const D: usize = 4;

struct Inputs {
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    s0: Tensor<4>,
    z0: Tensor<3>,
}

fn inputs(map: FeatureMap, n: usize, seed: u64, device: &Device) -> Inputs {
    let f = feature_map::output_dim(map, D);
    let q = feature_map::apply(map, randn([B, H, n, D], seed, device));
    let k = feature_map::apply(map, randn([B, H, n, D], seed + 1, device));
    let v = randn([B, H, n, D], seed + 2, device);
    // A non-zero initial state, as a real decoder would carry: positive z for positive maps.
    let s0 = randn([B, H, f, D], seed + 3, device);
    let z0 = randn([B, H, f], seed + 4, device).abs().add_scalar(0.5);
    Inputs { q, k, v, s0, z0 }
}

fn reference_outputs(x: &Inputs, n: usize, normalize: bool) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let f = x.q.dims()[3];
    let (q, k, v) = (
        to_f64(&values(x.q.clone())),
        to_f64(&values(x.k.clone())),
        to_f64(&values(x.v.clone())),
    );
    let (s0, z0) = (to_f64(&values(x.s0.clone())), to_f64(&values(x.z0.clone())));
    let (mut out, mut s, mut z) = (Vec::new(), Vec::new(), Vec::new());
    for bh in 0..B * H {
        let (o1, s1, z1) = reference::linear_attention_recurrent(
            &q[bh * n * f..(bh + 1) * n * f],
            &k[bh * n * f..(bh + 1) * n * f],
            &v[bh * n * D..(bh + 1) * n * D],
            n,
            f,
            D,
            &s0[bh * f * D..(bh + 1) * f * D],
            &z0[bh * f..(bh + 1) * f],
            normalize,
            linear::NORM_EPS,
        );
        out.extend(o1);
        s.extend(s1);
        z.extend(z1);
    }
    (out, s, z)
}

type Form = fn(
    Tensor<4>,
    Tensor<4>,
    Tensor<4>,
    Tensor<4>,
    Tensor<3>,
    bool,
) -> (Tensor<4>, Tensor<4>, Tensor<3>);

fn chunked16(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    s: Tensor<4>,
    z: Tensor<3>,
    norm: bool,
) -> (Tensor<4>, Tensor<4>, Tensor<3>) {
    linear::chunked(q, k, v, s, z, 16, norm)
}

const FORMS: [(&str, Form); 3] = [
    ("parallel", linear::parallel),
    ("chunked", chunked16),
    ("recurrent", linear::recurrent),
];

#[test]
fn forms_match_reference_outputs_and_states() {
    let device = device();
    for map in [
        FeatureMap::Elu,
        FeatureMap::Relu,
        FeatureMap::Identity,
        FeatureMap::Taylor2,
    ] {
        for normalize in [true, false] {
            if map == FeatureMap::Identity && normalize {
                continue; // refused by config validation: φ(q)·z can vanish
            }
            for n in [1, 16, 67] {
                let x = inputs(map, n, 11 + n as u64, &device);
                let (ro, rs, rz) = reference_outputs(&x, n, normalize);
                for (name, form) in FORMS {
                    let (o, s, z) = form(
                        x.q.clone(),
                        x.k.clone(),
                        x.v.clone(),
                        x.s0.clone(),
                        x.z0.clone(),
                        normalize,
                    );
                    let what = format!("{map:?} normalize={normalize} n={n} {name}");
                    assert_close(&values(o), &ro, 2e-4, 2e-4, &format!("{what} output"));
                    assert_close(&values(s), &rs, 2e-4, 2e-4, &format!("{what} state S"));
                    assert_close(&values(z), &rz, 2e-4, 2e-4, &format!("{what} state z"));
                }
            }
        }
    }
}

#[test]
fn forms_have_equal_gradients() {
    let device = device().autodiff();
    for (map, normalize) in [
        (FeatureMap::Elu, true),
        (FeatureMap::Taylor2, true),
        (FeatureMap::Relu, false),
    ] {
        let n = 67;
        let mut grads_per_form: Vec<(String, Vec<Vec<f32>>)> = Vec::new();
        for (name, form) in FORMS {
            let raw_q = randn([B, H, n, D], 5, &device).require_grad();
            let raw_k = randn([B, H, n, D], 6, &device).require_grad();
            let v = randn([B, H, n, D], 7, &device).require_grad();
            let f = feature_map::output_dim(map, D);
            let s0 = randn([B, H, f, D], 8, &device).require_grad();
            let z0 = randn([B, H, f], 9, &device)
                .abs()
                .add_scalar(0.5)
                .detach()
                .require_grad();
            let (o, s, z) = form(
                feature_map::apply(map, raw_q.clone()),
                feature_map::apply(map, raw_k.clone()),
                v.clone(),
                s0.clone(),
                z0.clone(),
                normalize,
            );
            // A loss touching outputs and both final states with fixed random weights.
            let wo = randn([B, H, n, D], 10, &device);
            let loss = (o * wo).sum() + s.sum().mul_scalar(0.1) + z.sum().mul_scalar(0.1);
            let grads = loss.backward();
            let g = vec![
                values(raw_q.grad(&grads).unwrap()),
                values(raw_k.grad(&grads).unwrap()),
                values(v.grad(&grads).unwrap()),
                values(s0.grad(&grads).unwrap()),
                values(z0.grad(&grads).unwrap()),
            ];
            grads_per_form.push((name.to_string(), g));
        }
        let (base_name, base) = &grads_per_form[0];
        for (name, g) in &grads_per_form[1..] {
            for (i, what) in ["q", "k", "v", "s0", "z0"].iter().enumerate() {
                assert_close_f32(
                    &g[i],
                    &base[i],
                    5e-4,
                    5e-4,
                    &format!("{map:?}: d{what} of {name} vs {base_name}"),
                );
            }
        }
    }
}

#[test]
fn state_carry_equals_one_run() {
    let device = device();
    let n = 67;
    let x = inputs(FeatureMap::Elu, n, 3, &device);
    let (full, s_full, z_full) = linear::chunked(
        x.q.clone(),
        x.k.clone(),
        x.v.clone(),
        x.s0.clone(),
        x.z0.clone(),
        16,
        true,
    );
    let t = 29;
    let part = |tensor: &Tensor<4>, a: usize, len: usize| tensor.clone().narrow(2, a, len);
    let (o1, s1, z1) = linear::chunked(
        part(&x.q, 0, t),
        part(&x.k, 0, t),
        part(&x.v, 0, t),
        x.s0.clone(),
        x.z0.clone(),
        16,
        true,
    );
    let (o2, s2, z2) = linear::chunked(
        part(&x.q, t, n - t),
        part(&x.k, t, n - t),
        part(&x.v, t, n - t),
        s1,
        z1,
        16,
        true,
    );
    let joined = Tensor::cat(vec![o1, o2], 2);
    assert_close_f32(&values(joined), &values(full), 1e-5, 1e-5, "carried output");
    assert_close_f32(&values(s2), &values(s_full), 1e-4, 1e-5, "carried S");
    assert_close_f32(&values(z2), &values(z_full), 1e-4, 1e-5, "carried z");
}
