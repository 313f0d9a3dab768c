//! Resource limits of a run, checked before anything large is allocated: the memory a resolved
//! [`RunConfig`] needs (estimated by `zoo_model::memory`) against what the machine has
//! available (`MemAvailable` of /proc/meminfo), so a size that cannot fit is one line naming
//! the key instead of an abort in the allocator.
//!
//!   training step  = params · (4 [+1 with grad_accum > 1]) · 4 B  (weights, gradients, two AdamW
//!                    moments, the accumulator) + training activations at (batch, seq_len)
//!   eval in train  = params · 3 · 4 B + inference activations at (eval.batch_size, length)
//!   eval after     = params · 4 B + inference activations at (eval.batch_size, length)
//!
//! for every stage (its largest batch × seq_len: with `tokens_per_step` the shortest length
//! has the largest batch), the length warmup's two ends, `eval.lengths` (or the final training
//! length) and the NIAH / MQAR / perplexity lengths. Where the available memory cannot be read
//! the comparison is skipped; the hard bounds of [`RunConfig::validate`] still hold.

use zoo_model::memory::{self, Kernels, Pass};
use zoo_model::{ModelConfig, ModelError};

use crate::config::{ConfigError, RunConfig};

fn config_error(e: ModelError) -> ConfigError {
    ConfigError::new(e.to_string())
}

/// Checks `config` (resolved: `model.vocab_size` set) against the machine's available memory.
/// `kernels`: the fused kernels the device runs (`zoo_model::kernels::on_device`).
pub fn check_run(config: &RunConfig, kernels: Kernels) -> Result<(), ConfigError> {
    check_run_with(config, kernels, memory::available_memory())
}

/// [`check_run`] against `available` bytes (None: skip the comparison).
pub fn check_run_with(
    config: &RunConfig,
    kernels: Kernels,
    available: Option<u64>,
) -> Result<(), ConfigError> {
    let model = &config.model;
    let t = &config.train;
    let params = memory::param_count(model).map_err(config_error)?;
    let param_bytes = memory::param_bytes(model).map_err(config_error)?;
    let copies = if t.grad_accum > 1 { 5.0 } else { 4.0 };
    memory::check_fits(
        memory::dominant_size_key(model),
        &format!("the model's {params} parameters with their gradients and AdamW moments"),
        copies * param_bytes,
        available,
        "make the model smaller",
    )
    .map_err(config_error)?;

    let shapes = training_shapes(config);
    for (len_key, batch_key, batch, seq_len) in &shapes {
        let activations = memory::activation_bytes(model, *batch, *seq_len, Pass::Train, kernels);
        check_shape(
            len_key,
            batch_key,
            *batch,
            *seq_len,
            &format!(
                "a training step at batch {batch} × seq_len {seq_len} ({} of weights, gradients and AdamW moments + {} of activations)",
                memory::human_bytes(copies * param_bytes),
                memory::human_bytes(activations)
            ),
            copies * param_bytes + activations,
            available,
        )?;
    }

    // Evaluation: during training (the optimiser state stays), and after it.
    let e = &config.eval;
    let final_len = [config.final_seq_len()];
    let during: &[usize] = if e.lengths.is_empty() {
        &final_len
    } else {
        &e.lengths
    };
    let mut evals: Vec<(String, usize, f64)> = during
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            let key = if e.lengths.is_empty() {
                "eval.lengths (the final training length)".to_string()
            } else {
                format!("eval.lengths.{i}")
            };
            (key, len, 3.0 * param_bytes)
        })
        .collect();
    for (name, lengths) in [
        ("eval.niah.lengths", &e.niah.lengths),
        ("eval.mqar.lengths", &e.mqar.lengths),
        ("eval.ppl.lengths", &e.ppl.lengths),
    ] {
        for (i, &len) in lengths.iter().enumerate() {
            evals.push((format!("{name}.{i}"), len, param_bytes));
        }
    }
    for (key, len, fixed) in evals {
        check_eval_shape(
            model,
            (&key, len),
            ("eval.batch_size", e.batch_size),
            fixed,
            kernels,
            available,
        )?;
    }
    Ok(())
}

