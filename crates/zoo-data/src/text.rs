//! Language modelling on a user-supplied UTF-8 text file.
//!
//! The file is tokenised once at build time into one contiguous token
//! stream (the usual "pack the corpus" treatment of nanoGPT-style training).
//! The stream is split deterministically: the first `1 - valid_fraction` of
//! the tokens are for training, the last `valid_fraction` are held out.
//!
//! * Training sample: a window of `seq_len + 1` consecutive training tokens
//!   at a start drawn uniformly by the rng; `inputs = window[..seq_len]`,
//!   `targets = window[1..]`, `loss_mask` all true; no answer spans (there
//!   is no exact-match unit in free text, perplexity comes from the loss) and
//!   no needles.
//! * Evaluation: [`TextTask::eval_windows`] walks the held-out tokens in
//!   order with stride `seq_len` (windows of `seq_len + 1` tokens that share
//!   one token at their seams), so every held-out token after the first is
//!   predicted exactly once — the standard non-overlapping perplexity
//!   evaluation.
//!
//! The text is encoded in chunks of about 64 KiB cut after a newline, so a
//! large file does not become one giant encoding; chunk seams only ever fall
//! on line ends. Without a `tokenizer` file a BPE tokenizer
//! ([`crate::tokenizer`]) is trained on the file's lines (the first 8 MiB of
//! text at most, to bound build time).

use std::path::{Path, PathBuf};

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::TaskError;
use crate::input::{MAX_TEXT_BYTES, read_text_capped};
use crate::sample::{Sample, from_stream};
use crate::tokenizer::{MIN_TRAIN_VOCAB, ZooTokenizer};

/// Target size of one encoding chunk.
const CHUNK_BYTES: usize = 64 * 1024;
/// At most this much text is used to train a tokenizer.
const MAX_TRAIN_BYTES: usize = 8 * 1024 * 1024;

fn default_tokenizer() -> Option<PathBuf> {
    None
}
fn default_vocab_size() -> usize {
    512
}
fn default_valid_fraction() -> f64 {
    0.05
}

/// Config for `kind = "text"`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TextConfig {
    /// UTF-8 text file to model.
    pub path: PathBuf,
    /// `tokenizer.json` to use; None = train one on the file.
    #[serde(default = "default_tokenizer", skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<PathBuf>,
    /// Vocabulary size when training the tokenizer.
    #[serde(default = "default_vocab_size")]
    pub vocab_size: usize,
    /// Fraction of tokens (at the end of the file) held out for evaluation.
    #[serde(default = "default_valid_fraction")]
    pub valid_fraction: f64,
}

impl TextConfig {
    /// A config for `path` with default settings.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        TextConfig {
            path: path.into(),
            tokenizer: default_tokenizer(),
            vocab_size: default_vocab_size(),
            valid_fraction: default_valid_fraction(),
        }
    }

    pub fn validate(&self) -> Result<(), TaskError> {
        crate::input::check_bound("vocab_size", self.vocab_size, crate::input::MAX_VOCAB)?;
        if self.path.as_os_str().is_empty() {
            return Err(TaskError::invalid_config(
                "path",
                "is empty (set it to a UTF-8 text file)",
            ));
        }
        if !(self.valid_fraction >= 0.0 && self.valid_fraction < 1.0) {
            return Err(TaskError::invalid_config(
                "valid_fraction",
                format!(
                    "{} is outside [0, 1) (it is the held-out share of tokens, e.g. 0.05)",
                    self.valid_fraction
                ),
            ));
        }
        if self.tokenizer.is_none() && self.vocab_size < MIN_TRAIN_VOCAB {
            return Err(TaskError::invalid_config(
                "vocab_size",
                format!(
                    "{} is too small to train a tokenizer (use at least {MIN_TRAIN_VOCAB})",
                    self.vocab_size
                ),
            ));
        }
        Ok(())
    }
}

/// Joins a relative config path onto `base_dir` (the folder `zoo` runs from).
pub(crate) fn resolve(base_dir: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base_dir.join(path)
    }
}

/// Reads a whole file (at most [`MAX_TEXT_BYTES`], regular files only) as UTF-8, naming the
/// file (as `what`) in any error.
pub(crate) fn read_utf8(path: &Path, what: &str) -> Result<String, TaskError> {
    read_text_capped(path, what, MAX_TEXT_BYTES)
}

/// Splits `text` into pieces of roughly `target` bytes, each ending right
/// after a newline where possible.
fn chunks(text: &str, target: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        if rest.len() <= target {
            out.push(rest);
            break;
        }
        let mut cut = target;
        while !rest.is_char_boundary(cut) {
            cut += 1;
        }
        let end = match rest[cut..].find('\n') {
            Some(i) => cut + i + 1,
            None => rest.len(),
        };
        out.push(&rest[..end]);
        rest = &rest[end..];
    }
    out
}

/// A built text task.
#[derive(Clone, Debug)]
pub struct TextTask {
    config: TextConfig,
    path: PathBuf,
    tokenizer: ZooTokenizer,
    tokens: Vec<u32>,
    train_end: usize,
}

