//! Fused elu(x) + 1, the feature map of Katharopoulos et al. 2020 ("Transformers are RNNs"),
//! forward and backward in one pass each:
//!
//!   φ(x) = x + 1 (x > 0),  eˣ (x ≤ 0);    φ'(x) = 1 (x > 0),  eˣ (x ≤ 0)
//!
//! The composed form (clamp, clamp, exp, add) costs four passes forward and the clamps' masks
//! backward, on both q and k of every linear-attention layer.

use super::simd::{self, exp, multiversion};

multiversion! {
    fn forward_chunk(x: &[f32], y: &mut [f32]) {
        for (out, &v) in y.iter_mut().zip(x) {
            *out = if v > 0.0 { v + 1.0 } else { exp(v) };
        }
    }
}

multiversion! {
    fn backward_chunk(x: &[f32], dy: &[f32], dx: &mut [f32]) {
        for ((out, &v), &g) in dx.iter_mut().zip(x).zip(dy) {
            *out = if v > 0.0 { g } else { g * exp(v) };
        }
    }
}

multiversion! {
    // g ← g · φ'(x) given φ = φ(x) rather than x: φ' is 1 where x > 0 (there φ = x + 1 > 1)
    // and eˣ = φ elsewhere (φ ≤ 1), so φ' = min(φ, 1).
    fn scale_by_derivative(g: &mut [f32], phi: &[f32]) {
        for (g, &p) in g.iter_mut().zip(phi) {
            *g *= p.min(1.0);
        }
    }
}

pub fn forward(x: &[f32]) -> Vec<f32> {
    simd::par_map(x, forward_chunk)
}

pub fn backward(x: &[f32], dy: &[f32]) -> Vec<f32> {
    simd::par_map2(x, dy, backward_chunk)
}
