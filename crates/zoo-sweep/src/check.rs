//! Every run of a sweep checked before any of them trains: its config loaded from the base with
//! its overrides (the strict schema and `RunConfig::validate`), its task built once per distinct
//! task (vocabulary against `model.vocab_size`), the resolved config checked against the memory
//! the machine has (shared by the runs that train at once), and an existing run folder compared
//! with what the sweep now asks of it — so a sweep file or base config edited after some runs
//! finished cannot credit their results to a different configuration.
//!
//! The first invalid run is one error line naming the run (index, id, axis values) and the
//! config error, with the number of further invalid runs.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Result, bail};
use zoo_model::memory::Kernels;
use zoo_train::config::{self, ConfigError, RunConfig};
use zoo_train::trainer::CONFIG_FILE;

use crate::plan::{Plan, PlannedRun, run_dir};
use crate::spec::Sweep;

/// What the runs will train on.
#[derive(Clone, Debug)]
pub struct CheckOptions {
    /// Replaces every run's `run.device` (the `--device` flag).
    pub device: Option<String>,
    /// Runs training at the same time, sharing the machine's memory.
    pub concurrent: usize,
}

/// A run's config: the base file with the run's overrides and name, validated.
pub fn load_config(sweep: &Sweep, plan: &Plan, run: &PlannedRun) -> Result<RunConfig, ConfigError> {
    config::load(&sweep.base, &plan.overrides_with_name(run))
}

