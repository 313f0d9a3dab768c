//! Fused exact GELU (Hendrycks & Gimpel 2016), forward and backward in one pass each:
//!
//!   y = x·Φ(x),  Φ(x) = ½(1 + erf(x/√2)),   dy/dx = Φ(x) + x·φ(x),  φ(x) = e^{−x²/2}/√(2π)
//!
//! Burn's autodiff builds GELU from erf and four elementwise ops (forward) and more for the
//! backward, each a separate pass over the [tokens, 4·d] activations.

use rayon::prelude::*;

use super::simd::{erf, exp, multiversion};

const CHUNK: usize = 1 << 14;
const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// 1/√(2π)
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

multiversion! {
    fn forward_chunk(x: &[f32], y: &mut [f32]) {
        for (out, &v) in y.iter_mut().zip(x) {
            *out = 0.5 * v * (1.0 + erf(v * FRAC_1_SQRT_2));
        }
    }
}

multiversion! {
    fn backward_chunk(x: &[f32], dy: &[f32], dx: &mut [f32]) {
        for ((out, &v), &g) in dx.iter_mut().zip(x).zip(dy) {
            let cdf = 0.5 * (1.0 + erf(v * FRAC_1_SQRT_2));
            let pdf = FRAC_1_SQRT_2PI * exp(-0.5 * v * v);
            *out = g * (cdf + v * pdf);
        }
    }
}

pub fn forward(x: &[f32]) -> Vec<f32> {
    let mut y = vec![0.0f32; x.len()];
    y.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(y, x)| forward_chunk(x, y));
    y
}

pub fn backward(x: &[f32], dy: &[f32]) -> Vec<f32> {
    assert_eq!(x.len(), dy.len());
    let mut dx = vec![0.0f32; x.len()];
    dx.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK).zip(dy.par_chunks(CHUNK)))
        .for_each(|(dx, (x, dy))| backward_chunk(x, dy, dx));
    dx
}
