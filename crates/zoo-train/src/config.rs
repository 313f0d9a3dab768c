//! The run config: the strict TOML schema users write, loading with precise one-line errors,
//! `--set path=value` overrides, cross-field validation and the fully resolved config that a run
//! writes next to its checkpoints.
//!
//! A run config has five sections:
//!
//! ```toml
//! [run]    # name, seed, device
//! [model]  # zoo_model::ModelConfig (mixer, position encoding, sizes)
//! [task]   # zoo_data::TaskConfig (kind = "mqar" | "needle" | "copy" | "selective_copy" | "text")
//! [train]  # optimiser, LR schedule, [[train.stages]] or [train.length_warmup]
//! [eval]   # optional: lengths evaluated during training, NIAH / MQAR / perplexity grids
//! ```
//!
//! Every struct rejects unknown keys, and every field has an explicit default (written out by
//! [`RunConfig::to_toml`]). Loading goes: read the file → parse TOML → apply `--set` overrides to
//! the value tree → deserialise (so overrides get exactly the same checks as the file) → check
//! that no key was silently ignored → [`RunConfig::validate`]. Every error is one line that starts
//! with the file name, names the dotted path of the offending key, and says how to fix it:
//!
//! ```text
//! configs/x.toml: unknown key `train.lrr`; did you mean `lr`? (valid keys: batch_size, lr, ...)
//! configs/x.toml: `train.lr` should be a float, found string "fast"
//! configs/x.toml: model.mixer.kind = "softmaxx" is not one of softmax, linear, rwkv, sliding_window, bigbird, deltanet, gated_deltanet, mamba2; did you mean softmax?
//! ```

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use zoo_data::input::{MAX_CONFIG_BYTES, clip_bare};
use zoo_data::needle::NeedleVariant;
use zoo_data::{TaskConfig, TaskError, clip, read_file_capped};
use zoo_model::ModelConfig;
use zoo_model::config::{MixerConfig, PositionConfig};

// ---------------------------------------------------------------------------------------------
// Schema
// ---------------------------------------------------------------------------------------------

/// A whole run: what to build, what to train it on, how, and what to evaluate.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    pub run: RunSection,
    pub model: ModelConfig,
    pub task: TaskConfig,
    pub train: TrainConfig,
    #[serde(default)]
    pub eval: EvalConfig,
}

/// `[run]`: identity of the run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RunSection {
    /// Name of the run (names its output directory).
    pub name: String,
    /// Seed of everything random: initialisation, data, length mixing.
    #[serde(default)]
    pub seed: u64,
    /// Backend: `flex`, `ndarray`, `wgpu` or `cuda` (checked by the CLI).
    #[serde(default = "default_device")]
    pub device: String,
}

/// Shape of the learning rate after warmup.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LrSchedule {
    /// Half a cosine from `lr` down to `lr * min_lr_ratio` at the last step.
    Cosine,
    /// Straight line from `lr` down to `lr * min_lr_ratio` at the last step.
    Linear,
    /// `lr` after warmup.
    Constant,
}

/// One stage of a staged length schedule: `steps` steps at `seq_len`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    pub seq_len: usize,
    pub steps: usize,
    /// Batch size of this stage; default `train.batch_size`.
    #[serde(default)]
    pub batch_size: Option<usize>,
}

/// How the length of a [`LengthWarmup`] grows.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Growth {
    Linear,
    Geometric,
}

/// Sequence-length warmup (MosaicML Composer's `SeqLengthWarmup`): the length grows from
/// `min_len` to `max_len` over `steps` steps, then stays at `max_len` until `total_steps`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LengthWarmup {
    pub min_len: usize,
    pub max_len: usize,
    /// Steps to reach `max_len`.
    pub steps: usize,
    /// Total training steps.
    pub total_steps: usize,
    #[serde(default = "default_growth")]
    pub growth: Growth,
    /// Lengths are rounded down to a multiple of this.
    #[serde(default = "default_multiple_of")]
    pub multiple_of: usize,
}

/// `[train]`: optimiser, schedules and logging cadence.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Peak learning rate.
    #[serde(default = "default_lr")]
    pub lr: f64,
    /// Final learning rate as a fraction of `lr` (cosine and linear schedules).
    #[serde(default = "default_min_lr_ratio")]
    pub min_lr_ratio: f64,
    /// Linear warmup steps, from `lr / warmup_steps` to `lr`.
    #[serde(default)]
    pub warmup_steps: usize,
    #[serde(default = "default_schedule")]
    pub schedule: LrSchedule,
    /// Decoupled (AdamW) weight decay.
    #[serde(default = "default_weight_decay")]
    pub weight_decay: f64,
    /// false: no weight decay on norms, biases and embeddings.
    #[serde(default)]
    pub decay_all: bool,
    #[serde(default = "default_beta1")]
    pub beta1: f64,
    #[serde(default = "default_beta2")]
    pub beta2: f64,
    #[serde(default = "default_eps")]
    pub eps: f64,
    /// Clip the global gradient norm to this; 0 = off.
    #[serde(default = "default_grad_clip")]
    pub grad_clip: f64,
    /// Micro-batches accumulated per optimiser step.
    #[serde(default = "default_one")]
    pub grad_accum: usize,
    /// Staged length schedule; exactly one of `stages` and `length_warmup` must be given.
    #[serde(default)]
    pub stages: Vec<Stage>,
    #[serde(default)]
    pub length_warmup: Option<LengthWarmup>,
    /// Each step of stage k draws its length uniformly from the stages 0..=k (Zoology mixes
    /// short and long sequences).
    #[serde(default)]
    pub mixed_lengths: bool,
    /// Hold tokens per step constant: batch = max(1, tokens_per_step / seq_len).
    #[serde(default)]
    pub tokens_per_step: Option<usize>,
    #[serde(default = "default_log_every")]
    pub log_every: usize,
    /// Evaluate every this many steps; 0 = only at the end.
    #[serde(default)]
    pub eval_every: usize,
    /// Stop at the first in-training evaluation whose held-out accuracy reaches this at every
    /// evaluation length (in (0, 1]; needs `eval_every` > 0). Unset: train every planned step.
    #[serde(default)]
    pub stop_at_accuracy: Option<f64>,
    /// Batches per evaluation during training.
    #[serde(default = "default_eval_batches")]
    pub eval_batches: usize,
    /// Checkpoint every this many steps; 0 = only at the end.
    #[serde(default)]
    pub checkpoint_every: usize,
}