/// Refuses evaluating `batch` sequences of `len` tokens on top of `fixed` bytes (weights, and
/// the optimiser state during training) when it cannot fit.
fn check_eval_shape(
    model: &ModelConfig,
    (len_key, len): (&str, usize),
    (batch_key, batch): (&str, usize),
    fixed: f64,
    kernels: Kernels,
    available: Option<u64>,
) -> Result<(), ConfigError> {
    let activations = memory::activation_bytes(model, batch, len, Pass::Infer, kernels);
    check_shape(
        len_key,
        batch_key,
        batch,
        len,
        &format!(
            "evaluating batch {batch} × seq_len {len} ({} of weights + {} of activations)",
            memory::human_bytes(fixed),
            memory::human_bytes(activations)
        ),
        fixed + activations,
        available,
    )
}

/// (length key, batch key, batch, seq_len) of every distinct training step shape: each stage,
/// or both ends of the length warmup.
fn training_shapes(config: &RunConfig) -> Vec<(String, String, usize, usize)> {
    let t = &config.train;
    let batch_of = |stage_batch: Option<usize>, seq_len: usize| -> (usize, &'static str) {
        match (stage_batch, t.tokens_per_step) {
            (Some(b), _) => (b, "batch_size"),
            (None, Some(tokens)) => ((tokens / seq_len.max(1)).max(1), "train.tokens_per_step"),
            (None, None) => (t.batch_size, "train.batch_size"),
        }
    };
    let mut shapes: Vec<(String, String, usize, usize)> = Vec::new();
    for (i, stage) in t.stages.iter().enumerate() {
        let (batch, batch_key) = batch_of(stage.batch_size, stage.seq_len);
        let batch_key = if batch_key == "batch_size" {
            format!("train.stages.{i}.batch_size")
        } else {
            batch_key.to_string()
        };
        shapes.push((
            format!("train.stages.{i}.seq_len"),
            batch_key,
            batch,
            stage.seq_len,
        ));
    }
    if t.stages.is_empty()
        && let Some(w) = &t.length_warmup
    {
        for (key, len) in [("min_len", w.min_len), ("max_len", w.max_len)] {
            let (batch, batch_key) = batch_of(None, len);
            shapes.push((
                format!("train.length_warmup.{key}"),
                batch_key.to_string(),
                batch,
                len,
            ));
        }
    }
    shapes
}

/// The training step with the largest estimated peak memory: (batch, seq_len, bytes).
pub fn largest_training_step(config: &RunConfig, kernels: Kernels) -> Option<(usize, usize, f64)> {
    let copies = if config.train.grad_accum > 1 {
        5.0
    } else {
        4.0
    };
    let params = memory::param_bytes(&config.model).ok()?;
    training_shapes(config)
        .into_iter()
        .map(|(_, _, batch, len)| {
            let act = memory::activation_bytes(&config.model, batch, len, Pass::Train, kernels);
            (batch, len, copies * params + act)
        })
        .max_by(|a, b| a.2.total_cmp(&b.2))
}

/// Refuses one (batch, seq_len) shape, naming the batch key when the batch is the larger
/// factor and the length key otherwise.
fn check_shape(
    len_key: &str,
    batch_key: &str,
    batch: usize,
    seq_len: usize,
    what: &str,
    needed: f64,
    available: Option<u64>,
) -> Result<(), ConfigError> {
    let key = if batch > seq_len { batch_key } else { len_key };
    memory::check_fits(
        key,
        what,
        needed,
        available,
        &format!(
            "lower {len_key} or {batch_key}, or the model's size (model.d_model, model.n_layers)"
        ),
    )
    .map_err(config_error)
}

/// Checks that loading the model of `model` (e.g. a run's model/config.json, named by
/// `origin` in the message) fits: its weights, the file they are read from and the
/// initialisation buffers, about 3 × the parameters' bytes.
pub fn check_model(model: &ModelConfig, origin: &str) -> Result<(), ConfigError> {
    check_model_with(model, origin, memory::available_memory())
}

