//! The explicit training loop (nanoGPT's train.py, Burn's custom-training-loop example):
//!
//!   for step in start..total:
//!       (stage, seq_len, batch) = length plan at step;  lr = schedule(step)
//!       grads = Σ_micro ∇ loss(batch(seed, step, micro)) / grad_accum
//!       clip to global norm;  AdamW step;  log;  eval / checkpoint every N
//!
//! Everything random is a pure function of (run seed, step): the task batches come from
//! ChaCha8(train_batch_seed(seed, step, micro)) and dropout seeds Burn's RNG under the project
//! lock. So a checkpoint only needs model + optimiser + step, and a resumed run reproduces the
//! uninterrupted loss curve (bitwise on the flex backend). Evaluations draw from the held-out
//! seeds of [`crate::seeds`], which no training batch can use.
//!
//! With `train.stop_at_accuracy`, the first in-training evaluation whose accuracy reaches the
//! target at every evaluation length ([`crate::summary::reaches_target`]) ends the run: that
//! step is checkpointed, its evaluation is the final one, and the model is exported as at the
//! last step. Every run ends by writing `summary.json` ([`crate::summary`]).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use zoo_data::scoring::{AccuracyRule, score_batch};
use zoo_data::{Batch, Task, TaskConfig};
use zoo_model::sync::seeded;
use zoo_model::{Lm, checkpoint, manifest, masked_cross_entropy};

use crate::config::RunConfig;
use crate::grids::{self, Eval};
use crate::optim::{adamw, clip_global_norm, scale_grads};
use crate::run_dir::{self, Target};
use crate::schedule::{LengthPlan, lr_at};
use crate::seeds::{HeldOut, held_out_seed, train_batch_seed};
use crate::summary::{self, RunSummary};

/// One training line of metrics.jsonl.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct StepLog {
    pub step: usize,
    pub stage: usize,
    pub seq_len: usize,
    pub batch_size: usize,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub tokens_per_s: f64,
    /// Wall seconds since the run's first step, counting the earlier parts of a resumed run.
    #[serde(default)]
    pub elapsed_s: f64,
}

/// One evaluation line of metrics.jsonl.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct EvalLog {
    pub kind: String,
    pub step: usize,
    pub seq_len: usize,
    pub loss: f64,
    pub accuracy: f64,
    /// Wall seconds since the run's first step when this evaluation ended (as in [`StepLog`]).
    #[serde(default)]
    pub elapsed_s: f64,
}

/// Receives progress (the CLI draws a progress bar or prints JSON).
pub trait Observer {
    fn start(&mut self, _total_steps: usize, _first_step: usize) {}
    fn step(&mut self, _log: &StepLog) {}
    fn eval(&mut self, _log: &EvalLog) {}
    fn message(&mut self, _text: &str) {}
}

/// An observer that ignores everything.
pub struct Silent;
impl Observer for Silent {}

pub struct TrainOptions {
    pub run_dir: PathBuf,
    /// The plain device; training wraps it in autodiff.
    pub device: Device,
    pub resume: bool,
    /// Replace the run already in `run_dir` (only a run or an empty folder is ever replaced; the
    /// new run is built beside it and swapped in once its start succeeded).
    pub overwrite: bool,
    /// Folder that relative task paths are resolved against.
    pub base_dir: PathBuf,
}

/// What [`train`] returns; `summary` is also what it wrote to `summary.json`.
#[derive(Clone, Debug)]
pub struct TrainSummary {
    /// Steps trained: the planned steps, or the step the target stopped the run at.
    pub steps: usize,
    pub final_loss: f64,
    /// The final evaluation (one line per in-training evaluation length).
    pub evals: Vec<EvalLog>,
    pub num_params: usize,
    /// The step at which `train.stop_at_accuracy` was reached and training stopped, when that
    /// happened before the last planned step.
    pub stopped_at: Option<usize>,
    /// A resumed run whose training, final evaluation, export and summary were all complete
    /// already: nothing was computed or written.
    pub already_finished: bool,
    /// The contents of `summary.json`.
    pub summary: RunSummary,
}

