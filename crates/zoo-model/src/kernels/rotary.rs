//! Fused rotary position embedding (Su et al. 2021, "RoFormer"), half-split layout, forward and
//! backward in one pass each. For the halves [x₁ | x₂] of a head vector at position p:
//!
//!   y = [x₁·cos − x₂·sin | x₁·sin + x₂·cos]   (angles p·ω_i from the caller's tables)
//!
//! and, the rotation being orthogonal, the backward pass is the rotation by −p·ω_i:
//! dx = [dy₁·cos + dy₂·sin | −dy₁·sin + dy₂·cos]. The composed form (two narrows, four products,
//! a sum, a difference, a concatenation) makes ~8 passes forward and more backward.
//!
//! Layout: x [rows_total, seq, head_dim] (rows_total = batch·heads), tables [seq, head_dim/2].

use burn::backend::TensorMetadata;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::flex::FlexTensor;
use burn::prelude::Shape;
use rayon::prelude::*;

use super::simd::multiversion;
use super::{AutodiffFlex, SavedForBackward, contiguous, flex_tensor, register_op, values};

multiversion! {
    // Rotate the head vectors (rows of width 2·half) of a block in place by their positions'
    // angles (tables [rows, half]); sign = −1 rotates backwards.
    fn rotate_in_place(x: &mut [f32], cos: &[f32], sin: &[f32], half: usize, sign: f32) {
        for ((x, c), s) in x
            .chunks_exact_mut(2 * half)
            .zip(cos.chunks_exact(half))
            .zip(sin.chunks_exact(half))
        {
            let (x1, x2) = x.split_at_mut(half);
            for i in 0..half {
                let (a, b, s) = (x1[i], x2[i], sign * s[i]);
                x1[i] = a * c[i] - b * s;
                x2[i] = a * s + b * c[i];
            }
        }
    }
}

/// Rotates x [rows_total, seq, head_dim] by the tables (sign 1) or back (sign −1).
pub fn rotate(x: &[f32], seq: usize, cos: &[f32], sin: &[f32], sign: f32) -> Vec<f32> {
    assert_eq!(cos.len(), sin.len());
    let half = cos.len() / seq.max(1);
    assert!(half > 0 && cos.len() == seq * half && x.len().is_multiple_of(seq * 2 * half));
    let mut y = x.to_vec();
    y.par_chunks_mut(seq * 2 * half)
        .for_each(|y| rotate_in_place(y, cos, sin, half, sign));
    y
}

// ---- Burn plumbing: flex tensors in and out, and the autodiff registration -----------------

/// x [b, h, n, dh] rotated by the angles of the tables (`sign` −1: the inverse rotation).
fn rotate_tensor(x: &[f32], shape: Shape, cos: &[f32], sin: &[f32], sign: f32) -> FlexTensor {
    let seq = shape.dims::<4>()[2];
    flex_tensor(rotate(x, seq, cos, sin, sign), shape)
}

/// The plain flex op.
pub(super) fn flex(x: FlexTensor, cos: &[f32], sin: &[f32]) -> FlexTensor {
    let x = contiguous(x);
    rotate_tensor(values(&x), x.shape(), cos, sin, 1.0)
}

/// The rotation's backward needs only the angles (and the shape), not the input.
#[derive(Clone, Debug)]
struct RopeSaved {
    shape: Shape,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl SavedForBackward<1> for RopeSaved {
    fn gradients(self, grad_out: &[f32]) -> [(Vec<f32>, Shape); 1] {
        let seq = self.shape.dims::<4>()[2];
        let dx = rotate(grad_out, seq, &self.cos, &self.sin, -1.0);
        [(dx, self.shape)]
    }
}

/// The op under autodiff on flex.
pub(super) fn autodiff<C: CheckpointStrategy>(
    x: AutodiffFlex<C>,
    cos: Vec<f32>,
    sin: Vec<f32>,
) -> AutodiffFlex<C> {
    register_op::<C, _, _>([x], |[x]| {
        let shape = x.shape();
        let y = rotate_tensor(values(&x), shape.clone(), &cos, &sin, 1.0);
        (y, RopeSaved { shape, cos, sin })
    })
}
