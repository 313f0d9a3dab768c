//! Model checkpoints: weights in safetensors (`model.safetensors`) with the resolved model
//! config beside them (`config.json`). Tensor names are the module paths, documented in
//! docs/checkpoint-format.md. Loading checks every name and shape against the model built from
//! the config first, so a mismatch is one error naming the first differing tensor.
//!
//! Writes are atomic: a temporary file in the same folder, then a rename. The folder ends with a
//! `SHA256SUMS` manifest ([`crate::manifest`]) that loading verifies before reading a byte of the
//! weights, and the weights file is laid out canonically, so identical weights give identical
//! bytes (and checksums).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::store::{ModuleSnapshot, SafetensorsStore};

use crate::config::ModelConfig;
use crate::error::ModelError;
use crate::lm::Lm;

pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const CONFIG_FILE: &str = "config.json";

/// (name, shape) of every tensor the model saves, in a stable order.
pub fn tensor_shapes(model: &Lm) -> BTreeMap<String, Vec<usize>> {
    model
        .collect(None, None, false)
        .into_iter()
        .map(|t| (t.name.clone(), t.shape.iter().copied().collect()))
        .collect()
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(format!(".tmp{}", std::process::id()));
    path.with_file_name(name)
}

/// Write `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = tmp_path(path);
    fs::write(&tmp, bytes)?;
    fs::rename(&tmp, path)
}

/// Save weights and config into `dir` (created if needed).
pub fn save(model: &Lm, dir: &Path) -> Result<(), ModelError> {
    fs::create_dir_all(dir)
        .map_err(|e| ModelError::checkpoint(dir, format!("cannot create the folder: {e}")))?;
    let weights = dir.join(WEIGHTS_FILE);
    let tmp = tmp_path(&weights);
    let mut store = SafetensorsStore::from_file(&tmp);
    let write_err =
        |e: &dyn std::fmt::Display| ModelError::checkpoint(&weights, format!("cannot write: {e}"));
    model.save_into(&mut store).map_err(|e| write_err(&e))?;
    // Burn writes its metadata from a HashMap, so the header's key order (and with it the
    // file's bytes) changed from save to save; rewrite it in one canonical layout.
    let bytes = fs::read(&tmp).map_err(|e| write_err(&e))?;
    let canonical = canonical_safetensors(&bytes).map_err(|e| write_err(&e))?;
    fs::write(&tmp, canonical).map_err(|e| write_err(&e))?;
    fs::rename(&tmp, &weights).map_err(|e| write_err(&e))?;
    let config = serde_json::to_vec_pretty(model.config()).expect("model config serialises");
    let config_path = dir.join(CONFIG_FILE);
    write_atomic(&config_path, &config)
        .map_err(|e| ModelError::checkpoint(&config_path, format!("cannot write: {e}")))?;
    crate::manifest::write_manifest(dir)
}

