//! `zoo bench`: speed measurements (never timed tests).
//! - `reference`: the reference training workload of bench/peers/README.md
//!   (vocab 512, d 128, 2 layers, 4 heads, pre-LayerNorm, GELU MLP ×4, tied embeddings, biases,
//!   batch 16 × 512 random tokens, AdamW lr 1e-3): median step time of 10 steps after 3 warm-up
//!   steps → tokens/s and model FLOPs utilisation; ends with `tokens_per_s=N`.
//! - `scaling`: per mixer, forward+backward time of one layer (batch 1, d 128, 4 heads) against
//!   length, with the fitted exponent of time ∝ n^k (least squares in log-log), and its peak
//!   memory: the process's resident size on CPU devices, the device allocator's reservation on
//!   devices with memory of their own (wgpu, cuda).
//! - `decode`: per mixer, time per decoded token at several context lengths.
//! - `prefill`: time and peak memory of reading one long prompt (`Lm::prefill`, what
//!   `zoo generate` does first) on a quickstart-sized model; one mixer per process, so the peak
//!   resident size (VmHWM) is that prompt's own; on wgpu / cuda the prompt is read once untimed
//!   first (kernel compilation and tuning), and the growth of the device allocator's
//!   reservation is reported too.

use std::time::Instant;

use anyhow::Result;
use burn::optim::GradientsParams;
use burn::prelude::*;
use clap::Subcommand;
use serde_json::json;
use zoo_model::attention::Mixer;
use zoo_model::attention::delta_rule::DeltaRuleConfig;
use zoo_model::attention::mamba2::Mamba2Config;
use zoo_model::init::Init;
use zoo_model::{
    FeatureMap, Lm, MixerConfig, MlpKind, ModelConfig, NormKind, PositionConfig, TokenMixer,
    masked_cross_entropy,
};

use crate::device;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// The reference training workload (compare with bench/peers/compare.py).
    Reference {
        #[arg(long, default_value = "softmax")]
        attention: String,
        #[arg(long, default_value_t = 10)]
        steps: usize,
        #[arg(long, default_value_t = 3)]
        warmup: usize,
        #[arg(long, default_value = "flex")]
        device: String,
        #[arg(long)]
        json: bool,
        /// Use Burn's composed ops instead of the fused flex kernels (to compare the two).
        #[arg(long)]
        unfused: bool,
    },
    /// Forward+backward time of each mixer against sequence length.
    Scaling {
        #[arg(long, value_delimiter = ',', default_values_t = [1024usize, 2048, 4096, 8192, 16384])]
        lengths: Vec<usize>,
        /// Mixers to measure (default: all).
        #[arg(long, value_delimiter = ',')]
        mixers: Vec<String>,
        /// Softmax stops above this length (its time is quadratic; off flex, or with
        /// --unfused, its autodiff path also materialises the n² scores).
        #[arg(long, default_value_t = 16384)]
        max_softmax_len: usize,
        #[arg(long, default_value = "flex")]
        device: String,
        #[arg(long)]
        json: bool,
        /// Use Burn's composed ops instead of the fused flex kernels (to compare the two).
        #[arg(long)]
        unfused: bool,

        /// Folder for the plots (scaling_time.*, scaling_memory.*).
        #[arg(long, default_value = "bench")]
        out: std::path::PathBuf,
    },
    /// One (mixer, length) point of `scaling`, run in a child process so its peak memory is its own.
    #[command(hide = true)]
    ScalingPoint {
        #[arg(long)]
        mixer: String,
        #[arg(long)]
        len: usize,
        #[arg(long, default_value = "flex")]
        device: String,
        #[arg(long)]
        unfused: bool,
    },
    /// Time and peak memory of reading one long prompt, as `zoo generate` does first.
    Prefill {
        /// Prompt length in tokens.
        #[arg(long, default_value_t = 30_000)]
        len: usize,
        /// softmax, sliding_window or bigbird (the mixers with a KV cache).
        #[arg(long, default_value = "softmax")]
        mixer: String,
        #[arg(long, default_value = "flex")]
        device: String,
        #[arg(long)]
        json: bool,
    },
    /// Time per decoded token at several context lengths.
    Decode {
        #[arg(long, value_delimiter = ',', default_values_t = [512usize, 2048, 8192])]
        contexts: Vec<usize>,
        #[arg(long, value_delimiter = ',')]
        mixers: Vec<String>,
        #[arg(long, default_value_t = 16)]
        tokens: usize,
        #[arg(long, default_value = "flex")]
        device: String,
        #[arg(long)]
        json: bool,
    },
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The benchmark mixers, optionally only those whose kind is in `filter`.
fn bench_mixers(filter: &[String]) -> Vec<MixerConfig> {
    zoo_bench::mixers()
        .into_iter()
        .filter(|m| filter.is_empty() || filter.iter().any(|f| f == m.kind()))
        .collect()
}