/// `[eval]`: what is evaluated during and after training.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// Lengths evaluated during training; empty = the final training length.
    #[serde(default)]
    pub lengths: Vec<usize>,
    #[serde(default = "default_eval_batch_size")]
    pub batch_size: usize,
    #[serde(default)]
    pub niah: NiahEval,
    #[serde(default)]
    pub mqar: MqarEval,
    #[serde(default)]
    pub ppl: PplEval,
}

/// `[eval.niah]`: needle-in-a-haystack grid of lengths × depths.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NiahEval {
    #[serde(default)]
    pub lengths: Vec<usize>,
    #[serde(default = "default_depths")]
    pub depths: Vec<f64>,
    /// Samples per grid cell.
    #[serde(default = "default_niah_samples")]
    pub samples: usize,
    /// `single`, `multi_key`, `multi_value` or `multi_query` (parsed with `NeedleVariant::from_str`).
    #[serde(default = "default_niah_variant")]
    pub variant: String,
}

/// `[eval.mqar]`: MQAR accuracy grid of lengths × pair counts.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MqarEval {
    #[serde(default)]
    pub lengths: Vec<usize>,
    #[serde(default)]
    pub num_kv_pairs: Vec<usize>,
    /// Samples per grid cell.
    #[serde(default = "default_mqar_samples")]
    pub samples: usize,
}

/// `[eval.ppl]`: held-out perplexity against length (text tasks).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PplEval {
    #[serde(default)]
    pub lengths: Vec<usize>,
    #[serde(default = "default_max_windows")]
    pub max_windows: usize,
}

fn default_device() -> String {
    "flex".to_string()
}
fn default_growth() -> Growth {
    Growth::Linear
}
fn default_multiple_of() -> usize {
    8
}
fn default_batch_size() -> usize {
    32
}
fn default_lr() -> f64 {
    1e-3
}
fn default_min_lr_ratio() -> f64 {
    0.1
}
fn default_schedule() -> LrSchedule {
    LrSchedule::Cosine
}
fn default_weight_decay() -> f64 {
    0.1
}
fn default_beta1() -> f64 {
    0.9
}
/// PyTorch's AdamW default, as Zoology trains with: β₂ = 0.95 (nanoGPT's choice for large
/// LMs) slowed recall learning in small models (MQAR calibration: 0.84 against 0.98 at step 600).
fn default_beta2() -> f64 {
    0.999
}
fn default_eps() -> f64 {
    1e-8
}
fn default_grad_clip() -> f64 {
    1.0
}
fn default_one() -> usize {
    1
}
fn default_log_every() -> usize {
    10
}
fn default_eval_batches() -> usize {
    2
}
fn default_eval_batch_size() -> usize {
    16
}
fn default_depths() -> Vec<f64> {
    vec![0.0, 0.25, 0.5, 0.75, 1.0]
}
fn default_niah_samples() -> usize {
    8
}
fn default_niah_variant() -> String {
    "single".to_string()
}
fn default_mqar_samples() -> usize {
    64
}
fn default_max_windows() -> usize {
    16
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            batch_size: default_batch_size(),
            lr: default_lr(),
            min_lr_ratio: default_min_lr_ratio(),
            warmup_steps: 0,
            schedule: default_schedule(),
            weight_decay: default_weight_decay(),
            decay_all: false,
            beta1: default_beta1(),
            beta2: default_beta2(),
            eps: default_eps(),
            grad_clip: default_grad_clip(),
            grad_accum: 1,
            stages: Vec::new(),
            length_warmup: None,
            mixed_lengths: false,
            tokens_per_step: None,
            log_every: default_log_every(),
            eval_every: 0,
            stop_at_accuracy: None,
            eval_batches: default_eval_batches(),
            checkpoint_every: 0,
        }
    }
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            lengths: Vec::new(),
            batch_size: default_eval_batch_size(),
            niah: NiahEval::default(),
            mqar: MqarEval::default(),
            ppl: PplEval::default(),
        }
    }
}

impl Default for NiahEval {
    fn default() -> Self {
        NiahEval {
            lengths: Vec::new(),
            depths: default_depths(),
            samples: default_niah_samples(),
            variant: default_niah_variant(),
        }
    }
}

impl Default for MqarEval {
    fn default() -> Self {
        MqarEval {
            lengths: Vec::new(),
            num_kv_pairs: Vec::new(),
            samples: default_mqar_samples(),
        }
    }
}

impl Default for PplEval {
    fn default() -> Self {
        PplEval {
            lengths: Vec::new(),
            max_windows: default_max_windows(),
        }
    }
}

impl TrainConfig {
    /// Total optimiser steps: the sum of the stage steps, or `length_warmup.total_steps`.
    pub fn total_steps(&self) -> usize {
        match (&self.length_warmup, self.stages.is_empty()) {
            (Some(w), true) => w.total_steps,
            _ => self.stages.iter().map(|s| s.steps).sum(),
        }
    }

    /// Length of the last training step (the last stage, or `length_warmup.max_len`); 0 when
    /// no schedule is given.
    pub fn final_seq_len(&self) -> usize {
        match (&self.length_warmup, self.stages.last()) {
            (_, Some(s)) => s.seq_len,
            (Some(w), None) => w.max_len,
            (None, None) => 0,
        }
    }

    /// Longest training length; 0 when no schedule is given.
    pub fn max_train_len(&self) -> usize {
        match (&self.length_warmup, self.stages.is_empty()) {
            (Some(w), true) => w.max_len.max(w.min_len),
            _ => self.stages.iter().map(|s| s.seq_len).max().unwrap_or(0),
        }
    }

