//! Running trained models for evaluation: load a run directory (resolved config, task, final
//! weights — optionally with evaluation-time changes to the model config such as RoPE scaling or
//! log-n scaling), batch samples through the model on any device, and score predictions.
//! Every evaluation draws its samples from ChaCha8 seeded with the run's held-out seeds
//! ([`zoo_train::seeds`]: (run seed, which evaluation, draw, length, cell), never a training
//! batch's seed), so the same draw gives the same numbers.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use burn::prelude::*;
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use zoo_data::tokenizer::ZooTokenizer;
use zoo_data::{Batch, Sample, Task, TaskConfig};
use zoo_model::{Lm, ModelConfig, checkpoint, masked_cross_entropy};
use zoo_train::config::RunConfig;
use zoo_train::seeds::{HeldOut, held_out_seed};
use zoo_train::trainer::{CONFIG_FILE, MODEL_DIR, batch_tensors, with_run_tokenizer};

pub struct LoadedRun {
    pub dir: PathBuf,
    pub name: String,
    pub config: RunConfig,
    pub task: Task,
    pub model: Lm,
}

/// Common evaluation settings.
#[derive(Clone, Debug)]
pub struct EvalOptions {
    pub device: Device,
    pub batch_size: usize,
    /// Which held-out draw to evaluate on (`zoo eval --seed`; 0 is the post-training one). The
    /// samples always derive from the run's own seed, apart from every training batch.
    pub seed: u64,
    pub progress: bool,
    /// Folder that relative task paths are resolved against (where `zoo train` ran).
    pub base_dir: PathBuf,
}

/// Load `dir` with the model config passed through `adjust` (evaluation-time changes).
pub fn load_run(
    dir: &Path,
    opts: &EvalOptions,
    adjust: impl FnOnce(&mut ModelConfig),
) -> Result<LoadedRun> {
    let (config, model) = load_model(dir, opts, adjust)?;
    // The run's own tokenizer.json, not one trained again from task.path: a changed or deleted
    // text file must not hand the same weights other ids.
    let task = with_run_tokenizer(&config.task, dir)?.build(&opts.base_dir)?;
    let name = config.run.name.clone();
    Ok(LoadedRun {
        dir: dir.to_path_buf(),
        name,
        config,
        task,
        model,
    })
}

/// The run's resolved config and final weights (checksums verified), without building its task
/// (no task files are read).
pub fn load_model(
    dir: &Path,
    opts: &EvalOptions,
    adjust: impl FnOnce(&mut ModelConfig),
) -> Result<(RunConfig, Lm)> {
    anyhow::ensure!(
        dir.is_dir(),
        "run directory {} does not exist (train one with `zoo train CONFIG`)",
        dir.display()
    );
    let config = zoo_train::config::load(&dir.join(CONFIG_FILE), &[])
        .with_context(|| format!("{} is not a run directory", dir.display()))?;
    let model_dir = dir.join(MODEL_DIR);
    let mut model_config = checkpoint::read_config(&model_dir)
        .map_err(|e| anyhow::anyhow!("{e} (has the run finished training?)"))?;
    zoo_train::resources::check_model(
        &model_config,
        &model_dir
            .join(checkpoint::CONFIG_FILE)
            .display()
            .to_string(),
    )?;
    adjust(&mut model_config);
    let model = checkpoint::load_with_config(&model_dir, &model_config, &opts.device)?;
    Ok((config, model))
}

/// The tokenizer a run was trained with (`DIR/tokenizer.json`), for tasks that have one.
pub fn run_tokenizer(dir: &Path, config: &RunConfig) -> Result<Option<ZooTokenizer>> {
    let task = with_run_tokenizer(&config.task, dir)?;
    let path = match &task {
        TaskConfig::Needle(c) => c.tokenizer.clone(),
        TaskConfig::Text(c) => c.tokenizer.clone(),
        _ => None,
    };
    Ok(path.map(ZooTokenizer::from_file).transpose()?)
}

impl LoadedRun {
    pub fn eval_dir(&self) -> Result<PathBuf> {
        let dir = self.dir.join("eval");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(dir)
    }

    pub fn train_len(&self) -> Option<usize> {
        self.config.model.train_len
    }

    /// Refuses, before anything runs, evaluation lengths the model cannot take (learned
    /// positions past their table) or whose forward pass at `batch` sequences (at most
    /// `--batch-size`) cannot fit in memory.
    pub fn check_eval_lengths(
        &self,
        lengths: &[usize],
        batch: usize,
        opts: &EvalOptions,
    ) -> Result<()> {
        zoo_train::resources::check_eval_lengths(
            self.model.config(),
            lengths,
            batch.min(opts.batch_size.max(1)),
            "--lengths",
            "--batch-size",
            zoo_model::kernels::on_device(&opts.device),
        )?;
        for &len in lengths {
            self.config.model.check_length(len)?;
        }
        Ok(())
    }
}

/// Argmax predictions [b·n] and the masked mean loss of `samples` (all of one length).
pub fn predict(
    model: &Lm,
    samples: Vec<Sample>,
    device: &Device,
) -> Result<(Vec<u32>, f64, Batch)> {
    let batch = Batch::from_samples(samples)?;
    let (inputs, targets, mask) = batch_tensors(&batch, device);
    let logits = model.forward(inputs);
    let loss = masked_cross_entropy(logits.clone(), targets, mask).into_scalar::<f32>() as f64;
    let pred = logits
        .argmax(2)
        .into_data()
        .try_into_vec_as::<i64>()?
        .into_iter()
        .map(|t| t as u32)
        .collect();
    Ok((pred, loss, batch))
}

pub fn progress(total: usize, what: &str, enabled: bool) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(what.to_string());
    bar
}

impl LoadedRun {
    /// The generator of one held-out evaluation cell (`set`, length `seq_len`, `index`) of draw
    /// `opts.seed`, seeded from the run's seed ([`zoo_train::seeds::held_out_seed`]).
    pub fn held_out_rng(
        &self,
        set: HeldOut,
        opts: &EvalOptions,
        seq_len: usize,
        index: u64,
    ) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(held_out_seed(
            self.config.run.seed,
            set,
            opts.seed,
            seq_len,
            index,
        ))
    }
}