/// A field of /proc/self/status in MiB (VmRSS: now, VmHWM: peak); NaN where unavailable.
fn status_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Least-squares slope of log(y) against log(x).
pub fn fitted_exponent(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return f64::NAN;
    }
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x.ln(), b + y.ln()));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = points.iter().fold((0.0, 0.0), |(a, b), (x, y)| {
        (a + (x.ln() - mx) * (y.ln() - my), b + (x.ln() - mx).powi(2))
    });
    num / den
}

/// The CPU model from /proc/cpuinfo (Linux) or `sysctl machdep.cpu.brand_string` (macOS).
pub fn cpu_model() -> String {
    let linux = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name") || l.starts_with("Model"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        });
    linux
        .or_else(|| {
            std::process::Command::new("sysctl")
                .args(["-n", "machdep.cpu.brand_string"])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        })
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| "unknown CPU".to_string())
}

/// What every benchmark reports about the machine it ran on: CPU model, the ISA path the fused
/// kernels dispatched to, and the thread count.
fn machine() -> serde_json::Value {
    json!({
        "cpu": cpu_model(),
        "isa": zoo_model::kernels::isa_path(),
        "threads": zoo_model::kernels::threads(),
    })
}

/// `row` with the machine's fields added (each JSON row stands on its own).
fn with_machine(mut row: serde_json::Value) -> serde_json::Value {
    if let (Some(obj), serde_json::Value::Object(m)) = (row.as_object_mut(), machine()) {
        obj.extend(m);
    }
    row
}

/// The table's first line: `machine: <cpu>, <isa> kernels, <n> threads`.
fn print_machine() {
    let m = machine();
    println!(
        "machine: {}, {} kernels, {} threads",
        m["cpu"].as_str().unwrap_or("?"),
        m["isa"].as_str().unwrap_or("?"),
        m["threads"]
    );
}

pub fn run(cmd: BenchCommand) -> Result<()> {
    if let BenchCommand::Reference { unfused: true, .. }
    | BenchCommand::Scaling { unfused: true, .. }
    | BenchCommand::ScalingPoint { unfused: true, .. } = &cmd
    {
        zoo_model::kernels::set_enabled(false);
    }
    match cmd {
        BenchCommand::Reference {
            attention,
            steps,
            warmup,
            device,
            json,
            unfused: _,
        } => reference(&attention, steps, warmup, &device, json),
        BenchCommand::Scaling {
            lengths,
            mixers,
            max_softmax_len,
            device,
            json,
            out,
            unfused,
        } => scaling(
            &lengths,
            &mixers,
            max_softmax_len,
            &device,
            json,
            unfused,
            &out,
        ),
        BenchCommand::ScalingPoint {
            mixer, len, device, ..
        } => scaling_point(&mixer, len, &device),
        BenchCommand::Decode {
            contexts,
            mixers,
            tokens,
            device,
            json,
        } => decode(&contexts, &mixers, tokens, &device, json),
        BenchCommand::Prefill {
            len,
            mixer,
            device,
            json,
        } => prefill(len, &mixer, &device, json),
    }
}

