//! Expansion of a sweep into its runs, in a fixed order with stable ids.
//!
//! Runs are the union over grids (one implicit grid when there are none) of the product of the
//! top-level axes and the grid's axes, crossed with the seeds. Order: grids in file order; within
//! a grid an odometer over the axes in file order (top-level axes first, the first axis changing
//! slowest, the values of an axis in the order listed); seeds innermost, so a configuration's
//! seeds are neighbours. Index I (0-based) in this order is what `--only I` and Slurm's
//! `SLURM_ARRAY_TASK_ID` name.
//!
//! Each run's overrides, in the order they apply: sweep `set`, grid `set`, one `key=value` per
//! axis key, `run.seed=S` — values rendered as TOML text, exactly what `--set` takes. The run id
//! is `r<index, 3+ digits>-<first 8 hex of SHA-256 of those overrides joined by newlines>`: it
//! changes when the run's overrides change, so a finished run is never credited to another
//! configuration; its folder is `SWEEP_DIR/runs/<id>` and its `run.name` is `<sweep>-<id>`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use crate::labels::{canonical, column_labels, label};
use crate::spec::{Axis, Sweep, sha256_hex};

/// Most runs one sweep may expand to.
pub const MAX_RUNS: usize = 10_000;

/// One run of the sweep.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedRun {
    pub index: usize,
    pub id: String,
    /// `run.name`: `<sweep>-<id>`.
    pub name: String,
    /// Index into `Plan::grids` (None when the sweep has no grids).
    pub grid: Option<usize>,
    /// The run's value of each axis key it has, in column order.
    pub values: Vec<(String, toml::Value)>,
    /// `sweep.seeds` entry, None when the base's seed is kept.
    pub seed: Option<u64>,
    /// `key=value` overrides, without `run.name`.
    pub overrides: Vec<String>,
}

/// The expanded sweep.
#[derive(Clone, Debug)]
pub struct Plan {
    pub name: String,
    /// Every axis key, in order of first appearance (top-level axes, then each grid's).
    pub columns: Vec<String>,
    /// The keys of each axis (several for a zipped axis), in column order: keys of one group
    /// vary together.
    pub axis_groups: Vec<Vec<String>>,
    /// Grid labels (their `name`, else a label of their `set`); empty without grids.
    pub grids: Vec<String>,
    /// Axis keys optimised within a cell.
    pub best_of: Vec<String>,
    pub runs: Vec<PlannedRun>,
    /// Column → canonical value text → label.
    labels: BTreeMap<String, BTreeMap<String, String>>,
}

impl Plan {
    /// The label of `value` in `column` (unique within the column).
    pub fn label(&self, column: &str, value: &toml::Value) -> String {
        self.labels
            .get(column)
            .and_then(|m| m.get(&canonical(value)))
            .cloned()
            .unwrap_or_else(|| label(value))
    }

    /// The run's value of `column`, if its grid has that axis.
    pub fn value<'a>(&self, run: &'a PlannedRun, column: &str) -> Option<&'a toml::Value> {
        run.values.iter().find(|(k, _)| k == column).map(|(_, v)| v)
    }

    /// The run's grid label.
    pub fn grid_label(&self, run: &PlannedRun) -> Option<&str> {
        run.grid.map(|g| self.grids[g].as_str())
    }

    /// Its overrides with `run.name` last: what the run's config is loaded with.
    pub fn overrides_with_name(&self, run: &PlannedRun) -> Vec<String> {
        let mut all = run.overrides.clone();
        all.push(format!(
            "run.name={}",
            toml::Value::String(run.name.clone())
        ));
        all
    }

    /// What identifies the run to a person: its axis values and seed, e.g.
    /// `model.d_model=32, train.lr=0.001, seed 0`.
    pub fn describe(&self, run: &PlannedRun) -> String {
        let mut parts: Vec<String> = Vec::new();
        if let Some(g) = self.grid_label(run) {
            parts.push(format!("grid {g}"));
        }
        parts.extend(
            run.values
                .iter()
                .map(|(k, v)| format!("{k}={}", self.label(k, v))),
        );
        if let Some(s) = run.seed {
            parts.push(format!("seed {s}"));
        }
        if parts.is_empty() {
            "the base config".into()
        } else {
            parts.join(", ")
        }
    }
}

