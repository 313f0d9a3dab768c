//! Result types of the evaluations and their on-disk formats.
//!
//! Every evaluation writes the same numbers twice under `runs/<name>/eval/`: a JSON file (the
//! struct as serde writes it, pretty-printed; what `zoo report` reads back) and a flat CSV file
//! (one observation per line, for spreadsheets and pandas). Both are written atomically: the bytes
//! go to a temporary file in the destination directory, are flushed to disk, and the file is
//! renamed over the destination, so a crash or a concurrent `zoo report` never sees half a file.
//!
//! Non-finite numbers: JSON has no NaN, and serde_json writes a NaN `f64` as `null`. An accuracy
//! of a cell with zero samples is legitimately NaN, so every `f64` field here reads `null` back as
//! NaN (the `nan_*` helpers) and the files round-trip. CSV writes `NaN` literally (pandas and
//! spreadsheets both parse it).
//!
//! CSV layout (header line, then rows; strings are quoted only when they contain `,`, `"` or a
//! newline, RFC 4180):
//! - `niah.csv`: `length,depth,accuracy,samples`, one line per (depth, length) cell.
//! - `mqar.csv`: `seq_len,num_kv_pairs,accuracy,samples`.
//! - `ppl.csv`: `seq_len,loss,ppl,tokens,scaling`.
//! - `attention.csv`: `layer,head,seq_len,entropy,uniform_entropy,sparsity,needle_mass`
//!   (`needle_mass` empty when not measured).
//! - `state.csv`: `layer,mixer,seq_len,state_bytes,capacity_ratio`.

use std::fmt::Write as _;
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

/// Writes `bytes` to `path` atomically: temp file in the same directory, fsync, rename.
///
/// The temp file must live in the destination directory because `rename` is only atomic within
/// one file system. Missing parent directories are created. On failure the temp file is removed
/// and `path` is left as it was.
pub fn write_file_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = temp_sibling(path, "")?;
    let result = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        // Best effort: the original error is what the caller needs to see.
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// A fresh, unused path next to `path` (same directory, hidden name), ending in `suffix`.
///
/// Creates the parent directory if needed. The suffix lets callers whose writer picks the format
/// from the extension (plotters' bitmap backend) keep the right one.
pub(crate) fn temp_sibling(path: &Path, suffix: &str) -> io::Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let file_name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} has no file name", path.display()),
        )
    })?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir)?;
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = format!(
        ".{}.tmp-{}-{}{}",
        file_name.to_string_lossy(),
        std::process::id(),
        n,
        suffix
    );
    Ok(dir.join(name))
}

fn write_json_value<T: Serialize>(value: &T, path: &Path) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    write_file_atomic(path, text.as_bytes()).with_context(|| format!("writing {}", path.display()))
}

fn read_json_value<T: DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text = zoo_data::read_text_capped(path, "results file", zoo_data::input::MAX_TEXT_BYTES)
        .map_err(|e| match e {
            zoo_data::TaskError::Io { source, .. } => {
                anyhow::Error::new(source).context(format!("reading {}", path.display()))
            }
            other => other.into(),
        })?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn write_csv_text(path: &Path, text: &str) -> anyhow::Result<()> {
    write_file_atomic(path, text.as_bytes()).with_context(|| format!("writing {}", path.display()))
}

/// RFC 4180 quoting: only when needed, doubling embedded quotes.
fn csv_str(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Shortest representation that parses back to the same `f64` (Rust's `Display`), `NaN`/`inf`
/// spelled the way pandas reads them.
fn csv_f64(x: f64) -> String {
    if x.is_nan() {
        "NaN".into()
    } else if x.is_infinite() {
        if x > 0.0 { "inf".into() } else { "-inf".into() }
    } else {
        format!("{x}")
    }
}

// --- serde helpers: `null` reads back as NaN --------------------------------------------------

fn nan_f64<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

fn nan_vec<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
    Ok(Vec::<Option<f64>>::deserialize(d)?
        .into_iter()
        .map(|x| x.unwrap_or(f64::NAN))
        .collect())
}

fn nan_matrix<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<f64>>, D::Error> {
    Ok(Vec::<Vec<Option<f64>>>::deserialize(d)?
        .into_iter()
        .map(|row| row.into_iter().map(|x| x.unwrap_or(f64::NAN)).collect())
        .collect())
}

macro_rules! json_io {
    ($ty:ty) => {
        impl $ty {
            /// Writes the result as pretty-printed JSON, atomically.
            pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
                write_json_value(self, path)
            }

            /// Reads a result written by `write_json`; errors name the file.
            pub fn read_json(path: &Path) -> anyhow::Result<Self> {
                read_json_value(path)
            }
        }
    };
}

