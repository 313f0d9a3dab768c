//! Fused weighted (masked) cross-entropy over a vocabulary, forward and backward:
//!
//!   ℓᵢ = log Σⱼ e^{xᵢⱼ},   L = Σᵢ wᵢ (ℓᵢ − xᵢ,tᵢ) / max(Σᵢ wᵢ, 1),
//!   ∂L/∂xᵢⱼ = wᵢ / max(Σ w, 1) · (e^{xᵢⱼ − ℓᵢ} − [j = tᵢ])
//!
//! The composed form (log-softmax, gather, mask, mean) materialises the [tokens, vocab]
//! log-probabilities and runs several passes over them forward and backward; here the forward
//! keeps only ℓ per row and the backward writes the gradient in one pass.

use burn::backend::TensorMetadata;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::flex::FlexTensor;
use burn::prelude::Shape;
use burn::tensor::DType;
use rayon::prelude::*;

use super::simd::{self, exp, multiversion};
use super::{AutodiffFlex, SavedForBackward, contiguous, flex_tensor, register_op, values};

const ROWS_PER_TASK: usize = 32;

multiversion! {
    // ℓ for each row of a [rows, vocab] block.
    fn row_logsumexp(x: &[f32], vocab: usize, lse: &mut [f32]) {
        for (row, l) in x.chunks_exact(vocab).zip(lse.iter_mut()) {
            let max = simd::max(row);
            let mut acc = [0.0f32; 16];
            let chunks = row.chunks_exact(16);
            let tail: f32 = chunks.remainder().iter().map(|&v| exp(v - max)).sum();
            for c in chunks {
                for (a, &v) in acc.iter_mut().zip(c) {
                    *a += exp(v - max);
                }
            }
            *l = max + (acc.iter().sum::<f32>() + tail).ln();
        }
    }
}

multiversion! {
    // dx = scale_i · (softmax − one-hot) for a block of rows.
    fn row_grads(x: &[f32], vocab: usize, lse: &[f32], targets: &[usize], scale: &[f32], dx: &mut [f32]) {
        for ((((row, out), &l), &t), &s) in x
            .chunks_exact(vocab)
            .zip(dx.chunks_exact_mut(vocab))
            .zip(lse)
            .zip(targets)
            .zip(scale)
        {
            for (o, &v) in out.iter_mut().zip(row) {
                *o = s * exp(v - l);
            }
            out[t] -= s;
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
        .zip(logits.par_chunks(ROWS_PER_TASK * vocab))
        .for_each(|(l, x)| row_logsumexp(x, vocab, l));
    // Summed in f64 in row order: deterministic and exact enough for any batch size.
    let total_weight: f64 = weights.iter().map(|&w| w as f64).sum();
    let loss: f64 = (0..rows)
        .filter(|&i| weights[i] != 0.0)
        .map(|i| weights[i] as f64 * (lse[i] as f64 - logits[i * vocab + targets[i]] as f64))
        .sum();
    ((loss / total_weight.max(1.0)) as f32, lse)
}

/// ∂(grad · L)/∂logits.
pub fn backward(
    logits: &[f32],
    vocab: usize,
    targets: &[usize],
    weights: &[f32],
    lse: &[f32],
    grad: f32,
) -> Vec<f32> {
    let total_weight: f64 = weights.iter().map(|&w| w as f64).sum();
    let norm = grad / total_weight.max(1.0) as f32;
    let scale: Vec<f32> = weights.iter().map(|&w| w * norm).collect();
    let mut dx = vec![0.0f32; logits.len()];
    dx.par_chunks_mut(ROWS_PER_TASK * vocab)
        .zip(logits.par_chunks(ROWS_PER_TASK * vocab))
        .zip(lse.par_chunks(ROWS_PER_TASK))
        .zip(
            targets
                .par_chunks(ROWS_PER_TASK)
                .zip(scale.par_chunks(ROWS_PER_TASK)),
        )
        .for_each(|(((dx, x), l), (t, s))| row_grads(x, vocab, l, t, s, dx));
    dx
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

/// (loss [1], ℓ [rows], targets) for contiguous logits [rows, vocab] and weights [rows].
fn flex_forward(
    logits: &FlexTensor,
    targets: FlexTensor,
    weights: &FlexTensor,
) -> (FlexTensor, FlexTensor, Vec<usize>) {
    let [rows, vocab] = logits.shape().dims();
    let targets = tensor_targets(targets, vocab);
    assert!(targets.len() == rows, "one target per row of logits");
    let (loss, lse) = forward(values(logits), vocab, &targets, values(weights));
    (
        flex_tensor(vec![loss], Shape::new([1])),
        flex_tensor(lse, Shape::new([rows])),
        targets,
    )
}

/// The plain flex op.
pub(super) fn flex(logits: FlexTensor, targets: FlexTensor, weights: FlexTensor) -> FlexTensor {
    let (logits, weights) = (contiguous(logits), contiguous(weights));
    flex_forward(&logits, targets, &weights).0
}

#[derive(Clone, Debug)]
struct CrossEntropySaved {
    logits: FlexTensor,
    weights: FlexTensor,
    lse: FlexTensor,
    targets: Vec<usize>,
}

impl SavedForBackward<1> for CrossEntropySaved {
    fn gradients(self, grad_out: &[f32]) -> [(Vec<f32>, Shape); 1] {
        let [_, vocab] = self.logits.shape().dims();
        let dx = backward(
            values(&self.logits),
            vocab,
            &self.targets,
            values(&self.weights),
            values(&self.lse),
            grad_out[0],
        );
        [(dx, self.logits.shape())]
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
        let (loss, lse, targets) = flex_forward(&logits, targets, &weights);
        let saved = CrossEntropySaved {
            logits,
            weights,
            lse,
            targets,
        };
        (loss, saved)
    })
}