pub const METRICS_FILE: &str = "metrics.jsonl";
pub const CONFIG_FILE: &str = "config.toml";
pub const MODEL_DIR: &str = "model";
pub const CHECKPOINT_DIR: &str = "checkpoints";
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// Turn task samples into tensors on `device`: inputs, targets [b, n] and the loss mask [b, n].
pub fn batch_tensors(
    batch: &Batch,
    device: &Device,
) -> (Tensor<2, Int>, Tensor<2, Int>, Tensor<2>) {
    let shape = [batch.batch_size, batch.seq_len];
    let ids = |v: &[u32]| {
        Tensor::<2, Int>::from_data(
            TensorData::new(v.iter().map(|&t| t as i64).collect::<Vec<_>>(), shape),
            device,
        )
    };
    let mask: Vec<f32> = batch
        .loss_mask
        .iter()
        .map(|&m| if m { 1.0 } else { 0.0 })
        .collect();
    (
        ids(&batch.inputs),
        ids(&batch.targets),
        Tensor::from_data(TensorData::new(mask, shape), device),
    )
}

/// Loss and accuracy of `model` (plain device) on `batches` held-out batches at `seq_len`, drawn
/// from the run's held-out seeds ([`crate::seeds`]) and scored by the task's
/// [`AccuracyRule`] (whole answers for needle tasks, answer tokens otherwise).
pub fn evaluate(
    model: &Lm,
    task: &Task,
    seq_len: usize,
    batch_size: usize,
    batches: usize,
    seed: u64,
    device: &Device,
) -> Result<(f64, f64)> {
    let rule = AccuracyRule::of(task.config());
    let (mut loss_sum, mut ok, mut total) = (0.0, 0usize, 0usize);
    for i in 0..batches {
        let held_out = held_out_seed(seed, HeldOut::InTraining, 0, seq_len, i as u64);
        let mut rng = ChaCha8Rng::seed_from_u64(held_out);
        let batch = task.batch(batch_size, seq_len, &mut rng)?;
        let (inputs, targets, mask) = batch_tensors(&batch, device);
        let logits = model.forward(inputs);
        loss_sum += masked_cross_entropy(logits.clone(), targets, mask).into_scalar::<f32>() as f64;
        let pred: Vec<u32> = logits
            .argmax(2)
            .into_data()
            .try_into_vec_as::<i64>()?
            .into_iter()
            .map(|t| t as u32)
            .collect();
        let (good, counted) = score_batch(rule, &pred, &batch);
        ok += good;
        total += counted;
    }
    Ok((loss_sum / batches as f64, ok as f64 / total.max(1) as f64))
}

fn append_line(path: &Path, value: &impl Serialize) -> Result<()> {
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    writeln!(f, "{}", serde_json::to_string(value)?)?;
    Ok(())
}

fn checkpoint_dir(run_dir: &Path, step: usize) -> PathBuf {
    run_dir.join(CHECKPOINT_DIR).join(format!("step-{step}"))
}

/// Steps of the complete checkpoints in a run directory (those whose checksum manifest, written
/// last, exists), highest first.
pub fn checkpoint_steps(run_dir: &Path) -> Vec<usize> {
    let mut steps: Vec<usize> = fs::read_dir(run_dir.join(CHECKPOINT_DIR))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix("step-")?
                .parse::<usize>()
                .ok()
        })
        .filter(|s| {
            checkpoint_dir(run_dir, *s)
                .join(manifest::MANIFEST_FILE)
                .is_file()
        })
        .collect();
    steps.sort_unstable_by(|a, b| b.cmp(a));
    steps
}

/// The highest complete checkpoint step in a run directory.
pub fn latest_checkpoint(run_dir: &Path) -> Option<usize> {
    checkpoint_steps(run_dir).first().copied()
}

