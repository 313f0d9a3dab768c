//! Shared test helpers: seeded random tensors and one `assert_close` that reports max-abs and
//! relative error and never downgrades to a warning.
#![allow(dead_code)]

use burn::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub fn device() -> Device {
    Device::flex()
}

pub fn randn_vec(n: usize, seed: u64, std: f64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let u1: f64 = rng.r#gen::<f64>().max(1e-12);
            let u2: f64 = rng.r#gen();
            ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos() * std) as f32
        })
        .collect()
}

pub fn randn<const D: usize>(shape: [usize; D], seed: u64, device: &Device) -> Tensor<D> {
    let n = shape.iter().product();
    Tensor::from_data(TensorData::new(randn_vec(n, seed, 1.0), shape), device)
}

pub fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_into_vec_as::<f32>().unwrap()
}

pub fn tokens(b: usize, n: usize, vocab: usize, seed: u64, device: &Device) -> Tensor<2, Int> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let v: Vec<i64> = (0..b * n).map(|_| rng.gen_range(0..vocab as i64)).collect();
    Tensor::from_data(TensorData::new(v, [b, n]), device)
}

/// Max-abs and max-relative error of `actual` against `expected`.
pub fn errors(actual: &[f32], expected: &[f64]) -> (f64, f64) {
    assert_eq!(actual.len(), expected.len(), "length mismatch");
    let mut max_abs: f64 = 0.0;
    let mut max_rel: f64 = 0.0;
    for (a, e) in actual.iter().zip(expected) {
        let d = (*a as f64 - e).abs();
        max_abs = max_abs.max(d);
        max_rel = max_rel.max(d / e.abs().max(1e-3));
    }
    (max_abs, max_rel)
}

/// Passes when every element is within `abs` OR `rel` (relative to |expected| ≥ 1e-3).
pub fn assert_close(actual: &[f32], expected: &[f64], abs: f64, rel: f64, what: &str) {
    assert_eq!(
        actual.len(),
        expected.len(),
        "{what}: length {} vs {}",
        actual.len(),
        expected.len()
    );
    assert!(
        actual.iter().all(|a| a.is_finite()),
        "{what}: non-finite values"
    );
    let mut worst = (0usize, 0.0f64);
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        let d = (*a as f64 - e).abs();
        if d > abs && d > rel * e.abs() && d > worst.1 {
            worst = (i, d);
        }
    }
    let (max_abs, max_rel) = errors(actual, expected);
    assert!(
        worst.1 == 0.0,
        "{what}: max-abs error {max_abs:.3e}, max relative error {max_rel:.3e} (tolerance abs {abs:.1e} or rel {rel:.1e}); worst at {} : {} vs {}",
        worst.0,
        actual[worst.0],
        expected[worst.0]
    );
}

pub fn assert_close_f32(actual: &[f32], expected: &[f32], abs: f64, rel: f64, what: &str) {
    let expected: Vec<f64> = expected.iter().map(|&e| e as f64).collect();
    assert_close(actual, &expected, abs, rel, what);
}

pub fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}