// --- NIAH ------------------------------------------------------------------------------------

/// Needle-in-a-haystack retrieval accuracy over a grid of context lengths × needle depths.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct NiahResult {
    pub run: String,
    /// Which NIAH variant (e.g. "passkey", "kv", "multi-needle").
    pub variant: String,
    /// Samples per cell.
    pub samples: usize,
    /// Context lengths (columns of `accuracy`).
    pub lengths: Vec<usize>,
    /// Needle depths as fractions of the context in [0, 1] (rows of `accuracy`).
    #[serde(deserialize_with = "nan_vec")]
    pub depths: Vec<f64>,
    /// `accuracy[depth][length]` in [0, 1]; NaN for a cell that was not measured.
    #[serde(deserialize_with = "nan_matrix")]
    pub accuracy: Vec<Vec<f64>>,
    /// Length of the last training stage, for "beyond training length" markers.
    pub train_len: Option<usize>,
}

json_io!(NiahResult);

impl NiahResult {
    /// `length,depth,accuracy,samples`, one line per cell, depth-major.
    ///
    /// Fails if `accuracy` is not `depths.len()` × `lengths.len()`: a ragged grid would silently
    /// misattribute cells.
    pub fn write_csv(&self, path: &Path) -> anyhow::Result<()> {
        self.check_shape()?;
        let mut out = String::from("length,depth,accuracy,samples\n");
        for (depth, row) in self.depths.iter().zip(&self.accuracy) {
            for (length, acc) in self.lengths.iter().zip(row) {
                let _ = writeln!(
                    out,
                    "{length},{},{},{}",
                    csv_f64(*depth),
                    csv_f64(*acc),
                    self.samples
                );
            }
        }
        write_csv_text(path, &out)
    }

    /// Checks that `accuracy` has one row per depth and one column per length.
    pub fn check_shape(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.accuracy.len() == self.depths.len(),
            "NIAH result of run {:?}: {} accuracy rows for {} depths",
            self.run,
            self.accuracy.len(),
            self.depths.len()
        );
        for (i, row) in self.accuracy.iter().enumerate() {
            anyhow::ensure!(
                row.len() == self.lengths.len(),
                "NIAH result of run {:?}: accuracy row {i} has {} entries for {} lengths",
                self.run,
                row.len(),
                self.lengths.len()
            );
        }
        Ok(())
    }
}

// --- MQAR ------------------------------------------------------------------------------------

/// One MQAR (multi-query associative recall, Arora et al. 2023 "Zoology") measurement.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct MqarRow {
    pub seq_len: usize,
    pub num_kv_pairs: usize,
    /// Fraction of queried keys whose value was recalled exactly, in [0, 1].
    #[serde(deserialize_with = "nan_f64")]
    pub accuracy: f64,
    pub samples: usize,
}

/// MQAR accuracy over (sequence length, number of key-value pairs).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct MqarResult {
    pub run: String,
    pub rows: Vec<MqarRow>,
    pub train_len: Option<usize>,
    /// Length scaling applied at evaluation, as in [`PplResult::scaling`] ("none" in files
    /// written before the field existed).
    #[serde(default = "no_scaling")]
    pub scaling: String,
}

fn no_scaling() -> String {
    "none".to_string()
}

json_io!(MqarResult);

impl MqarResult {
    /// `seq_len,num_kv_pairs,accuracy,samples`.
    pub fn write_csv(&self, path: &Path) -> anyhow::Result<()> {
        let mut out = String::from("seq_len,num_kv_pairs,accuracy,samples\n");
        for r in &self.rows {
            let _ = writeln!(
                out,
                "{},{},{},{}",
                r.seq_len,
                r.num_kv_pairs,
                csv_f64(r.accuracy),
                r.samples
            );
        }
        write_csv_text(path, &out)
    }
}

// --- perplexity vs length --------------------------------------------------------------------

/// Mean next-token loss at one evaluation length.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct PplRow {
    pub seq_len: usize,
    /// Mean cross-entropy in nats per token.
    #[serde(deserialize_with = "nan_f64")]
    pub loss: f64,
    /// exp(loss).
    #[serde(deserialize_with = "nan_f64")]
    pub ppl: f64,
    /// Number of scored tokens behind the mean.
    pub tokens: usize,
}

