//! RWKV WKV: parallel ≡ chunked ≡ recurrent (outputs, final state, gradients) against the f64
//! token-by-token reference, with odd lengths, lengths not a multiple of the chunk, a non-zero
//! initial state and extreme decays (w ≈ 0 and w ≈ 1).

mod common;

use burn::prelude::*;
use common::*;
use zoo_model::attention::{reference, rwkv};

const B: usize = 2;
const H: usize = 2;
const D: usize = 4;

struct Inputs {
    r: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    log_w: Tensor<4>,
    u: Tensor<2>,
    s0: Tensor<4>,
}

/// log w = −exp(e): `spread` scales e so decays range from ~1 (e ≪ 0) to ~0 (e ≫ 0).
fn inputs(n: usize, seed: u64, spread: f32, device: &Device) -> Inputs {
    Inputs {
        r: randn([B, H, n, D], seed, device),
        k: randn([B, H, n, D], seed + 1, device),
        v: randn([B, H, n, D], seed + 2, device),
        log_w: randn([B, H, n, D], seed + 3, device)
            .mul_scalar(spread)
            .exp()
            .neg(),
        u: randn([H, D], seed + 4, device),
        s0: randn([B, H, D, D], seed + 5, device),
    }
}

fn reference_outputs(x: &Inputs, n: usize) -> (Vec<f64>, Vec<f64>) {
    let all = |t: &Tensor<4>| to_f64(&values(t.clone()));
    let (r, k, v, lw, s0) = (all(&x.r), all(&x.k), all(&x.v), all(&x.log_w), all(&x.s0));
    let u = to_f64(&values(x.u.clone()));
    let (mut out, mut state) = (Vec::new(), Vec::new());
    for bh in 0..B * H {
        let h = bh % H;
        let sl = |v: &[f64]| v[bh * n * D..(bh + 1) * n * D].to_vec();
        let (o, s) = reference::wkv_recurrent(
            &sl(&r),
            &sl(&k),
            &sl(&v),
            &sl(&lw),
            &u[h * D..(h + 1) * D],
            n,
            D,
            D,
            &s0[bh * D * D..(bh + 1) * D * D],
        );
        out.extend(o);
        state.extend(s);
    }
    (out, state)
}

type Form =
    fn(Tensor<4>, Tensor<4>, Tensor<4>, Tensor<4>, Tensor<2>, Tensor<4>) -> (Tensor<4>, Tensor<4>);

fn chunked16(
    r: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    lw: Tensor<4>,
    u: Tensor<2>,
    s: Tensor<4>,
) -> (Tensor<4>, Tensor<4>) {
    rwkv::wkv_chunked(r, k, v, lw, u, s, 16)
}

const FORMS: [(&str, Form); 3] = [
    ("parallel", rwkv::wkv_parallel),
    ("chunked", chunked16),
    ("recurrent", rwkv::wkv_recurrent),
];

fn run(form: Form, x: &Inputs) -> (Tensor<4>, Tensor<4>) {
    form(
        x.r.clone(),
        x.k.clone(),
        x.v.clone(),
        x.log_w.clone(),
        x.u.clone(),
        x.s0.clone(),
    )
}

#[test]
fn forms_match_reference_including_extreme_decays() {
    let device = device();
    // spread 0.5: moderate decays; spread 6: log w from ≈ −1e-3 (w ≈ 1) to ≈ −e^15 (w = 0).
    for spread in [0.5f32, 6.0] {
        for n in [1, 16, 67] {
            let x = inputs(n, 100 + n as u64, spread, &device);
            let (ro, rs) = reference_outputs(&x, n);
            for (name, form) in FORMS {
                let (o, s) = run(form, &x);
                let what = format!("spread={spread} n={n} {name}");
                assert_close(&values(o), &ro, 3e-4, 3e-4, &format!("{what} output"));
                assert_close(&values(s), &rs, 3e-4, 3e-4, &format!("{what} state"));
            }
        }
    }
}

#[test]
fn forms_have_equal_gradients() {
    let device = device().autodiff();
    let n = 67;
    let mut per_form: Vec<(&str, Vec<Vec<f32>>)> = Vec::new();
    for (name, form) in FORMS {
        let x = inputs(n, 7, 1.0, &device);
        let x = Inputs {
            r: x.r.require_grad(),
            k: x.k.require_grad(),
            v: x.v.require_grad(),
            log_w: x.log_w.detach().require_grad(),
            u: x.u.require_grad(),
            s0: x.s0.require_grad(),
        };
        let (o, s) = run(form, &x);
        let loss = (o * randn([B, H, n, D], 99, &device)).sum() + s.sum().mul_scalar(0.1);
        let g = loss.backward();
        per_form.push((
            name,
            vec![
                values(x.r.grad(&g).unwrap()),
                values(x.k.grad(&g).unwrap()),
                values(x.v.grad(&g).unwrap()),
                values(x.log_w.grad(&g).unwrap()),
                values(x.u.grad(&g).unwrap()),
                values(x.s0.grad(&g).unwrap()),
            ],
        ));
    }
    let (base_name, base) = &per_form[0];
    for (name, g) in &per_form[1..] {
        for (i, what) in ["r", "k", "v", "log_w", "u", "s0"].iter().enumerate() {
            assert_close_f32(
                &g[i],
                &base[i],
                1e-3,
                1e-3,
                &format!("d{what}: {name} vs {base_name}"),
            );
        }
    }
}

#[test]
fn state_carry_equals_one_run() {
    let device = device();
    let n = 67;
    let x = inputs(n, 5, 1.0, &device);
    let (full, s_full) = run(chunked16, &x);
    let t = 23;
    let part = |tensor: &Tensor<4>, a: usize, len: usize| tensor.clone().narrow(2, a, len);
    let (o1, s1) = rwkv::wkv_chunked(
        part(&x.r, 0, t),
        part(&x.k, 0, t),
        part(&x.v, 0, t),
        part(&x.log_w, 0, t),
        x.u.clone(),
        x.s0.clone(),
        16,
    );
    let (o2, s2) = rwkv::wkv_chunked(
        part(&x.r, t, n - t),
        part(&x.k, t, n - t),
        part(&x.v, t, n - t),
        part(&x.log_w, t, n - t),
        x.u.clone(),
        s1,
        16,
    );
    assert_close_f32(
        &values(Tensor::cat(vec![o1, o2], 2)),
        &values(full),
        1e-4,
        1e-4,
        "carried output",
    );
    assert_close_f32(&values(s2), &values(s_full), 1e-4, 1e-4, "carried state");
}
