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

/// `values` as a tensor of `shape` on `device`.
pub fn tensor<const D: usize>(v: &[f32], shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(v.to_vec(), shape), device)
}

/// The wgpu device, once per process (the runtime may be initialised only once), or None with
/// a note when there is no adapter — unless ZOO_REQUIRE_WGPU=1, which makes that a failure.
pub fn wgpu() -> Option<Device> {
    static WGPU: std::sync::OnceLock<Option<Device>> = std::sync::OnceLock::new();
    WGPU.get_or_init(|| match Device::wgpu_options().init() {
        Ok(device) => Some(device),
        Err(e) => {
            if std::env::var("ZOO_REQUIRE_WGPU").is_ok_and(|v| v == "1") {
                panic!("ZOO_REQUIRE_WGPU=1 but wgpu is unavailable: {e}");
            }
            println!("skipping the wgpu part: wgpu is unavailable ({e}); set ZOO_REQUIRE_WGPU=1 to fail instead");
            None
        }
    })
    .clone()
}

/// Burn's composed attention of q, k, v [b, h, n, d]: dense scores times `scale`, minus
/// slope_h·(i − j) with ALiBi slopes (empty for none), −∞ where `allowed(i, j)` is false,
/// softmax, weighted sum — the reference the fused kernels are held to.
pub fn composed_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    scale: f64,
    slopes: &[f32],
    allowed: impl Fn(usize, usize) -> bool,
) -> Tensor<4> {
    let device = q.device();
    let [b, h, n, _] = q.dims();
    let mut scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(scale);
    if !slopes.is_empty() {
        let bias: Vec<f32> = (0..h * n * n)
            .map(|ix| {
                let (head, i, j) = (ix / (n * n), ix / n % n, ix % n);
                -slopes[head] * (i as f32 - j as f32)
            })
            .collect();
        scores = scores + tensor(&bias, [1, h, n, n], &device);
    }
    let blocked: Vec<bool> = (0..n * n).map(|ix| !allowed(ix / n, ix % n)).collect();
    let blocked = Tensor::<4, Bool>::from_bool(TensorData::new(blocked, [1, 1, n, n]), &device);
    let scores = scores.mask_fill(blocked.expand([b, h, n, n]), f32::NEG_INFINITY);
    burn::tensor::activation::softmax(scores, 3).matmul(v)
}