/// Re-lays a safetensors file canonically: header keys sorted (`__metadata__` first, then the
/// tensors by name, each as `dtype`, `shape`, `data_offsets`), tensor bytes in that order, the
/// header padded with spaces to a multiple of 8 bytes. Identical weights give identical bytes.
pub fn canonical_safetensors(bytes: &[u8]) -> Result<Vec<u8>, String> {
    use serde_json::Value;
    let header_len = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap()) as usize)
        .ok_or("shorter than its header")?;
    let header_end = 8usize
        .checked_add(header_len)
        .filter(|&e| e <= bytes.len())
        .ok_or("truncated header")?;
    let header: BTreeMap<String, Value> =
        serde_json::from_slice(&bytes[8..header_end]).map_err(|e| format!("bad header: {e}"))?;
    let data = &bytes[header_end..];
    let mut out_header = String::from("{");
    let mut out_data = Vec::with_capacity(data.len());
    let mut first = true;
    let mut push_entry = |key: &str, value: String, out: &mut String| {
        if !std::mem::take(&mut first) {
            out.push(',');
        }
        out.push_str(&serde_json::to_string(key).expect("a string serialises"));
        out.push(':');
        out.push_str(&value);
    };
    if let Some(meta) = header.get("__metadata__") {
        let sorted: BTreeMap<String, Value> =
            serde_json::from_value(meta.clone()).map_err(|e| format!("bad __metadata__: {e}"))?;
        let text = serde_json::to_string(&sorted).map_err(|e| e.to_string())?;
        push_entry("__metadata__", text, &mut out_header);
    }
    for (name, info) in header.iter().filter(|(k, _)| *k != "__metadata__") {
        let offsets = info
            .get("data_offsets")
            .and_then(|o| o.as_array())
            .and_then(|o| Some((o.first()?.as_u64()? as usize, o.get(1)?.as_u64()? as usize)))
            .ok_or_else(|| format!("tensor `{name}` has no data_offsets"))?;
        let slice = data
            .get(offsets.0..offsets.1)
            .ok_or_else(|| format!("tensor `{name}` points past the data"))?;
        let start = out_data.len();
        out_data.extend_from_slice(slice);
        let entry = format!(
            "{{\"dtype\":{},\"shape\":{},\"data_offsets\":[{start},{}]}}",
            info.get("dtype")
                .map_or("null".to_string(), |d| d.to_string()),
            info.get("shape")
                .map_or("null".to_string(), |s| s.to_string()),
            out_data.len()
        );
        push_entry(name, entry, &mut out_header);
    }
    out_header.push('}');
    while out_header.len() % 8 != 0 {
        out_header.push(' ');
    }
    let mut out = Vec::with_capacity(8 + out_header.len() + out_data.len());
    out.extend_from_slice(&(out_header.len() as u64).to_le_bytes());
    out.extend_from_slice(out_header.as_bytes());
    out.extend_from_slice(&out_data);
    Ok(out)
}

/// Largest `config.json` read (a model config is a few hundred bytes).
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// Read the config saved beside a checkpoint: a regular file of at most
/// [`MAX_CONFIG_BYTES`], strict JSON of a [`ModelConfig`] with tables where the schema has
/// tables, validated (sizes bounded) before anything is built from it.
pub fn read_config(dir: &Path) -> Result<ModelConfig, ModelError> {
    let path = dir.join(CONFIG_FILE);
    let bytes = read_capped(&path, MAX_CONFIG_BYTES).map_err(|e| {
        ModelError::checkpoint(
            &path,
            format!("cannot read ({e}); is {} a model folder?", dir.display()),
        )
    })?;
    let invalid = |e: String| {
        ModelError::checkpoint(&path, format!("is not a valid model config: {}", clip(&e)))
    };
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
    let config: ModelConfig =
        serde_json::from_value(value.clone()).map_err(|e| invalid(e.to_string()))?;
    let written = serde_json::to_value(&config).expect("model config serialises");
    arrays_where_tables(&value, &written, &mut Vec::new()).map_err(invalid)?;
    config.validate().map_err(|e| invalid(e.to_string()))?;
    Ok(config)
}

/// Reads a regular file of at most `cap` bytes. The type is checked before opening (opening a
/// FIFO blocks until a writer comes) and the read stops after cap + 1 bytes (/dev/zero and
/// friends never end).
fn read_capped(path: &Path, cap: u64) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let meta = fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("it is not a regular file".to_string());
    }
    let mut bytes = Vec::new();
    fs::File::open(path)
        .and_then(|f| f.take(cap + 1).read_to_end(&mut bytes))
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > cap {
        return Err(format!(
            "it is larger than the limit of {cap} bytes ({} bytes)",
            meta.len().max(bytes.len() as u64)
        ));
    }
    Ok(bytes)
}

/// `text` cut to 200 characters ("…" and the full length added), for quoting file contents.
fn clip(text: &str) -> String {
    const MAX: usize = 200;
    match text.char_indices().nth(MAX) {
        None => text.to_string(),
        Some((end, _)) => format!("{}… ({} bytes)", &text[..end], text.len()),
    }
}