/// `SWEEP_DIR/runs/<id>`.
pub fn run_dir(sweep_dir: &Path, run: &PlannedRun) -> PathBuf {
    sweep_dir.join("runs").join(&run.id)
}

/// Expands `sweep` into its runs.
pub fn expand(sweep: &Sweep) -> Result<Plan> {
    let implicit = [crate::spec::Grid {
        name: None,
        set: Vec::new(),
        axes: Vec::new(),
    }];
    let grids = if sweep.grids.is_empty() {
        &implicit[..]
    } else {
        &sweep.grids[..]
    };
    let seeds: Vec<Option<u64>> = match &sweep.seeds {
        Some(s) => s.iter().copied().map(Some).collect(),
        None => vec![None],
    };

    // Count first, so a sweep too large to expand is refused before it is built.
    let mut total: usize = 0;
    for g in grids {
        let cells = sweep
            .axes
            .iter()
            .chain(&g.axes)
            .try_fold(1usize, |n, a| n.checked_mul(a.values.len()));
        total = cells
            .and_then(|c| c.checked_mul(seeds.len()))
            .and_then(|r| total.checked_add(r))
            .unwrap_or(usize::MAX);
    }
    if total > MAX_RUNS {
        bail!(
            "{}: the sweep expands to {} runs, more than {MAX_RUNS} (split it into several sweeps)",
            sweep.file.display(),
            if total == usize::MAX {
                "too many".to_string()
            } else {
                total.to_string()
            }
        );
    }

    let mut columns: Vec<String> = Vec::new();
    let mut axis_groups: Vec<Vec<String>> = Vec::new();
    for a in sweep
        .axes
        .iter()
        .chain(sweep.grids.iter().flat_map(|g| &g.axes))
    {
        for k in &a.keys {
            if !columns.contains(k) {
                columns.push(k.clone());
            }
        }
        if !axis_groups.contains(&a.keys) {
            axis_groups.push(a.keys.clone());
        }
    }
    let grid_labels = grid_labels(sweep);

    let mut runs: Vec<PlannedRun> = Vec::with_capacity(total);
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (gi, grid) in grids.iter().enumerate() {
        let axes: Vec<&Axis> = sweep.axes.iter().chain(&grid.axes).collect();
        for combination in odometer(&axes) {
            let values: Vec<(String, toml::Value)> = axes
                .iter()
                .zip(&combination)
                .flat_map(|(a, &vi)| a.keys.iter().cloned().zip(a.values[vi].iter().cloned()))
                .collect();
            for &seed in &seeds {
                let mut overrides: Vec<String> = sweep
                    .set
                    .iter()
                    .chain(&grid.set)
                    .chain(values.iter())
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                if let Some(s) = seed {
                    overrides.push(format!("run.seed={s}"));
                }
                let index = runs.len();
                let hash = sha256_hex(overrides.join("\n").as_bytes());
                if let Some(first) = seen.insert(hash.clone(), index) {
                    bail!(
                        "{}: runs {first} and {index} have the same overrides (two grids give the same configuration; remove one)",
                        sweep.file.display()
                    );
                }
                let id = format!("r{index:03}-{}", &hash[..8]);
                let mut ordered = values.clone();
                ordered.sort_by_key(|(k, _)| columns.iter().position(|c| c == k));
                runs.push(PlannedRun {
                    index,
                    name: format!("{}-{id}", sweep.name),
                    id,
                    grid: (!sweep.grids.is_empty()).then_some(gi),
                    values: ordered,
                    seed,
                    overrides,
                });
            }
        }
    }

    let labels = columns
        .iter()
        .map(|c| {
            let values = runs
                .iter()
                .flat_map(|r| r.values.iter().filter(|(k, _)| k == c).map(|(_, v)| v));
            (c.clone(), column_labels(values))
        })
        .collect();
    Ok(Plan {
        name: sweep.name.clone(),
        columns,
        axis_groups,
        grids: grid_labels,
        best_of: sweep.best_of.clone(),
        runs,
        labels,
    })
}

