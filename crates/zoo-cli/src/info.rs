//! `zoo info CONFIG`: the resolved config, parameter count, decoding-state size per layer at
//! the configured lengths with its ratio to the n·log₂n bits exact recall needs, and forward
//! FLOPs per token (2·parameters outside the embedding + the mixer's own term).

use std::path::{Path, PathBuf};

use anyhow::Result;
use burn::prelude::*;
use zoo_model::Lm;
use zoo_model::config::limits;

pub fn run(path: &Path, set: &[String], lengths: &[usize]) -> Result<()> {
    let mut cfg = zoo_train::config::load(path, set)?;
    let task = cfg.task.build(&PathBuf::from("."))?;
    cfg.resolve(task.vocab_size());
    cfg.validate()?;
    // Everything that can be refused is refused before the first line is printed: the lengths
    // of the table, the model this command builds, and the run `zoo train` would start.
    for &n in lengths {
        limits::check("--lengths", n, limits::SEQ_LEN)?;
    }
    let device = Device::flex();
    let origin = path.display().to_string();
    zoo_train::resources::check_model(&cfg.model, &zoo_data::input::clip_bare(&origin))?;
    zoo_train::resources::check_run(&cfg, zoo_model::kernels::on_device(&device))?;
    println!("# resolved config\n{}", cfg.to_toml());
    let model = Lm::new(&cfg.model, &device)?;
    let params = model.num_params();
    let embed = cfg.model.vocab()? * cfg.model.d_model;
    println!(
        "parameters: {params} ({} without the token embedding)",
        params - embed
    );
    if let Some((batch, seq_len, bytes)) =
        zoo_train::resources::largest_training_step(&cfg, zoo_model::kernels::on_device(&device))
    {
        let available = zoo_model::memory::available_memory().map_or("unknown".to_string(), |a| {
            zoo_model::memory::human_bytes(a as f64)
        });
        println!(
            "estimated peak training memory: {} (batch {batch} × seq_len {seq_len}, flex); available: {available}",
            zoo_model::memory::human_bytes(bytes)
        );
    }
    let mut lengths = lengths.to_vec();
    if lengths.is_empty() {
        let plan = zoo_train::schedule::LengthPlan::new(&cfg.train);
        lengths = plan.lengths();
        lengths.extend(
            cfg.eval
                .niah
                .lengths
                .iter()
                .chain(&cfg.eval.mqar.lengths)
                .chain(&cfg.eval.lengths),
        );
        lengths.sort_unstable();
        lengths.dedup();
    }
    let n_train = cfg.final_seq_len();
    let mixer_total: f64 = cfg
        .model
        .layer_mixers()
        .iter()
        .map(|m| m.spec().flops_per_token(&cfg.model, n_train as f64))
        .sum();
    let forward = 2.0 * (params - embed) as f64
        + 2.0 * embed as f64 * f64::from(u8::from(cfg.model.tie_embeddings))
        + mixer_total;
    println!(
        "forward FLOPs per token at seq_len {n_train}: {:.3e} (training ≈ 3× that: {:.3e})",
        forward,
        3.0 * forward
    );
    println!("\ndecoding state per sequence (f32), and state bits / (n·log2 n):");
    println!(
        "{:>8} {:>5} {:>15} {:>12} {:>10}",
        "seq_len", "layer", "mixer", "bytes", "capacity"
    );
    for &n in &lengths {
        for layer in model.state_size_bytes(n) {
            let needed = n as f64 * (n.max(2) as f64).log2();
            println!(
                "{:>8} {:>5} {:>15} {:>12} {:>10.3}",
                n,
                layer.layer,
                layer.mixer,
                layer.bytes,
                layer.bytes as f64 * 8.0 / needed
            );
        }
    }
    Ok(())
}
