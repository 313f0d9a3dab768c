//! The results table of a sweep: one row per finished run, from its `summary.json` (and, when
//! present, its post-training `eval/mqar.json`), written as `results.csv` and `results.json`.
//!
//! Columns, in order:
//!
//! ```text
//! index, id, [grid], <every axis key>, seed, best, accuracy, num_params, state_bits,
//! acc@L…, best_acc@L…, mqar@LxP…, steps, tokens, wall_seconds,
//! steps_to_target, tokens_to_target, seconds_to_target
//! ```
//!
//! - axis values are their short labels (see `labels`; zipped axes give one column per key);
//! - `accuracy` is the run's final accuracy: the mean over its evaluation lengths of the last
//!   held-out accuracy (`acc@L` = `summary.accuracy[L].last`, `best_acc@L` = `.best`);
//! - `best` marks the rows of the best best-of value in each cell (see `best_of`);
//! - `mqar@LxP` is the post-training MQAR grid at length L with P pairs;
//! - empty (CSV) / null (JSON) where a value is unknown: a target never reached, a length a run
//!   did not evaluate, an axis its grid does not have.
//!
//! `results.json` holds the same rows as objects keyed by column (typed), each with the axis
//! values as written in the sweep (`axis_values`), plus the runs still missing, the plots and the
//! notes on plots that were skipped — everything `zoo report` shows.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::{Value, json};
use zoo_eval::MqarResult;
use zoo_eval::write_file_atomic;
use zoo_train::summary::{RunSummary, SUMMARY_FILE};

use crate::best_of::{Candidate, mark_best};
use crate::labels::canonical;
use crate::plan::{Plan, run_dir};

pub const CSV_FILE: &str = "results.csv";
pub const JSON_FILE: &str = "results.json";

/// One finished run.
#[derive(Clone, Debug)]
pub struct Row {
    pub index: usize,
    pub id: String,
    pub grid: Option<String>,
    /// Per axis column: the run's value (None when its grid lacks the axis).
    pub values: Vec<Option<toml::Value>>,
    pub labels: Vec<Option<String>>,
    pub seed: Option<u64>,
    pub summary: RunSummary,
    /// (seq_len, num_kv_pairs) → accuracy of the post-training MQAR grid.
    pub mqar: BTreeMap<(usize, usize), f64>,
    /// Mean of the last held-out accuracy over the evaluation lengths (NaN: none).
    pub accuracy: f64,
    pub best: bool,
    cell: String,
    candidate: String,
}

impl Row {
    /// The label of axis `column` in this row.
    pub fn label(&self, columns: &[String], column: &str) -> Option<&str> {
        let i = columns.iter().position(|c| c == column)?;
        self.labels[i].as_deref()
    }
}

impl Candidate for Row {
    fn cell_key(&self) -> String {
        self.cell.clone()
    }
    fn candidate_key(&self) -> String {
        self.candidate.clone()
    }
    fn accuracy(&self) -> f64 {
        self.accuracy
    }
    fn tokens_to_target(&self) -> Option<u64> {
        self.summary.to_target.as_ref().map(|t| t.tokens)
    }
    fn set_best(&mut self, best: bool) {
        self.best = best;
    }
}

/// A figure written next to the table.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct PlotFile {
    pub kind: String,
    /// Relative to the sweep folder.
    pub png: String,
    pub svg: String,
    pub caption: String,
}

/// The table of a sweep folder.
#[derive(Clone, Debug)]
pub struct Results {
    pub name: String,
    /// Axis keys, in plan order.
    pub columns: Vec<String>,
    /// The keys of each axis; a zipped axis's keys vary together.
    pub axis_groups: Vec<Vec<String>>,
    pub has_grids: bool,
    pub best_of: Vec<String>,
    pub rows: Vec<Row>,
    /// (index, id) of the runs without `summary.json`.
    pub missing: Vec<(usize, String)>,
    /// Every evaluation length of any row, ascending.
    pub lengths: Vec<usize>,
    /// Every (length, pairs) of any row's MQAR grid.
    pub mqar_cells: Vec<(usize, usize)>,
}