/// A quickstart-sized model (configs/quickstart.toml: d 64, 2 layers, 4 heads, MLP ×2, RoPE,
/// the needle task's 256-token vocabulary) reads `len` random tokens through `Lm::prefill`.
fn prefill(len: usize, kind: &str, device: &str, json: bool) -> Result<()> {
    anyhow::ensure!(
        (1..=1 << 24).contains(&len),
        "--len {len} must be between 1 and 16777216"
    );
    let mixer = match kind {
        "softmax" => MixerConfig::Softmax(zoo_model::SoftmaxConfig {
            logit_scale: None,
            log_n_scaling: false,
        }),
        "sliding_window" => MixerConfig::SlidingWindow(zoo_model::SlidingWindowConfig {
            window: 128,
            dilation: 1,
            global_tokens: 4,
        }),
        "bigbird" => MixerConfig::Bigbird(zoo_model::BigBirdConfig {
            block_size: 16,
            window_blocks: 3,
            global_blocks: 1,
            random_blocks: 2,
            seed: 0,
        }),
        other => anyhow::bail!(
            "--mixer {}: use softmax, sliding_window or bigbird",
            zoo_data::input::clip_bare(other)
        ),
    };
    let cfg = ModelConfig {
        vocab_size: Some(256),
        d_model: 64,
        n_layers: 2,
        n_heads: 4,
        mlp_ratio: 2.0,
        mixer,
        position: PositionConfig::Rope {
            theta: 10_000.0,
            interpolation: 1.0,
            ntk_factor: 1.0,
        },
        train_len: Some(192),
        ..ModelConfig::default()
    };
    let dev = device::select(device)?;
    zoo_train::resources::check_generate(&cfg, len, 0, zoo_model::kernels::on_device(&dev))?;
    let lm = Lm::new(&cfg, &dev)?;
    let ids: Vec<i64> = (0..len as i64).map(|i| (i * 7919 + 13) % 256).collect();
    let prompt =
        |n: usize| Tensor::<2, Int>::from_data(TensorData::new(ids[..n].to_vec(), [1, n]), &dev);
    // Devices with memory of their own (wgpu, cuda) compile and tune their kernels for each
    // new shape (seconds on lavapipe): the prompt is read once untimed, so the timing is the
    // prompt's and not the compiler's. Their allocator keeps the pages it grew to, so its
    // growth from before that first reading is what the prompt needs on the device.
    let pools_mib = || {
        dev.memory_pool_usage()
            .map(|u| u.bytes_reserved as f64 / (1024.0 * 1024.0))
    };
    let pools_before = pools_mib();
    if pools_before.is_some() {
        let (logits, _) = lm.prefill(prompt(len), lm.init_state(1, &dev));
        let _ = logits.slice([0..1, 0..1]).into_scalar::<f32>();
    }
    let tokens = prompt(len);
    let before_mib = status_mib("VmRSS:");
    let start = Instant::now();
    let (logits, state) = lm.prefill(tokens, lm.init_state(1, &dev)); // [1, vocab]
    let _ = logits.slice([0..1, 0..1]).into_scalar::<f32>();
    let seconds = start.elapsed().as_secs_f64();
    let peak_mib = status_mib("VmHWM:");
    let device_mib = pools_before.zip(pools_mib()).map(|(b, a)| a - b);
    anyhow::ensure!(
        state.pos == len,
        "the prefill state is at {}, not {len}",
        state.pos
    );
    if json {
        println!(
            "{}",
            with_machine(
                json!({"mixer": kind, "len": len, "seconds": seconds, "peak_rss_mib": peak_mib, "rss_before_mib": before_mib, "device_reserved_mib": device_mib})
            )
        );
    } else {
        print_machine();
        let on_device = device_mib.map_or(String::new(), |mib| {
            format!("; device memory reserved by the allocator +{mib:.0} MiB")
        });
        println!(
            "{kind}: prefill of {len} tokens in {seconds:.2} s, peak resident {peak_mib:.0} MiB ({before_mib:.0} MiB before){on_device}"
        );
    }
    Ok(())
}

