//! Fused weighted (masked) cross-entropy over a vocabulary, forward and backward:
//!
//!   ℓᵢ = log Σⱼ e^{xᵢⱼ},   L = Σᵢ wᵢ (ℓᵢ − xᵢ,tᵢ) / max(Σᵢ wᵢ, 1),
//!   ∂L/∂xᵢⱼ = wᵢ / max(Σ w, 1) · (e^{xᵢⱼ − ℓᵢ} − [j = tᵢ])
//!
//! The composed form (log-softmax, gather, mask, mean) materialises the [tokens, vocab]
//! log-probabilities and runs several passes over them forward and backward; here the forward
//! keeps only ℓ per row and the backward writes the gradient in one pass.

use rayon::prelude::*;

use super::simd::{self, exp, multiversion};

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
