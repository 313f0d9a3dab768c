//! `summary.json`: the one file a finished run leaves for tables and sweeps — what was trained
//! (config digest, parameters, decoding-state size), how well it recalls (best and final held-out
//! accuracy per evaluation length) and what it cost to reach the target accuracy.
//!
//! Written atomically at the run's root when training ends (the last step, or the first
//! evaluation that reached `train.stop_at_accuracy`); its presence marks a finished run.

use std::path::Path;

use anyhow::{Context, Result};

use serde::{Deserialize, Serialize};

pub const SUMMARY_FILE: &str = "summary.json";

/// Held-out accuracy at one evaluation length over the whole run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct LengthAccuracy {
    pub seq_len: usize,
    /// The highest accuracy of any evaluation at this length.
    pub best: f64,
    /// The step of the first evaluation that gave `best`.
    pub best_step: usize,
    /// The accuracy of the last evaluation.
    pub last: f64,
    /// The held-out loss of the last evaluation.
    pub last_loss: f64,
}

/// What reaching the target accuracy cost, counted from the run's first step.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ToTarget {
    pub steps: usize,
    /// Training tokens (batch × length × micro-batches, summed over the steps).
    pub tokens: u64,
    /// Wall seconds of training and in-training evaluation up to that evaluation.
    pub seconds: f64,
}

/// The contents of `summary.json`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct RunSummary {
    pub name: String,
    /// SHA-256 (hex) of the resolved config.toml the run wrote.
    pub config_digest: String,
    pub mixers: Vec<String>,
    pub position: String,
    pub num_params: usize,
    /// Decoding state of the whole model per sequence, in bits (f32), after `state_seq_len`
    /// tokens: fixed for recurrent mixers, growing with the length for attention's KV cache.
    pub state_bits: u64,
    /// The length `state_bits` is measured at: the final training stage's length.
    pub state_seq_len: usize,
    /// `train.stop_at_accuracy`, when set.
    pub target_accuracy: Option<f64>,
    /// Steps trained (fewer than planned when the target stopped the run).
    pub steps: usize,
    pub planned_steps: usize,
    /// Training tokens over all steps.
    pub tokens: u64,
    /// Wall seconds of the whole run (training and in-training evaluation; a resumed run adds
    /// the seconds of its earlier parts as logged).
    pub wall_seconds: f64,
    pub final_loss: f64,
    /// Per evaluation length, ascending.
    pub accuracy: Vec<LengthAccuracy>,
    /// null when the target was not reached (or none was set).
    pub to_target: Option<ToTarget>,
}

impl RunSummary {
    /// Reads `run_dir/summary.json`.
    pub fn read(run_dir: &Path) -> Result<RunSummary> {
        let path = run_dir.join(SUMMARY_FILE);
        let bytes =
            zoo_data::read_file_capped(&path, "run summary", zoo_data::input::MAX_CONFIG_BYTES)?;
        serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not a run summary", path.display()))
    }
}