/// Every combination of value indices, the first axis changing slowest. No axes: one empty
/// combination.
fn odometer(axes: &[&Axis]) -> Vec<Vec<usize>> {
    let mut out = vec![Vec::new()];
    for a in axes {
        out = out
            .into_iter()
            .flat_map(|prefix| {
                (0..a.values.len()).map(move |i| {
                    let mut next = prefix.clone();
                    next.push(i);
                    next
                })
            })
            .collect();
    }
    out
}

/// A grid's `name`, else the labels of its `set` values, else `grid<i>`; made unique.
fn grid_labels(sweep: &Sweep) -> Vec<String> {
    let mut used = BTreeSet::new();
    sweep
        .grids
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let base = g.name.clone().unwrap_or_else(|| {
                if g.set.is_empty() {
                    format!("grid{i}")
                } else {
                    g.set
                        .iter()
                        .map(|(_, v)| label(v))
                        .collect::<Vec<_>>()
                        .join(" ")
                }
            });
            let mut name = base.clone();
            if !used.insert(name.clone()) {
                name = format!("{base}#{i}");
                used.insert(name.clone());
            }
            name
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::parse;

    fn plan(text: &str) -> Plan {
        let sweep = parse(text, "t.toml", Path::new(".")).unwrap();
        expand(&sweep).unwrap()
    }

    const HEAD: &str = "[sweep]\nname = \"t\"\nbase = \"b.toml\"\n";

    #[test]
    fn product_order_and_seeds_innermost() {
        let p = plan(&format!(
            "{HEAD}seeds = [0, 1]\n[axes]\n\"model.d_model\" = [32, 64]\n\"train.lr\" = [1e-3, 3e-3, 1e-2]\n"
        ));
        assert_eq!(p.runs.len(), 2 * 3 * 2);
        assert_eq!(p.columns, ["model.d_model", "train.lr"]);
        let shown: Vec<String> = p.runs.iter().map(|r| p.describe(r)).collect();
        assert_eq!(shown[0], "model.d_model=32, train.lr=0.001, seed 0");
        assert_eq!(shown[1], "model.d_model=32, train.lr=0.001, seed 1");
        assert_eq!(shown[2], "model.d_model=32, train.lr=0.003, seed 0");
        assert_eq!(shown[6], "model.d_model=64, train.lr=0.001, seed 0");
        assert_eq!(shown[11], "model.d_model=64, train.lr=0.01, seed 1");
        assert_eq!(
            p.runs[3].overrides,
            ["model.d_model=32", "train.lr=0.003", "run.seed=1"]
        );
        for (i, r) in p.runs.iter().enumerate() {
            assert_eq!(r.index, i);
            assert!(r.id.starts_with(&format!("r{i:03}-")), "{}", r.id);
            assert_eq!(r.name, format!("t-{}", r.id));
        }
    }

    #[test]
    fn zipped_axes_vary_together() {
        let p = plan(&format!(
            "{HEAD}[axes]\n\"train.stages.0.seq_len,task.num_kv_pairs\" = [[64, 4], [128, 8], [256, 16]]\n\"model.mixer\" = [{{ kind = \"softmax\" }}, {{ kind = \"linear\", feature_map = \"taylor2\", feature_dim = 16 }}]\n"
        ));
        assert_eq!(p.runs.len(), 3 * 2);
        assert_eq!(
            p.columns,
            ["train.stages.0.seq_len", "task.num_kv_pairs", "model.mixer"]
        );
        assert_eq!(
            p.axis_groups,
            [
                vec!["train.stages.0.seq_len", "task.num_kv_pairs"],
                vec!["model.mixer"]
            ]
        );
        assert_eq!(
            p.runs[3].overrides,
            [
                "train.stages.0.seq_len=128",
                "task.num_kv_pairs=8",
                "model.mixer={ feature_dim = 16, feature_map = \"taylor2\", kind = \"linear\" }"
            ]
        );
        assert_eq!(
            p.describe(&p.runs[3]),
            "train.stages.0.seq_len=128, task.num_kv_pairs=8, model.mixer=linear(taylor2,feature_dim=16)"
        );
    }

    #[test]
    fn grids_union_with_shared_axes_and_their_own_sets() {
        let p = plan(&format!(
            "{HEAD}seeds = [0, 1, 2]\nset = {{ \"train.eval_every\" = 5 }}\n[axes]\n\"task.num_kv_pairs\" = [4, 8]\n\
             [[grids]]\nset = {{ \"model.mixer\" = {{ kind = \"linear\", feature_map = \"taylor2\" }} }}\naxes = {{ \"model.mixer.feature_dim\" = [8, 16, 32] }}\n\
             [[grids]]\nname = \"swa\"\nset = {{ \"model.mixer\" = {{ kind = \"sliding_window\" }} }}\n[grids.axes]\n\"model.mixer.window\" = [16, 32]\n"
        ));
        // grid 0: 2 × 3 × 3 seeds, grid 1: 2 × 2 × 3 seeds.
        assert_eq!(p.runs.len(), 18 + 12);
        assert_eq!(p.grids, ["linear(taylor2)", "swa"]);
        assert_eq!(
            p.columns,
            [
                "task.num_kv_pairs",
                "model.mixer.feature_dim",
                "model.mixer.window"
            ]
        );
        let r = &p.runs[18];
        assert_eq!(r.grid, Some(1));
        assert_eq!(
            r.overrides,
            [
                "train.eval_every=5",
                "model.mixer={ kind = \"sliding_window\" }",
                "task.num_kv_pairs=4",
                "model.mixer.window=16",
                "run.seed=0"
            ]
        );
        assert!(p.value(r, "model.mixer.feature_dim").is_none());
        assert_eq!(p.runs[0].grid, Some(0));
    }

    #[test]
    fn ids_are_stable_and_follow_the_overrides() {
        let text = format!("{HEAD}seeds = [0, 1]\n[axes]\n\"train.lr\" = [1e-3, 3e-3]\n");
        let a = plan(&text);
        let b = plan(&text);
        assert_eq!(
            a.runs.iter().map(|r| &r.id).collect::<Vec<_>>(),
            b.runs.iter().map(|r| &r.id).collect::<Vec<_>>()
        );
        let ids: BTreeSet<&str> = a.runs.iter().map(|r| &r.id[5..]).collect();
        assert_eq!(ids.len(), a.runs.len(), "hashes differ between runs");
        // Same overrides at another index: same hash, new index prefix.
        let c = plan(&format!(
            "{HEAD}seeds = [0, 1]\n[axes]\n\"train.lr\" = [1e-2, 1e-3, 3e-3]\n"
        ));
        assert_eq!(c.runs[2].overrides, a.runs[0].overrides);
        assert_eq!(&c.runs[2].id[5..], &a.runs[0].id[5..]);
        // A changed value changes the hash.
        assert_ne!(&c.runs[0].id[5..], &a.runs[0].id[5..]);
    }

    #[test]
    fn no_axes_no_seeds_is_one_run() {
        let p = plan(HEAD);
        assert_eq!(p.runs.len(), 1);
        assert!(p.runs[0].overrides.is_empty());
        assert_eq!(p.describe(&p.runs[0]), "the base config");
    }

    #[test]
    fn too_many_runs_are_refused() {
        let values: Vec<String> = (0..200).map(|i| i.to_string()).collect();
        let text = format!(
            "{HEAD}[axes]\n\"model.d_model\" = [{v}]\n\"train.batch_size\" = [{v}]\n",
            v = values.join(",")
        );
        let sweep = parse(&text, "t.toml", Path::new(".")).unwrap();
        let e = expand(&sweep).unwrap_err().to_string();
        assert!(e.contains("40000 runs"), "{e}");
    }
}