/// Checks every run of `plan` (see the module doc); returns the resolved configs by index.
pub fn check_all(
    sweep: &Sweep,
    plan: &Plan,
    sweep_dir: &Path,
    opts: &CheckOptions,
) -> Result<Vec<RunConfig>> {
    let mut vocab_cache = BTreeMap::new();
    let mut configs = Vec::with_capacity(plan.runs.len());
    let mut first_error: Option<String> = None;
    let mut invalid = 0usize;
    for run in &plan.runs {
        match check_run(sweep, plan, run, sweep_dir, opts, &mut vocab_cache) {
            Ok(c) => configs.push(c),
            Err(e) => {
                invalid += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        let more = match invalid - 1 {
            0 => String::new(),
            1 => " (and 1 more invalid run)".into(),
            n => format!(" (and {n} more invalid runs)"),
        };
        bail!("{e}{more}; nothing was trained");
    }
    Ok(configs)
}

/// Checks run `index` alone (what `--only I` trains).
pub fn check_one(
    sweep: &Sweep,
    plan: &Plan,
    index: usize,
    sweep_dir: &Path,
    opts: &CheckOptions,
) -> Result<RunConfig> {
    let run = &plan.runs[index];
    check_run(sweep, plan, run, sweep_dir, opts, &mut BTreeMap::new())
        .map_err(|e| anyhow::anyhow!(e))
}

/// The device a run trains on.
pub fn device_name(config: &RunConfig, opts: &CheckOptions) -> String {
    opts.device
        .clone()
        .unwrap_or_else(|| config.run.device.clone())
}

fn check_run(
    sweep: &Sweep,
    plan: &Plan,
    run: &PlannedRun,
    sweep_dir: &Path,
    opts: &CheckOptions,
    vocab_cache: &mut BTreeMap<String, usize>,
) -> Result<RunConfig, String> {
    let who = format!("run {} ({}: {})", run.index, run.id, plan.describe(run));
    let fail = |e: &dyn std::fmt::Display| format!("{who} is invalid: {e}");
    let mut cfg = load_config(sweep, plan, run).map_err(|e| fail(&e))?;
    if let Some(d) = &opts.device {
        cfg.run.device = d.clone();
    }
    let task_key = toml::to_string(&cfg.task).unwrap_or_default();
    let vocab = match vocab_cache.get(&task_key) {
        Some(&v) => v,
        None => {
            let task = cfg.task.build(Path::new(".")).map_err(|e| fail(&e))?;
            vocab_cache.insert(task_key, task.vocab_size());
            task.vocab_size()
        }
    };
    cfg.check_task_vocab(vocab).map_err(|e| fail(&e))?;
    cfg.resolve(vocab);
    let kernels = fused_kernels(&device_name(&cfg, opts));
    let share = opts.concurrent.max(1) as u64;
    let available = zoo_model::memory::available_memory().map(|bytes| bytes / share);
    zoo_train::resources::check_run_with(&cfg, kernels, available).map_err(|e| {
        if share > 1 {
            fail(&format!(
                "{e} (the memory is split between {share} runs training at once; lower --jobs)"
            ))
        } else {
            fail(&e)
        }
    })?;
    compare_with_existing(&cfg, &run_dir(sweep_dir, run)).map_err(|e| format!("{who}: {e}"))?;
    Ok(cfg)
}

/// Which of the project's fused kernels will run for this device name (they lower the memory
/// estimate): the CPU set on flex, the attention kernel on the GPU backends; unknown names are
/// checked without any.
fn fused_kernels(device: &str) -> Kernels {
    // `fused_on(flex)` is false only when the kernels are switched off for the process.
    let enabled = zoo_model::kernels::fused_on(&burn::prelude::Device::flex());
    match device {
        "flex" | "cpu" if enabled => Kernels::Cpu,
        "wgpu" | "gpu" | "cuda" if enabled => Kernels::Attention,
        _ => Kernels::None,
    }
}

/// Fails when `dir` holds a run whose config.toml differs from `expected` in a key both have
/// (keys only one side has — a field added by a newer zoo — are not compared, nor is
/// `run.device`: a run may continue on another device, as `zoo train --resume` allows).
fn compare_with_existing(expected: &RunConfig, dir: &Path) -> Result<(), String> {
    let path = dir.join(CONFIG_FILE);
    if !path.is_file() {
        return Ok(());
    }
    let text = zoo_data::read_text_capped(&path, "run config", zoo_data::input::MAX_CONFIG_BYTES)
        .map_err(|e| e.to_string())?;
    let found: toml::Value = toml::from_str(&text).map_err(|_| {
        format!(
            "{} is not a TOML file (delete the run folder to retrain it)",
            path.display()
        )
    })?;
    let mut wanted = toml::Value::try_from(expected).map_err(|e| e.to_string())?;
    if let (Some(toml::Value::Table(w)), Some(device)) = (
        wanted.get_mut("run"),
        found.get("run").and_then(|r| r.get("device")),
    ) {
        w.insert("device".into(), device.clone());
    }
    if let Some((key, was, now)) = first_difference(&found, &wanted, &mut Vec::new()) {
        return Err(format!(
            "{} was trained with {key} = {was}, but the sweep now gives {now}; the sweep or its base config changed since (use a new --out, or delete {} to retrain it)",
            dir.display(),
            dir.display()
        ));
    }
    Ok(())
}

fn first_difference(
    found: &toml::Value,
    wanted: &toml::Value,
    path: &mut Vec<String>,
) -> Option<(String, String, String)> {
    match (found, wanted) {
        (toml::Value::Table(a), toml::Value::Table(b)) => {
            for (k, va) in a {
                if let Some(vb) = b.get(k) {
                    path.push(k.clone());
                    let d = first_difference(va, vb, path);
                    path.pop();
                    if d.is_some() {
                        return d;
                    }
                }
            }
            None
        }
        (toml::Value::Array(a), toml::Value::Array(b)) if a.len() == b.len() => {
            for (i, (va, vb)) in a.iter().zip(b).enumerate() {
                path.push(i.to_string());
                let d = first_difference(va, vb, path);
                path.pop();
                if d.is_some() {
                    return d;
                }
            }
            None
        }
        (a, b) if a == b => None,
        (a, b) => Some((
            path.join("."),
            zoo_data::input::clip_bare(&a.to_string()),
            zoo_data::input::clip_bare(&b.to_string()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> toml::Value {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn differences_name_the_key() {
        let a = v(
            "[train]\nlr = 0.001\nstages = [{ seq_len = 64, steps = 10 }]\n[run]\nname = \"x\"\n",
        );
        let b = v(
            "[train]\nlr = 0.001\nstages = [{ seq_len = 128, steps = 10 }]\n[run]\nname = \"x\"\nnew_key = 1\n",
        );
        let (key, was, now) = first_difference(&a, &b, &mut Vec::new()).unwrap();
        assert_eq!(
            (key.as_str(), was.as_str(), now.as_str()),
            ("train.stages.0.seq_len", "64", "128")
        );
        // Keys on one side only are not differences.
        assert!(first_difference(&a, &a, &mut Vec::new()).is_none());
        let c = v("[run]\nname = \"x\"\n");
        assert!(first_difference(&c, &b, &mut Vec::new()).is_none());
    }
}
