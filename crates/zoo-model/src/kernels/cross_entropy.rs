//! Fused weighted (masked) cross-entropy over a vocabulary, forward and backward:
//!
//!   ℓᵢ = log Σⱼ e^{xᵢⱼ},   L = Σᵢ wᵢ (ℓᵢ − xᵢ,tᵢ) / max(Σᵢ wᵢ, 1),
//!   ∂L/∂xᵢⱼ = wᵢ / max(Σ w, 1) · (e^{xᵢⱼ − ℓᵢ} − [j = tᵢ])
//!
//! The composed form (log-softmax, gather, mask, mean) materialises the [tokens, vocab]
//! log-probabilities and runs several passes over them forward and backward. Here, under
//! autodiff, the forward visits each row of logits once: ℓ, then at once (the row still in L1)
//! its gradient for an incoming gradient of 1, which is kept instead of the logits; the
//! backward only scales it by the actual incoming gradient (nothing to do for 1, the loss
//! itself). As two passes (ℓ forward, the gradient backward) the [tokens, vocab] logits were
//! read from memory twice and the gradient zero-filled before being written. The plain op
//! computes ℓ only.

use burn::backend::TensorMetadata;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::flex::FlexTensor;
use burn::prelude::Shape;
use burn::tensor::DType;
use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::simd::{self, exp, multiversion};
use super::{AutodiffFlex, SavedForBackward, contiguous, flex_tensor, register_op, values};

const ROWS_PER_TASK: usize = 32;

/// Values per parallel task of the backward's scaling.
const SCALE_CHUNK: usize = 1 << 14;

/// ℓ = log Σ e^x of one row, inlined into the callers' instruction-set versions (`FUSED`: their
/// `simd::FUSED`).
#[inline(always)]
fn logsumexp<const FUSED: bool>(row: &[f32]) -> f32 {
    let max = simd::max(row);
    let mut acc = [0.0f32; 16];
    let chunks = row.chunks_exact(16);
    let tail: f32 = chunks
        .remainder()
        .iter()
        .map(|&v| simd::exp_with::<FUSED>(v - max))
        .sum();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += simd::exp_with::<FUSED>(v - max);
        }
    }
    max + (acc.iter().sum::<f32>() + tail).ln()
}

multiversion! {
    // ℓ for each row of a [rows, vocab] block.
    fn row_logsumexp(x: &[f32], vocab: usize, lse: &mut [f32]) {
        for (row, l) in x.chunks_exact(vocab).zip(lse.iter_mut()) {
            *l = logsumexp::<{ simd::FUSED }>(row);
        }
    }
}

multiversion! {
    // ℓ and dx = scale_i · (softmax − one-hot) for each row of a [rows, vocab] block (every
    // value of dx written).
    fn row_logsumexp_and_grads(
        x: &[f32],
        vocab: usize,
        targets: &[usize],
        scale: &[f32],
        lse: &mut [f32],
        dx: &mut [MaybeUninit<f32>],
    ) {
        for ((((row, out), l), &t), &s) in x
            .chunks_exact(vocab)
            .zip(dx.chunks_exact_mut(vocab))
            .zip(lse.iter_mut())
            .zip(targets)
            .zip(scale)
        {
            let lse_row = logsumexp::<{ simd::FUSED }>(row);
            *l = lse_row;
            for (o, &v) in out.iter_mut().zip(row) {
                o.write(s * exp(v - lse_row));
            }
            // SAFETY: written just above (t < vocab, checked by `target_indices`).
            unsafe { *out[t].assume_init_mut() -= s };
        }
    }
}

/// Checks the targets and returns them as indices.
pub fn target_indices(targets: impl Iterator<Item = i64>, vocab: usize) -> Vec<usize> {
    targets
        .map(|t| {
            assert!(
                (0..vocab as i64).contains(&t),
                "target token {t} outside the vocabulary of {vocab}"
            );
            t as usize
        })
        .collect()
}

/// Returns (L, ℓ per row). `logits` is [rows, vocab].
pub fn forward(
    logits: &[f32],
    vocab: usize,
    targets: &[usize],
    weights: &[f32],
) -> (f32, Vec<f32>) {
    let rows = targets.len();
    assert!(logits.len() == rows * vocab && weights.len() == rows);
    let mut lse = vec![0.0f32; rows];
    lse.par_chunks_mut(ROWS_PER_TASK)
        .zip(logits.par_chunks(ROWS_PER_TASK * vocab.max(1)))
        .for_each(|(l, x)| row_logsumexp(x, vocab, l));
    (loss(logits, vocab, targets, weights, &lse), lse)
}