/// serde reads a JSON array positionally into a struct; refuse an array wherever the config
/// (written back) has an object, naming the key.
fn arrays_where_tables(
    input: &serde_json::Value,
    written: &serde_json::Value,
    path: &mut Vec<String>,
) -> Result<(), String> {
    use serde_json::Value;
    match (input, written) {
        (Value::Array(_), Value::Object(_)) => Err(format!(
            "`{}` should be an object, found an array",
            if path.is_empty() {
                "the config".to_string()
            } else {
                path.join(".")
            }
        )),
        (Value::Object(i), Value::Object(w)) => {
            for (key, value) in i {
                if let Some(wv) = w.get(key) {
                    path.push(key.clone());
                    arrays_where_tables(value, wv, path)?;
                    path.pop();
                }
            }
            Ok(())
        }
        (Value::Array(i), Value::Array(w)) => {
            for (index, (iv, wv)) in i.iter().zip(w).enumerate() {
                path.push(index.to_string());
                arrays_where_tables(iv, wv, path)?;
                path.pop();
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Names and shapes in a safetensors file, from its JSON header.
pub fn file_shapes(path: &Path) -> Result<BTreeMap<String, Vec<usize>>, ModelError> {
    let bytes =
        fs::read(path).map_err(|e| ModelError::checkpoint(path, format!("cannot read: {e}")))?;
    let bad =
        |why: &str| ModelError::checkpoint(path, format!("is not a safetensors file ({why})"));
    if bytes.len() < 8 {
        return Err(bad("shorter than its header"));
    }
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = bytes
        .get(8..8usize.saturating_add(header_len))
        .ok_or_else(|| bad("truncated header"))?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(header).map_err(|_| bad("unreadable header"))?;
    let mut out = BTreeMap::new();
    for (name, info) in header {
        if name == "__metadata__" {
            continue;
        }
        let shape = info
            .get("shape")
            .and_then(|s| s.as_array())
            .ok_or_else(|| bad("tensor without shape"))?
            .iter()
            .map(|d| d.as_u64().map(|d| d as usize))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad("non-integer shape"))?;
        out.insert(name, shape);
    }
    Ok(out)
}

/// Load `weights` into `model`, refusing any difference in names or shapes.
pub fn load_weights(mut model: Lm, weights: &Path) -> Result<Lm, ModelError> {
    let expected = tensor_shapes(&model);
    let found = file_shapes(weights)?;
    for (name, shape) in &expected {
        match found.get(name) {
            None => {
                return Err(ModelError::checkpoint(
                    weights,
                    format!(
                        "has no tensor `{name}` that the configured model needs (was it saved with another mixer, position encoding or layer count?)"
                    ),
                ));
            }
            Some(s) if s != shape => {
                return Err(ModelError::checkpoint(
                    weights,
                    format!(
                        "tensor `{name}` has shape {s:?}, the configured model expects {shape:?} (check d_model, n_heads, n_kv_heads, vocab_size, mlp_ratio)"
                    ),
                ));
            }
            _ => {}
        }
    }
    if let Some(extra) = found.keys().find(|k| !expected.contains_key(*k)) {
        return Err(ModelError::checkpoint(
            weights,
            format!(
                "holds tensor `{extra}` that the configured model does not have (another mixer or layer count?)"
            ),
        ));
    }
    let mut store = SafetensorsStore::from_file(weights);
    let result = model
        .load_from(&mut store)
        .map_err(|e| ModelError::checkpoint(weights, format!("cannot load: {e}")))?;
    if let Some(err) = result.errors.first() {
        return Err(ModelError::checkpoint(
            weights,
            format!("cannot load: {err:?}"),
        ));
    }
    Ok(model)
}

/// Build the model from `dir/config.json` on `device` and load `dir/model.safetensors`.
pub fn load(dir: &Path, device: &Device) -> Result<Lm, ModelError> {
    let config = read_config(dir)?;
    load_with_config(dir, &config, device)
}

/// Load the weights of `dir` into a model built from `config` (e.g. with evaluation-time RoPE
/// scaling changed); names and shapes must match.
pub fn load_with_config(
    dir: &Path,
    config: &ModelConfig,
    device: &Device,
) -> Result<Lm, ModelError> {
    crate::manifest::verify_manifest(dir)?;
    let model = Lm::new(config, device)?;
    load_weights(model, &dir.join(WEIGHTS_FILE))
}
