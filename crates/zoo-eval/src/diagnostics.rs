//! Attention-weight diagnostics: pure math on one attention row a = (a_1 … a_n), a query's
//! weights over the n keys it may attend to.
//!
//! - Entropy H(a) = −Σ a_i ln a_i (nats, 0·ln 0 = 0). For a distribution over n keys,
//!   0 ≤ H ≤ ln n: 0 for one-hot, ln n for uniform. Attention "dilution" at long context shows up
//!   as H tracking ln n instead of staying flat.
//! - Sparsity S(a) = mean|a| / √mean(a²) = ‖a‖₁ / (√n ‖a‖₂), a scale-free ratio: 1 for a uniform
//!   row, 1/√n for a one-hot row (Hoyer 2004 uses the affine rescaling of the same ℓ1/ℓ2 ratio).
//!   Unlike entropy it is also defined for rows that are not distributions (linear attention's
//!   unnormalised or signed weights).
//! - Needle mass: Σ of a_i over the positions of the needle tokens — how much of the query's
//!   attention lands on what it is supposed to retrieve.
//! - For weights decaying geometrically with distance (λ^{n−1}, …, λ, 1: RWKV/RetNet-style decay,
//!   ALiBi with slope −ln λ) the sums are geometric series, giving the closed form
//!   S = [(1−λⁿ)/(1−λ)/n] / √[(1−λ²ⁿ)/(1−λ²)/n], used to check `sparsity` and to read measured
//!   sparsities as an "effective decay".
//!
//! `RowStats` averages these over many rows with Welford's update (numerically stable mean and
//! variance, mergeable across threads with Chan et al.'s pairwise formula), and
//! `AttentionAccumulator` keeps one `RowStats` per (layer, head, seq_len) and turns them into
//! `AttentionRow`s.

use std::collections::BTreeMap;
use std::ops::Range;

use crate::results::AttentionRow;

/// Entropy −Σ a ln a in nats. Entries ≤ 0 (or NaN) contribute 0, following 0·ln 0 = 0; the row
/// is expected to be a probability distribution (softmax output) and is not renormalised.
pub fn entropy<T: Copy + Into<f64>>(row: &[T]) -> f64 {
    row.iter()
        .map(|&a| a.into())
        .filter(|&a| a > 0.0)
        .map(|a| -a * a.ln())
        .sum()
}

/// Sparsity S = mean|a| / √mean(a²) over the row's n entries: 1 for uniform, 1/√n for one-hot.
/// NaN for an empty or all-zero row (no direction to measure).
pub fn sparsity<T: Copy + Into<f64>>(row: &[T]) -> f64 {
    if row.is_empty() {
        return f64::NAN;
    }
    let n = row.len() as f64;
    // Scale by the max |a| first so tiny or huge weights neither underflow nor overflow when
    // squared; S is scale-invariant so the result is unchanged.
    let max = row.iter().map(|&a| a.into().abs()).fold(0.0, f64::max);
    if max == 0.0 || !max.is_finite() {
        return f64::NAN;
    }
    let (mut l1, mut l2) = (0.0, 0.0);
    for &a in row {
        let x = a.into().abs() / max;
        l1 += x;
        l2 += x * x;
    }
    (l1 / n) / (l2 / n).sqrt()
}

/// Sum of the row's weights over the union of `ranges` (overlaps counted once, ranges clipped
/// to the row).
pub fn needle_mass<T: Copy + Into<f64>>(row: &[T], ranges: &[Range<usize>]) -> f64 {
    let mut spans: Vec<Range<usize>> = ranges
        .iter()
        .map(|r| r.start.min(row.len())..r.end.min(row.len()))
        .filter(|r| r.start < r.end)
        .collect();
    spans.sort_by_key(|r| r.start);
    let mut mass = 0.0;
    let mut covered = 0; // everything before `covered` has been summed already
    for r in spans {
        let start = r.start.max(covered);
        if start < r.end {
            mass += row[start..r.end].iter().map(|&a| a.into()).sum::<f64>();
            covered = r.end;
        }
    }
    mass
}

/// Closed-form sparsity of the n weights λ^{n−1}, …, λ, 1:
/// S = [(1−λⁿ)/(1−λ)/n] / √[(1−λ²ⁿ)/(1−λ²)/n].
///
/// S only sees |a|, so λ < 0 gives S(|λ|), and S(λ) = S(1/λ). λ = 1 is the uniform row (S = 1,
/// the limit of the formula), λ = 0 the one-hot row (S = 1/√n). NaN for n = 0 or NaN λ.
pub fn exp_decay_sparsity_closed_form(lambda: f64, n: usize) -> f64 {
    if n == 0 {
        return f64::NAN;
    }
    // S is scale-invariant and blind to order, so λ > 1 (weights growing with distance) equals
    // 1/λ after dividing by λ^{n−1} and reversing; folding keeps λⁿ from overflowing.
    let l = if lambda.abs() > 1.0 {
        1.0 / lambda.abs()
    } else {
        lambda.abs()
    };
    let nf = n as f64;
    // At λ = 1 both series are 0/0; (1−λᵏ)/(1−λ) → k, so S → (n/n) / √(n/n) = 1.
    if l == 1.0 {
        return 1.0;
    }
    // 1 − λᵏ = −expm1(k·ln λ) keeps full precision near λ = 1, where the naive difference
    // cancels; 1 − λ is exact there (Sterbenz), and 1 − λ² is formed as (1 − λ)(1 + λ).
    // λ = 0 works too: ln 0 = −∞, expm1(−∞) = −1.
    let ln_l = l.ln();
    let s1 = -(nf * ln_l).exp_m1() / (1.0 - l);
    let s2 = -(2.0 * nf * ln_l).exp_m1() / ((1.0 - l) * (1.0 + l));
    (s1 / nf) / (s2 / nf).sqrt()
}

