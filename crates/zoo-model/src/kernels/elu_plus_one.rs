//! Fused elu(x) + 1, the feature map of Katharopoulos et al. 2020 ("Transformers are RNNs"),
//! forward and backward in one pass each:
//!
//!   φ(x) = x + 1 (x > 0),  eˣ (x ≤ 0);    φ'(x) = 1 (x > 0),  eˣ (x ≤ 0)
//!
//! The composed form (clamp, clamp, exp, add) costs four passes forward and the clamps' masks
//! backward, on both q and k of every linear-attention layer.

use std::mem::MaybeUninit;

use super::simd::{self, exp, multiversion};

/// φ(v), inlined into the callers' instruction-set versions (they vectorise it; `FUSED`: their
/// `simd::FUSED`).
#[inline(always)]
pub fn phi<const FUSED: bool>(v: f32) -> f32 {
    if v > 0.0 {
        v + 1.0
    } else {
        simd::exp_with::<FUSED>(v)
    }
}

multiversion! {
    // Writes every value of y (which may be uninitialised).
    fn forward_chunk(x: &[f32], y: &mut [MaybeUninit<f32>]) {
        for (out, &v) in y.iter_mut().zip(x) {
            out.write(phi::<{ simd::FUSED }>(v));
        }
    }
}

multiversion! {
    fn backward_chunk(x: &[f32], dy: &[f32], dx: &mut [MaybeUninit<f32>]) {
        for ((out, &v), &g) in dx.iter_mut().zip(x).zip(dy) {
            out.write(if v > 0.0 { g } else { g * exp(v) });
        }
    }
}

pub fn forward(x: &[f32]) -> Vec<f32> {
    simd::par_map(x, forward_chunk)
}

pub fn backward(x: &[f32], dy: &[f32]) -> Vec<f32> {
    simd::par_map2(x, dy, backward_chunk)
}
