//! TEMPORARY stand-in for the trainer's `summary.json`, written only when a run has finished
//! training and the trainer did not write one. Delete this file (and its one call in `execute`)
//! once the trainer writes `summary.json` itself; the sweep depends only on
//! `RunSummary::read` and on "summary.json exists ⇒ the run finished".
//!
//! Computed from what the run folder holds: accuracies from the eval lines of metrics.jsonl,
//! tokens from the length plan, the decoding state from the model config. It knows no target
//! accuracy (`to_target` is null) and its wall seconds are those of the last invocation only.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use zoo_train::config;
use zoo_train::schedule::LengthPlan;
use zoo_train::summary::{LengthAccuracy, RunSummary, SUMMARY_FILE};
use zoo_train::trainer::{CONFIG_FILE, METRICS_FILE};
use zoo_train::{EvalLog, TrainSummary};

/// Writes `run_dir/summary.json` unless it exists.
pub fn ensure(run_dir: &Path, trained: &TrainSummary, seconds: f64) -> Result<()> {
    let path = run_dir.join(SUMMARY_FILE);
    if path.is_file() {
        return Ok(());
    }
    let config_path = run_dir.join(CONFIG_FILE);
    let config_bytes = std::fs::read(&config_path)
        .with_context(|| format!("cannot read {}", config_path.display()))?;
    let cfg = config::load(&config_path, &[])?;
    let metrics = std::fs::read_to_string(run_dir.join(METRICS_FILE)).unwrap_or_default();
    let mut by_len: BTreeMap<usize, LengthAccuracy> = BTreeMap::new();
    for log in metrics
        .lines()
        .filter_map(|l| serde_json::from_str::<EvalLog>(l).ok())
        .filter(|l| l.kind == "eval")
    {
        let entry = by_len.entry(log.seq_len).or_insert(LengthAccuracy {
            seq_len: log.seq_len,
            best: f64::NEG_INFINITY,
            best_step: log.step,
            last: log.accuracy,
            last_loss: log.loss,
        });
        if log.accuracy > entry.best {
            entry.best = log.accuracy;
            entry.best_step = log.step;
        }
        entry.last = log.accuracy;
        entry.last_loss = log.loss;
    }
    let plan = LengthPlan::new(&cfg.train);
    let accum = cfg.train.grad_accum.max(1) as u64;
    let tokens: u64 = (0..plan.total_steps())
        .map(|s| {
            let at = plan.at(s, cfg.run.seed);
            (at.batch_size * at.seq_len) as u64 * accum
        })
        .sum();
    let state_len = cfg.final_seq_len();
    let summary = RunSummary {
        name: cfg.run.name.clone(),
        config_digest: crate::spec::sha256_hex(&config_bytes),
        mixers: cfg
            .model
            .layer_mixers()
            .iter()
            .map(|m| m.kind().to_string())
            .collect(),
        position: cfg.model.position.kind().to_string(),
        num_params: trained.num_params,
        state_bits: (8.0 * zoo_model::memory::decode_state_bytes(&cfg.model, state_len)) as u64,
        state_seq_len: state_len,
        target_accuracy: None,
        steps: trained.steps,
        planned_steps: plan.total_steps(),
        tokens,
        wall_seconds: seconds,
        final_loss: trained.final_loss,
        accuracy: by_len.into_values().collect(),
        to_target: None,
    };
    zoo_model::checkpoint::write_atomic(&path, serde_json::to_string_pretty(&summary)?.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}