/// [`check_model`] against `available` bytes (None: skip the comparison).
pub fn check_model_with(
    model: &ModelConfig,
    origin: &str,
    available: Option<u64>,
) -> Result<(), ConfigError> {
    let params = memory::param_count(model).map_err(config_error)?;
    let bytes = memory::param_bytes(model).map_err(config_error)?;
    memory::check_fits(
        memory::dominant_size_key(model),
        &format!("loading the {params} parameters of {origin}"),
        3.0 * bytes,
        available,
        "is this the model you meant?",
    )
    .map_err(config_error)
}

/// Checks that evaluating `batch` sequences of each of `lengths` fits, for the evaluation
/// commands (`key` names where the lengths came from, e.g. `--lengths`; `batch_key` the batch
/// size, e.g. `--batch-size`). Lengths above the hard bound are refused first.
pub fn check_eval_lengths(
    model: &ModelConfig,
    lengths: &[usize],
    batch: usize,
    key: &str,
    batch_key: &str,
    kernels: Kernels,
) -> Result<(), ConfigError> {
    check_eval_lengths_with(
        model,
        lengths,
        batch,
        key,
        batch_key,
        kernels,
        memory::available_memory(),
    )
}

/// [`check_eval_lengths`] against `available` bytes (None: only the hard bounds).
pub fn check_eval_lengths_with(
    model: &ModelConfig,
    lengths: &[usize],
    batch: usize,
    key: &str,
    batch_key: &str,
    kernels: Kernels,
    available: Option<u64>,
) -> Result<(), ConfigError> {
    use zoo_model::config::limits;
    limits::check(batch_key, batch, limits::BATCH).map_err(config_error)?;
    for &len in lengths {
        limits::check(key, len, limits::SEQ_LEN).map_err(config_error)?;
    }
    let fixed = memory::param_bytes(model).map_err(config_error)?;
    for &len in lengths {
        check_eval_shape(
            model,
            (key, len),
            (batch_key, batch),
            fixed,
            kernels,
            available,
        )?;
    }
    Ok(())
}

/// Checks `zoo generate`: the prompt's forward pass and a decoding state that grows to
/// `prompt_len + max_tokens` tokens, refusing with one line naming `--max-tokens` or
/// `--prompt`. The lengths are bounded first (at most 2^24 tokens in all).
pub fn check_generate(
    model: &ModelConfig,
    prompt_len: usize,
    max_tokens: usize,
    kernels: Kernels,
) -> Result<(), ConfigError> {
    check_generate_with(
        model,
        prompt_len,
        max_tokens,
        kernels,
        memory::available_memory(),
    )
}

