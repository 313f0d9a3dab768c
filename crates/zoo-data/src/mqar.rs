//! Multi-query associative recall (MQAR).
//!
//! Reference: Arora et al., "Zoology: Measuring and Improving Recall in
//! Efficient Language Models" (2023), generator `multiquery_ar` in
//! `zoology/data/associative_recall.py`. This is a re-implementation of its
//! semantics with the same defaults (vocab 8192, 8 pairs, power_a 0.01).
//!
//! Layout of one sample with `n` pairs (`inputs`, length `seq_len`):
//!
//! ```text
//! position: 0  1  2  3  ... 2n-2 2n-1 | 2n ... seq_len-1
//! inputs:   k1 v1 k2 v2 ... kn   vn   | noise, with each key k_i once at
//!                                     |   position 2n + 2*gap_i
//! targets:  at the query of k_i: v_i (scored); elsewhere the next input
//!           token (unscored; 0 at the last position)
//! ```
//!
//! * Keys are drawn without replacement from `1..vocab/2` (id 0 is reserved,
//!   as in Zoology), values without replacement from `vocab/2..vocab`.
//! * Every key is queried exactly once, in random order. The query region of
//!   length `seq_len - 2n` is split into `space = (seq_len - 2n) / 2` slots of
//!   two tokens; the slot ("gap") of each query is drawn without replacement
//!   with probability ∝ `power_a * x^(power_a - 1)` for `x = gap + 1`, so
//!   small `power_a` puts most queries right after the kv block. The draw is
//!   done with exponential clocks (Efraimidis–Spirakis in log space), which
//!   is exactly sequential weighted sampling without replacement, as numpy's
//!   `choice(replace=False, p=...)` intends, and never underflows for long
//!   sequences.
//! * Every non-query position of the query region holds noise drawn
//!   uniformly from `0..vocab` (Zoology's `random_non_queries=True`); noise
//!   may by chance equal a key, exactly as in Zoology. Such positions are not
//!   scored.
//! * The model reads `k_i` at position `p` and must output `v_i` at `p`:
//!   `answers` are the one-position spans `p..p+1`, sorted by position, and
//!   `needle_positions[k]` is the span `2j..2j+2` of the kv pair whose key is
//!   asked by `answers[k]`.
//!
//! Bound: `seq_len >= 4 * num_kv_pairs` (the kv block takes `2n` tokens and
//! the query region needs `n` slots of 2), as Zoology asserts.

use std::ops::Range;

use rand::Rng;
use rand::seq::index;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::TaskError;
use crate::sample::Sample;

fn default_vocab() -> usize {
    8192
}
fn default_num_kv_pairs() -> usize {
    8
}
fn default_power_a() -> f64 {
    0.01
}
fn default_choices() -> Vec<usize> {
    Vec::new()
}

/// Config for `kind = "mqar"`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MqarConfig {
    /// Vocabulary size; keys come from the lower half, values from the upper.
    #[serde(default = "default_vocab")]
    pub vocab: usize,
    /// Number of key-value pairs (and queries) per sample.
    #[serde(default = "default_num_kv_pairs")]
    pub num_kv_pairs: usize,
    /// Power-law exponent of the query gaps; < 1 favours short gaps, 1 is uniform.
    #[serde(default = "default_power_a")]
    pub power_a: f64,
    /// If non-empty, each sample draws its pair count uniformly from this
    /// list and `num_kv_pairs` is ignored.
    #[serde(default = "default_choices")]
    pub num_kv_pairs_choices: Vec<usize>,
}

impl Default for MqarConfig {
    fn default() -> Self {
        MqarConfig {
            vocab: default_vocab(),
            num_kv_pairs: default_num_kv_pairs(),
            power_a: default_power_a(),
            num_kv_pairs_choices: default_choices(),
        }
    }
}

impl MqarConfig {
    /// The pair counts samples can have.
    pub fn pair_counts(&self) -> Vec<usize> {
        if self.num_kv_pairs_choices.is_empty() {
            vec![self.num_kv_pairs]
        } else {
            self.num_kv_pairs_choices.clone()
        }
    }

    fn max_pairs(&self) -> usize {
        self.pair_counts().into_iter().max().unwrap_or(0)
    }