    /// Shortest training length; 0 when no schedule is given.
    pub fn min_train_len(&self) -> usize {
        match (&self.length_warmup, self.stages.is_empty()) {
            (Some(w), true) => w.min_len.min(w.max_len),
            _ => self.stages.iter().map(|s| s.seq_len).min().unwrap_or(0),
        }
    }
}

/// Hard bounds on the run config's sizes (the model's own are in `zoo_model::config::limits`).
pub mod limits {
    pub use zoo_model::config::limits::{BATCH, SEQ_LEN};
    /// Optimiser steps, per stage and in total.
    pub const STEPS: usize = 1_000_000_000;
    /// `train.tokens_per_step` (2^32).
    pub const TOKENS_PER_STEP: usize = 1 << 32;
    /// Samples per evaluation cell and perplexity windows (2^20).
    pub const SAMPLES: usize = 1 << 20;
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Longest error message; longer ones are cut (see [`ConfigError::new`]).
pub const MAX_MESSAGE_CHARS: usize = 2000;

/// A config problem: one line (no newlines) naming the file, the key path and the fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl ConfigError {
    /// Builds an error, folding any line breaks into "; " so the message stays one line, and
    /// cutting it at [`MAX_MESSAGE_CHARS`] (quoted user text is clipped where it is quoted;
    /// this is the backstop).
    pub fn new(message: impl Into<String>) -> Self {
        let message: String = message.into();
        let one_line = message
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        let one_line = match one_line.char_indices().nth(MAX_MESSAGE_CHARS) {
            Some((end, _)) => format!("{}… ({} bytes)", &one_line[..end], one_line.len()),
            None => one_line,
        };
        ConfigError(one_line)
    }

    pub fn message(&self) -> &str {
        &self.0
    }

    fn prefixed(origin: &str, message: impl fmt::Display) -> Self {
        ConfigError::new(format!("{origin}: {message}"))
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

/// Reads, overrides, deserialises and validates the config file at `path`.
pub fn load(path: &Path, overrides: &[String]) -> Result<RunConfig, ConfigError> {
    let origin = clip_bare(&path.display().to_string());
    let bytes = read_file_capped(path, "config file", MAX_CONFIG_BYTES).map_err(|e| match e {
        TaskError::Io { source, .. } => {
            ConfigError::new(format!("cannot read {origin}: {}", io_message(&source)))
        }
        other => ConfigError::new(other.to_string()),
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        ConfigError::new(format!(
            "{origin} is not UTF-8 text ({}); save it as UTF-8",
            e.utf8_error()
        ))
    })?;
    parse(&text, &origin, overrides)
}

/// Like [`load`] for config text; `origin` (normally the file name) starts every message.
pub fn parse(text: &str, origin: &str, overrides: &[String]) -> Result<RunConfig, ConfigError> {
    let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let location = match e.span() {
            Some(span) => {
                let (line, column) = line_column(text, span.start);
                format!("line {line}, column {column}")
            }
            None => "unknown position".to_string(),
        };
        ConfigError::prefixed(
            origin,
            format!(
                "malformed TOML at {location}: {} (fix the TOML syntax)",
                e.message().trim()
            ),
        )
    })?;
    for raw in overrides {
        apply_override(&mut table, raw)
            .map_err(|e| ConfigError::prefixed(origin, format!("--set {}: {e}", clip_bare(raw))))?;
    }
    let input = toml::Value::Table(table);
    let config: RunConfig = serde_path_to_error::deserialize(input.clone())
        .map_err(|e| ConfigError::prefixed(origin, describe_serde_error(&e, &input)))?;
    // Serde ignores extra keys in a few places (unit variants of tagged enums such as
    // `position = { kind = "alibi", theta = 1 }`); anything the config does not write back
    // was not read.
    let written = toml::Value::try_from(&config)
        .map_err(|e| ConfigError::prefixed(origin, format!("cannot serialise the config: {e}")))?;
    check_no_arrays_for_tables(&input, &written, &mut Vec::new())
        .map_err(|e| ConfigError::prefixed(origin, e))?;
    check_no_ignored_keys(&input, &written, &mut Vec::new())
        .map_err(|e| ConfigError::prefixed(origin, e))?;
    config
        .validate()
        .map_err(|e| ConfigError::prefixed(origin, e))?;
    Ok(config)
}

/// `std::io::Error` text without the "(os error N)" suffix.
fn io_message(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error ") {
        Some(i) if text.ends_with(')') => text[..i].to_string(),
        _ => text,
    }
}

/// 1-based line and column of byte `offset`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text.as_bytes()[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let column = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    (line, column)
}

// ---------------------------------------------------------------------------------------------
// Overrides
// ---------------------------------------------------------------------------------------------

/// Applies one `path=value` override to the parsed tree. The value is read as a TOML value
/// (`3e-4`, `[64, 128]`, `{kind = "alibi"}`, `"text"`) and otherwise taken as a bare string.
fn apply_override(table: &mut toml::Table, raw: &str) -> Result<(), String> {
    let form = "expected the form path.to.key=value, e.g. --set train.lr=3e-4 or --set train.stages.1.steps=500";
    let Some((path, value)) = raw.split_once('=') else {
        return Err(format!("no `=` found ({form})"));
    };
    let path = path.trim();
    let value = parse_override_value(value.trim())?;
    let segments: Vec<&str> = path.split('.').map(str::trim).collect();
    if path.is_empty() {
        return Err(format!("the key path before `=` is empty ({form})"));
    }
    if segments.iter().any(|s| s.is_empty()) {
        return Err(format!(
            "`{}` is not a dotted key path ({form})",
            clip_bare(path)
        ));
    }

    let mut root = toml::Value::Table(std::mem::take(table));
    let result = set_at(&mut root, &segments, 0, value, path);
    if let toml::Value::Table(t) = root {
        *table = t;
    }
    result
}

