//! Task configs and built tasks: the entry point other crates use.
//!
//! A [`TaskConfig`] is the strict, serde-deserialised `[task]` table of a run
//! config, tagged by `kind` (`mqar`, `needle`, `copy`, `selective_copy`,
//! `text`). Unknown kinds and unknown fields are rejected, and every field
//! has an explicit default, so a typo fails loudly instead of silently
//! training on defaults. [`TaskConfig::build`] validates, resolves relative
//! paths against a base folder and does the one-time work (reading
//! files, training a tokenizer, pre-tokenising a haystack); the resulting
//! [`Task`] then draws samples cheaply and deterministically from a
//! [`ChaCha8Rng`]: the same rng state always gives the same sample.

use std::path::Path;

use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

pub use crate::error::TaskError;

use crate::copy::{CopyConfig, CopyTask, SelectiveCopyConfig, SelectiveCopyTask};
use crate::mqar::{MqarConfig, MqarTask};
use crate::needle::{NeedleConfig, NeedleTask, NeedleVariant};
use crate::sample::{Batch, Sample};
use crate::text::{TextConfig, TextTask};
use crate::tokenizer::ZooTokenizer;

/// The `[task]` section of a run config.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TaskConfig {
    Mqar(MqarConfig),
    Needle(NeedleConfig),
    Copy(CopyConfig),
    SelectiveCopy(SelectiveCopyConfig),
    Text(TextConfig),
}

impl TaskConfig {
    /// The `kind` tag.
    pub fn kind(&self) -> &'static str {
        match self {
            TaskConfig::Mqar(_) => "mqar",
            TaskConfig::Needle(_) => "needle",
            TaskConfig::Copy(_) => "copy",
            TaskConfig::SelectiveCopy(_) => "selective_copy",
            TaskConfig::Text(_) => "text",
        }
    }

    /// Checks every field without touching the file system.
    pub fn validate(&self) -> Result<(), TaskError> {
        match self {
            TaskConfig::Mqar(c) => c.validate(),
            TaskConfig::Needle(c) => c.validate(),
            TaskConfig::Copy(c) => c.validate(),
            TaskConfig::SelectiveCopy(c) => c.validate(),
            TaskConfig::Text(c) => c.validate(),
        }
    }

    /// Validates and builds the task; relative paths resolve against
    /// `base_dir` (the CLI passes the folder `zoo` runs from). May train a
    /// tokenizer.
    pub fn build(&self, base_dir: &Path) -> Result<Task, TaskError> {
        let inner = match self {
            TaskConfig::Mqar(c) => Inner::Mqar(MqarTask::new(c.clone())?),
            TaskConfig::Needle(c) => Inner::Needle(NeedleTask::build(c.clone(), base_dir)?),
            TaskConfig::Copy(c) => Inner::Copy(CopyTask::new(c.clone())?),
            TaskConfig::SelectiveCopy(c) => {
                Inner::SelectiveCopy(SelectiveCopyTask::new(c.clone())?)
            }
            TaskConfig::Text(c) => Inner::Text(TextTask::build(c.clone(), base_dir)?),
        };
        Ok(Task {
            config: self.clone(),
            inner,
        })
    }
}

#[derive(Clone, Debug)]
enum Inner {
    Mqar(MqarTask),
    Needle(NeedleTask),
    Copy(CopyTask),
    SelectiveCopy(SelectiveCopyTask),
    Text(TextTask),
}

/// A built task, ready to draw samples. Cheap to clone except for the
/// tokenised text/haystack it holds.
#[derive(Clone, Debug)]
pub struct Task {
    config: TaskConfig,
    inner: Inner,
}

impl Task {
    /// The config the task was built from (paths as written, not resolved).
    pub fn config(&self) -> &TaskConfig {
        &self.config
    }