fn reference(attention: &str, steps: usize, warmup: usize, device: &str, json: bool) -> Result<()> {
    let (mixer, position) = match attention {
        "softmax" => (
            MixerConfig::Softmax(zoo_model::SoftmaxConfig {
                logit_scale: None,
                log_n_scaling: false,
            }),
            PositionConfig::Rope {
                theta: 10_000.0,
                interpolation: 1.0,
                ntk_factor: 1.0,
            },
        ),
        "linear" => (
            MixerConfig::Linear(zoo_model::LinearConfig {
                feature_map: FeatureMap::Elu,
                normalize: true,
                chunk_size: 64,
                feature_dim: None,
            }),
            PositionConfig::None,
        ),
        "deltanet" => (
            MixerConfig::Deltanet(DeltaRuleConfig::default()),
            PositionConfig::None,
        ),
        "gated_deltanet" => (
            MixerConfig::GatedDeltanet(DeltaRuleConfig::default()),
            PositionConfig::None,
        ),
        "mamba2" => (
            MixerConfig::Mamba2(Mamba2Config::default()),
            PositionConfig::None,
        ),
        other => anyhow::bail!(
            "--attention {other}: use softmax, linear, deltanet, gated_deltanet or mamba2"
        ),
    };
    let cfg = ModelConfig {
        vocab_size: Some(512),
        d_model: 128,
        n_layers: 2,
        n_heads: 4,
        mlp_ratio: 4.0,
        mlp: MlpKind::Gelu,
        norm: NormKind::Layer,
        bias: true,
        tie_embeddings: true,
        mixer,
        position,
        ..ModelConfig::default()
    };
    let dev = device::select(device)?.autodiff();
    let mut model = Lm::new(&cfg, &dev)?;
    let params = model.num_params();
    let mut optim = burn::optim::AdamWConfig::new()
        .with_weight_decay(0.0)
        .init();
    let (b, n) = (16usize, 512usize);
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0);
    let (mut times, mut forward_times, mut backward_times, mut update_times) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..warmup + steps {
        let ids: Vec<i64> = (0..b * (n + 1))
            .map(|_| rand::Rng::gen_range(&mut rng, 0..512))
            .collect();
        let all = Tensor::<2, Int>::from_data(TensorData::new(ids, [b, n + 1]), &dev);
        let start = Instant::now();
        let loss = masked_cross_entropy(
            model.forward(all.clone().narrow(1, 0, n)),
            all.narrow(1, 1, n),
            Tensor::ones([b, n], &dev),
        );
        // Readbacks between the phases make each phase's work finish before its clock stops.
        let _ = loss.clone().into_scalar::<f32>();
        let forward_done = Instant::now();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        // On a GPU the backward's kernels are still queued here; wait for them so that its
        // time is not counted as AdamW's (a no-op on the CPU backends).
        dev.sync()
            .map_err(|e| anyhow::anyhow!("the device failed during the backward pass: {e:?}"))?;
        let backward_done = Instant::now();
        model = optim.step(1e-3, model, grads);
        let _ = model
            .embed
            .weight
            .val()
            .slice([0..1, 0..1])
            .into_scalar::<f32>();
        if i >= warmup {
            times.push(start.elapsed().as_secs_f64());
            forward_times.push((forward_done - start).as_secs_f64());
            backward_times.push((backward_done - forward_done).as_secs_f64());
            update_times.push(backward_done.elapsed().as_secs_f64());
        }
    }
    let phases = (
        median(forward_times),
        median(backward_times),
        median(update_times),
    );
    let step = median(times);
    let tokens_per_s = (b * n) as f64 / step;
    // 6·N per token for the dense parts plus causal attention: 6 · layers · n · d (scores and
    // weighted sum, forward ×3 for training, half masked).
    let attn = if attention == "softmax" {
        6.0 * 2.0 * n as f64 * 128.0
    } else {
        0.0
    };
    let flops = (6.0 * params as f64 + attn) * tokens_per_s;
    let mfu = flops / 333e9;
    let kernels = if zoo_model::kernels::fused_on(&dev) {
        "fused kernels"
    } else {
        "composed ops"
    };
    if json {
        println!(
            "{}",
            with_machine(
                json!({"bench": "reference", "attention": attention, "device": device, "kernels": kernels, "params": params, "median_step_s": step, "forward_s": phases.0, "backward_s": phases.1, "update_s": phases.2, "tokens_per_s": tokens_per_s, "mfu": mfu})
            )
        );
    } else {
        print_machine();
        println!(
            "reference workload, {attention} attention, {device} ({kernels}): {params} params, median step {:.3} s",
            step
        );
        println!(
            "phases (median): forward + loss {:.3} s, backward {:.3} s, AdamW {:.3} s",
            phases.0, phases.1, phases.2
        );
        println!(
            "tokens/s {:.0}, model FLOPs utilisation {:.1}% of 333 GFLOP/s",
            tokens_per_s,
            100.0 * mfu
        );
    }
    println!("tokens_per_s={:.0}", tokens_per_s);
    Ok(())
}

