//! Copying tasks: plain (delayed) copy and selective copy.
//!
//! Token ids: `0` = blank (noise/filler), `1` = separator, data tokens are
//! drawn uniformly (with replacement) from `2..vocab`. Both tasks put the
//! copy at the very end of the stream so that the distance between the data
//! and its copy grows with `seq_len`, which is what a long-context study wants
//! to stress.
//!
//! **Copy** — the copying-memory task (Hochreiter & Schmidhuber 1997; in the
//! form of Arjovsky et al. 2016): `L = copy_len` data tokens, a delay of
//! blanks, a separator, then the same `L` tokens.
//!
//! ```text
//! stream (seq_len + 1 tokens): x1 .. xL | 0 × (seq_len - 2L) | SEP | x1 .. xL
//! ```
//!
//! **Selective copy** — Gu & Dao, "Mamba: Linear-Time Sequence Modeling with
//! Selective State Spaces" (2023), §4.1.1, generator `torch_selective_copying`
//! (from the S4 repository) with `variable=True`: `M = num_tokens_to_copy`
//! data tokens scattered at sorted random positions of a blank region, then
//! the copy. The original predicts all tokens at `M` marker positions at
//! once; here the copy is produced autoregressively after one separator,
//! which is the same problem in next-token form.
//!
//! ```text
//! stream: region of seq_len - M tokens (M data tokens, rest 0) | SEP | x1 .. xM
//! ```
//!
//! In both, inputs/targets are the shifted stream, `loss_mask` is true on the
//! last `L` (or `M`) targets, `answers` is that one span (exact match = the
//! whole copy right) and `needle_positions` is empty. Bounds:
//! `seq_len >= 2 * copy_len` and `seq_len >= 2 * num_tokens_to_copy`.

use rand::Rng;
use rand::seq::index;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::TaskError;
use crate::sample::{Sample, from_stream};

/// Blank/noise token id.
pub const BLANK: u32 = 0;
/// Separator token id: "start copying now".
pub const SEPARATOR: u32 = 1;
/// First id available for data tokens.
pub const FIRST_DATA_TOKEN: u32 = 2;

fn default_vocab() -> usize {
    16
}
fn default_copy_len() -> usize {
    16
}

/// Config for `kind = "copy"`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CopyConfig {
    /// Vocabulary size including the blank and separator ids.
    #[serde(default = "default_vocab")]
    pub vocab: usize,
    /// Number of tokens to memorise and reproduce.
    #[serde(default = "default_copy_len")]
    pub copy_len: usize,
}

impl Default for CopyConfig {
    fn default() -> Self {
        CopyConfig {
            vocab: default_vocab(),
            copy_len: default_copy_len(),
        }
    }
}

/// Config for `kind = "selective_copy"`; defaults follow the Mamba paper
/// (vocabulary 16, 16 tokens to copy).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SelectiveCopyConfig {
    /// Vocabulary size including the blank and separator ids.
    #[serde(default = "default_vocab")]
    pub vocab: usize,
    /// Number of scattered tokens to reproduce in order.
    #[serde(default = "default_copy_len")]
    pub num_tokens_to_copy: usize,
}

impl Default for SelectiveCopyConfig {
    fn default() -> Self {
        SelectiveCopyConfig {
            vocab: default_vocab(),
            num_tokens_to_copy: default_copy_len(),
        }
    }
}

fn validate_vocab(vocab: usize) -> Result<(), TaskError> {
    crate::input::check_bound("vocab", vocab, crate::input::MAX_VOCAB)?;
    if vocab <= FIRST_DATA_TOKEN as usize {
        return Err(TaskError::invalid_config(
            "vocab",
            format!(
                "{vocab} leaves no data tokens after blank (0) and separator (1) (use at least 3)"
            ),
        ));
    }
    if vocab > u32::MAX as usize {
        return Err(TaskError::invalid_config(
            "vocab",
            format!("{vocab} does not fit in u32 token ids (lower it)"),
        ));
    }
    Ok(())
}