/// The newest checkpoint, verified against its checksums. A corrupted one is an error naming the
/// file and the newest checkpoint that still verifies.
fn verified_latest_checkpoint(run_dir: &Path) -> Result<usize> {
    let steps = checkpoint_steps(run_dir);
    let Some(&latest) = steps.first() else {
        bail!(
            "{} has no checkpoint to resume from (train without --resume, or with --overwrite)",
            run_dir.display()
        );
    };
    let Err(e) = manifest::verify_manifest(&checkpoint_dir(run_dir, latest)) else {
        return Ok(latest);
    };
    let good = steps[1..]
        .iter()
        .find(|&&s| manifest::verify_manifest(&checkpoint_dir(run_dir, s)).is_ok());
    let advice = match good {
        Some(&s) => format!(
            "the last good checkpoint is {}; delete {} to resume from it",
            checkpoint_dir(run_dir, s).display(),
            checkpoint_dir(run_dir, latest).display()
        ),
        None => "no earlier checkpoint verifies either; start the run again with --overwrite"
            .to_string(),
    };
    bail!("{e}; {advice}")
}

#[derive(Serialize, Deserialize)]
struct CheckpointState {
    step: usize,
    seed: u64,
    /// Wall seconds of the run up to this checkpoint (absent in checkpoints of older runs).
    #[serde(default)]
    elapsed_s: Option<f64>,
}

