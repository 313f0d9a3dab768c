//! Not a test: a hand-run measurement of a long prompt's prefill on a quickstart-sized model
//! (configs/quickstart.toml: d_model 64, 2 layers, 4 heads, MLP ×2, softmax + RoPE, the needle
//! task's 256-token vocabulary), for peak RSS under `/usr/bin/time -v`:
//!
//!   cargo test --release --test prefill_measure --no-run   # prints the binary's path
//!   ZOO_PREFILL_LEN=30000 ZOO_PREFILL_MODE=prefill /usr/bin/time -v \
//!       target/release/deps/prefill_measure-<hash> --ignored --nocapture
//!
//! ZOO_PREFILL_MODE=forward_with_state reads the prompt as `zoo generate` did before `Lm::prefill`
//! (all logits, then the last position); `prefill` uses `Lm::prefill`. ZOO_PREFILL_MIXER swaps
//! the softmax mixer for `sliding_window` (window 128, 4 globals) or `bigbird` (blocks of 16,
//! 3 window, 1 global, 2 random).

mod common;

use std::time::Instant;

use common::{device, tokens, values};
use zoo_model::{Lm, MixerConfig, ModelConfig, PositionConfig};

#[test]
#[ignore = "a measurement, run by hand with /usr/bin/time -v"]
fn measure_long_prompt_prefill() {
    let n: usize = std::env::var("ZOO_PREFILL_LEN")
        .map(|v| v.parse().unwrap())
        .unwrap_or(30_000);
    let mode = std::env::var("ZOO_PREFILL_MODE").unwrap_or_else(|_| "prefill".into());
    let mixer = match std::env::var("ZOO_PREFILL_MIXER").as_deref() {
        Err(_) | Ok("softmax") => MixerConfig::Softmax {
            logit_scale: None,
            log_n_scaling: false,
        },
        Ok("sliding_window") => MixerConfig::SlidingWindow {
            window: 128,
            dilation: 1,
            global_tokens: 4,
        },
        Ok("bigbird") => MixerConfig::Bigbird {
            block_size: 16,
            window_blocks: 3,
            global_blocks: 1,
            random_blocks: 2,
            seed: 0,
        },
        Ok(other) => panic!("ZOO_PREFILL_MIXER={other}: use softmax, sliding_window or bigbird"),
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
        max_seq_len: n + 64,
        train_len: Some(192),
        ..ModelConfig::default()
    };
    let device = device();
    let lm = Lm::new(&cfg, &device).unwrap();
    let toks = tokens(1, n, 256, 1, &device);
    let start = Instant::now();
    let (last, state) = match mode.as_str() {
        "forward_with_state" => {
            let (logits, state) = lm.forward_with_state(toks, lm.init_state(1, &device));
            (logits.narrow(1, n - 1, 1).reshape([1, 256]), state)
        }
        "prefill" => lm.prefill(toks, lm.init_state(1, &device)),
        other => panic!("ZOO_PREFILL_MODE={other}: use forward_with_state or prefill"),
    };
    let last = values(last);
    let seconds = start.elapsed().as_secs_f64();
    let argmax = (0..last.len())
        .max_by(|&a, &b| last[a].total_cmp(&last[b]))
        .unwrap();
    println!(
        "mixer={} mode={mode} n={n} seconds={seconds:.2} state_pos={} argmax={argmax} logit={:.6}",
        cfg.mixer.kind(),
        state.pos,
        last[argmax]
    );
}
