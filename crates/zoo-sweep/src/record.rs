//! The sweep folder: `sweep.json` (the expanded plan, so the folder explains itself and `zoo
//! report` recognises it), `runs/<id>/` (one run folder each), `logs/<id>.txt` (each run's
//! output; outside the run folder because the trainer only starts in an empty folder or a run),
//! `locks/<id>` (one process per run), `results.{csv,json}`, `plots/` and `slurm.sbatch`.
//!
//! A folder is only used as a sweep folder when it is new, empty or already holds `sweep.json`,
//! so `--out` pointed at the wrong place never mixes a sweep into other files.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use zoo_data::input::clip_path;

use crate::plan::Plan;
use crate::spec::{Sweep, sha256_hex};

pub const RECORD_FILE: &str = "sweep.json";
pub const RUNS_DIR: &str = "runs";
pub const LOGS_DIR: &str = "logs";
pub const LOCKS_DIR: &str = "locks";

/// One run in `sweep.json`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct RecordRun {
    pub index: usize,
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub grid: Option<String>,
    /// Axis key → its value (TOML value as JSON).
    pub values: serde_json::Map<String, serde_json::Value>,
    /// Axis key → its label in tables and plots.
    pub labels: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub seed: Option<u64>,
    pub overrides: Vec<String>,
}

/// The contents of `sweep.json`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Record {
    pub name: String,
    pub sweep_file: String,
    /// SHA-256 of the sweep file when the plan was written.
    pub sweep_digest: String,
    pub base: String,
    /// SHA-256 of the base config file.
    pub base_digest: String,
    pub columns: Vec<String>,
    pub best_of: Vec<String>,
    pub grids: Vec<String>,
    pub runs: Vec<RecordRun>,
}

/// Whether `dir` is a sweep folder (holds `sweep.json`).
pub fn is_sweep_dir(dir: &Path) -> bool {
    dir.join(RECORD_FILE).is_file()
}

/// Refuses a `dir` that exists and is neither empty nor a sweep folder; touches nothing.
pub fn check_dir(dir: &Path) -> Result<()> {
    let Ok(meta) = fs::symlink_metadata(dir) else {
        return Ok(());
    };
    if !meta.is_dir() {
        bail!(
            "{} exists and is not a folder (choose another --out)",
            clip_path(dir)
        );
    }
    if is_sweep_dir(dir) || zoo_train::run_dir::is_empty_dir(dir) {
        return Ok(());
    }
    bail!(
        "{} is not empty and holds no {RECORD_FILE}; a sweep only writes into a new, empty or sweep folder (choose another --out)",
        clip_path(dir)
    )
}

/// Creates the sweep folder and its sub-folders.
pub fn create_dirs(dir: &Path) -> Result<()> {
    for sub in [RUNS_DIR, LOGS_DIR, LOCKS_DIR] {
        let path = dir.join(sub);
        fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {} (choose another --out)", path.display()))?;
    }
    Ok(())
}

/// `SWEEP_DIR/logs/<id>.txt`.
pub fn log_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(LOGS_DIR).join(format!("{id}.txt"))
}

/// The record of `plan`.
pub fn record(sweep: &Sweep, plan: &Plan) -> Result<Record> {
    let base_bytes = zoo_data::read_file_capped(
        &sweep.base,
        "base config",
        zoo_data::input::MAX_CONFIG_BYTES,
    )?;
    let runs = plan
        .runs
        .iter()
        .map(|r| RecordRun {
            index: r.index,
            id: r.id.clone(),
            name: r.name.clone(),
            grid: plan.grid_label(r).map(str::to_string),
            values: r
                .values
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::to_value(v).unwrap_or_default()))
                .collect(),
            labels: r
                .values
                .iter()
                .map(|(k, v)| (k.clone(), plan.label(k, v).into()))
                .collect(),
            seed: r.seed,
            overrides: r.overrides.clone(),
        })
        .collect();
    Ok(Record {
        name: plan.name.clone(),
        sweep_file: absolute(&sweep.file),
        sweep_digest: sweep.digest.clone(),
        base: absolute(&sweep.base),
        base_digest: sha256_hex(&base_bytes),
        columns: plan.columns.clone(),
        best_of: plan.best_of.clone(),
        grids: plan.grids.clone(),
        runs,
    })
}

/// Reads `sweep.json` of `dir`.
pub fn read(dir: &Path) -> Result<Record> {
    let path = dir.join(RECORD_FILE);
    let text = zoo_data::read_text_capped(&path, "sweep record", zoo_data::input::MAX_TEXT_BYTES)?;
    serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a sweep record (delete it to write it again)",
            path.display()
        )
    })
}

/// Fails when `sweep.json` of `dir` gives run `index` another id than `plan` does: the sweep
/// file changed after the sweep (or its Slurm script) was set up, so index `index` no longer
/// means the run its caller was started for.
pub fn check_index(dir: &Path, plan: &Plan, index: usize) -> Result<()> {
    if !is_sweep_dir(dir) {
        return Ok(());
    }
    let record = read(dir)?;
    let recorded = record.runs.get(index).map(|r| r.id.as_str());
    let planned = plan.runs[index].id.as_str();
    if recorded != Some(planned) {
        bail!(
            "run {index} of the sweep file is {planned}, but {} lists {} at that index: the sweep file changed since the sweep was set up (run the sweep, or --slurm, again to update it)",
            dir.join(RECORD_FILE).display(),
            recorded.unwrap_or("no run")
        );
    }
    Ok(())
}

/// Writes `sweep.json` atomically (unless it already holds exactly this record).
pub fn write(dir: &Path, record: &Record) -> Result<()> {
    let text = serde_json::to_string_pretty(record)? + "\n";
    let path = dir.join(RECORD_FILE);
    if fs::read(&path).is_ok_and(|old| old == text.as_bytes()) {
        return Ok(());
    }
    zoo_model::checkpoint::write_atomic(&path, text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

fn absolute(path: &Path) -> String {
    std::path::absolute(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}
