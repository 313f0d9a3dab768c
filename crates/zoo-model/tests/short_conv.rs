//! The short causal depthwise convolution against its f64 definition (outputs and the
//! gradients of a random projection of them, for the input, taps and bias), and its decoding
//! state: any split of a sequence into calls gives the one-call output.

mod common;

use burn::prelude::*;
use common::*;
use zoo_model::init::Init;
use zoo_model::short_conv::ShortConv;

/// y[b, t, c] = bias[c] + Σ_j w[j, c] · x[b, t − (K−1) + j, c], zeros before position 0.
fn reference(x: &[f64], w: &[f64], bias: &[f64], [b, n, d]: [usize; 3], k: usize) -> Vec<f64> {
    let mut y = vec![0.0; b * n * d];
    for s in 0..b {
        for t in 0..n {
            for c in 0..d {
                let mut acc = bias[c];
                for j in 0..k {
                    let Some(src) = (t + j).checked_sub(k - 1) else {
                        continue;
                    };
                    acc += w[j * d + c] * x[(s * n + src) * d + c];
                }
                y[(s * n + t) * d + c] = acc;
            }
        }
    }
    y
}

/// Gradients of L = Σ r ⊙ y for x, w and bias, each by central differences of the f64 definition.
fn reference_grads(
    x: &[f64],
    w: &[f64],
    bias: &[f64],
    r: &[f64],
    shape: [usize; 3],
    k: usize,
) -> [Vec<f64>; 3] {
    let loss = |x: &[f64], w: &[f64], bias: &[f64]| -> f64 {
        reference(x, w, bias, shape, k)
            .iter()
            .zip(r)
            .map(|(y, r)| y * r)
            .sum()
    };
    let h = 1e-6;
    let diff = |which: usize, len: usize| -> Vec<f64> {
        (0..len)
            .map(|i| {
                let (mut xp, mut wp, mut bp) = (x.to_vec(), w.to_vec(), bias.to_vec());
                let (mut xm, mut wm, mut bm) = (x.to_vec(), w.to_vec(), bias.to_vec());
                match which {
                    0 => (xp[i] += h, xm[i] -= h),
                    1 => (wp[i] += h, wm[i] -= h),
                    _ => (bp[i] += h, bm[i] -= h),
                };
                (loss(&xp, &wp, &bp) - loss(&xm, &wm, &bm)) / (2.0 * h)
            })
            .collect()
    };
    [diff(0, x.len()), diff(1, w.len()), diff(2, bias.len())]
}

#[test]
fn forward_and_gradients_match_the_definition() {
    let device = device().autodiff();
    for (k, b, n, d) in [(1, 1, 5, 3), (3, 2, 7, 4), (4, 1, 3, 2)] {
        let conv = ShortConv::new(k, d, &mut Init::new(11, &device));
        let x = randn([b, n, d], 5, &device).require_grad();
        let r = randn([b, n, d], 6, &device);
        let y = conv.forward(x.clone());
        let w = to_f64(&values(conv.weight.val()));
        let bias = to_f64(&values(conv.bias.val()));
        let xs = to_f64(&values(x.clone()));
        let rs = to_f64(&values(r.clone()));
        let what = format!("K {k}, [{b}, {n}, {d}]");
        assert_close(
            &values(y.clone()),
            &reference(&xs, &w, &bias, [b, n, d], k),
            1e-5,
            1e-5,
            &format!("{what}: output"),
        );
        let grads = (y * r).sum().backward();
        let [gx, gw, gb] = reference_grads(&xs, &w, &bias, &rs, [b, n, d], k);
        let got = |t: Tensor<3>| values(t);
        assert_close(
            &got(x.grad(&grads).unwrap()),
            &gx,
            1e-4,
            1e-4,
            &format!("{what}: dL/dx"),
        );
        assert_close(
            &values(conv.weight.val().grad(&grads).unwrap()),
            &gw,
            1e-4,
            1e-4,
            &format!("{what}: dL/dw"),
        );
        assert_close(
            &values(conv.bias.val().grad(&grads).unwrap()),
            &gb,
            1e-4,
            1e-4,
            &format!("{what}: dL/dbias"),
        );
    }
}

#[test]
fn carried_state_equals_one_call() {
    let device = device();
    let (b, n, d, k) = (2, 11, 5, 4);
    let conv = ShortConv::new(k, d, &mut Init::new(2, &device));
    let x = randn([b, n, d], 9, &device);
    let whole = values(conv.forward(x.clone()));
    // Splits shorter than K−1 exercise a state that spans several calls.
    for cuts in [vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10], vec![2, 9], vec![6]] {
        let mut state = None;
        let mut parts = Vec::new();
        let mut start = 0;
        for end in cuts.into_iter().chain([n]) {
            let (y, s) = conv.forward_with_state(x.clone().narrow(1, start, end - start), state);
            assert_eq!(s.as_ref().unwrap().dims(), [b, k - 1, d]);
            parts.push(y);
            state = s;
            start = end;
        }
        assert_close_f32(
            &values(Tensor::cat(parts, 1)),
            &whole,
            1e-6,
            1e-6,
            "split calls vs one call",
        );
    }
}
