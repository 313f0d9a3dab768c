//! Position encodings: RoPE's relative property, ALiBi's dependence on i − j only, sinusoid
//! golden values, and RoPE's length-extension knobs.

mod common;

use burn::prelude::*;
use common::*;
use zoo_model::position::{Alibi, Rope, sinusoidal};

fn dot_at(rope: &Rope, q: &Tensor<4>, k: &Tensor<4>, i: usize, j: usize) -> f64 {
    let qi = values(rope.apply(q.clone(), i));
    let kj = values(rope.apply(k.clone(), j));
    qi.iter().zip(&kj).map(|(a, b)| *a as f64 * *b as f64).sum()
}

#[test]
fn rope_scores_depend_on_offset_only() {
    let device = device();
    let q = randn([1, 1, 1, 16], 1, &device);
    let k = randn([1, 1, 1, 16], 2, &device);
    for rope in [
        Rope::new(16, 10_000.0, 1.0, 1.0),
        Rope::new(16, 500.0, 4.0, 1.0),
        Rope::new(16, 10_000.0, 1.0, 8.0),
    ] {
        for (i, j, s) in [(5, 2, 7), (10, 10, 100), (3, 0, 1000)] {
            let a = dot_at(&rope, &q, &k, i, j);
            let b = dot_at(&rope, &q, &k, i + s, j + s);
            assert!(
                (a - b).abs() < 1e-3 * a.abs().max(1.0),
                "score({i},{j})={a} vs score({},{})={b}",
                i + s,
                j + s
            );
        }
        // Rotation preserves norms, and different offsets give different scores.
        assert!((dot_at(&rope, &q, &k, 5, 2) - dot_at(&rope, &q, &k, 9, 2)).abs() > 1e-4);
    }
    // Interpolation by s at position p equals no interpolation at p / s.
    let plain = Rope::new(16, 10_000.0, 1.0, 1.0);
    let interp = Rope::new(16, 10_000.0, 4.0, 1.0);
    let a = values(interp.apply(q.clone(), 8));
    let b = values(plain.apply(q.clone(), 2));
    assert_close_f32(&a, &b, 1e-5, 1e-5, "interpolation");
}

#[test]
fn alibi_bias_depends_on_distance_only() {
    let device = device();
    let alibi = Alibi::new(4);
    assert_eq!(alibi.slopes, vec![0.25, 0.0625, 0.015625, 0.00390625]);
    let b1 = values(alibi.bias(0, 6, 0, 6, &device));
    let b2 = values(alibi.bias(10, 6, 10, 6, &device));
    assert_eq!(b1, b2);
    // −m(i − j) at head 1, i = 5, j = 2.
    assert!((b1[36 + 5 * 6 + 2] + 0.0625 * 3.0).abs() < 1e-7);
    // Non-power-of-two head counts follow the paper's interpolation.
    let six = Alibi::new(6);
    let expected = [0.25f32, 0.0625, 0.015625, 0.00390625, 0.5, 0.125];
    assert_close_f32(&six.slopes, &expected, 1e-7, 1e-7, "slopes for 6 heads");
}

#[test]
fn sinusoid_golden_values() {
    let t = sinusoidal::table(1, 2, 4); // positions 1 and 2, d = 4
    let expected = [
        1f64.sin(),
        1f64.cos(),
        (1.0 / 100.0f64).sin(),
        (1.0 / 100.0f64).cos(),
        2f64.sin(),
        2f64.cos(),
        0.02f64.sin(),
        0.02f64.cos(),
    ];
    assert_close(&t, &expected, 1e-7, 1e-7, "sinusoid table");
    assert!((t[0] - 0.841_470_96).abs() < 1e-6 && (t[7] - 0.999_8).abs() < 1e-6);
}
