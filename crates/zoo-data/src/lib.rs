//! Seeded data for attention-zoo: synthetic recall tasks (MQAR, needle in a
//! haystack, copy, selective copy), language modelling on a text file, and
//! the tokenizers and filler text they need.
//!
//! Other crates use [`TaskConfig`] → [`Task`] → [`Sample`]/[`Batch`]; each
//! generator module documents the exact layout of its samples, and
//! [`sample`] documents the inputs/targets/loss-mask convention they share.

pub mod copy;
pub mod error;
pub mod filler;
pub mod input;
pub mod mqar;
pub mod needle;
pub mod sample;
pub mod scoring;
pub mod task;
pub mod text;
pub mod tokenizer;

pub use input::{clip, read_file_capped, read_text_capped};
pub use sample::{Batch, Sample};
pub use task::{Task, TaskConfig, TaskError};