/// Perplexity as a function of evaluation length, under one length-extrapolation scaling.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct PplResult {
    pub run: String,
    /// Length scaling applied at evaluation: "none", "rope_pi:4", "ntk:4", "logn", ...
    pub scaling: String,
    pub rows: Vec<PplRow>,
    pub train_len: Option<usize>,
}

json_io!(PplResult);

impl PplResult {
    /// `seq_len,loss,ppl,tokens,scaling` (scaling repeated so concatenated files stay readable).
    pub fn write_csv(&self, path: &Path) -> anyhow::Result<()> {
        let mut out = String::from("seq_len,loss,ppl,tokens,scaling\n");
        let scaling = csv_str(&self.scaling);
        for r in &self.rows {
            let _ = writeln!(
                out,
                "{},{},{},{},{scaling}",
                r.seq_len,
                csv_f64(r.loss),
                csv_f64(r.ppl),
                r.tokens
            );
        }
        write_csv_text(path, &out)
    }
}

// --- attention diagnostics -------------------------------------------------------------------

/// Mean attention-row statistics of one head at one length (see `diagnostics`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct AttentionRow {
    pub layer: usize,
    pub head: usize,
    pub seq_len: usize,
    /// Mean row entropy −Σ a ln a, nats.
    #[serde(deserialize_with = "nan_f64")]
    pub entropy: f64,
    /// Mean row sparsity S = mean|a| / √mean(a²) (1 = uniform, 1/√n = one-hot).
    #[serde(deserialize_with = "nan_f64")]
    pub sparsity: f64,
    /// Mean attention mass on the needle tokens, when the inputs had a needle.
    pub needle_mass: Option<f64>,
    /// ln(mean row length): the entropy a uniform row of that length would have.
    #[serde(deserialize_with = "nan_f64")]
    pub uniform_entropy: f64,
}

/// Attention diagnostics of one run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct AttentionResult {
    pub run: String,
    /// Mixer kind the weights came from ("softmax", "sliding_window", ...).
    pub mixer: String,
    pub rows: Vec<AttentionRow>,
}

json_io!(AttentionResult);

impl AttentionResult {
    /// `layer,head,seq_len,entropy,uniform_entropy,sparsity,needle_mass`.
    pub fn write_csv(&self, path: &Path) -> anyhow::Result<()> {
        let mut out =
            String::from("layer,head,seq_len,entropy,uniform_entropy,sparsity,needle_mass\n");
        for r in &self.rows {
            let needle = r.needle_mass.map(csv_f64).unwrap_or_default();
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{needle}",
                r.layer,
                r.head,
                r.seq_len,
                csv_f64(r.entropy),
                csv_f64(r.uniform_entropy),
                csv_f64(r.sparsity)
            );
        }
        write_csv_text(path, &out)
    }
}

// --- recurrent state size --------------------------------------------------------------------

/// Memory a layer carries across positions at one length.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct StateRow {
    pub layer: usize,
    pub mixer: String,
    pub seq_len: usize,
    /// Bytes of the recurrent state or KV cache after `seq_len` tokens.
    pub state_bytes: u64,
    /// State bits / (n·log2 n): how the state compares with the information needed to address
    /// n items (≥ 1 means enough room to remember every position, in principle).
    #[serde(deserialize_with = "nan_f64")]
    pub capacity_ratio: f64,
}

/// State sizes of one run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct StateResult {
    pub run: String,
    pub rows: Vec<StateRow>,
}

json_io!(StateResult);

impl StateResult {
    /// `layer,mixer,seq_len,state_bytes,capacity_ratio`.
    pub fn write_csv(&self, path: &Path) -> anyhow::Result<()> {
        let mut out = String::from("layer,mixer,seq_len,state_bytes,capacity_ratio\n");
        for r in &self.rows {
            let _ = writeln!(
                out,
                "{},{},{},{},{}",
                r.layer,
                csv_str(&r.mixer),
                r.seq_len,
                r.state_bytes,
                csv_f64(r.capacity_ratio)
            );
        }
        write_csv_text(path, &out)
    }
}

/// State bits / (n·log2 n) for a state of `state_bytes` bytes at length `n`; NaN for n < 2
/// (log2 1 = 0 leaves the ratio undefined).
pub fn capacity_ratio(state_bytes: u64, n: usize) -> f64 {
    if n < 2 {
        return f64::NAN;
    }
    let n = n as f64;
    (state_bytes as f64 * 8.0) / (n * n.log2())
}