/// Sets `segments[depth..]` below `slot` to `value`, creating missing tables on the way (a key
/// the schema does not know is then reported by deserialisation, like one in the file).
fn set_at(
    slot: &mut toml::Value,
    segments: &[&str],
    depth: usize,
    value: toml::Value,
    path: &str,
) -> Result<(), String> {
    let here = clip_bare(&segments[..depth].join("."));
    let segment = clip_bare(segments[depth]);
    let segment = segment.as_str();
    let last = depth + 1 == segments.len();
    let child = match slot {
        toml::Value::Table(t) => {
            if last {
                t.insert(segment.to_string(), value);
                return Ok(());
            }
            t.entry(segment.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        }
        toml::Value::Array(items) => {
            let len = items.len();
            let Ok(index) = segment.parse::<usize>() else {
                return Err(format!(
                    "`{here}` is an array, so `{segment}` must be an index below {len}"
                ));
            };
            if index >= len {
                return Err(format!(
                    "index {index} is past the end of `{here}`, which has {len} entries (use an index below {len})"
                ));
            }
            if last {
                items[index] = value;
                return Ok(());
            }
            &mut items[index]
        }
        other => {
            return Err(format!(
                "`{here}` is {}, not a table, so `{}` cannot be set",
                describe_value(other),
                clip_bare(path)
            ));
        }
    };
    set_at(child, segments, depth + 1, value, path)
}

fn parse_override_value(text: &str) -> Result<toml::Value, String> {
    if let Ok(mut doc) = format!("value = {text}").parse::<toml::Table>()
        && doc.len() == 1
        && let Some(v) = doc.remove("value")
    {
        return Ok(v);
    }
    if text.starts_with(['[', '{', '"', '\'']) {
        let message = match format!("value = {text}").parse::<toml::Table>() {
            Err(e) => e.message().trim().to_string(),
            Ok(_) => "more than one value".to_string(),
        };
        return Err(format!(
            "the value `{}` is not a valid TOML value: {message} (quote strings, e.g. name=\"x\")",
            clip_bare(text)
        ));
    }
    Ok(toml::Value::String(text.to_string()))
}

// ---------------------------------------------------------------------------------------------
// Serde error translation
// ---------------------------------------------------------------------------------------------

type PathError = serde_path_to_error::Error<toml::de::Error>;

fn serde_path(e: &PathError) -> Vec<String> {
    use serde_path_to_error::Segment;
    e.path()
        .iter()
        .filter_map(|segment| match segment {
            Segment::Seq { index } => Some(index.to_string()),
            Segment::Map { key } => Some(key.clone()),
            Segment::Enum { .. } | Segment::Unknown => None,
        })
        .collect()
}

fn lookup<'a>(root: &'a toml::Value, path: &[String]) -> Option<&'a toml::Value> {
    path.iter().try_fold(root, |v, segment| match v {
        toml::Value::Table(t) => t.get(segment),
        toml::Value::Array(a) => a.get(segment.parse::<usize>().ok()?),
        _ => None,
    })
}

/// The substrings of `text` between pairs of backticks.
fn backticked(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

fn describe_serde_error(e: &PathError, input: &toml::Value) -> String {
    let message = e.inner().message().trim().to_string();
    let mut path = serde_path(e);

    if let Some(rest) = message.strip_prefix("unknown field ") {
        let names = backticked(rest);
        if let Some((key, valid)) = names.split_first() {
            // Inside tagged enums the path stops at the enum's table; add the key itself.
            if path.last() != Some(key) {
                path.push(key.clone());
            }
            let parent = &path[..path.len() - 1];
            let mut valid: Vec<String> = valid.to_vec();
            if lookup(input, parent)
                .and_then(toml::Value::as_table)
                .is_some_and(|t| t.contains_key("kind"))
                && !valid.iter().any(|k| k == "kind")
            {
                valid.insert(0, "kind".to_string());
            }
            return unknown_key_message(&path.join("."), key, &valid);
        }
    }

    if let Some(rest) = message.strip_prefix("unknown variant ") {
        let names = backticked(rest);
        if let Some((given, valid)) = names.split_first() {
            // Inside tagged enums the path stops at the enum's table; find the key holding the
            // unknown name (the `kind` tag itself, or a field such as `feature_map`).
            if let Some(table) = lookup(input, &path).and_then(toml::Value::as_table) {
                let holding: Vec<&String> = table
                    .iter()
                    .filter(|(_, v)| v.as_str() == Some(given.as_str()))
                    .map(|(k, _)| k)
                    .collect();
                let key = if holding.iter().any(|k| *k == "kind") {
                    Some("kind")
                } else if let [key] = holding.as_slice() {
                    Some(key.as_str())
                } else {
                    None
                };
                if let Some(key) = key {
                    path.push(key.to_string());
                }
            }
            let mut text = format!(
                "{} = {} is not one of {}",
                clip_bare(&path.join(".")),
                clip(given),
                valid.join(", ")
            );
            if let Some(best) = closest(given, valid) {
                text.push_str(&format!("; did you mean {best}?"));
            }
            return text;
        }
    }

    if let Some(rest) = message.strip_prefix("missing field ")
        && let Some(field) = backticked(rest).first()
    {
        path.push(field.clone());
        let full = path.join(".");
        let hint = if path.len() == 1 {
            format!("add a [{field}] table")
        } else if field == "kind" {
            match names_for(&path) {
                Some(kinds) => format!("add kind = one of {}", kinds.join(", ")),
                None => "add it".to_string(),
            }
        } else if path.iter().any(|p| p.parse::<usize>().is_ok()) {
            format!(
                "add {field} = ... to `{}`",
                path[..path.len() - 1].join(".")
            )
        } else {
            format!(
                "add {field} = ... to [{}]",
                path[..path.len() - 1].join(".")
            )
        };
        return format!("missing required key `{full}` ({hint})");
    }

    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix)
            && let Some((found, expected)) = rest.rsplit_once(", expected ")
        {
            // Inside tagged enums the path stops at the enum's table; find the key whose
            // value matches what serde saw, if exactly one does.
            if let Some(table) = lookup(input, &path).and_then(toml::Value::as_table)
                && !expects_table(expected)
            {
                let matches: Vec<&String> = table
                    .iter()
                    .filter(|(k, v)| *k != "kind" && serde_unexpected(v) == found)
                    .map(|(k, _)| k)
                    .collect();
                if let [key] = matches.as_slice() {
                    path.push((*key).clone());
                }
            }
            let shown = if path.is_empty() {
                "the config".to_string()
            } else {
                path.join(".")
            };
            // Describe what the file holds rather than what serde saw (serde describes
            // enums given a number as "unit variant").
            let found = match lookup(input, &path) {
                Some(v) if !matches!(v, toml::Value::Table(_) | toml::Value::Array(_)) => {
                    describe_value(v).trim_start_matches("the ").to_string()
                }
                _ => friendly_found(found),
            };
            let expected = match names_for(&path) {
                Some(names) if expects_name(expected) => {
                    format!("one of {} (a string)", names.join(", "))
                }
                _ => friendly_expected(expected),
            };
            return format!("`{shown}` should be {expected}, found {found}");
        }
    }

    if path.is_empty() {
        message
    } else {
        format!("`{}`: {message}", path.join("."))
    }
}

