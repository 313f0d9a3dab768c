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
//!
//! The random draw is the project's own, written out here (and in docs/model-definition.md)
//! rather than borrowed from a crate, so no dependency upgrade can change a saved model's
//! pattern: SplitMix64 (Steele, Lea & Flood 2014) seeded with seed ⊕ q·0x9E3779B97F4A7C15 drives
//! a partial Fisher–Yates shuffle (Durstenfeld 1964) of the candidate blocks
//! C = global_blocks..window_start, with Lemire's multiply-shift j = i + ⌊next()·(m − i) / 2⁶⁴⌋
//! as the bounded draw; the first min(random_blocks, m) entries are the random blocks.

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
        blocks.extend(self.random_blocks_of(q, window_start));
        blocks.extend(window_start..=q);
        blocks.sort_unstable();
        blocks.dedup();
        blocks
    }

    /// The random blocks of query block `q` (unsorted): a partial Fisher–Yates shuffle of the
    /// blocks between the globals and the window, driven by SplitMix64(seed ⊕ q·φ64).
    fn random_blocks_of(&self, q: usize, window_start: usize) -> Vec<usize> {
        let mut candidates: Vec<usize> = (self.global_blocks..window_start).collect();
        let m = candidates.len();
        let r = self.random_blocks.min(m);
        let mut rng = SplitMix64::new(self.seed ^ (q as u64).wrapping_mul(SplitMix64::GAMMA));
        for i in 0..r {
            // Lemire's multiply-shift: uniform in i..m up to a bias below (m − i)/2⁶⁴.
            let j = i + ((rng.next_u64() as u128 * (m - i) as u128) >> 64) as usize;
            candidates.swap(i, j);
        }
        candidates.truncate(r);
        candidates
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

/// SplitMix64 (Steele, Lea & Flood 2014, "Fast splittable pseudorandom number generators"), the
/// generator behind BigBird's random blocks. Written out so the pattern of a saved model can
/// never change under a dependency upgrade; each call of `next_u64` is
///
///   state ← state + 0x9E3779B97F4A7C15 (mod 2⁶⁴),  z ← state,
///   z ← (z ⊕ (z ≫ 30))·0xBF58476D1CE4E5B9,  z ← (z ⊕ (z ≫ 27))·0x94D049BB133111EB,
///   return z ⊕ (z ≫ 31)
///
/// (products mod 2⁶⁴), the reference `splitmix64.c` of Vigna's xoshiro page.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// The golden-ratio increment ⌊2⁶⁴/φ⌋, odd.
    pub const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(Self::GAMMA);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
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