/// Reads the finished runs of `plan` in `sweep_dir`.
pub fn collect(plan: &Plan, sweep_dir: &Path) -> Result<Results> {
    let mut rows = Vec::new();
    let mut missing = Vec::new();
    for run in &plan.runs {
        let dir = run_dir(sweep_dir, run);
        if !dir.join(SUMMARY_FILE).is_file() {
            missing.push((run.index, run.id.clone()));
            continue;
        }
        let summary = RunSummary::read(&dir)?;
        let mqar_path = dir.join("eval").join("mqar.json");
        let mqar = if mqar_path.is_file() {
            MqarResult::read_json(&mqar_path)
                .with_context(|| format!("cannot read {}", mqar_path.display()))?
                .rows
                .iter()
                .map(|r| ((r.seq_len, r.num_kv_pairs), r.accuracy))
                .collect()
        } else {
            BTreeMap::new()
        };
        let values: Vec<Option<toml::Value>> = plan
            .columns
            .iter()
            .map(|c| plan.value(run, c).cloned())
            .collect();
        let labels: Vec<Option<String>> = plan
            .columns
            .iter()
            .zip(&values)
            .map(|(c, v)| v.as_ref().map(|v| plan.label(c, v)))
            .collect();
        let key_of = |best_of: bool| {
            let mut parts: Vec<String> = plan
                .columns
                .iter()
                .zip(&values)
                .filter(|(c, _)| plan.best_of.contains(c) == best_of)
                .map(|(c, v)| format!("{c}={}", v.as_ref().map(canonical).unwrap_or_default()))
                .collect();
            if !best_of {
                parts.insert(0, format!("grid={:?}", run.grid));
            }
            parts.join("\n")
        };
        let finals: Vec<f64> = summary.accuracy.iter().map(|a| a.last).collect();
        let accuracy = if finals.is_empty() {
            f64::NAN
        } else {
            finals.iter().sum::<f64>() / finals.len() as f64
        };
        let (cell, candidate) = (key_of(false), key_of(true));
        rows.push(Row {
            index: run.index,
            id: run.id.clone(),
            grid: plan.grid_label(run).map(str::to_string),
            seed: run.seed.or_else(|| config_seed(&dir)),
            values,
            labels,
            summary,
            mqar,
            accuracy,
            best: false,
            cell,
            candidate,
        });
    }
    mark_best(&mut rows);
    let lengths: BTreeSet<usize> = rows
        .iter()
        .flat_map(|r| r.summary.accuracy.iter().map(|a| a.seq_len))
        .collect();
    let mqar_cells: BTreeSet<(usize, usize)> =
        rows.iter().flat_map(|r| r.mqar.keys().copied()).collect();
    Ok(Results {
        name: plan.name.clone(),
        columns: plan.columns.clone(),
        axis_groups: plan.axis_groups.clone(),
        has_grids: !plan.grids.is_empty(),
        best_of: plan.best_of.clone(),
        rows,
        missing,
        lengths: lengths.into_iter().collect(),
        mqar_cells: mqar_cells.into_iter().collect(),
    })
}

/// `run.seed` of a run's config.toml (for sweeps that keep the base's seed).
fn config_seed(dir: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join(zoo_train::trainer::CONFIG_FILE)).ok()?;
    let value: toml::Value = toml::from_str(&text).ok()?;
    value.get("run")?.get("seed")?.as_integer()?.try_into().ok()
}

fn number(x: f64) -> Value {
    serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
}

impl Results {
    /// The column names of the table, in order.
    pub fn header(&self) -> Vec<String> {
        let mut h: Vec<String> = vec!["index".into(), "id".into()];
        if self.has_grids {
            h.push("grid".into());
        }
        h.extend(self.columns.iter().cloned());
        h.extend(["seed", "best", "accuracy", "num_params", "state_bits"].map(String::from));
        h.extend(self.lengths.iter().map(|l| format!("acc@{l}")));
        h.extend(self.lengths.iter().map(|l| format!("best_acc@{l}")));
        h.extend(self.mqar_cells.iter().map(|(l, p)| format!("mqar@{l}x{p}")));
        h.extend(
            [
                "steps",
                "tokens",
                "wall_seconds",
                "steps_to_target",
                "tokens_to_target",
                "seconds_to_target",
            ]
            .map(String::from),
        );
        h
    }