/// The run time a resumed run continues from: the checkpoint's, else the latest logged one.
fn elapsed_at_checkpoint(dir: &Path, logged: &[serde_json::Value]) -> f64 {
    let from_state = fs::read(dir.join("state.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<CheckpointState>(&b).ok())
        .and_then(|s| s.elapsed_s);
    from_state.unwrap_or_else(|| {
        logged
            .iter()
            .filter_map(|v| v.get("elapsed_s")?.as_f64())
            .fold(0.0, f64::max)
    })
}

/// Write model record + optimiser + step into checkpoints/step-N atomically (temp dir, rename).
fn save_checkpoint(
    run_dir: &Path,
    step: usize,
    seed: u64,
    elapsed_s: f64,
    model: &Lm,
    optim: &ModuleOptimizer,
) -> Result<()> {
    let final_dir = checkpoint_dir(run_dir, step);
    let tmp = run_dir
        .join(CHECKPOINT_DIR)
        .join(format!(".tmp-step-{step}"));
    if tmp.exists() {
        fs::remove_dir_all(&tmp)?;
    }
    fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    model
        .clone()
        .save_file(tmp.join("model"))
        .map_err(|e| anyhow::anyhow!("cannot save the model checkpoint: {e:?}"))?;
    optim
        .save(tmp.join("optim"))
        .map_err(|e| anyhow::anyhow!("cannot save the optimiser checkpoint: {e:?}"))?;
    fs::write(
        tmp.join("state.json"),
        serde_json::to_vec(&CheckpointState {
            step,
            seed,
            elapsed_s: Some(elapsed_s),
        })?,
    )?;
    manifest::write_manifest(&tmp)?;
    if final_dir.exists() {
        fs::remove_dir_all(&final_dir)?;
    }
    fs::rename(&tmp, &final_dir)?;
    Ok(())
}

/// The leading lines of metrics.jsonl (as written, and parsed) that are JSON objects with a
/// step ≤ `step`, up to the first line that is not: bytes that are not UTF-8, a half-written
/// line, a later step.
fn metrics_prefix(path: &Path, step: usize) -> Vec<(String, serde_json::Value)> {
    let Ok(bytes) = fs::read(path) else {
        return Vec::new();
    };
    bytes
        .split(|&b| b == b'\n')
        .map(|line| {
            let text = std::str::from_utf8(line).ok()?;
            let mut value = serde_json::from_str::<serde_json::Value>(text).ok()?;
            exact_floats(text, &mut value);
            let line_step = value.get("step")?.as_u64()?;
            (line_step as usize <= step).then(|| (text.to_string(), value))
        })
        .take_while(Option::is_some)
        .flatten()
        .collect()
}

/// Replaces the floats of a flat metrics line by the exact values of their text. serde_json
/// (without its `float_roundtrip` feature, which would rebuild Burn's dependencies) may read a
/// 17-digit number one ulp off, and a resumed run must see exactly the numbers the uninterrupted
/// run had in memory; Rust's own `f64` parser is correctly rounded.
fn exact_floats(text: &str, value: &mut serde_json::Value) {
    let Some(fields) = value.as_object_mut() else {
        return;
    };
    for (key, field) in fields.iter_mut().filter(|(_, v)| v.is_f64()) {
        let exact = text
            .find(&format!("\"{key}\":"))
            .map(|i| &text[i + key.len() + 3..])
            .and_then(|rest| {
                rest[..rest.find([',', '}']).unwrap_or(rest.len())]
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .and_then(serde_json::Number::from_f64);
        if let Some(exact) = exact {
            *field = serde_json::Value::Number(exact);
        }
    }
}

/// Every line of metrics.jsonl, parsed (up to the first line that is not a JSON object with a
/// step).
pub(crate) fn read_metrics(path: &Path) -> Vec<serde_json::Value> {
    metrics_prefix(path, usize::MAX)
        .into_iter()
        .map(|(_, v)| v)
        .collect()
}

/// The evaluation lines among parsed metrics lines, in order.
pub(crate) fn eval_lines(lines: &[serde_json::Value]) -> Vec<EvalLog> {
    lines
        .iter()
        .filter(|v| v.get("kind").and_then(|k| k.as_str()) == Some("eval"))
        .filter_map(|v| serde_json::from_value::<EvalLog>(v.clone()).ok())
        .collect()
}

/// Cuts metrics.jsonl back to the lines of steps ≤ `step` (a resumed run rewrites the rest),
/// whatever the later bytes hold; returns the kept lines, parsed.
fn truncate_metrics(path: &Path, step: usize) -> Result<Vec<serde_json::Value>> {
    let kept = metrics_prefix(path, step);
    let text: String = kept.iter().map(|(line, _)| format!("{line}\n")).collect();
    let unchanged = fs::metadata(path).is_ok_and(|m| m.len() == text.len() as u64);
    if !unchanged {
        checkpoint::write_atomic(path, text.as_bytes())
            .with_context(|| format!("cannot rewrite {}", path.display()))?;
    }
    Ok(kept.into_iter().map(|(_, v)| v).collect())
}

/// The task config with the run's own tokenizer.json in place of the configured one, so that the
/// ids of a saved run never depend on files outside it.
pub fn with_run_tokenizer(task: &TaskConfig, run_dir: &Path) -> Result<TaskConfig> {
    let mut task = task.clone();
    let slot = match &mut task {
        TaskConfig::Needle(c) => &mut c.tokenizer,
        TaskConfig::Text(c) => &mut c.tokenizer,
        _ => return Ok(task),
    };
    let path = run_dir.join(TOKENIZER_FILE);
    anyhow::ensure!(
        path.is_file(),
        "{} is missing: the run's {} task maps text to ids with the tokenizer it was trained with, and nothing else gives the same ids (restore the file, or train the run again)",
        path.display(),
        task.kind()
    );
    *slot = Some(std::path::absolute(&path).unwrap_or(path));
    Ok(task)
}

/// Train `config` into `opts.run_dir`: train (or resume), evaluate, export `model/` and write
/// `summary.json`. Stops early at the first in-training evaluation that reaches
/// `train.stop_at_accuracy`.
pub fn train(
    mut config: RunConfig,
    opts: &TrainOptions,
    observer: &mut dyn Observer,
) -> Result<TrainSummary> {
    let task = if opts.resume {
        with_run_tokenizer(&config.task, &opts.run_dir)?.build(&opts.base_dir)?
    } else {
        config.task.build(&opts.base_dir)?
    };
    config.check_task_vocab(task.vocab_size())?;
    config.resolve(task.vocab_size());
    config.validate()?;
    crate::resources::check_run(&config, zoo_model::kernels::on_device(&opts.device))?;
    let run_dir = &opts.run_dir;
    let seed = config.run.seed;
    let train_cfg = config.train.clone();
    let target = train_cfg.stop_at_accuracy;
    let plan = LengthPlan::new(&train_cfg);
    let total = plan.total_steps();
    for len in plan.lengths() {
        if len < task.min_seq_len() {
            bail!(
                "train.stages: seq_len {len} is shorter than the task needs ({}); raise it or shrink the task",
                task.min_seq_len()
            );
        }
    }
    let ad = opts.device.clone().autodiff();
    let metrics = run_dir.join(METRICS_FILE);
    let eval_lengths = grids::lengths(&config, Eval::InTraining, task.min_seq_len());

    let mut logged = Vec::new();
    let mut elapsed_before = 0.0;
    let (mut model, mut optim, first_step) = if opts.resume {
        let step = verified_latest_checkpoint(run_dir)?;
        let dir = checkpoint_dir(run_dir, step);
        let model = Lm::new(&config.model, &ad)?
            .try_load_file(dir.join("model"))
            .map_err(|e| {
                anyhow::anyhow!(
                    "checkpoint {} does not fit the run's config: {e:?}",
                    dir.display()
                )
            })?;
        let optim = adamw(&train_cfg).load(dir.join("optim")).map_err(|e| {
            anyhow::anyhow!(
                "cannot read the optimiser state in {}: {e:?}",
                dir.display()
            )
        })?;
        logged = truncate_metrics(&metrics, step)?;
        elapsed_before = elapsed_at_checkpoint(&dir, &logged);
        (model, optim, step)
    } else {
        let target = run_dir::check_target(run_dir, opts.overwrite)?;
        let model = Lm::new(&config.model, &ad)?;
        start_run_dir(run_dir, target, &config, &task)?;
        (model, adamw(&train_cfg), 0)
    };
    // A resumed run whose last checkpoint is the evaluation that reached the target had stopped
    // there: it is finished, not continued (the checkpoint is written after that evaluation).
    let logged_evals = eval_lines(&logged);
    let mut stopped_at = target.and_then(|t| {
        let at: Vec<EvalLog> = logged_evals
            .iter()
            .filter(|e| e.step == first_step)
            .cloned()
            .collect();
        (first_step > 0 && first_step < total && summary::reaches_target(&at, &eval_lengths, t))
            .then_some(first_step)
    });
    let end = stopped_at.unwrap_or(total);
    if opts.resume && first_step < end {
        observer.message(&format!(
            "resuming {} from step {first_step}",
            run_dir.display()
        ));
    }
    let num_params = model.num_params();
    observer.start(total, first_step);

    let started = Instant::now();
    let elapsed = || elapsed_before + started.elapsed().as_secs_f64();
    let run_eval = |model: &Lm, step: usize, observer: &mut dyn Observer| -> Result<Vec<EvalLog>> {
        let valid = model.valid();
        let mut logs = Vec::new();
        for &len in &eval_lengths {
            config.model.check_length(len)?;
            let (loss, accuracy) = evaluate(
                &valid,
                &task,
                len,
                config.eval.batch_size,
                train_cfg.eval_batches.max(1),
                seed,
                &opts.device,
            )?;
            let log = EvalLog {
                kind: "eval".into(),
                step,
                seq_len: len,
                loss,
                accuracy,
                elapsed_s: elapsed(),
            };
            append_line(&metrics, &log)?;
            observer.eval(&log);
            logs.push(log);
        }
        Ok(logs)
    };

    let dropout = config.model.uses_dropout();
    let accum = train_cfg.grad_accum.max(1);
    // A resumed run that trains no further step reports the loss it logged last.
    let mut last_loss = logged
        .iter()
        .rev()
        .find(|v| v.get("kind").is_none())
        .and_then(|v| v.get("loss")?.as_f64())
        .unwrap_or(f64::NAN);
    let mut last_saved = latest_checkpoint(run_dir);
    let mut stop_evals = None;
    for step in first_step..end {
        let step_started = Instant::now();
        let at = plan.at(step, seed);
        let lr = lr_at(step, total, &train_cfg);
        let mut accumulator = GradientsAccumulator::<Lm>::new();
        let mut loss_sum = 0.0;
        for micro in 0..accum {
            let data_seed = train_batch_seed(seed, step, micro, accum);
            let mut rng = ChaCha8Rng::seed_from_u64(data_seed);
            let batch = task.batch(at.batch_size, at.seq_len, &mut rng)?;
            let (inputs, targets, mask) = batch_tensors(&batch, &ad);
            let (loss, grads) = {
                let _guard = dropout.then(|| seeded(&ad, data_seed));
                let loss = masked_cross_entropy(model.forward(inputs), targets, mask);
                let grads = loss.backward();
                (loss, grads)
            };
            loss_sum += loss.into_scalar::<f32>() as f64;
            accumulator.accumulate(&model, GradientsParams::from_grads(grads, &model));
        }
        let loss = loss_sum / accum as f64;
        let diverged = |what: &str, value: f64| {
            let kept = last_saved.map_or("no checkpoint was written yet".to_string(), |s| {
                format!(
                    "the last good checkpoint is {}",
                    checkpoint_dir(run_dir, s).display()
                )
            });
            anyhow::anyhow!(
                "{what} became {value} at step {} (seq_len {}); stopping — {kept}; lower train.lr or raise train.warmup_steps",
                step + 1,
                at.seq_len
            )
        };
        if !loss.is_finite() {
            return Err(diverged("loss", loss));
        }
        let mut grads = accumulator.grads();
        if accum > 1 {
            scale_grads(&model, &mut grads, 1.0 / accum as f32);
        }
        let grad_norm = clip_global_norm(&model, &mut grads, train_cfg.grad_clip);
        // A non-finite gradient would turn every weight into NaN (and the checkpoint with them),
        // even when the loss of this step is still finite.
        if !grad_norm.is_finite() {
            return Err(diverged("gradient norm", grad_norm));
        }
        model = optim.step(lr, model, grads);
        last_loss = loss;
        let done = step + 1;
        let eval_now =
            train_cfg.eval_every > 0 && done % train_cfg.eval_every == 0 && done != total;
        let log = StepLog {
            step: done,
            stage: at.stage,
            seq_len: at.seq_len,
            batch_size: at.batch_size,
            loss,
            lr,
            grad_norm,
            tokens_per_s: (at.batch_size * at.seq_len * accum) as f64
                / step_started.elapsed().as_secs_f64(),
            elapsed_s: elapsed(),
        };
        // With a target, every evaluation step may be the last, so its loss is logged too.
        if done % train_cfg.log_every.max(1) == 0
            || done == total
            || done == first_step + 1
            || (eval_now && target.is_some())
        {
            append_line(&metrics, &log)?;
        }
        observer.step(&log);
        let mut reached = false;
        if eval_now {
            let logs = run_eval(&model, done, observer)?;
            reached = target.is_some_and(|t| summary::reaches_target(&logs, &eval_lengths, t));
            if reached {
                stop_evals = Some(logs);
            }
        }
        if reached
            || (train_cfg.checkpoint_every > 0 && done % train_cfg.checkpoint_every == 0)
            || done == total
        {
            save_checkpoint(run_dir, done, seed, elapsed(), &model, &optim)?;
            last_saved = Some(done);
        }
        if reached {
            stopped_at = Some(done);
            break;
        }
    }
    let final_step = stopped_at.unwrap_or(total);
    // Finish what a run killed after its last checkpoint left undone, without repeating lines:
    // the final evaluation (unless metrics.jsonl has it; the evaluation that reached the target
    // is the final one), the export (unless it verifies) and summary.json.
    let trained = first_step < final_step;
    let logged_final: Vec<EvalLog> = logged_evals
        .into_iter()
        .filter(|e| e.step == final_step)
        .collect();
    let eval_done = !trained && !logged_final.is_empty();
    let evals = match stop_evals {
        Some(logs) => logs,
        None if eval_done => logged_final,
        None => run_eval(&model, final_step, observer)?,
    };
    let model_dir = run_dir.join(MODEL_DIR);
    let export_done = !trained
        && manifest::verify_manifest(&model_dir).is_ok()
        && model_dir.join("summary.json").is_file();
    if export_done && eval_done && run_dir.join(summary::SUMMARY_FILE).is_file() {
        return Ok(TrainSummary {
            steps: final_step,
            final_loss: last_loss,
            evals,
            num_params,
            stopped_at,
            already_finished: true,
            summary: RunSummary::read(run_dir)?,
        });
    }
    if !export_done {
        let valid = model.valid();
        checkpoint::save(&valid, &model_dir)?;
        let export = serde_json::json!({
            "num_params": num_params,
            "steps": final_step,
            "final_loss": last_loss,
            "mixers": config.model.layer_mixers().iter().map(|m| m.kind()).collect::<Vec<_>>(),
            "position": config.model.position.kind(),
        });
        checkpoint::write_atomic(
            &model_dir.join("summary.json"),
            serde_json::to_string_pretty(&export)?.as_bytes(),
        )?;
        manifest::write_manifest(&model_dir)?;
    }
    let state_seq_len = plan.final_seq_len();
    let state_bytes: u64 = model
        .state_size_bytes(state_seq_len)
        .iter()
        .map(|layer| layer.bytes as u64)
        .sum();
    let run_summary = summary::summarize(
        &config,
        run_dir,
        &summary::Trained {
            num_params,
            state_bits: 8 * state_bytes,
            state_seq_len,
            steps: final_step,
            final_loss: last_loss,
            eval_lengths: &eval_lengths,
        },
    )?;
    run_summary.write(run_dir)?;
    Ok(TrainSummary {
        steps: final_step,
        final_loss: last_loss,
        evals,
        num_params,
        stopped_at,
        already_finished: false,
        summary: run_summary,
    })
}

/// Writes the files a new run starts with (resolved config, tokenizer, empty metrics). A run
/// that replaces another is written beside it and swapped in, so nothing of the old run is lost
/// unless the new one has started.
fn start_run_dir(run_dir: &Path, target: Target, config: &RunConfig, task: &Task) -> Result<()> {
    let dir = match target {
        Target::Fresh => run_dir.to_path_buf(),
        Target::Replace => run_dir::staging_dir(run_dir),
    };
    let write = || -> Result<()> {
        fs::create_dir_all(&dir).with_context(|| {
            format!(
                "cannot create the run directory {} (choose another with --out)",
                dir.display()
            )
        })?;
        checkpoint::write_atomic(&dir.join(CONFIG_FILE), config.to_toml().as_bytes())
            .with_context(|| format!("cannot write into {}", dir.display()))?;
        if let Some(tok) = task.tokenizer() {
            tok.save(dir.join(TOKENIZER_FILE))?;
        }
        checkpoint::write_atomic(&dir.join(METRICS_FILE), b"")
            .with_context(|| format!("cannot write into {}", dir.display()))?;
        Ok(())
    };
    if let Err(e) = write() {
        if target == Target::Replace {
            let _ = fs::remove_dir_all(&dir);
        }
        return Err(e);
    }
    if target == Target::Replace {
        run_dir::swap_in(&dir, run_dir)?;
    }
    Ok(())
}
