//! SWEEP.toml: a base run config plus the axes to vary, read into strict structs.
//!
//! ```toml
//! [sweep]
//! name = "mqar-tiny"                      # folder sweeps/<name> unless --out
//! base = "../configs/mqar/softmax.toml"   # relative to this file
//! seeds = [0, 1, 2]                       # sets run.seed (absent: the base's seed)
//! best_of = ["train.lr"]                  # axes optimised within each cell
//! set = { "train.eval_every" = 50 }       # fixed overrides of every run
//!
//! [axes]                                  # the product of all axes
//! "model.d_model" = [32, 64]
//! "train.lr" = [1e-3, 3e-3]
//! "train.stages.0.seq_len,task.num_kv_pairs" = [[64, 4], [128, 8]]   # zipped: vary together
//!
//! [[grids]]                               # optional sub-grids: the union of their runs,
//! name = "based"                          # each the product of [axes] and its own axes
//! set = { "model.mixer" = { kind = "linear", feature_map = "taylor2" } }
//! axes = { "model.mixer.feature_dim" = [8, 16] }
//!
//! [[plots]]                               # optional; defaults follow the axes
//! kind = "accuracy"                       # accuracy | state | to_target
//! x = "model.d_model"
//! series = "model.mixer"
//! panel = "train.stages.0.seq_len"
//!
//! [slurm]                                 # optional, for --slurm
//! partition = "gpu"
//! time = "02:00:00"
//! cpus_per_task = 8
//! ```
//!
//! Keys of `set` and `[axes]` are dotted paths exactly as `zoo train --set` takes them, written
//! in quotes (TOML reads an unquoted `train.lr` as a nested table); values are TOML values, and a
//! table value replaces the table at its path. Overrides apply in the order sweep `set`, grid
//! `set`, `[axes]`, grid axes, so a grid can set `model.mixer` and sweep `model.mixer.window`.
//! Axes keep the order they are written in (it orders the runs and the table's columns).
//!
//! Every error is one line naming the file and the dotted key, e.g.
//! `sweeps/x.toml: axes."train.lr": expected a list of values, found a float`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use toml::Spanned;
use zoo_data::input::{MAX_CONFIG_BYTES, clip_bare};

/// The sections of a run config; every key starts with one of them.
pub const SECTIONS: [&str; 5] = ["run", "model", "task", "train", "eval"];
/// Longest sweep name: run names are `<sweep>-<run id>`, and those are at most 100 bytes.
pub const MAX_NAME_BYTES: usize = 64;
/// Most values per axis and most seeds.
pub const MAX_VALUES: usize = 1000;

/// One axis: one key, or several zipped keys that vary together.
#[derive(Clone, Debug, PartialEq)]
pub struct Axis {
    /// As written: `model.d_model` or `train.stages.0.seq_len,task.num_kv_pairs`.
    pub name: String,
    pub keys: Vec<String>,
    /// One entry per value of the axis, each holding one value per key.
    pub values: Vec<Vec<toml::Value>>,
}

/// A sub-grid: its own fixed overrides and axes, crossed with the top-level axes.
#[derive(Clone, Debug, PartialEq)]
pub struct Grid {
    pub name: Option<String>,
    pub set: Vec<(String, toml::Value)>,
    pub axes: Vec<Axis>,
}

/// What a plot shows; see `plots`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PlotKind {
    /// Accuracy against an axis (default x: `model.d_model`), a line per series, a panel per
    /// value of the panel axis (Zoology Fig. 2).
    Accuracy,
    /// Accuracy against the decoding-state size in bits, log x (Based's trade-off).
    State,
    /// Training tokens to the target accuracy, per value of x (e.g. the length schedule).
    ToTarget,
}

/// A `[[plots]]` entry: which columns go on x, in the series and in the panels.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PlotSpec {
    pub kind: PlotKind,
    #[serde(default)]
    pub x: Option<String>,
    #[serde(default)]
    pub series: Option<String>,
    #[serde(default)]
    pub panel: Option<String>,
    #[serde(default)]
    pub title: Option<String>,
}