    /// The `kind` tag of the task.
    pub fn kind(&self) -> &'static str {
        self.config.kind()
    }

    /// Size of the token id space; every id in every sample is below it.
    pub fn vocab_size(&self) -> usize {
        match &self.inner {
            Inner::Mqar(t) => t.vocab_size(),
            Inner::Needle(t) => t.vocab_size(),
            Inner::Copy(t) => t.config().vocab,
            Inner::SelectiveCopy(t) => t.config().vocab,
            Inner::Text(t) => t.vocab_size(),
        }
    }

    /// One sample of length `seq_len`; deterministic given the rng state.
    pub fn sample(&self, seq_len: usize, rng: &mut ChaCha8Rng) -> Result<Sample, TaskError> {
        match &self.inner {
            Inner::Mqar(t) => t.sample(seq_len, rng),
            Inner::Needle(t) => t.sample(seq_len, rng),
            Inner::Copy(t) => t.sample(seq_len, rng),
            Inner::SelectiveCopy(t) => t.sample(seq_len, rng),
            Inner::Text(t) => t.sample(seq_len, rng),
        }
    }

    /// `batch_size` consecutive samples from `rng`, packed row-major.
    pub fn batch(
        &self,
        batch_size: usize,
        seq_len: usize,
        rng: &mut ChaCha8Rng,
    ) -> Result<Batch, TaskError> {
        if batch_size == 0 {
            return Err(TaskError::invalid_argument(
                "batch_size",
                "0 gives an empty batch (use at least 1)",
            ));
        }
        let samples = (0..batch_size)
            .map(|_| self.sample(seq_len, rng))
            .collect::<Result<Vec<_>, _>>()?;
        Batch::from_samples(samples)
    }

    /// The tokenizer of needle and text tasks.
    pub fn tokenizer(&self) -> Option<&ZooTokenizer> {
        match &self.inner {
            Inner::Needle(t) => Some(t.tokenizer()),
            Inner::Text(t) => Some(t.tokenizer()),
            _ => None,
        }
    }

    /// Smallest `seq_len` this task can fill (the number that too-short
    /// errors name). Text tasks can fill any length up to their file size.
    pub fn min_seq_len(&self) -> usize {
        match &self.inner {
            Inner::Mqar(t) => t.min_seq_len(),
            Inner::Needle(t) => t.min_seq_len(),
            Inner::Copy(t) => t.config().min_seq_len(),
            Inner::SelectiveCopy(t) => t.config().min_seq_len(),
            Inner::Text(_) => 1,
        }
    }

    pub fn is_text(&self) -> bool {
        matches!(self.inner, Inner::Text(_))
    }

    /// A needle sample with explicit depth and variant, for the NIAH grid.
    pub fn needle_sample(
        &self,
        seq_len: usize,
        depth: f64,
        variant: NeedleVariant,
        rng: &mut ChaCha8Rng,
    ) -> Result<Sample, TaskError> {
        self.as_needle()
            .ok_or_else(|| self.wrong_task("needle_sample", "needle"))?
            .sample_at(seq_len, depth, variant, rng)
    }

    /// Held-out perplexity windows of a text task (see
    /// [`TextTask::eval_windows`]).
    pub fn eval_windows(
        &self,
        seq_len: usize,
        max_windows: usize,
    ) -> Result<Vec<Sample>, TaskError> {
        Ok(self
            .as_text()
            .ok_or_else(|| self.wrong_task("eval_windows", "text"))?
            .eval_windows(seq_len, max_windows))
    }

    pub fn as_mqar(&self) -> Option<&MqarTask> {
        match &self.inner {
            Inner::Mqar(t) => Some(t),
            _ => None,
        }
    }

    pub fn as_needle(&self) -> Option<&NeedleTask> {
        match &self.inner {
            Inner::Needle(t) => Some(t),
            _ => None,
        }
    }

    pub fn as_text(&self) -> Option<&TextTask> {
        match &self.inner {
            Inner::Text(t) => Some(t),
            _ => None,
        }
    }

    fn wrong_task(&self, operation: &str, expected: &str) -> TaskError {
        TaskError::WrongTask {
            operation: operation.to_string(),
            expected: expected.to_string(),
            actual: self.kind().to_string(),
        }
    }
}
