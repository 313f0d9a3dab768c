//! `summary.json`: the one file a finished run leaves for tables and sweeps — what was trained
//! (config digest, parameters, decoding-state size), how well it recalls (best and final held-out
//! accuracy per evaluation length) and what it cost to reach the target accuracy.
//!
//! Written atomically at the run's root when training ends (the last step, or the first
//! evaluation that reached `train.stop_at_accuracy`); its presence marks a finished run.
//!
//! Everything in it is computed from the resolved config, the model and `metrics.jsonl` — never
//! from counters kept in memory — so a run resumed after a kill writes the same summary as an
//! uninterrupted one (wall seconds aside: `elapsed_s` in the metrics lines is wall time).
//!
//! The target rule ([`reaches_target`]): an evaluation step reaches accuracy `a*` when the
//! held-out accuracy at every evaluation length is ≥ `a*` (the minimum over lengths counts, so a
//! model that recalls only at short lengths has not reached it).

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::config::RunConfig;
use crate::schedule::LengthPlan;
use crate::trainer::{CONFIG_FILE, EvalLog, METRICS_FILE, eval_lines, read_metrics};

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

impl RunSummary {
    /// Writes `run_dir/summary.json` atomically (pretty JSON).
    pub fn write(&self, run_dir: &Path) -> Result<()> {
        let path = run_dir.join(SUMMARY_FILE);
        zoo_model::checkpoint::write_atomic(&path, serde_json::to_string_pretty(self)?.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))
    }
}

/// What the trainer knows at the end of a run that its files do not say.
pub struct Trained<'a> {
    pub num_params: usize,
    /// 8 × Σ over layers of `Lm::state_size_bytes(state_seq_len)`.
    pub state_bits: u64,
    pub state_seq_len: usize,
    /// Steps trained (the stop step, or the planned steps).
    pub steps: usize,
    pub final_loss: f64,
    /// The in-training evaluation lengths the target is checked at.
    pub eval_lengths: &'a [usize],
}

/// The summary of the finished run in `run_dir` (its resolved `config`): the digest of its
/// config.toml, and accuracy, time and target figures from every line of its metrics.jsonl
/// (the lines before a resume included).
pub fn summarize(config: &RunConfig, run_dir: &Path, trained: &Trained) -> Result<RunSummary> {
    let config_path = run_dir.join(CONFIG_FILE);
    let config_digest = zoo_model::manifest::sha256_file(&config_path)
        .with_context(|| format!("cannot read {}", config_path.display()))?;
    let lines = read_metrics(&run_dir.join(METRICS_FILE));
    let evals = eval_lines(&lines);
    let plan = LengthPlan::new(&config.train);
    let (seed, accum) = (config.run.seed, config.train.grad_accum.max(1));
    let latest = |elapsed: &mut dyn Iterator<Item = f64>| elapsed.fold(0.0, f64::max);
    let to_target = config.train.stop_at_accuracy.and_then(|target| {
        let (step, at) = first_reaching(&evals, trained.eval_lengths, target)?;
        Some(ToTarget {
            steps: step,
            tokens: plan.tokens_through(step, seed, accum),
            seconds: latest(&mut at.iter().map(|e| e.elapsed_s)),
        })
    });
    Ok(RunSummary {
        name: config.run.name.clone(),
        config_digest,
        mixers: config
            .model
            .layer_mixers()
            .iter()
            .map(|m| m.kind().to_string())
            .collect(),
        position: config.model.position.kind().to_string(),
        num_params: trained.num_params,
        state_bits: trained.state_bits,
        state_seq_len: trained.state_seq_len,
        target_accuracy: config.train.stop_at_accuracy,
        steps: trained.steps,
        planned_steps: plan.total_steps(),
        tokens: plan.tokens_through(trained.steps, seed, accum),
        wall_seconds: latest(
            &mut lines
                .iter()
                .filter_map(|v| v.get("elapsed_s").and_then(|e| e.as_f64())),
        ),
        final_loss: trained.final_loss,
        accuracy: accuracy_by_length(&evals),
        to_target,
    })
}

/// Whether the evaluations of one step (`evals`) reach `target` at every length of `lengths`:
/// each length has an evaluation and its accuracy is ≥ `target`.
pub fn reaches_target(evals: &[EvalLog], lengths: &[usize], target: f64) -> bool {
    reaches(&evals.iter().collect::<Vec<_>>(), lengths, target)
}

fn reaches(evals: &[&EvalLog], lengths: &[usize], target: f64) -> bool {
    !lengths.is_empty()
        && lengths.iter().all(|&len| {
            evals
                .iter()
                .any(|e| e.seq_len == len && e.accuracy >= target)
        })
}

/// The first step whose evaluations reach `target` at every length of `lengths`, with those
/// evaluations; `evals` in the order they were logged.
pub fn first_reaching<'a>(
    evals: &'a [EvalLog],
    lengths: &[usize],
    target: f64,
) -> Option<(usize, Vec<&'a EvalLog>)> {
    let mut steps: Vec<usize> = evals.iter().map(|e| e.step).collect();
    steps.sort_unstable();
    steps.dedup();
    steps.into_iter().find_map(|step| {
        let at: Vec<&EvalLog> = evals.iter().filter(|e| e.step == step).collect();
        reaches(&at, lengths, target).then_some((step, at))
    })
}

/// Best and last held-out accuracy per evaluation length, ascending by length; `evals` in the
/// order they were logged (the last one of a length is its final evaluation).
pub fn accuracy_by_length(evals: &[EvalLog]) -> Vec<LengthAccuracy> {
    let mut lengths: Vec<usize> = evals.iter().map(|e| e.seq_len).collect();
    lengths.sort_unstable();
    lengths.dedup();
    lengths
        .into_iter()
        .filter_map(|len| {
            let at: Vec<&EvalLog> = evals.iter().filter(|e| e.seq_len == len).collect();
            let last = *at.last()?;
            // The first evaluation with the highest accuracy (ties keep the earlier step).
            let best = at.iter().fold(
                at[0],
                |best, e| if e.accuracy > best.accuracy { e } else { best },
            );
            Some(LengthAccuracy {
                seq_len: len,
                best: best.accuracy,
                best_step: best.step,
                last: last.accuracy,
                last_loss: last.loss,
            })
        })
        .collect()
}