/// Forward+backward of one mixer layer at length `len`; prints one JSON line with the median
/// time (after a warm-up run, of ≥ 5 runs and ≥ 0.5 s of them) and the peak memory above the
/// process's resident size before the first run.
fn scaling_point(kind: &str, len: usize, device: &str) -> Result<()> {
    let mixer_cfg = bench_mixers(&[kind.to_string()])
        .pop()
        .ok_or_else(|| anyhow::anyhow!("unknown mixer `{kind}`"))?;
    let dev = device::select(device)?.autodiff();
    let cfg = zoo_bench::layer_model(mixer_cfg.clone());
    let mixer = Mixer::new(&mixer_cfg, &cfg, &mut Init::new(0, &dev));
    let x = Tensor::<3>::random(
        [1, len, 128],
        burn::tensor::Distribution::Normal(0.0, 1.0),
        &dev,
    )
    .require_grad();
    let base = status_mib("VmRSS");
    // On a device with memory of its own (wgpu, cuda) the process's resident size says nothing
    // about what the layer needs there; its allocator's reservation does. The pools keep the
    // pages they grew to, so the reservation after a run covers the run's peak of live tensors
    // (rounded up to whole pages). CPU devices report no pools.
    let pools_mib = || {
        dev.memory_pool_usage()
            .map(|usage| usage.bytes_reserved as f64 / (1024.0 * 1024.0))
    };
    let pools_before = pools_mib();
    let mut pools_peak = pools_before;
    let mut run = || {
        let start = Instant::now();
        let grads = mixer.forward(x.clone()).sum().backward();
        let _ = x
            .grad(&grads)
            .map(|g| g.slice([0..1, 0..1, 0..1]).into_scalar::<f32>());
        let seconds = start.elapsed().as_secs_f64();
        if let Some(now) = pools_mib() {
            pools_peak = Some(pools_peak.map_or(now, |peak: f64| peak.max(now)));
        }
        seconds
    };
    run(); // warm-up: first-touch page faults, lazily built tables, compiled kernels
    // Short points are noisy on a shared machine: time at least 5 runs and at least 0.5 s.
    let mut times = Vec::new();
    while times.len() < 5 || (times.iter().sum::<f64>() < 0.5 && times.len() < 100) {
        times.push(run());
    }
    let host_peak_mib = status_mib("VmHWM") - base;
    let (peak_mib, memory) = match (pools_before, pools_peak) {
        (Some(before), Some(peak)) => (peak - before, DEVICE_POOLS),
        _ => (host_peak_mib, HOST_RSS),
    };
    println!(
        "{}",
        json!({"seconds": median(times), "peak_mib": peak_mib, "memory": memory, "host_peak_mib": host_peak_mib})
    );
    Ok(())
}

/// What `scaling`'s memory column measures on devices with memory pools of their own.
const DEVICE_POOLS: &str = "device memory reserved by the allocator";
/// … and on CPU devices.
const HOST_RSS: &str = "peak resident size of the process";

