//! The one error type of the crate.
//!
//! Every message is a single line that says what is wrong and how to fix it,
//! because these errors surface verbatim in the CLI after a researcher edits a
//! config file: "seq_len 32 is too short for mqar with num_kv_pairs 16: needs
//! at least 64 (raise seq_len or lower task.num_kv_pairs)". Paths are shown as
//! resolved, so a relative path that was joined onto the wrong base directory
//! is visible in the message.

use std::path::PathBuf;

use crate::input::clip_path;

/// Everything that can go wrong while validating a config, building a task or
/// drawing samples. Generators return this instead of panicking.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// The requested sequence cannot hold the task's fixed parts.
    #[error("seq_len {seq_len} is too short for {task}: needs at least {needed} ({hint})")]
    SeqLenTooShort {
        seq_len: usize,
        task: String,
        needed: usize,
        hint: String,
    },

    /// The requested sequence is longer than the data can fill (text tasks).
    #[error("seq_len {seq_len} is too long for {task}: {reason} ({hint})")]
    SeqLenTooLong {
        seq_len: usize,
        task: String,
        reason: String,
        hint: String,
    },

    /// A config field has a value the generator cannot work with.
    #[error("invalid task.{field}: {message}")]
    InvalidConfig { field: String, message: String },

    /// A runtime argument (not a config field) is out of range.
    #[error("invalid {name}: {message}")]
    InvalidArgument { name: String, message: String },

    /// A file named by the config could not be read.
    #[error(
        "cannot read {what} {}: {source} (check the path; relative paths resolve against the folder you run zoo from, not the config file's folder)",
        clip_path(.path)
    )]
    Io {
        what: String,
        path: PathBuf,
        source: std::io::Error,
    },

    /// A file named by the config is a FIFO, a directory, a device...
    #[error(
        "{what} {} is {kind}, not a regular file (point it at an ordinary file)",
        clip_path(.path)
    )]
    NotAFile {
        what: String,
        path: PathBuf,
        kind: String,
    },

    /// A file named by the config is larger than its cap.
    #[error(
        "{what} {} is larger than the limit of {cap} bytes ({size} bytes); use a smaller file",
        clip_path(.path)
    )]
    TooLarge {
        what: String,
        path: PathBuf,
        cap: u64,
        size: u64,
    },

    /// A text file is not UTF-8.
    #[error("{what} {} is not valid UTF-8: {detail} (convert the file to UTF-8 text)", clip_path(.path))]
    NotUtf8 {
        what: String,
        path: PathBuf,
        detail: String,
    },

    /// A text file holds too little text for the task.
    #[error("{what} {} is too small: {message}", clip_path(.path))]
    TooSmall {
        what: String,
        path: PathBuf,
        message: String,
    },

    /// Loading, training, saving or running a tokenizer failed.
    #[error("tokenizer {origin}: {message}")]
    Tokenizer { origin: String, message: String },

    /// A task-specific operation was called on another kind of task.
    #[error(
        "{operation} needs a {expected} task, but this task is {actual} (call it on a task built from kind = \"{expected}\")"
    )]
    WrongTask {
        operation: String,
        expected: String,
        actual: String,
    },

    /// Samples could not be packed into a batch.
    #[error("cannot build a batch: {message}")]
    Batch { message: String },
}

impl TaskError {
    pub(crate) fn invalid_config(field: impl Into<String>, message: impl Into<String>) -> Self {
        TaskError::InvalidConfig {
            field: field.into(),
            message: message.into(),
        }
    }

    pub(crate) fn invalid_argument(name: impl Into<String>, message: impl Into<String>) -> Self {
        TaskError::InvalidArgument {
            name: name.into(),
            message: message.into(),
        }
    }

    pub(crate) fn too_short(
        seq_len: usize,
        task: impl Into<String>,
        needed: usize,
        hint: impl Into<String>,
    ) -> Self {
        TaskError::SeqLenTooShort {
            seq_len,
            task: task.into(),
            needed,
            hint: hint.into(),
        }
    }
}
