//! Fused exact GELU (Hendrycks & Gimpel 2016), forward and backward in one pass each:
//!
//!   y = x·Φ(x),  Φ(x) = ½(1 + erf(x/√2)),   dy/dx = Φ(x) + x·φ(x),  φ(x) = e^{−x²/2}/√(2π)
//!
//! Φ uses the erf of `simd` (Abramowitz & Stegun 7.1.26), here sharing its exponential with φ.
//! Burn's autodiff builds GELU from erf and four elementwise ops (forward) and more for the
//! backward, each a separate pass over the [tokens, 4·d] activations.

use std::mem::MaybeUninit;

use super::simd::{self, multiversion};

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// 1/√(2π)
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

/// (Φ(x), φ(x)) sharing one exponential: erf's e^{−a²} with a = |x|/√2 is e^{−x²/2} = √(2π)·φ.
/// `FUSED`: `simd::FUSED` of the calling copy (multiply-adds fused or not).
#[inline(always)]
fn cdf_pdf<const FUSED: bool>(x: f32) -> (f32, f32) {
    let a = x.abs() * FRAC_1_SQRT_2;
    let e = simd::exp_with::<FUSED>(-a * a); // e^{−x²/2}
    let erf_abs = simd::erf_abs_with::<FUSED>(a, e); // erf(|x|/√2)
    let cdf = 0.5 * (1.0 + erf_abs.copysign(x));
    (cdf, FRAC_1_SQRT_2PI * e)
}

multiversion! {
    // Writes every value of y (which may be uninitialised).
    fn forward_chunk(x: &[f32], y: &mut [MaybeUninit<f32>]) {
        for (out, &v) in y.iter_mut().zip(x) {
            out.write(v * cdf_pdf::<{ simd::FUSED }>(v).0);
        }
    }
}

multiversion! {
    fn backward_chunk(x: &[f32], dy: &[f32], dx: &mut [MaybeUninit<f32>]) {
        for ((out, &v), &g) in dx.iter_mut().zip(x).zip(dy) {
            let (cdf, pdf) = cdf_pdf::<{ simd::FUSED }>(v);
            out.write(g * simd::madd(v, pdf, cdf));
        }
    }
}

pub fn forward(x: &[f32]) -> Vec<f32> {
    simd::par_map(x, forward_chunk)
}

pub fn backward(x: &[f32], dy: &[f32]) -> Vec<f32> {
    simd::par_map2(x, dy, backward_chunk)
}