    /// A row's values, one per `header` column (null where unknown).
    pub fn cells(&self, row: &Row) -> Vec<Value> {
        let s = &row.summary;
        let mut c: Vec<Value> = vec![json!(row.index), json!(row.id)];
        if self.has_grids {
            c.push(json!(row.grid));
        }
        c.extend(
            row.labels
                .iter()
                .zip(&row.values)
                .map(|(l, v)| match (l, v) {
                    // Numbers stay numbers, so the JSON table sorts and plots as such.
                    (_, Some(toml::Value::Integer(i))) => json!(i),
                    (_, Some(toml::Value::Float(f))) => number(*f),
                    (Some(l), _) => json!(l),
                    (None, _) => Value::Null,
                }),
        );
        c.extend([
            json!(row.seed),
            json!(row.best),
            number(row.accuracy),
            json!(s.num_params),
            json!(s.state_bits),
        ]);
        let at = |l: usize| s.accuracy.iter().find(|a| a.seq_len == l);
        c.extend(
            self.lengths
                .iter()
                .map(|&l| at(l).map_or(Value::Null, |a| number(a.last))),
        );
        c.extend(
            self.lengths
                .iter()
                .map(|&l| at(l).map_or(Value::Null, |a| number(a.best))),
        );
        c.extend(
            self.mqar_cells
                .iter()
                .map(|k| row.mqar.get(k).map_or(Value::Null, |&a| number(a))),
        );
        let t = s.to_target.as_ref();
        c.extend([
            json!(s.steps),
            json!(s.tokens),
            number(s.wall_seconds),
            t.map_or(Value::Null, |t| json!(t.steps)),
            t.map_or(Value::Null, |t| json!(t.tokens)),
            t.map_or(Value::Null, |t| number(t.seconds)),
        ]);
        c
    }

    /// The table as CSV text.
    pub fn to_csv(&self) -> String {
        let mut out = String::new();
        let line = |cells: Vec<String>| cells.join(",") + "\n";
        out.push_str(&line(self.header().iter().map(|h| csv_field(h)).collect()));
        for row in &self.rows {
            let cells = self
                .cells(row)
                .iter()
                .map(|v| match v {
                    Value::Null => String::new(),
                    Value::String(s) => csv_field(s),
                    other => other.to_string(),
                })
                .collect();
            out.push_str(&line(cells));
        }
        out
    }

    /// The table as the JSON document of `results.json`.
    pub fn to_json(&self, plots: &[PlotFile], notes: &[String]) -> Value {
        let header = self.header();
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|row| {
                let mut object: serde_json::Map<String, Value> =
                    header.iter().cloned().zip(self.cells(row)).collect();
                let raw: serde_json::Map<String, Value> = self
                    .columns
                    .iter()
                    .zip(&row.values)
                    .filter_map(|(c, v)| Some((c.clone(), serde_json::to_value(v.as_ref()?).ok()?)))
                    .collect();
                object.insert("axis_values".into(), Value::Object(raw));
                Value::Object(object)
            })
            .collect();
        json!({
            "sweep": self.name,
            "columns": header,
            "axes": self.columns,
            "best_of": self.best_of,
            "rows": rows,
            "missing": self.missing.iter().map(|(i, id)| json!({"index": i, "id": id})).collect::<Vec<_>>(),
            "plots": plots,
            "notes": notes,
        })
    }

    /// Writes `results.csv` and `results.json` into `dir`, each atomically.
    pub fn write(&self, dir: &Path, plots: &[PlotFile], notes: &[String]) -> Result<()> {
        let csv = dir.join(CSV_FILE);
        write_file_atomic(&csv, self.to_csv().as_bytes())
            .with_context(|| format!("cannot write {}", csv.display()))?;
        let json = dir.join(JSON_FILE);
        let text = serde_json::to_string_pretty(&self.to_json(plots, notes))? + "\n";
        write_file_atomic(&json, text.as_bytes())
            .with_context(|| format!("cannot write {}", json.display()))?;
        Ok(())
    }

    /// One line on what the table holds, e.g. `4 of 6 runs (missing: r004-…, r005-…)`.
    pub fn describe(&self) -> String {
        let total = self.rows.len() + self.missing.len();
        let plural = if total == 1 { "" } else { "s" };
        let mut text = format!("{} of {total} run{plural}", self.rows.len());
        if !self.missing.is_empty() {
            let mut shown: Vec<String> = self
                .missing
                .iter()
                .take(8)
                .map(|(i, id)| format!("{i} ({id})"))
                .collect();
            if self.missing.len() > 8 {
                shown.push(format!("… {} more", self.missing.len() - 8));
            }
            let _ = write!(text, " (missing: {})", shown.join(", "));
        }
        text
    }
}

/// A CSV field, quoted when it holds a comma, quote or line break (RFC 4180).
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quoting() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(
            csv_field("linear(taylor2,feature_dim=16)"),
            "\"linear(taylor2,feature_dim=16)\""
        );
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