fn unknown_key_message(full: &str, key: &str, valid: &[String]) -> String {
    let mut text = format!("unknown key `{}`", clip_bare(full));
    if let Some(best) = closest(key, valid) {
        text.push_str(&format!("; did you mean `{best}`?"));
    }
    if valid.is_empty() {
        text.push_str(" (this table takes no keys; remove it)");
    } else {
        text.push_str(&format!(" (valid keys: {})", valid.join(", ")));
    }
    text
}

fn expects_table(expected: &str) -> bool {
    expected.starts_with("struct ")
        || expected.starts_with("internally tagged enum")
        || expected == "a map"
}

/// How serde's `Unexpected` renders a TOML value.
fn serde_unexpected(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => format!("string {s:?}"),
        toml::Value::Integer(i) => format!("integer `{i}`"),
        toml::Value::Float(f) => {
            let mut s = format!("{f}");
            if f.is_finite() && !s.contains(['.', 'e', 'E']) {
                s.push_str(".0");
            }
            format!("floating point `{s}`")
        }
        toml::Value::Boolean(b) => format!("boolean `{b}`"),
        toml::Value::Array(_) => "sequence".to_string(),
        toml::Value::Table(_) => "map".to_string(),
        toml::Value::Datetime(_) => "datetime".to_string(),
    }
}

fn describe_value(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => format!("the string {}", clip(s)),
        toml::Value::Integer(i) => format!("the integer {i}"),
        toml::Value::Float(f) => format!("the float {f}"),
        toml::Value::Boolean(b) => format!("the boolean {b}"),
        toml::Value::Array(_) => "an array".to_string(),
        toml::Value::Table(_) => "a table".to_string(),
        toml::Value::Datetime(d) => format!("the datetime {d}"),
    }
}

fn friendly_expected(expected: &str) -> String {
    let e = expected.trim();
    match e {
        "f64" | "f32" => "a float".to_string(),
        "usize" | "u64" | "u32" | "u16" | "u8" => "a non-negative integer".to_string(),
        "isize" | "i64" | "i32" | "i16" | "i8" => "an integer".to_string(),
        "a boolean" => "a boolean (true or false)".to_string(),
        "a string" => "a string (in quotes)".to_string(),
        "a sequence" => "an array".to_string(),
        "a map" => "a table".to_string(),
        _ if e.starts_with("struct ") => "a table".to_string(),
        _ if e.starts_with("internally tagged enum") => "a table with a `kind` key".to_string(),
        _ if expects_name(e) => "a string naming one of the options".to_string(),
        _ => e.replace('`', ""),
    }
}

fn friendly_found(found: &str) -> String {
    let f = found.trim();
    let f = match f {
        "sequence" => return "an array".to_string(),
        "map" => return "a table".to_string(),
        _ => f,
    };
    f.replace("floating point", "float").replace('`', "")
}

/// Whether serde's `expected` text asks for the name of an enum variant.
fn expects_name(expected: &str) -> bool {
    expected.starts_with("enum ") || expected == "variant identifier" || expected == "string only"
}

/// The allowed names at `path` for the enums whose names are worth listing (the `kind` tags
/// and the schedule enums), read from serde's own error message.
fn names_for(path: &[String]) -> Option<Vec<String>> {
    fn probe<T: serde::de::DeserializeOwned>(tagged: bool) -> Option<String> {
        let name = toml::Value::String("\u{1}".to_string());
        let value = if tagged {
            toml::Value::Table(toml::Table::from_iter([("kind".to_string(), name)]))
        } else {
            name
        };
        Some(value.try_into::<T>().err()?.to_string())
    }
    let message = match path
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["task", "kind"] => probe::<TaskConfig>(true)?,
        ["model", "mixer", "kind"] | ["model", "mixers", _, "kind"] => probe::<MixerConfig>(true)?,
        ["model", "position", "kind"] => probe::<PositionConfig>(true)?,
        ["train", "schedule"] => probe::<LrSchedule>(false)?,
        ["train", "length_warmup", "growth"] => probe::<Growth>(false)?,
        _ => return None,
    };
    let names = backticked(message.lines().next().unwrap_or(""));
    (names.len() > 1).then(|| names[1..].to_vec())
}

/// Edit distance between two strings (by chars): insertions, deletions, substitutions and
/// transpositions of adjacent characters each cost 1 (optimal string alignment).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    for i in 0..=a.len() {
        d[i * width] = i;
    }
    for (j, cell) in d.iter_mut().enumerate().take(width) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[(i - 1) * width + j] + 1)
                .min(d[i * width + j - 1] + 1)
                .min(d[(i - 1) * width + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[(i - 2) * width + j - 2] + 1);
            }
            d[i * width + j] = best;
        }
    }
    d[a.len() * width + b.len()]
}