/// `[slurm]`: what the job-array script asks the scheduler for.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SlurmSpec {
    #[serde(default)]
    pub partition: Option<String>,
    /// Wall-clock limit per array task, as Slurm takes it (`02:00:00`).
    #[serde(default)]
    pub time: Option<String>,
    #[serde(default)]
    pub cpus_per_task: Option<usize>,
    /// Memory per array task, as Slurm takes it (`8G`).
    #[serde(default)]
    pub mem: Option<String>,
    /// At most this many array tasks at once (`--array=0-N%M`).
    #[serde(default)]
    pub max_parallel: Option<usize>,
    /// Further `#SBATCH` options, e.g. `"--gres=gpu:1"`.
    #[serde(default)]
    pub options: Vec<String>,
    /// Shell lines run before zoo, e.g. `"module load cuda"`.
    #[serde(default)]
    pub setup: Vec<String>,
}

/// A loaded and checked sweep file.
#[derive(Clone, Debug)]
pub struct Sweep {
    /// The sweep file, as given.
    pub file: PathBuf,
    pub name: String,
    /// The base run config, resolved against the sweep file's folder.
    pub base: PathBuf,
    pub seeds: Option<Vec<u64>>,
    /// The keys of the axes named in `best_of` (all keys of a zipped axis).
    pub best_of: Vec<String>,
    pub set: Vec<(String, toml::Value)>,
    pub axes: Vec<Axis>,
    pub grids: Vec<Grid>,
    pub plots: Vec<PlotSpec>,
    pub slurm: SlurmSpec,
    /// SHA-256 (hex) of the sweep file's bytes.
    pub digest: String,
}

type Entries = BTreeMap<Spanned<String>, toml::Value>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    sweep: RawSweep,
    #[serde(default)]
    axes: Entries,
    #[serde(default)]
    grids: Vec<RawGrid>,
    #[serde(default)]
    plots: Vec<PlotSpec>,
    #[serde(default)]
    slurm: SlurmSpec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSweep {
    name: String,
    base: String,
    #[serde(default)]
    seeds: Option<Vec<u64>>,
    #[serde(default)]
    best_of: Vec<String>,
    #[serde(default)]
    set: Entries,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrid {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    set: Entries,
    #[serde(default)]
    axes: Entries,
}

/// Reads and checks the sweep file at `path`.
pub fn load(path: &Path) -> Result<Sweep> {
    let origin = clip_bare(&path.display().to_string());
    let bytes = zoo_data::read_file_capped(path, "sweep file", MAX_CONFIG_BYTES)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("{origin} is not UTF-8 text (save it as UTF-8)"))?;
    let folder = path.parent().unwrap_or(Path::new(""));
    let mut sweep = parse(&text, &origin, folder)?;
    sweep.file = path.to_path_buf();
    if !sweep.base.is_file() {
        bail!(
            "{origin}: sweep.base: {} is not a file (the path is relative to the sweep file's folder)",
            clip_bare(&sweep.base.display().to_string())
        );
    }
    Ok(sweep)
}