fn validate_count(field: &str, n: usize) -> Result<(), TaskError> {
    crate::input::check_bound(field, n, crate::input::MAX_TASK_TOKENS)?;
    if n == 0 {
        return Err(TaskError::invalid_config(
            field,
            "0 tokens leave nothing to copy (use at least 1)",
        ));
    }
    Ok(())
}

impl CopyConfig {
    pub fn validate(&self) -> Result<(), TaskError> {
        validate_vocab(self.vocab)?;
        validate_count("copy_len", self.copy_len)
    }

    pub fn min_seq_len(&self) -> usize {
        2 * self.copy_len
    }
}

impl SelectiveCopyConfig {
    pub fn validate(&self) -> Result<(), TaskError> {
        validate_vocab(self.vocab)?;
        validate_count("num_tokens_to_copy", self.num_tokens_to_copy)
    }

    pub fn min_seq_len(&self) -> usize {
        2 * self.num_tokens_to_copy
    }
}

fn data_tokens(rng: &mut ChaCha8Rng, vocab: usize, n: usize) -> Vec<u32> {
    (0..n)
        .map(|_| rng.gen_range(FIRST_DATA_TOKEN..vocab as u32))
        .collect()
}

fn copy_sample(stream: Vec<u32>, n: usize) -> Sample {
    let copy = stream.len() - n..stream.len();
    from_stream(stream, std::slice::from_ref(&copy), Vec::new(), None)
}

/// A built copy task.
#[derive(Clone, Debug)]
pub struct CopyTask {
    config: CopyConfig,
}

impl CopyTask {
    pub fn new(config: CopyConfig) -> Result<Self, TaskError> {
        config.validate()?;
        Ok(CopyTask { config })
    }

    pub fn config(&self) -> &CopyConfig {
        &self.config
    }

    pub fn sample(&self, seq_len: usize, rng: &mut ChaCha8Rng) -> Result<Sample, TaskError> {
        let l = self.config.copy_len;
        if seq_len < self.config.min_seq_len() {
            return Err(TaskError::too_short(
                seq_len,
                format!("copy with copy_len {l}"),
                self.config.min_seq_len(),
                "raise seq_len or lower task.copy_len",
            ));
        }
        let data = data_tokens(rng, self.config.vocab, l);
        let mut stream = Vec::with_capacity(seq_len + 1);
        stream.extend_from_slice(&data);
        stream.resize(seq_len - l, BLANK);
        stream.push(SEPARATOR);
        stream.extend_from_slice(&data);
        Ok(copy_sample(stream, l))
    }
}

/// A built selective-copy task.
#[derive(Clone, Debug)]
pub struct SelectiveCopyTask {
    config: SelectiveCopyConfig,
}

impl SelectiveCopyTask {
    pub fn new(config: SelectiveCopyConfig) -> Result<Self, TaskError> {
        config.validate()?;
        Ok(SelectiveCopyTask { config })
    }

    pub fn config(&self) -> &SelectiveCopyConfig {
        &self.config
    }

    pub fn sample(&self, seq_len: usize, rng: &mut ChaCha8Rng) -> Result<Sample, TaskError> {
        let m = self.config.num_tokens_to_copy;
        if seq_len < self.config.min_seq_len() {
            return Err(TaskError::too_short(
                seq_len,
                format!("selective_copy with num_tokens_to_copy {m}"),
                self.config.min_seq_len(),
                "raise seq_len or lower task.num_tokens_to_copy",
            ));
        }
        let data = data_tokens(rng, self.config.vocab, m);
        let region = seq_len - m;
        let mut slots = index::sample(rng, region, m).into_vec();
        slots.sort_unstable();
        let mut stream = vec![BLANK; region];
        for (&slot, &tok) in slots.iter().zip(&data) {
            stream[slot] = tok;
        }
        stream.push(SEPARATOR);
        stream.extend_from_slice(&data);
        Ok(copy_sample(stream, m))
    }
}