    /// Smallest `seq_len` that fits every possible sample.
    pub fn min_seq_len(&self) -> usize {
        4 * self.max_pairs()
    }

    pub fn validate(&self) -> Result<(), TaskError> {
        crate::input::check_bound("vocab", self.vocab, crate::input::MAX_VOCAB)?;
        if self.vocab > u32::MAX as usize {
            return Err(TaskError::invalid_config(
                "vocab",
                format!("{} does not fit in u32 token ids (lower it)", self.vocab),
            ));
        }
        let field = if self.num_kv_pairs_choices.is_empty() {
            "num_kv_pairs"
        } else {
            "num_kv_pairs_choices"
        };
        if self.pair_counts().contains(&0) {
            return Err(TaskError::invalid_config(
                field,
                "a sample needs at least 1 key-value pair (use values >= 1)",
            ));
        }
        let n = self.max_pairs();
        let keys_available = (self.vocab / 2).saturating_sub(1);
        let values_available = self.vocab - self.vocab / 2;
        if keys_available < n || values_available < n {
            return Err(TaskError::invalid_config(
                "vocab",
                format!(
                    "{} leaves {keys_available} keys (ids 1..vocab/2) but {field} needs {n} distinct keys (raise task.vocab to at least {} or lower task.{field})",
                    self.vocab,
                    2 * n + 2
                ),
            ));
        }
        if !(self.power_a.is_finite() && self.power_a > 0.0) {
            return Err(TaskError::invalid_config(
                "power_a",
                format!(
                    "{} is not a positive number (Zoology uses 0.01; 1.0 gives uniform gaps)",
                    self.power_a
                ),
            ));
        }
        Ok(())
    }
}

/// A built MQAR task.
#[derive(Clone, Debug)]
pub struct MqarTask {
    config: MqarConfig,
}

impl MqarTask {
    pub fn new(config: MqarConfig) -> Result<Self, TaskError> {
        config.validate()?;
        Ok(MqarTask { config })
    }

    pub fn config(&self) -> &MqarConfig {
        &self.config
    }

    pub fn vocab_size(&self) -> usize {
        self.config.vocab
    }

    pub fn min_seq_len(&self) -> usize {
        self.config.min_seq_len()
    }

    /// One sample; the pair count comes from the config (or its choices).
    pub fn sample(&self, seq_len: usize, rng: &mut ChaCha8Rng) -> Result<Sample, TaskError> {
        let counts = &self.config.num_kv_pairs_choices;
        let n = if counts.is_empty() {
            self.config.num_kv_pairs
        } else {
            counts[rng.gen_range(0..counts.len())]
        };
        self.sample_with_pairs(seq_len, n, rng)
    }