impl TextTask {
    /// Reads, tokenises and splits the file; relative paths resolve against
    /// `base_dir`.
    pub fn build(config: TextConfig, base_dir: &Path) -> Result<Self, TaskError> {
        config.validate()?;
        let path = resolve(base_dir, &config.path);
        let text = read_utf8(&path, "text file")?;
        if text.trim().is_empty() {
            return Err(TaskError::TooSmall {
                what: "text file".to_string(),
                path,
                message: "it is empty (task.path must point at a non-empty UTF-8 text)".to_string(),
            });
        }
        let tokenizer = match &config.tokenizer {
            Some(p) => ZooTokenizer::from_file(resolve(base_dir, p))?,
            None => {
                let mut limit = MAX_TRAIN_BYTES.min(text.len());
                while !text.is_char_boundary(limit) {
                    limit -= 1;
                }
                // Lines keep their endings: newlines must be in the alphabet
                // or every line break of the file would encode as <unk>.
                let lines: Vec<String> = text[..limit]
                    .split_inclusive('\n')
                    .map(str::to_string)
                    .collect();
                ZooTokenizer::train_bpe(&lines, config.vocab_size)?
            }
        };
        let mut tokens = Vec::new();
        for chunk in chunks(&text, CHUNK_BYTES) {
            tokens.extend(tokenizer.try_encode(chunk)?);
        }
        let held_out = (tokens.len() as f64 * config.valid_fraction).round() as usize;
        let train_end = tokens.len() - held_out.min(tokens.len());
        if train_end < 2 {
            return Err(TaskError::TooSmall {
                what: "text file".to_string(),
                path,
                message: format!(
                    "it has {} tokens, {train_end} of them for training; one training window needs at least 2 (use a longer file or lower task.valid_fraction)",
                    tokens.len()
                ),
            });
        }
        Ok(TextTask {
            config,
            path,
            tokenizer,
            tokens,
            train_end,
        })
    }

    pub fn config(&self) -> &TextConfig {
        &self.config
    }

    pub fn tokenizer(&self) -> &ZooTokenizer {
        &self.tokenizer
    }

    pub fn vocab_size(&self) -> usize {
        self.tokenizer.vocab_size()
    }

    /// All tokens of the file, training part first.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Number of training tokens (the held-out tokens follow them).
    pub fn num_train_tokens(&self) -> usize {
        self.train_end
    }

    /// Number of held-out tokens.
    pub fn num_valid_tokens(&self) -> usize {
        self.tokens.len() - self.train_end
    }

    /// Longest `seq_len` a training sample can have.
    pub fn max_seq_len(&self) -> usize {
        self.train_end - 1
    }

    /// A random training window.
    pub fn sample(&self, seq_len: usize, rng: &mut ChaCha8Rng) -> Result<Sample, TaskError> {
        if seq_len == 0 {
            return Err(TaskError::too_short(0, "text", 1, "use seq_len >= 1"));
        }
        if seq_len > self.max_seq_len() {
            return Err(TaskError::SeqLenTooLong {
                seq_len,
                task: format!("text file {}", self.path.display()),
                reason: format!(
                    "its training split has only {} tokens, at most seq_len {} fits",
                    self.train_end,
                    self.max_seq_len()
                ),
                hint: "use a longer file, lower seq_len or lower task.valid_fraction".to_string(),
            });
        }
        let start = rng.gen_range(0..=self.train_end - (seq_len + 1));
        Ok(window(&self.tokens[start..start + seq_len + 1]))
    }

    /// Held-out windows in order, non-overlapping (stride `seq_len`), at most
    /// `max_windows`; empty if the held-out split is shorter than one window.
    pub fn eval_windows(&self, seq_len: usize, max_windows: usize) -> Vec<Sample> {
        if seq_len == 0 {
            return Vec::new();
        }
        let valid = &self.tokens[self.train_end..];
        (0..max_windows)
            .map(|k| k * seq_len)
            .take_while(|&start| start + seq_len < valid.len())
            .map(|start| window(&valid[start..start + seq_len + 1]))
            .collect()
    }
}

/// A sample scoring every position of a `seq_len + 1` token window.
fn window(tokens: &[u32]) -> Sample {
    let mut sample = from_stream(tokens.to_vec(), &[], Vec::new(), None);
    sample.loss_mask.fill(true);
    sample
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_text_and_end_on_newlines() {
        let text = "alpha beta\ngamma\n".repeat(500) + "tail without newline é";
        let parts = chunks(&text, 100);
        assert_eq!(parts.concat(), text);
        for p in &parts[..parts.len() - 1] {
            assert!(p.ends_with('\n'));
            assert!(p.len() >= 100);
        }
        assert_eq!(chunks("", 10), Vec::<&str>::new());
    }

    #[test]
    fn window_scores_every_position() {
        let s = window(&[5, 6, 7, 8]);
        assert_eq!(s.inputs, vec![5, 6, 7]);
        assert_eq!(s.targets, vec![6, 7, 8]);
        assert!(s.loss_mask.iter().all(|&m| m));
        assert!(s.answers.is_empty());
    }
}
