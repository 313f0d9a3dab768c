//! What a sweep evaluates once a run has trained: the single call site of the post-training
//! evaluation, so sweeps and `zoo train` evaluate alike.
//!
//! TEMPORARY: until the post-training evaluation moves from zoo-cli into the zoo-eval library,
//! this runs the MQAR grid (`eval/mqar.json`) of MQAR runs with the same defaults as `zoo train`
//! (the config's `eval.mqar` lengths, else the final training length and twice it; its pair
//! counts, else the task's) and nothing for other tasks. Point [`evaluate_after_training`] and
//! [`evaluation_done`] at the library function when it exists; nothing else calls evaluations.

use std::path::{Path, PathBuf};

use anyhow::Result;
use burn::prelude::Device;
use zoo_eval::{EvalOptions, load_run};
use zoo_train::config::RunConfig;

/// The file the evaluation writes last, when the task has one.
fn done_file(config: &RunConfig) -> Option<&'static str> {
    match config.task.kind() {
        "mqar" => Some("mqar.json"),
        _ => None,
    }
}

/// Whether the evaluation after training has already written its results.
pub fn evaluation_done(run_dir: &Path, config: &RunConfig) -> bool {
    done_file(config).is_none_or(|f| run_dir.join("eval").join(f).is_file())
}

/// Evaluates the finished run in `run_dir` (results under `run_dir/eval/`).
pub fn evaluate_after_training(run_dir: &Path, config: &RunConfig, device: &Device) -> Result<()> {
    if config.task.kind() != "mqar" {
        return Ok(());
    }
    let opts = EvalOptions {
        device: device.clone(),
        batch_size: config.eval.batch_size,
        seed: config.run.seed,
        progress: false,
        base_dir: PathBuf::from("."),
    };
    let run = load_run(run_dir, &opts, |_| {})?;
    let final_len = run.config.final_seq_len();
    let lengths = if config.eval.mqar.lengths.is_empty() {
        vec![final_len, 2 * final_len]
    } else {
        config.eval.mqar.lengths.clone()
    };
    let pairs = if config.eval.mqar.num_kv_pairs.is_empty() {
        run.task
            .as_mqar()
            .map(|t| t.config().pair_counts())
            .unwrap_or_default()
    } else {
        config.eval.mqar.num_kv_pairs.clone()
    };
    zoo_eval::mqar::run_mqar(&run, &lengths, &pairs, config.eval.mqar.samples, &opts)?;
    Ok(())
}