/// Parses sweep text; `origin` (the file name) starts every message, `folder` is what `base`
/// is relative to. Does not look at the file system.
pub fn parse(text: &str, origin: &str, folder: &Path) -> Result<Sweep> {
    let raw: RawFile = serde_path_to_error::deserialize(toml::Deserializer::new(text))
        .map_err(|e| anyhow::anyhow!("{origin}: {}", describe_error(&e, text)))?;
    let fail = |message: String| anyhow::anyhow!("{origin}: {message}");

    let name = raw.sweep.name;
    check_name(&name).map_err(fail)?;
    if raw.sweep.base.trim().is_empty() {
        return Err(fail(
            "sweep.base is empty (give the run config to start from, relative to this file)".into(),
        ));
    }
    let base = folder.join(&raw.sweep.base);

    if let Some(seeds) = &raw.sweep.seeds {
        if seeds.is_empty() {
            return Err(fail(
                "sweep.seeds is empty (list at least one seed, or remove it to keep the base's run.seed)".into(),
            ));
        }
        if seeds.len() > MAX_VALUES {
            return Err(fail(format!(
                "sweep.seeds lists {} seeds, more than {MAX_VALUES}",
                seeds.len()
            )));
        }
        if let Some(d) = first_duplicate(seeds.iter()) {
            return Err(fail(format!("sweep.seeds lists {d} twice")));
        }
    }

    let set = overrides(raw.sweep.set, "sweep.set").map_err(fail)?;
    let axes = axes_of(raw.axes, "axes").map_err(fail)?;
    let mut grids = Vec::new();
    for (i, g) in raw.grids.into_iter().enumerate() {
        let at = format!("grids.{i}");
        if let Some(n) = &g.name
            && (n.trim().is_empty() || n.contains(['\n', '\r']))
        {
            return Err(fail(format!(
                "{at}.name {} is empty or spans lines (give a short label)",
                zoo_data::clip(n)
            )));
        }
        grids.push(Grid {
            name: g.name,
            set: overrides(g.set, &format!("{at}.set")).map_err(fail)?,
            axes: axes_of(g.axes, &format!("{at}.axes")).map_err(fail)?,
        });
    }
    let names: Vec<&String> = grids.iter().filter_map(|g| g.name.as_ref()).collect();
    if let Some(d) = first_duplicate(names.into_iter()) {
        return Err(fail(format!("two grids are named {}", zoo_data::clip(d))));
    }
    check_conflicts(&set, &axes, &grids).map_err(fail)?;

    // best_of names axes (as written) or one key of a zipped axis; it means the whole axis.
    let all_axes: Vec<&Axis> = axes
        .iter()
        .chain(grids.iter().flat_map(|g| &g.axes))
        .collect();
    let mut best_of = Vec::new();
    for (i, wanted) in raw.sweep.best_of.iter().enumerate() {
        let Some(axis) = all_axes
            .iter()
            .find(|a| a.name == *wanted || a.keys.contains(wanted))
        else {
            return Err(fail(format!(
                "sweep.best_of.{i} = {} is not an axis (axes: {})",
                zoo_data::clip(wanted),
                axis_list(&all_axes)
            )));
        };
        for key in &axis.keys {
            if !best_of.contains(key) {
                best_of.push(key.clone());
            }
        }
    }

    // Plots refer to columns: axis keys, or "grid".
    let columns: Vec<&str> = all_axes
        .iter()
        .flat_map(|a| a.keys.iter().map(String::as_str))
        .chain(if grids.is_empty() { None } else { Some("grid") })
        .collect();
    for (i, p) in raw.plots.iter().enumerate() {
        for (field, value) in [("x", &p.x), ("series", &p.series), ("panel", &p.panel)] {
            if let Some(v) = value
                && !columns.contains(&v.as_str())
            {
                return Err(fail(format!(
                    "plots.{i}.{field} = {} is not an axis key (use one of: {})",
                    zoo_data::clip(v),
                    if columns.is_empty() {
                        "none, the sweep has no axes".to_string()
                    } else {
                        columns.join(", ")
                    }
                )));
            }
        }
        if p.kind == PlotKind::State && p.x.is_some() {
            return Err(fail(format!(
                "plots.{i}.x: a state plot's x is the decoding-state size (remove x)"
            )));
        }
    }
    check_slurm(&raw.slurm).map_err(fail)?;

    Ok(Sweep {
        file: PathBuf::from(origin),
        name,
        base,
        seeds: raw.sweep.seeds,
        best_of,
        set,
        axes,
        grids,
        plots: raw.plots,
        slurm: raw.slurm,
        digest: sha256_hex(text.as_bytes()),
    })
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn check_name(name: &str) -> Result<(), String> {
    zoo_train::run_dir::check_name(name).map_err(|e| e.replacen("run.name", "sweep.name", 1))?;
    if name.len() > MAX_NAME_BYTES {
        return Err(format!(
            "sweep.name \"{}\" is longer than {MAX_NAME_BYTES} bytes (use a shorter name)",
            clip_bare(name)
        ));
    }
    Ok(())
}

fn first_duplicate<T: Ord + Clone>(items: impl Iterator<Item = T>) -> Option<T> {
    let mut seen = BTreeSet::new();
    items.into_iter().find(|x| !seen.insert(x.clone()))
}

/// Entries in the order they are written.
fn in_file_order(entries: Entries) -> Vec<(String, toml::Value)> {
    let mut v: Vec<(usize, String, toml::Value)> = entries
        .into_iter()
        .map(|(k, v)| (k.span().start, k.into_inner(), v))
        .collect();
    v.sort_by_key(|(at, _, _)| *at);
    v.into_iter().map(|(_, k, v)| (k, v)).collect()
}

/// Checks one dotted key of `set` / `axes` (shown as `at."key"`).
fn check_key(key: &str, at: &str, value: Option<&toml::Value>) -> Result<(), String> {
    let shown = format!("{at}.\"{}\"", clip_bare(key));
    let segments: Vec<&str> = key.split('.').collect();
    if key.is_empty()
        || segments
            .iter()
            .any(|s| s.is_empty() || !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
    {
        return Err(format!(
            "{shown} is not a dotted key path (write it as --set takes it, e.g. \"train.lr\")"
        ));
    }
    if !SECTIONS.contains(&segments[0]) {
        return Err(format!(
            "{shown} does not start with a config section ({})",
            SECTIONS.join(", ")
        ));
    }
    match key {
        "run" | "run.name" => Err(format!(
            "{shown}: the sweep names its runs itself (remove this key)"
        )),
        "run.seed" => Err(format!(
            "{shown}: list seeds in sweep.seeds instead (seeds = [0, 1, 2])"
        )),
        _ if segments.len() == 1 && matches!(value, Some(toml::Value::Table(_))) => Err(format!(
            "{shown} replaces the whole [{key}] section; quote dotted keys to set one key (\"{key}.x\" = ...)"
        )),
        _ => Ok(()),
    }
}

fn overrides(entries: Entries, at: &str) -> Result<Vec<(String, toml::Value)>, String> {
    let list = in_file_order(entries);
    for (key, value) in &list {
        check_key(key, at, Some(value))?;
    }
    Ok(list)
}

fn axes_of(entries: Entries, at: &str) -> Result<Vec<Axis>, String> {
    in_file_order(entries)
        .into_iter()
        .map(|(name, value)| axis(name, value, at))
        .collect()
}

fn axis(name: String, value: toml::Value, at: &str) -> Result<Axis, String> {
    let shown = format!("{at}.\"{}\"", clip_bare(&name));
    let keys: Vec<String> = name.split(',').map(|k| k.trim().to_string()).collect();
    for key in &keys {
        check_key(key, at, None)?;
    }
    if let Some(d) = first_duplicate(keys.iter()) {
        return Err(format!("{shown} names {d} twice"));
    }
    let toml::Value::Array(items) = value else {
        return Err(format!(
            "{shown}: expected a list of values, found {} (an axis is key = [v1, v2, ...]; quote dotted keys)",
            describe(&value)
        ));
    };
    if items.is_empty() {
        return Err(format!(
            "{shown} has no values (list at least one, or remove the axis)"
        ));
    }
    if items.len() > MAX_VALUES {
        return Err(format!(
            "{shown} has {} values, more than {MAX_VALUES}",
            items.len()
        ));
    }
    let mut values = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        if keys.len() == 1 {
            values.push(vec![item]);
            continue;
        }
        match item {
            toml::Value::Array(tuple) if tuple.len() == keys.len() => values.push(tuple),
            other => {
                return Err(format!(
                    "{shown}.{i}: a zipped axis of {} keys takes lists of {} values (e.g. [{}]), found {}",
                    keys.len(),
                    keys.len(),
                    vec!["…"; keys.len()].join(", "),
                    match &other {
                        toml::Value::Array(a) => format!("a list of {}", a.len()),
                        v => describe(v),
                    }
                ));
            }
        }
    }
    let rendered: Vec<String> = values
        .iter()
        .map(|v| {
            v.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        })
        .collect();
    if let Some(d) = first_duplicate(rendered.iter()) {
        return Err(format!("{shown} lists the value {} twice", clip_bare(d)));
    }
    Ok(Axis { name, keys, values })
}

/// A key may be set once per run: not in two axes, and not in an axis and a `set`.
fn check_conflicts(
    set: &[(String, toml::Value)],
    axes: &[Axis],
    grids: &[Grid],
) -> Result<(), String> {
    let empty = Grid {
        name: None,
        set: Vec::new(),
        axes: Vec::new(),
    };
    let grids: Vec<&Grid> = if grids.is_empty() {
        vec![&empty]
    } else {
        grids.iter().collect()
    };
    for (gi, grid) in grids.iter().enumerate() {
        let mut seen: BTreeMap<&str, String> = BTreeMap::new();
        let sources = set
            .iter()
            .map(|(k, _)| (k.as_str(), "sweep.set".to_string()))
            .chain(
                grid.set
                    .iter()
                    .map(|(k, _)| (k.as_str(), format!("grids.{gi}.set"))),
            )
            .chain(
                axes.iter()
                    .flat_map(|a| a.keys.iter().map(|k| (k.as_str(), "axes".to_string()))),
            )
            .chain(grid.axes.iter().flat_map(|a| {
                a.keys
                    .iter()
                    .map(move |k| (k.as_str(), format!("grids.{gi}.axes")))
            }));
        for (key, source) in sources {
            if let Some(first) = seen.insert(key, source.clone()) {
                return Err(format!(
                    "\"{}\" is set in both {first} and {source} (set each key in one place)",
                    clip_bare(key)
                ));
            }
        }
    }
    Ok(())
}

fn axis_list(axes: &[&Axis]) -> String {
    if axes.is_empty() {
        return "none".into();
    }
    axes.iter()
        .map(|a| a.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn check_slurm(s: &SlurmSpec) -> Result<(), String> {
    let strings = [
        ("slurm.partition", s.partition.as_slice()),
        ("slurm.time", s.time.as_slice()),
        ("slurm.mem", s.mem.as_slice()),
        ("slurm.options", s.options.as_slice()),
        ("slurm.setup", s.setup.as_slice()),
    ];
    for (key, values) in strings {
        for v in values {
            if v.contains(['\n', '\r']) || v.trim().is_empty() {
                return Err(format!(
                    "{key} = {} is empty or spans lines (one line per entry)",
                    zoo_data::clip(v)
                ));
            }
        }
    }
    if s.cpus_per_task == Some(0) {
        return Err("slurm.cpus_per_task is 0 (use at least 1)".into());
    }
    if s.max_parallel == Some(0) {
        return Err("slurm.max_parallel is 0 (use at least 1, or remove it)".into());
    }
    for (i, o) in s.options.iter().enumerate() {
        if !o.trim_start().starts_with('-') {
            return Err(format!(
                "slurm.options.{i} = {} is not an sbatch option (e.g. \"--gres=gpu:1\")",
                zoo_data::clip(o)
            ));
        }
    }
    Ok(())
}

fn describe(value: &toml::Value) -> String {
    match value {
        toml::Value::String(_) => "a string".into(),
        toml::Value::Integer(_) => "an integer".into(),
        toml::Value::Float(_) => "a float".into(),
        toml::Value::Boolean(_) => "a boolean".into(),
        toml::Value::Datetime(_) => "a datetime".into(),
        toml::Value::Array(_) => "a list".into(),
        toml::Value::Table(_) => "a table".into(),
    }
}

/// One line for a deserialisation error: the dotted path, the problem and the line.
fn describe_error(e: &serde_path_to_error::Error<toml::de::Error>, text: &str) -> String {
    let path = e.path().to_string();
    let message = e
        .inner()
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    let line = e.inner().span().map(|s| {
        text.as_bytes()[..s.start.min(text.len())]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    });
    let at = line.map(|l| format!(" (line {l})")).unwrap_or_default();
    let hint = if message.starts_with("unknown field") {
        "; check the spelling"
    } else if message.starts_with("missing field") {
        "; add it"
    } else {
        ""
    };
    if path.is_empty() || path == "." {
        format!("{message}{at}{hint}")
    } else {
        format!("`{path}`: {message}{at}{hint}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "[sweep]\nname = \"t\"\nbase = \"../configs/b.toml\"\n";

    fn parsed(body: &str) -> Result<Sweep> {
        parse(&format!("{HEAD}{body}"), "s.toml", Path::new("sweeps"))
    }

    fn error(body: &str) -> String {
        let e = parsed(body).unwrap_err().to_string();
        assert!(e.starts_with("s.toml: "), "{e}");
        assert!(!e.contains('\n'), "{e}");
        e
    }

    #[test]
    fn reads_axes_in_file_order_and_resolves_the_base() {
        let s = parsed(
            "seeds = [3, 1]\nbest_of = [\"train.lr\"]\nset = { \"train.eval_every\" = 5 }\n[axes]\n\"train.lr\" = [1e-3, 3e-3]\n\"model.d_model\" = [64, 32]\n\"train.stages.0.seq_len,task.num_kv_pairs\" = [[64, 4]]\n",
        )
        .unwrap();
        assert_eq!(s.base, Path::new("sweeps/../configs/b.toml"));
        let names: Vec<&str> = s.axes.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "train.lr",
                "model.d_model",
                "train.stages.0.seq_len,task.num_kv_pairs"
            ]
        );
        assert_eq!(
            s.axes[2].keys,
            ["train.stages.0.seq_len", "task.num_kv_pairs"]
        );
        assert_eq!(s.seeds, Some(vec![3, 1]));
        assert_eq!(s.best_of, ["train.lr"]);
        assert_eq!(s.set[0].0, "train.eval_every");
        assert_eq!(s.digest.len(), 64);
    }

    #[test]
    fn best_of_a_zipped_key_means_the_whole_axis() {
        let s = parsed("best_of = [\"train.warmup_steps\"]\n[axes]\n\"train.lr,train.warmup_steps\" = [[1e-3, 10], [3e-3, 20]]\n").unwrap();
        assert_eq!(s.best_of, ["train.lr", "train.warmup_steps"]);
    }

    #[test]
    fn mistakes_are_one_line_naming_the_key() {
        let cases = [
            (
                "[axes]\ntrain.lr = [1e-3]\n",
                "axes.\"train\": expected a list",
            ),
            ("seed = [1]\n", "`sweep.seed`: unknown field `seed`"),
            (
                "[axes]\n\"train.lr\" = 1e-3\n",
                "expected a list of values, found a float",
            ),
            ("[axes]\n\"train.lr\" = []\n", "has no values"),
            ("[axes]\n\"train.lr\" = [1, 1]\n", "lists the value 1 twice"),
            (
                "[axes]\n\"lr\" = [1]\n",
                "does not start with a config section",
            ),
            ("[axes]\n\"run.seed\" = [1]\n", "sweep.seeds"),
            ("[axes]\n\"run.name\" = [\"a\"]\n", "names its runs itself"),
            (
                "set = { train = { lr = 1 } }\n",
                "replaces the whole [train] section",
            ),
            (
                "best_of = [\"train.lr\"]\n",
                "sweep.best_of.0 = \"train.lr\" is not an axis",
            ),
            ("seeds = []\n", "sweep.seeds is empty"),
            ("seeds = [1, 1]\n", "lists 1 twice"),
            (
                "set = { \"train.lr\" = 1 }\n[axes]\n\"train.lr\" = [2]\n",
                "set in both sweep.set and axes",
            ),
            (
                "[axes]\n\"train.lr\" = [1]\n[[grids]]\naxes = { \"train.lr\" = [2] }\n",
                "set in both axes and grids.0.axes",
            ),
            (
                "[[grids]]\nname = \"a\"\n[[grids]]\nname = \"a\"\n",
                "two grids are named",
            ),
            (
                "[axes]\n\"train.lr\" = [1]\n[[plots]]\nkind = \"accuracy\"\nx = \"model.d_model\"\n",
                "plots.0.x = \"model.d_model\" is not an axis key (use one of: train.lr)",
            ),
            (
                "[[plots]]\nkind = \"scatter\"\n",
                "unknown variant `scatter`",
            ),
            ("[slurm]\ncpus_per_task = 0\n", "slurm.cpus_per_task is 0"),
            (
                "[slurm]\noptions = [\"gres=gpu:1\"]\n",
                "not an sbatch option",
            ),
        ];
        for (body, want) in cases {
            let e = error(body);
            assert!(e.contains(want), "{body:?}: {e}");
        }
        let e = parse(
            "[sweep]\nname = \"a/b\"\nbase = \"x\"\n",
            "s.toml",
            Path::new("."),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("sweep.name"), "{e}");
    }

    #[test]
    fn grids_may_set_a_table_and_sweep_inside_it() {
        let s = parsed(
            "[[grids]]\nset = { \"model.mixer\" = { kind = \"sliding_window\" } }\naxes = { \"model.mixer.window\" = [16, 32] }\n",
        )
        .unwrap();
        assert_eq!(s.grids.len(), 1);
        assert_eq!(s.grids[0].axes[0].keys, ["model.mixer.window"]);
    }
}
