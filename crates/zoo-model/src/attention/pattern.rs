//! Sparse attention patterns as pure functions of positions: which key j may query i see.
//! The banded (sliding window) and block-gathered (BigBird) kernels, the decoding steps and the
//! dense reference mask all derive from these functions, so the tests can check the fast forms
//! against the dense masked softmax fed the very same pattern.
//!
//! Causal Longformer (Beltagy et al. 2020): j ≤ i and either j is global (j < g) or
//! j = i − k·dilation for k < window. Globals are the first g positions; with causality they see
//! every earlier token (all of which are themselves global) and every token sees them.
//!
//! Causal BigBird (Zaheer et al. 2020) on blocks of size b: query block q sees its own block and
//! the previous (window_blocks − 1) blocks, the first global_blocks blocks, and random_blocks
//! blocks drawn from the ones before its window — a pure function of (seed, q), so the pattern
//! for a position never depends on the total length and is identical after reload.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

#[derive(Clone, Debug, PartialEq)]
pub struct WindowPattern {
    pub window: usize,
    pub dilation: usize,
    pub global_tokens: usize,
}

impl WindowPattern {
    /// Distance from the oldest window key to the query, plus one.
    pub fn span(&self) -> usize {
        (self.window - 1) * self.dilation + 1
    }

    pub fn in_window(&self, i: usize, j: usize) -> bool {
        j <= i && (i - j).is_multiple_of(self.dilation) && (i - j) / self.dilation < self.window
    }

    pub fn allowed(&self, i: usize, j: usize) -> bool {
        j <= i && (j < self.global_tokens || self.in_window(i, j))
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct BigBirdPattern {
    pub block_size: usize,
    pub window_blocks: usize,
    pub global_blocks: usize,
    pub random_blocks: usize,
    pub seed: u64,
}

impl BigBirdPattern {
    /// Sorted key blocks of query block `q`.
    pub fn key_blocks(&self, q: usize) -> Vec<usize> {
        if q < self.global_blocks {
            // A global query block sees everything before it.
            return (0..=q).collect();
        }
        let window_start = (q + 1).saturating_sub(self.window_blocks);
        let mut blocks: Vec<usize> = (0..self.global_blocks.min(window_start)).collect();
        let candidates: Vec<usize> = (self.global_blocks..window_start).collect();
        let mut rng =
            ChaCha8Rng::seed_from_u64(self.seed ^ (q as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut random: Vec<usize> = candidates
            .choose_multiple(&mut rng, self.random_blocks.min(candidates.len()))
            .copied()
            .collect();
        blocks.append(&mut random);
        blocks.extend(window_start..=q);
        blocks.sort_unstable();
        blocks.dedup();
        blocks
    }

    /// The most key blocks any query block can have.
    pub fn max_key_blocks(&self) -> usize {
        self.window_blocks + self.global_blocks + self.random_blocks
    }

    pub fn allowed(&self, i: usize, j: usize) -> bool {
        j <= i
            && self
                .key_blocks(i / self.block_size)
                .contains(&(j / self.block_size))
    }
}

/// Row-major [n, n] mask, true where query i may see key j.
pub fn dense_allowed(n: usize, allowed: impl Fn(usize, usize) -> bool) -> Vec<bool> {
    let mut out = vec![false; n * n];
    for i in 0..n {
        for j in 0..=i {
            out[i * n + j] = allowed(i, j);
        }
    }
    out
}