fn scaling(
    lengths: &[usize],
    filter: &[String],
    max_softmax: usize,
    device: &str,
    json: bool,
    unfused: bool,
    out: &std::path::Path,
) -> Result<()> {
    let exe = std::env::current_exe()?;
    let mut report = Vec::new();
    let (mut time_series, mut memory_series) = (Vec::new(), Vec::new());
    let mut memory_measure = None;
    if !json {
        print_machine();
        println!(
            "{:>15} {:>7} {:>11} {:>12}",
            "mixer", "seq_len", "fwd+bwd s", "peak MiB"
        );
    }
    for mixer_cfg in bench_mixers(filter) {
        let kind = mixer_cfg.kind();
        let (mut times, mut memory) = (Vec::new(), Vec::new());
        let mut stopped = None;
        for &n in lengths {
            if kind == "softmax" && n > max_softmax {
                stopped = Some(n);
                break;
            }
            let child = std::process::Command::new(&exe)
                .args([
                    "bench",
                    "scaling-point",
                    "--mixer",
                    kind,
                    "--len",
                    &n.to_string(),
                    "--device",
                    device,
                ])
                .args(unfused.then_some("--unfused"))
                .output()?;
            let point: serde_json::Value = match serde_json::from_slice(&child.stdout) {
                Ok(v) if child.status.success() => v,
                _ => {
                    // Out of memory or another failure: say where the mixer stopped, and why.
                    let stderr = String::from_utf8_lossy(&child.stderr);
                    let why = stderr
                        .lines()
                        .rev()
                        .find(|line| !line.trim().is_empty())
                        .unwrap_or("no message");
                    eprintln!("{kind} at {n} tokens failed ({}): {why}", child.status);
                    stopped = Some(n);
                    break;
                }
            };
            let (t, m) = (
                point["seconds"].as_f64().unwrap_or(f64::NAN),
                point["peak_mib"].as_f64().unwrap_or(f64::NAN),
            );
            let measured = point["memory"].as_str().unwrap_or(HOST_RSS).to_string();
            times.push((n as f64, t));
            memory.push((n as f64, m.max(1e-3)));
            if !json {
                println!("{:>15} {:>7} {:>11.4} {:>12.1}", kind, n, t, m);
            }
            report.push(with_machine(
                json!({"mixer": kind, "seq_len": n, "seconds": t, "peak_mib": m, "memory": measured, "host_peak_mib": point["host_peak_mib"]}),
            ));
            memory_measure.get_or_insert(measured);
        }
        let (kt, km) = (fitted_exponent(&times), fitted_exponent(&memory));
        if !json {
            let note = stopped.map_or(String::new(), |n| format!(" (stopped before {n})"));
            println!(
                "{:>15} exponents: time {:.2}, memory {:.2}{note}",
                kind, kt, km
            );
        }
        report.push(with_machine(json!({"mixer": kind, "time_exponent": kt, "memory_exponent": km, "stopped_before": stopped})));
        time_series.push(zoo_eval::Series::new(format!("{kind} (k={kt:.2})"), times));
        memory_series.push(zoo_eval::Series::new(format!("{kind} (k={km:.2})"), memory));
    }
    std::fs::create_dir_all(out)?;
    let log = || zoo_eval::LineOpts {
        log_x: true,
        log_y: true,
        vlines: Vec::new(),
    };
    zoo_eval::plot::line_chart(
        &out.join("scaling_time"),
        "forward+backward time vs length (batch 1, d 128, 4 heads)",
        "sequence length",
        "seconds",
        &time_series,
        log(),
    )?;
    let memory_title = match &memory_measure {
        Some(measure) => format!("peak memory of forward+backward vs length ({measure})"),
        None => "peak memory of forward+backward vs length".to_string(),
    };
    zoo_eval::plot::line_chart(
        &out.join("scaling_memory"),
        &memory_title,
        "sequence length",
        "MiB above baseline",
        &memory_series,
        log(),
    )?;
    if json {
        println!("{}", serde_json::Value::Array(report));
    } else {
        if let Some(measure) = memory_measure {
            println!(
                "peak MiB: {measure}, above what the layer and its input hold before the first run"
            );
        }
        println!(
            "plots: {}/scaling_time.{{png,svg}}, {}/scaling_memory.{{png,svg}}",
            out.display(),
            out.display()
        );
    }
    Ok(())
}

fn decode(
    contexts: &[usize],
    filter: &[String],
    tokens: usize,
    device: &str,
    json: bool,
) -> Result<()> {
    let dev = device::select(device)?;
    let mut report = Vec::new();
    if !json {
        print_machine();
        println!("{:>15} {:>8} {:>12}", "mixer", "context", "ms/token");
    }
    for mixer_cfg in bench_mixers(filter) {
        let cfg = zoo_bench::layer_model(mixer_cfg.clone());
        let mixer = Mixer::new(&mixer_cfg, &cfg, &mut Init::new(0, &dev));
        for &n in contexts {
            let ctx = Tensor::<3>::random(
                [1, n, 128],
                burn::tensor::Distribution::Normal(0.0, 1.0),
                &dev,
            );
            // Prefill the state in one call (token by token for the sparse mixers).
            let (_, mut state) = mixer.forward_with_state(ctx, mixer.init_state(1, &dev));
            let mut times = Vec::new();
            // One untimed token first: on a GPU it compiles the step's kernels (seconds on
            // lavapipe), which a median over few tokens would otherwise report.
            for token in 0..=tokens {
                let x = Tensor::<2>::random(
                    [1, 128],
                    burn::tensor::Distribution::Normal(0.0, 1.0),
                    &dev,
                );
                let start = Instant::now();
                let (y, s) = mixer.step(x, state);
                let _ = y.slice([0..1, 0..1]).into_scalar::<f32>();
                if token > 0 {
                    times.push(start.elapsed().as_secs_f64());
                }
                state = s;
            }
            let ms = 1e3 * median(times);
            if !json {
                println!("{:>15} {:>8} {:>12.3}", mixer_cfg.kind(), n, ms);
            }
            report.push(with_machine(
                json!({"mixer": mixer_cfg.kind(), "context": n, "ms_per_token": ms}),
            ));
        }
    }
    if json {
        println!("{}", serde_json::Value::Array(report));
    }
    Ok(())
}