/// [`check_generate`] against `available` bytes (None: only the hard bounds).
pub fn check_generate_with(
    model: &ModelConfig,
    prompt_len: usize,
    max_tokens: usize,
    kernels: Kernels,
    available: Option<u64>,
) -> Result<(), ConfigError> {
    use zoo_model::config::limits;
    limits::check("--max-tokens", max_tokens, limits::SEQ_LEN).map_err(config_error)?;
    let total = prompt_len.saturating_add(max_tokens);
    if total > limits::SEQ_LEN {
        return Err(ConfigError::new(format!(
            "--prompt + --max-tokens: {prompt_len} + {max_tokens} tokens is above the limit of {} (shorten the prompt or lower --max-tokens)",
            limits::SEQ_LEN
        )));
    }
    let needed =
        memory::generation_bytes(model, prompt_len, max_tokens, kernels).map_err(config_error)?;
    let key = if prompt_len >= max_tokens {
        "--prompt"
    } else {
        "--max-tokens"
    };
    memory::check_fits(
        key,
        &format!("generating {max_tokens} tokens after a prompt of {prompt_len}"),
        needed,
        available,
        "shorten the prompt or lower --max-tokens",
    )
    .map_err(config_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> RunConfig {
        let text = format!(
            r#"
[run]
name = "t"
[model]
d_model = 32
n_layers = 2
n_heads = 2
[task]
kind = "mqar"
vocab = 64
num_kv_pairs = 4
[train]
batch_size = 4
[[train.stages]]
seq_len = 32
steps = 10
[[train.stages]]
seq_len = 64
steps = 10
{extra}
"#
        );
        let mut c = crate::config::parse(&text, "x.toml", &[]).expect("valid test config");
        c.resolve(64);
        c
    }

    const GIB: u64 = 1 << 30;

    #[test]
    fn small_run_fits_and_unknown_memory_skips_the_comparison() {
        let c = config("");
        check_run_with(&c, Kernels::Cpu, Some(GIB)).unwrap();
        check_run_with(&c, Kernels::None, Some(GIB)).unwrap();
        check_run_with(&c, Kernels::Cpu, None).unwrap();
    }

    #[test]
    fn long_stage_is_refused_naming_its_seq_len() {
        let mut c = config("");
        c.train.stages[1].seq_len = 1 << 24;
        let err = check_run_with(&c, Kernels::None, Some(GIB))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("train.stages.1.seq_len: "), "{err}");
        assert!(err.contains("available (MemAvailable)"), "{err}");
        assert!(!err.contains('\n'));
        // Without a readable MemAvailable, only the hard bounds (already passed) apply.
        check_run_with(&c, Kernels::None, None).unwrap();
    }

    #[test]
    fn large_batch_is_refused_naming_the_batch_size() {
        let mut c = config("");
        c.train.batch_size = 1 << 20;
        let err = check_run_with(&c, Kernels::Cpu, Some(GIB))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("train.batch_size: "), "{err}");
    }

    #[test]
    fn large_model_is_refused_naming_a_model_key() {
        let mut c = config("");
        c.model.d_model = 65_536;
        c.model.n_layers = 1024;
        let err = check_run_with(&c, Kernels::Cpu, Some(64 * GIB))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("model.d_model: "), "{err}");
        assert!(err.contains("parameters"), "{err}");
        c.model.d_model = 32;
        c.model.vocab_size = Some(1 << 24);
        c.model.n_layers = 1;
        let err = check_run_with(&c, Kernels::Cpu, Some(GIB / 2))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("model.vocab_size: "), "{err}");
    }

    #[test]
    fn eval_lengths_are_refused_naming_them() {
        let mut c = config("[eval]\nniah.lengths = [64, 4194304]\n");
        let err = check_run_with(&c, Kernels::None, Some(GIB))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("eval.niah.lengths.1: "), "{err}");
        c.eval.niah.lengths.clear();
        check_run_with(&c, Kernels::None, Some(GIB)).unwrap();

        let err = check_eval_lengths_with(
            &c.model,
            &[64, 1_000_000_000_000],
            8,
            "--lengths",
            "--batch-size",
            Kernels::Cpu,
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("--lengths: 1000000000000 is above the limit"),
            "{err}"
        );
        let err = check_eval_lengths_with(
            &c.model,
            &[64, 1 << 22],
            8,
            "--lengths",
            "--batch-size",
            Kernels::None,
            Some(GIB),
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("--lengths: "), "{err}");
        check_eval_lengths_with(
            &c.model,
            &[64, 256],
            8,
            "--lengths",
            "--batch-size",
            Kernels::Cpu,
            Some(GIB),
        )
        .unwrap();
    }

    #[test]
    fn loading_a_huge_model_is_refused() {
        let mut c = config("");
        zoo_train_check_model_ok(&c);
        c.model.d_model = 65_536;
        c.model.n_layers = 1024;
        let err = check_model_with(&c.model, "runs/x/model/config.json", Some(GIB))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("model.d_model: loading the "), "{err}");
        assert!(err.contains("runs/x/model/config.json"), "{err}");
    }

    fn zoo_train_check_model_ok(c: &RunConfig) {
        check_model_with(&c.model, "x", Some(GIB)).unwrap();
    }

    #[test]
    fn generation_is_bounded() {
        let c = config("");
        check_generate_with(&c.model, 10, 100, Kernels::Cpu, Some(GIB)).unwrap();
        let err = check_generate_with(&c.model, 10, 1_000_000_000_000, Kernels::Cpu, None)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("--max-tokens: "), "{err}");
        let err = check_generate_with(&c.model, 1 << 23, (1 << 23) + 1, Kernels::Cpu, None)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("--prompt + --max-tokens: "), "{err}");
        let err = check_generate_with(&c.model, 1 << 22, 10, Kernels::Cpu, Some(GIB))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("--prompt: "), "{err}");
    }
}