/// The candidate closest to `given` by edit distance, if it is close enough to be a typo
/// (at most 3 edits, and at most a third of the length of `given`, but 1 is always allowed).
fn closest<'a>(given: &str, candidates: &'a [String]) -> Option<&'a str> {
    // Beyond 3 edits of the longest candidate nothing is close; skip the quadratic table.
    let longest = candidates
        .iter()
        .map(|c| c.chars().count())
        .max()
        .unwrap_or(0);
    if given.chars().count() > longest + 3 {
        return None;
    }
    let lowered = given.to_lowercase();
    let limit = (given.chars().count() / 3).clamp(1, 3);
    candidates
        .iter()
        .map(|c| (edit_distance(&lowered, &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.as_str())
}

/// Fails where `input` holds an array and `written` (the deserialised config written back) a
/// table: serde reads an array positionally into a struct (`--set model=[64,32]` would set
/// `model.vocab_size` and `model.d_model`), which is never what the user meant.
fn check_no_arrays_for_tables(
    input: &toml::Value,
    written: &toml::Value,
    path: &mut Vec<String>,
) -> Result<(), String> {
    match (input, written) {
        (toml::Value::Array(_), toml::Value::Table(_)) => Err(format!(
            "`{}` should be a table, found an array (write {} = {{ key = value, ... }} or a [{}] section)",
            clip_bare(&path.join(".")),
            path.last().map_or("it", String::as_str),
            clip_bare(&path.join("."))
        )),
        (toml::Value::Table(i), toml::Value::Table(w)) => {
            for (key, value) in i {
                if let Some(wv) = w.get(key) {
                    path.push(key.clone());
                    check_no_arrays_for_tables(value, wv, path)?;
                    path.pop();
                }
            }
            Ok(())
        }
        (toml::Value::Array(i), toml::Value::Array(w)) => {
            for (index, (iv, wv)) in i.iter().zip(w).enumerate() {
                path.push(index.to_string());
                check_no_arrays_for_tables(iv, wv, path)?;
                path.pop();
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Fails on any key of `input` that is absent from `written` (the deserialised config written
/// back): such a key was silently ignored by serde.
fn check_no_ignored_keys(
    input: &toml::Value,
    written: &toml::Value,
    path: &mut Vec<String>,
) -> Result<(), String> {
    match (input, written) {
        (toml::Value::Table(i), toml::Value::Table(w)) => {
            for (key, value) in i {
                path.push(key.clone());
                match w.get(key) {
                    Some(wv) => check_no_ignored_keys(value, wv, path)?,
                    None => {
                        let valid: Vec<String> = w.keys().cloned().collect();
                        return Err(unknown_key_message(&path.join("."), key, &valid));
                    }
                }
                path.pop();
            }
            Ok(())
        }
        (toml::Value::Array(i), toml::Value::Array(w)) => {
            for (index, (iv, wv)) in i.iter().zip(w).enumerate() {
                path.push(index.to_string());
                check_no_ignored_keys(iv, wv, path)?;
                path.pop();
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------
// Validation, resolution, writing
// ---------------------------------------------------------------------------------------------

impl RunConfig {
    /// Cross-field checks the schema cannot express. Every message names the key path(s).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |m: String| Err(ConfigError::new(m));
        let t = &self.train;

        crate::run_dir::check_name(&self.run.name).map_err(ConfigError::new)?;
        self.check_limits()?;
        self.model
            .validate()
            .map_err(|e| ConfigError::new(e.to_string()))?;
        self.task
            .validate()
            .map_err(|e| ConfigError::new(e.to_string()))?;

        // The length schedule.
        match (t.stages.is_empty(), &t.length_warmup) {
            (false, Some(_)) => {
                return fail("train.stages and train.length_warmup are both given (keep exactly one: [[train.stages]] for fixed lengths or [train.length_warmup] for a growing length)".into());
            }
            (true, None) => {
                return fail("train.stages / train.length_warmup: no length schedule given (add [[train.stages]] with seq_len and steps, or a [train.length_warmup] table)".into());
            }
            _ => {}
        }
        for (i, s) in t.stages.iter().enumerate() {
            if s.seq_len == 0 {
                return fail(format!(
                    "train.stages.{i}.seq_len is 0 (use a positive length)"
                ));
            }
            if s.steps == 0 {
                return fail(format!(
                    "train.stages.{i}.steps is 0 (use at least 1, or remove the stage)"
                ));
            }
            if s.batch_size == Some(0) {
                return fail(format!("train.stages.{i}.batch_size is 0 (use at least 1)"));
            }
            if s.batch_size.is_some() && t.tokens_per_step.is_some() {
                return fail(format!(
                    "train.stages.{i}.batch_size conflicts with train.tokens_per_step, which sets the batch size from the length (remove one of them)"
                ));
            }
        }
        if let Some(w) = &t.length_warmup {
            let p = "train.length_warmup";
            if w.min_len == 0 {
                return fail(format!("{p}.min_len is 0 (use a positive length)"));
            }
            if w.min_len > w.max_len {
                return fail(format!(
                    "{p}.min_len = {} is greater than {p}.max_len = {} (swap them)",
                    w.min_len, w.max_len
                ));
            }
            if w.multiple_of == 0 {
                return fail(format!("{p}.multiple_of is 0 (use 1 for any length)"));
            }
            if w.min_len % w.multiple_of != 0 || w.max_len % w.multiple_of != 0 {
                return fail(format!(
                    "{p}.min_len = {} and {p}.max_len = {} must be multiples of {p}.multiple_of = {}",
                    w.min_len, w.max_len, w.multiple_of
                ));
            }
            if w.steps == 0 {
                return fail(format!(
                    "{p}.steps is 0 (use at least 1, or [[train.stages]] for a fixed length)"
                ));
            }
            if w.total_steps == 0 {
                return fail(format!("{p}.total_steps is 0 (use at least 1)"));
            }
            if w.steps > w.total_steps {
                return fail(format!(
                    "{p}.steps = {} is greater than {p}.total_steps = {} (the warmup must end within training)",
                    w.steps, w.total_steps
                ));
            }
        }
        let total = t.total_steps();
        let max_len = t.max_train_len();
        let min_len = t.min_train_len();

        // Optimiser.
        if t.batch_size == 0 {
            return fail("train.batch_size is 0 (use at least 1)".into());
        }
        if t.grad_accum == 0 {
            return fail("train.grad_accum is 0 (use 1 for no accumulation)".into());
        }
        if !(t.lr.is_finite() && t.lr > 0.0) {
            return fail(format!(
                "train.lr = {} must be positive (e.g. lr = 1e-3)",
                t.lr
            ));
        }
        if !(0.0..=1.0).contains(&t.min_lr_ratio) {
            return fail(format!(
                "train.min_lr_ratio = {} is outside [0, 1] (it is the final lr as a fraction of train.lr)",
                t.min_lr_ratio
            ));
        }
        if t.warmup_steps > total {
            return fail(format!(
                "train.warmup_steps = {} exceeds the {total} training steps (lower it)",
                t.warmup_steps
            ));
        }
        if !(t.weight_decay.is_finite() && t.weight_decay >= 0.0) {
            return fail(format!(
                "train.weight_decay = {} must be >= 0",
                t.weight_decay
            ));
        }
        for (name, beta) in [("beta1", t.beta1), ("beta2", t.beta2)] {
            if !(0.0..1.0).contains(&beta) {
                return fail(format!("train.{name} = {beta} is outside [0, 1)"));
            }
        }
        if !(t.eps.is_finite() && t.eps > 0.0) {
            return fail(format!(
                "train.eps = {} must be positive (e.g. 1e-8)",
                t.eps
            ));
        }
        if !(t.grad_clip.is_finite() && t.grad_clip >= 0.0) {
            return fail(format!(
                "train.grad_clip = {} must be >= 0 (0 turns clipping off)",
                t.grad_clip
            ));
        }
        if let Some(tokens) = t.tokens_per_step
            && tokens < min_len
        {
            return fail(format!(
                "train.tokens_per_step = {tokens} is smaller than the shortest training length {min_len} (use at least {min_len})"
            ));
        }
        if t.log_every == 0 {
            return fail("train.log_every is 0 (use at least 1)".into());
        }
        if t.eval_batches == 0 {
            return fail("train.eval_batches is 0 (use at least 1)".into());
        }
        if let Some(target) = t.stop_at_accuracy {
            if !(target > 0.0 && target <= 1.0) {
                return fail(format!(
                    "train.stop_at_accuracy = {target} is outside (0, 1] (it is the held-out accuracy that ends training, e.g. 0.99)"
                ));
            }
            if t.eval_every == 0 {
                return fail(format!(
                    "train.stop_at_accuracy = {target} needs train.eval_every > 0: the target is checked at the evaluations during training (set e.g. train.eval_every = 50)"
                ));
            }
        }

        // Model against the training lengths.
        let stages_name = if t.stages.is_empty() {
            "train.length_warmup.max_len"
        } else {
            "train.stages"
        };
        let mixers: Vec<(String, &MixerConfig)> = if self.model.mixers.is_empty() {
            vec![("model.mixer".to_string(), &self.model.mixer)]
        } else {
            self.model
                .mixers
                .iter()
                .enumerate()
                .map(|(i, m)| (format!("model.mixers.{i}"), m))
                .collect()
        };
        for (path, mixer) in mixers {
            match mixer {
                MixerConfig::SlidingWindow(c) if c.window > max_len => {
                    return fail(format!(
                        "{path}.window = {} is larger than the longest training length {max_len} ({stages_name}), so the window never slides (lower the window or train longer)",
                        c.window
                    ));
                }
                MixerConfig::Bigbird(c) if c.block_size > max_len => {
                    return fail(format!(
                        "{path}.block_size = {} is larger than the longest training length {max_len} ({stages_name}) (lower the block size or train longer)",
                        c.block_size
                    ));
                }
                _ => {}
            }
        }
        if matches!(self.model.position, PositionConfig::Learned)
            && self.model.max_seq_len < max_len
        {
            return fail(format!(
                "model.max_seq_len = {} is smaller than the longest training length {max_len} ({stages_name}), and learned positions cannot encode longer sequences (raise model.max_seq_len)",
                self.model.max_seq_len
            ));
        }

        // Task against the training lengths, where that needs no built task.
        let task_min = match &self.task {
            TaskConfig::Mqar(c) => {
                Some((c.min_seq_len(), "4 × the largest number of key-value pairs"))
            }
            TaskConfig::Copy(c) => Some((c.min_seq_len(), "2 × task.copy_len")),
            TaskConfig::SelectiveCopy(c) => Some((c.min_seq_len(), "2 × task.num_tokens_to_copy")),
            _ => None,
        };
        if let Some((needed, why)) = task_min {
            let short = t
                .stages
                .iter()
                .enumerate()
                .find(|(_, s)| s.seq_len < needed)
                .map(|(i, s)| (format!("train.stages.{i}.seq_len"), s.seq_len))
                .or_else(|| {
                    t.length_warmup
                        .as_ref()
                        .filter(|w| w.min_len < needed)
                        .map(|w| ("train.length_warmup.min_len".to_string(), w.min_len))
                });
            if let Some((path, len)) = short {
                return fail(format!(
                    "{path} = {len} is too short for task {}: it needs at least {needed} ({why}); raise the length or shrink the task",
                    self.task.kind()
                ));
            }
        }

        // Evaluation.
        let e = &self.eval;
        if e.batch_size == 0 {
            return fail("eval.batch_size is 0 (use at least 1)".into());
        }
        for (name, lengths) in [
            ("eval.lengths", &e.lengths),
            ("eval.niah.lengths", &e.niah.lengths),
            ("eval.mqar.lengths", &e.mqar.lengths),
            ("eval.ppl.lengths", &e.ppl.lengths),
        ] {
            for (i, &len) in lengths.iter().enumerate() {
                if len == 0 {
                    return fail(format!(
                        "{name}.{i} is 0 (evaluation lengths must be positive)"
                    ));
                }
                self.model
                    .check_length(len)
                    .map_err(|err| ConfigError::new(format!("{name}.{i} = {len}: {err}")))?;
            }
        }
        for (i, &d) in e.niah.depths.iter().enumerate() {
            if !(0.0..=1.0).contains(&d) {
                return fail(format!(
                    "eval.niah.depths.{i} = {d} is outside [0, 1] (depth is the fraction of the haystack before the needle)"
                ));
            }
        }
        if e.niah.samples == 0 {
            return fail("eval.niah.samples is 0 (use at least 1)".into());
        }
        if NeedleVariant::from_str(&e.niah.variant).is_err() {
            return fail(format!(
                "eval.niah.variant = {} is not one of single, multi_key, multi_value, multi_query",
                clip(&e.niah.variant)
            ));
        }
        for (i, &n) in e.mqar.num_kv_pairs.iter().enumerate() {
            if n == 0 {
                return fail(format!("eval.mqar.num_kv_pairs.{i} is 0 (use at least 1)"));
            }
        }
        if e.mqar.samples == 0 {
            return fail("eval.mqar.samples is 0 (use at least 1)".into());
        }
        if e.ppl.max_windows == 0 {
            return fail("eval.ppl.max_windows is 0 (use at least 1)".into());
        }
        Ok(())
    }

    /// The hard size bounds ([`limits`]), checked before anything multiplies sizes: every
    /// message names the key and its bound.
    fn check_limits(&self) -> Result<(), ConfigError> {
        let check = |path: &str, value: usize, max: usize| {
            zoo_model::config::limits::check(path, value, max)
                .map_err(|e| ConfigError::new(e.to_string()))
        };
        let t = &self.train;
        check("train.batch_size", t.batch_size, limits::BATCH)?;
        check("train.grad_accum", t.grad_accum, limits::BATCH)?;
        check("train.warmup_steps", t.warmup_steps, limits::STEPS)?;
        check("train.eval_batches", t.eval_batches, limits::BATCH)?;
        if let Some(tokens) = t.tokens_per_step {
            check("train.tokens_per_step", tokens, limits::TOKENS_PER_STEP)?;
        }
        let mut total_steps = 0usize;
        for (i, stage) in t.stages.iter().enumerate() {
            check(
                &format!("train.stages.{i}.seq_len"),
                stage.seq_len,
                limits::SEQ_LEN,
            )?;
            check(
                &format!("train.stages.{i}.steps"),
                stage.steps,
                limits::STEPS,
            )?;
            if let Some(b) = stage.batch_size {
                check(&format!("train.stages.{i}.batch_size"), b, limits::BATCH)?;
            }
            total_steps = total_steps.saturating_add(stage.steps);
        }
        if total_steps > limits::STEPS {
            return Err(ConfigError::new(format!(
                "train.stages: the steps add up to {total_steps}, above the limit of {} (lower them)",
                limits::STEPS
            )));
        }
        if let Some(w) = &t.length_warmup {
            let p = "train.length_warmup";
            check(&format!("{p}.min_len"), w.min_len, limits::SEQ_LEN)?;
            check(&format!("{p}.max_len"), w.max_len, limits::SEQ_LEN)?;
            check(&format!("{p}.multiple_of"), w.multiple_of, limits::SEQ_LEN)?;
            check(&format!("{p}.steps"), w.steps, limits::STEPS)?;
            check(&format!("{p}.total_steps"), w.total_steps, limits::STEPS)?;
        }
        let e = &self.eval;
        check("eval.batch_size", e.batch_size, limits::BATCH)?;
        for (name, lengths) in [
            ("eval.lengths", &e.lengths),
            ("eval.niah.lengths", &e.niah.lengths),
            ("eval.mqar.lengths", &e.mqar.lengths),
            ("eval.ppl.lengths", &e.ppl.lengths),
            ("eval.mqar.num_kv_pairs", &e.mqar.num_kv_pairs),
        ] {
            for (i, &len) in lengths.iter().enumerate() {
                check(&format!("{name}.{i}"), len, limits::SEQ_LEN)?;
            }
        }
        check("eval.niah.samples", e.niah.samples, limits::SAMPLES)?;
        check("eval.mqar.samples", e.mqar.samples, limits::SAMPLES)?;
        check("eval.ppl.max_windows", e.ppl.max_windows, limits::SAMPLES)?;
        Ok(())
    }

    /// Fills what the trainer knows only once the task is built: `model.vocab_size` (if not set)
    /// from the task, `model.train_len` = the final training length, and `model.init_seed` =
    /// `run.seed`.
    pub fn resolve(&mut self, vocab_size: usize) {
        if self.model.vocab_size.is_none() {
            self.model.vocab_size = Some(vocab_size);
        }
        self.model.train_len = Some(self.final_seq_len());
        self.model.init_seed = self.run.seed;
    }

    /// Errors when `model.vocab_size` was set explicitly below the built task's vocabulary.
    pub fn check_task_vocab(&self, task_vocab: usize) -> Result<(), ConfigError> {
        match self.model.vocab_size {
            Some(v) if v < task_vocab => Err(ConfigError::new(format!(
                "model.vocab_size = {v} is smaller than the vocabulary of the {} task ({task_vocab}); raise it or leave it out to take the task's",
                self.task.kind()
            ))),
            _ => Ok(()),
        }
    }

    /// Length of the last training step.
    pub fn final_seq_len(&self) -> usize {
        self.train.final_seq_len()
    }

    /// Longest training length.
    pub fn max_train_len(&self) -> usize {
        self.train.max_train_len()
    }

    /// The whole config as TOML with every default written out; [`parse`] reads it back to an
    /// equal config. (Optional keys that are unset, such as `model.vocab_size` before
    /// [`RunConfig::resolve`], are left out: TOML has no null.)
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a RunConfig always serialises to TOML")
    }
}