/// Running mean and variance (Welford 1962) with pairwise merging (Chan et al. 1979).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Welford {
    count: u64,
    mean: f64,
    m2: f64,
}

impl Welford {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one observation; non-finite values are ignored (an undefined statistic of one row
    /// must not poison the mean of the rest).
    pub fn push(&mut self, x: f64) {
        if !x.is_finite() {
            return;
        }
        self.count += 1;
        let delta = x - self.mean;
        self.mean += delta / self.count as f64;
        self.m2 += delta * (x - self.mean);
    }

    /// Combines two accumulators as if all observations had been pushed into one.
    pub fn merge(&mut self, other: &Welford) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = *other;
            return;
        }
        let n = (self.count + other.count) as f64;
        let delta = other.mean - self.mean;
        self.mean += delta * other.count as f64 / n;
        self.m2 += other.m2 + delta * delta * self.count as f64 * other.count as f64 / n;
        self.count += other.count;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// Mean, NaN when empty.
    pub fn mean(&self) -> f64 {
        if self.count == 0 { f64::NAN } else { self.mean }
    }

    /// Unbiased sample variance, NaN with fewer than two observations.
    pub fn variance(&self) -> f64 {
        if self.count < 2 {
            f64::NAN
        } else {
            self.m2 / (self.count - 1) as f64
        }
    }

    pub fn std(&self) -> f64 {
        self.variance().sqrt()
    }
}

/// Statistics of many attention rows of one (layer, head, seq_len).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RowStats {
    pub entropy: Welford,
    pub sparsity: Welford,
    /// Only rows pushed with needle ranges contribute.
    pub needle_mass: Welford,
    /// Row lengths n (number of attendable keys), for the uniform-entropy reference.
    pub row_len: Welford,
}

impl RowStats {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one row; `needle` are the needle token positions when the input has a needle.
    pub fn push<T: Copy + Into<f64>>(&mut self, row: &[T], needle: Option<&[Range<usize>]>) {
        self.entropy.push(entropy(row));
        self.sparsity.push(sparsity(row));
        if let Some(ranges) = needle {
            self.needle_mass.push(needle_mass(row, ranges));
        }
        self.row_len.push(row.len() as f64);
    }

    pub fn merge(&mut self, other: &RowStats) {
        self.entropy.merge(&other.entropy);
        self.sparsity.merge(&other.sparsity);
        self.needle_mass.merge(&other.needle_mass);
        self.row_len.merge(&other.row_len);
    }

    /// Number of rows pushed.
    pub fn rows(&self) -> u64 {
        self.row_len.count()
    }

    pub fn mean_entropy(&self) -> f64 {
        self.entropy.mean()
    }

    pub fn mean_sparsity(&self) -> f64 {
        self.sparsity.mean()
    }

    /// Mean needle mass, `None` if no row had needle ranges.
    pub fn mean_needle_mass(&self) -> Option<f64> {
        (self.needle_mass.count() > 0).then(|| self.needle_mass.mean())
    }

    /// ln(mean row length): the entropy of a uniform row of the average length. (With causal
    /// masking row i has i+1 keys, so for full rows 1..L this is ln((L+1)/2).)
    pub fn uniform_entropy(&self) -> f64 {
        self.row_len.mean().ln()
    }

    /// The summary row written to `attention.json`.
    pub fn to_row(&self, layer: usize, head: usize, seq_len: usize) -> AttentionRow {
        AttentionRow {
            layer,
            head,
            seq_len,
            entropy: self.mean_entropy(),
            sparsity: self.mean_sparsity(),
            needle_mass: self.mean_needle_mass(),
            uniform_entropy: self.uniform_entropy(),
        }
    }
}

/// One `RowStats` per (layer, head, seq_len), ordered by that key.
#[derive(Clone, Debug, Default)]
pub struct AttentionAccumulator {
    stats: BTreeMap<(usize, usize, usize), RowStats>,
}

impl AttentionAccumulator {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push<T: Copy + Into<f64>>(
        &mut self,
        layer: usize,
        head: usize,
        seq_len: usize,
        row: &[T],
        needle: Option<&[Range<usize>]>,
    ) {
        self.stats
            .entry((layer, head, seq_len))
            .or_default()
            .push(row, needle);
    }

    /// Merges another accumulator (e.g. from another worker thread).
    pub fn merge(&mut self, other: &AttentionAccumulator) {
        for (key, stats) in &other.stats {
            self.stats.entry(*key).or_default().merge(stats);
        }
    }

    pub fn get(&self, layer: usize, head: usize, seq_len: usize) -> Option<&RowStats> {
        self.stats.get(&(layer, head, seq_len))
    }

    pub fn is_empty(&self) -> bool {
        self.stats.is_empty()
    }

    /// Summary rows sorted by (layer, head, seq_len).
    pub fn rows(&self) -> Vec<AttentionRow> {
        self.stats
            .iter()
            .map(|(&(layer, head, seq_len), s)| s.to_row(layer, head, seq_len))
            .collect()
    }
}
