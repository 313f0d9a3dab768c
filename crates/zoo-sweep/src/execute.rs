//! One run of a sweep (`zoo sweep SWEEP.toml --only I`): whatever of it is not done yet.
//!
//! - `summary.json` exists (the trainer writes it last): training is done.
//! - else a complete checkpoint exists: resume from it (the run's own config.toml, as
//!   `zoo train --resume`), so a killed sweep continues where each run stopped.
//! - else the folder holds a run that never checkpointed: start it again (`overwrite`).
//! - else start it fresh.
//!
//! Then the post-training evaluation, unless its results exist. Only one process works on a run
//! at a time: `locks/<id>` is held (an advisory file lock, released when the process ends, even
//! when killed) while it trains, so a Slurm task started twice or a second local sweep on the
//! same folder stops with an error instead of training the run twice into one folder.

use std::fs;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::prelude::Device;
use zoo_eval::after_training::is_done as evaluation_done;
use zoo_eval::evaluate_after_training;
use zoo_train::config::{self, RunConfig};
use zoo_train::run_dir::{is_empty_dir, is_run};
use zoo_train::summary::SUMMARY_FILE;
use zoo_train::trainer::{CONFIG_FILE, METRICS_FILE, TOKENIZER_FILE, latest_checkpoint};
use zoo_train::{Observer, TrainOptions, train};

use crate::plan::{Plan, run_dir};
use crate::record::LOCKS_DIR;

/// What `run_one` did.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Training and evaluation were already done; nothing ran.
    AlreadyFinished,
    Finished {
        /// The checkpoint step training resumed from, if it did.
        resumed_from: Option<usize>,
        /// Whether training ran (false: only the evaluation was missing).
        trained: bool,
        seconds: f64,
    },
}

/// Whether run `dir` (of a run with `config`) has trained and been evaluated.
pub fn is_finished(dir: &Path, config: &RunConfig) -> bool {
    dir.join(SUMMARY_FILE).is_file() && evaluation_done(dir, config)
}

/// Trains (or resumes) and evaluates run `index` of `plan` into `SWEEP_DIR/runs/<id>`;
/// `config` is the run's checked config.
pub fn run_one(
    sweep_dir: &Path,
    plan: &Plan,
    index: usize,
    config: RunConfig,
    device: &Device,
    observer: &mut dyn Observer,
) -> Result<Outcome> {
    let run = &plan.runs[index];
    let dir = run_dir(sweep_dir, run);
    let _lock = lock(&sweep_dir.join(LOCKS_DIR).join(&run.id), index)?;
    if is_finished(&dir, &config) {
        return Ok(Outcome::AlreadyFinished);
    }
    let started = Instant::now();
    let mut resumed_from = None;
    let trained = !dir.join(SUMMARY_FILE).is_file();
    if trained {
        let checkpoint = latest_checkpoint(&dir);
        let (cfg, resume, overwrite) = if checkpoint.is_some() {
            resumed_from = checkpoint;
            (config::load(&dir.join(CONFIG_FILE), &[])?, true, false)
        } else if is_run(&dir) {
            (config.clone(), false, true)
        } else {
            clear_unstarted(&dir)?;
            (config.clone(), false, false)
        };
        let opts = TrainOptions {
            run_dir: dir.clone(),
            device: device.clone(),
            resume,
            overwrite,
            base_dir: ".".into(),
        };
        train(cfg, &opts, observer)?;
    }
    if !evaluation_done(&dir, &config) {
        observer.message(&format!("evaluating {}", dir.display()));
        evaluate_after_training(&dir, device, Path::new("."), false)?;
    }
    Ok(Outcome::Finished {
        resumed_from,
        trained,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Holds `path` locked for the life of the returned file.
fn lock(path: &Path, index: usize) -> Result<fs::File> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("cannot open the lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => bail!(
            "run {index} is being trained by another process (it holds {}); wait for it, or stop it first",
            path.display()
        ),
        // File systems without locks: go on unlocked rather than refuse to work.
        Err(fs::TryLockError::Error(_)) => {}
    }
    Ok(file)
}

/// A folder that is not a run but only holds what the trainer writes first (killed between
/// config.toml and metrics.jsonl) is removed; any other content is refused.
fn clear_unstarted(dir: &Path) -> Result<()> {
    if !dir.exists() || is_empty_dir(dir) {
        return Ok(());
    }
    let entries: Vec<String> = fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let started = [CONFIG_FILE, TOKENIZER_FILE, METRICS_FILE];
    if entries.iter().all(|e| started.contains(&e.as_str())) {
        fs::remove_dir_all(dir).with_context(|| format!("cannot clear {}", dir.display()))?;
        return Ok(());
    }
    bail!(
        "{} holds files that are not a run of this sweep ({}); move them away to train the run",
        dir.display(),
        entries.join(", ")
    )
}