    /// One sample with exactly `num_kv_pairs` pairs, for evaluations that
    /// sweep the pair count independently of the training config.
    pub fn sample_with_pairs(
        &self,
        seq_len: usize,
        num_kv_pairs: usize,
        rng: &mut ChaCha8Rng,
    ) -> Result<Sample, TaskError> {
        let n = num_kv_pairs;
        let vocab = self.config.vocab;
        let half = vocab / 2;
        if n == 0 {
            return Err(TaskError::invalid_argument(
                "num_kv_pairs",
                "0 pairs leave nothing to recall (use at least 1)",
            ));
        }
        if half.saturating_sub(1) < n || vocab - half < n {
            return Err(TaskError::invalid_argument(
                "num_kv_pairs",
                format!(
                    "{n} distinct keys do not fit in vocab {vocab} (raise task.vocab to at least {})",
                    2 * n + 2
                ),
            ));
        }
        if seq_len < 4 * n {
            return Err(TaskError::too_short(
                seq_len,
                format!("mqar with num_kv_pairs {n}"),
                4 * n,
                "raise seq_len or lower task.num_kv_pairs",
            ));
        }

        let keys: Vec<u32> = index::sample(rng, half - 1, n)
            .into_iter()
            .map(|k| (k + 1) as u32)
            .collect();
        let values: Vec<u32> = index::sample(rng, vocab - half, n)
            .into_iter()
            .map(|v| (v + half) as u32)
            .collect();

        let context = 2 * n;
        let space = (seq_len - context) / 2;
        let gaps = power_law_gaps(rng, space, n, self.config.power_a);

        let mut inputs = vec![0u32; seq_len];
        for (j, (&k, &v)) in keys.iter().zip(&values).enumerate() {
            inputs[2 * j] = k;
            inputs[2 * j + 1] = v;
        }
        let mut is_query = vec![false; seq_len];
        // (query position, pair index)
        let mut queries: Vec<(usize, usize)> = gaps
            .iter()
            .enumerate()
            .map(|(j, &g)| (context + 2 * g, j))
            .collect();
        for &(pos, j) in &queries {
            inputs[pos] = keys[j];
            is_query[pos] = true;
        }
        for pos in context..seq_len {
            if !is_query[pos] {
                inputs[pos] = rng.gen_range(0..vocab as u32);
            }
        }

        let mut targets: Vec<u32> = inputs[1..].to_vec();
        targets.push(0);
        let mut loss_mask = vec![false; seq_len];
        for &(pos, j) in &queries {
            targets[pos] = values[j];
            loss_mask[pos] = true;
        }
        queries.sort_unstable();
        let answers: Vec<Range<usize>> = queries.iter().map(|&(p, _)| p..p + 1).collect();
        let needle_positions: Vec<Range<usize>> =
            queries.iter().map(|&(_, j)| 2 * j..2 * j + 2).collect();

        Ok(Sample {
            inputs,
            targets,
            loss_mask,
            answers,
            needle_positions,
            depth: None,
        })
    }
}

/// Draws `amount` distinct gaps from `0..space` with weight
/// `(gap + 1)^(power_a - 1)`, in sequential-draw order.
///
/// Each gap gets an exponential clock `E / w` (E ~ Exp(1)); the first
/// `amount` clocks to ring are distributed exactly like drawing one gap at a
/// time with probability ∝ w among those left. Comparing `ln E - ln w`
/// instead of `E / w` keeps tiny weights of far gaps from underflowing.
fn power_law_gaps(rng: &mut ChaCha8Rng, space: usize, amount: usize, power_a: f64) -> Vec<usize> {
    let mut clocks: Vec<(f64, usize)> = (0..space)
        .map(|gap| {
            let u: f64 = 1.0 - rng.r#gen::<f64>();
            let exp = -u.ln();
            let ln_w = (power_a - 1.0) * ((gap + 1) as f64).ln();
            (exp.ln() - ln_w, gap)
        })
        .collect();
    if amount < clocks.len() {
        clocks.select_nth_unstable_by(amount, |a, b| a.0.total_cmp(&b.0));
        clocks.truncate(amount);
    }
    clocks.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
    clocks.into_iter().map(|(_, gap)| gap).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn gaps_are_distinct_and_in_range() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        for space in [1, 2, 9, 100] {
            for amount in 1..=space.min(12) {
                let gaps = power_law_gaps(&mut rng, space, amount, 0.01);
                assert_eq!(gaps.len(), amount);
                let set: std::collections::HashSet<_> = gaps.iter().collect();
                assert_eq!(set.len(), amount);
                assert!(gaps.iter().all(|&g| g < space));
            }
        }
    }

    #[test]
    fn first_draw_matches_the_power_law() {
        // The first gap drawn follows p(x) ∝ x^(a-1) exactly; with a = 0.5
        // over 4 slots the probability of gap 0 is 1 / (1 + 2^-.5 + 3^-.5 + 4^-.5).
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let trials = 40_000;
        let hits = (0..trials)
            .filter(|_| power_law_gaps(&mut rng, 4, 1, 0.5)[0] == 0)
            .count();
        let w: f64 = (1..=4).map(|x| (x as f64).powf(-0.5)).sum();
        let expected = 1.0 / w;
        let observed = hits as f64 / trials as f64;
        assert!(
            (observed - expected).abs() < 0.01,
            "{observed} vs {expected}"
        );
    }

    #[test]
    fn huge_space_with_tiny_power_does_not_degenerate() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let gaps = power_law_gaps(&mut rng, 200_000, 64, 0.01);
        let set: std::collections::HashSet<_> = gaps.iter().collect();
        assert_eq!(set.len(), 64);
    }
}