/// Returns (L, ∂L/∂logits). `logits` is [rows, vocab].
pub fn forward_with_gradient(
    logits: &[f32],
    vocab: usize,
    targets: &[usize],
    weights: &[f32],
) -> (f32, Vec<f32>) {
    let rows = targets.len();
    assert!(logits.len() == rows * vocab && weights.len() == rows);
    let total_weight: f64 = weights.iter().map(|&w| w as f64).sum();
    let norm = 1.0 / total_weight.max(1.0) as f32;
    let scale: Vec<f32> = weights.iter().map(|&w| w * norm).collect();
    let mut lse = vec![0.0f32; rows];
    let mut dx: Vec<f32> = Vec::with_capacity(logits.len());
    dx.spare_capacity_mut()[..logits.len()]
        .par_chunks_mut(ROWS_PER_TASK * vocab.max(1))
        .zip(logits.par_chunks(ROWS_PER_TASK * vocab.max(1)))
        .zip(lse.par_chunks_mut(ROWS_PER_TASK))
        .zip(
            targets
                .par_chunks(ROWS_PER_TASK)
                .zip(scale.par_chunks(ROWS_PER_TASK)),
        )
        .for_each(|(((dx, x), l), (t, s))| row_logsumexp_and_grads(x, vocab, t, s, l, dx));
    // SAFETY: every row's vocab values were written (one task per block of rows).
    unsafe { dx.set_len(logits.len()) };
    (loss(logits, vocab, targets, weights, &lse), dx)
}

/// Σᵢ wᵢ (ℓᵢ − xᵢ,tᵢ) / max(Σᵢ wᵢ, 1), summed in f64 in row order: deterministic and exact
/// enough for any batch size.
fn loss(logits: &[f32], vocab: usize, targets: &[usize], weights: &[f32], lse: &[f32]) -> f32 {
    let total_weight: f64 = weights.iter().map(|&w| w as f64).sum();
    let loss: f64 = (0..targets.len())
        .filter(|&i| weights[i] != 0.0)
        .map(|i| weights[i] as f64 * (lse[i] as f64 - logits[i * vocab + targets[i]] as f64))
        .sum();
    (loss / total_weight.max(1.0)) as f32
}

/// ∂(grad · L)/∂logits from the forward's ∂L/∂logits.
pub fn backward(mut gradient: Vec<f32>, grad: f32) -> Vec<f32> {
    if grad != 1.0 {
        gradient
            .par_chunks_mut(SCALE_CHUNK)
            .for_each(|chunk| chunk.iter_mut().for_each(|g| *g *= grad));
    }
    gradient
}

// ---- Burn plumbing: flex tensors in and out, and the autodiff registration -----------------

/// Token ids of an int tensor, checked against the vocabulary.
fn tensor_targets(t: FlexTensor, vocab: usize) -> Vec<usize> {
    let t = t.to_contiguous();
    match t.dtype() {
        DType::I64 => target_indices(t.storage::<i64>().iter().copied(), vocab),
        DType::I32 => target_indices(t.storage::<i32>().iter().map(|&v| v as i64), vocab),
        other => panic!("targets must be i64 or i32 token ids, got {other:?}"),
    }
}

/// The plain flex op: the loss [1] of logits [rows, vocab] against targets [rows], weights [rows].
pub(super) fn flex(logits: FlexTensor, targets: FlexTensor, weights: FlexTensor) -> FlexTensor {
    let (logits, weights) = (contiguous(logits), contiguous(weights));
    let [rows, vocab] = logits.shape().dims();
    let targets = tensor_targets(targets, vocab);
    assert!(targets.len() == rows, "one target per row of logits");
    let (loss, _) = forward(values(&logits), vocab, &targets, values(&weights));
    flex_tensor(vec![loss], Shape::new([1]))
}

#[derive(Clone, Debug)]
struct CrossEntropySaved {
    /// ∂L/∂logits.
    gradient: Vec<f32>,
    shape: Shape,
}

impl SavedForBackward<1> for CrossEntropySaved {
    fn gradients(self, grad_out: &[f32]) -> [(Vec<f32>, Shape); 1] {
        [(backward(self.gradient, grad_out[0]), self.shape)]
    }
}

/// The op under autodiff on flex, differentiable in the logits only: the weights are a data
/// mask, a constant like the targets.
pub(super) fn autodiff<C: CheckpointStrategy>(
    logits: AutodiffFlex<C>,
    targets: FlexTensor,
    weights: AutodiffFlex<C>,
) -> AutodiffFlex<C> {
    let weights = contiguous(weights.into_primitive());
    register_op::<C, _, _>([logits], |[logits]| {
        let [rows, vocab] = logits.shape().dims();
        let targets = tensor_targets(targets, vocab);
        assert!(targets.len() == rows, "one target per row of logits");
        let (loss, gradient) =
            forward_with_gradient(values(&logits), vocab, &targets, values(&weights));
        let saved = CrossEntropySaved {
            gradient,
            shape: logits.shape(),
        };
        (flex_tensor(vec![loss], Shape::new([1])), saved)
    })
}
