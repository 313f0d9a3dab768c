//! What is evaluated after training — the one definition `zoo train` and sweeps share.
//!
//! For every run: the decoding-state table (`eval/state.{json,csv}`: state size per layer against
//! length). Then the evaluation that fits the task: the NIAH depth × length grid for needle
//! tasks (`eval/niah.*`), the MQAR length × pair-count grid for MQAR (`eval/mqar.*`); other tasks
//! get the state table only. Lengths, depths, pair counts and sample counts are the run's
//! `[eval]` section, with the defaults of [`crate::grids`] where a list is empty; the samples are
//! held-out draw 0 of the run's seed ([`zoo_train::seeds`]) and the batch size is
//! `eval.batch_size`. The grid of the task's evaluation is also the state table's.

use std::path::{Path, PathBuf};

use anyhow::Result;
use burn::prelude::Device;
use zoo_train::config::RunConfig;

use crate::grids::{self, Eval};
use crate::results::{MqarResult, NiahResult, StateResult};
use crate::runner::{EvalOptions, load_run};

/// The results of [`evaluate_after_training`] (also written under `run_dir/eval/`).
#[derive(Clone, Debug)]
pub struct AfterTraining {
    pub state: StateResult,
    /// Needle tasks.
    pub niah: Option<NiahResult>,
    /// MQAR tasks.
    pub mqar: Option<MqarResult>,
}

/// The evaluation after training, with the lengths it uses.
fn evaluation_of(cfg: &RunConfig) -> Eval {
    match cfg.task.kind() {
        "needle" => Eval::Niah,
        "mqar" => Eval::Mqar,
        _ => Eval::Attention,
    }
}

/// The file the post-training evaluation of `cfg`'s task writes last.
fn last_file(cfg: &RunConfig) -> &'static str {
    match evaluation_of(cfg) {
        Eval::Niah => "niah.json",
        Eval::Mqar => "mqar.json",
        _ => "state.json",
    }
}

/// Whether the post-training evaluation of the run in `run_dir` (resolved config `cfg`) has
/// written its results.
pub fn is_done(run_dir: &Path, cfg: &RunConfig) -> bool {
    run_dir.join("eval").join(last_file(cfg)).is_file()
}

/// Runs the post-training evaluation of the trained run in `run_dir` on `device` and writes its
/// files under `run_dir/eval/`. `base_dir` is the folder relative task paths (a haystack file)
/// resolve against — where training ran; `progress` draws progress bars on stderr.
pub fn evaluate_after_training(
    run_dir: &Path,
    device: &Device,
    base_dir: &Path,
    progress: bool,
) -> Result<AfterTraining> {
    let cfg = zoo_train::config::load(&run_dir.join(zoo_train::trainer::CONFIG_FILE), &[])?;
    let opts = EvalOptions {
        device: device.clone(),
        batch_size: cfg.eval.batch_size,
        seed: 0,
        progress,
        base_dir: PathBuf::from(base_dir),
    };
    let run = load_run(run_dir, &opts, |_| {})?;
    let eval = evaluation_of(&cfg);
    let lengths = grids::lengths(&cfg, eval, run.task.min_seq_len());
    anyhow::ensure!(
        !lengths.is_empty(),
        "the run can take none of the default evaluation lengths; set eval.niah.lengths / eval.mqar.lengths"
    );
    let dir = run.eval_dir()?;
    let state = crate::attention::state_table(&run.name, &run.model, &lengths);
    state.write_json(&dir.join("state.json"))?;
    state.write_csv(&dir.join("state.csv"))?;
    let mut done = AfterTraining {
        state,
        niah: None,
        mqar: None,
    };
    match eval {
        Eval::Niah => {
            let variant = cfg
                .eval
                .niah
                .variant
                .parse()
                .map_err(|e| anyhow::anyhow!("eval.niah.variant: {e}"))?;
            done.niah = Some(crate::niah::run_niah(
                &run,
                &lengths,
                &cfg.eval.niah.depths,
                cfg.eval.niah.samples,
                variant,
                &opts,
            )?);
        }
        Eval::Mqar => {
            done.mqar = Some(crate::mqar::run_mqar(
                &run,
                &lengths,
                &grids::mqar_pairs(&cfg),
                cfg.eval.mqar.samples,
                &opts,
            )?);
        }
        _ => {}
    }
    Ok(done)
}
