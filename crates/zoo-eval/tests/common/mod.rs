//! Fake run directories shared by the report tests.

// Each test binary compiles this module and uses a different subset of it.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

use zoo_eval::results::*;

/// Figures the report draws for `fake_runs`: 1 loss chart, 2 NIAH heat maps, 1 ppl chart,
/// entropy + sparsity for both runs and needle mass for run-a only.
pub const EXPECTED_FIGURES: usize = 1 + 2 + 1 + (3 + 2);

/// Two runs: `run-a` (softmax + rope, two length stages, needle mass measured, summary.json)
/// and `run-b` (linear attention, one stage, no needle mass). Neither has state.json.
pub fn fake_runs(root: &Path) -> Vec<PathBuf> {
    vec![
        fake_run(root, "run-a", "softmax", "rope", true),
        fake_run(root, "run-b", "linear", "none", false),
    ]
}

fn fake_run(root: &Path, name: &str, mixer: &str, position: &str, needle: bool) -> PathBuf {
    let dir = root.join(name);
    fs::create_dir_all(dir.join("eval")).unwrap();
    fs::write(
        dir.join("config.toml"),
        format!(
            "[run]\nname = \"{name}\"\nseed = 7\ndevice = \"cpu\"\n\n\
             [model]\nd_model = 64\nn_layers = 2\nn_heads = 4\n\
             mixer = {{ kind = \"{mixer}\" }}\nposition = {{ kind = \"{position}\" }}\n\n\
             [task]\nkind = \"mqar\"\n\n[train]\nlr = 0.001\n\n[eval]\n"
        ),
    )
    .unwrap();

    let mut metrics = String::new();
    for step in 0..200u32 {
        let (stage, len) = if needle && step >= 120 {
            (1, 512)
        } else {
            (0, 256)
        };
        let loss = 4.0 * (-(step as f64) / 60.0).exp() + 1.0;
        metrics.push_str(&format!(
            "{{\"step\":{step},\"stage\":{stage},\"seq_len\":{len},\"loss\":{loss},\"lr\":0.001,\"grad_norm\":1.0,\"tokens_per_s\":1000.0}}\n"
        ));
        if step % 50 == 49 {
            metrics.push_str(&format!(
                "{{\"kind\":\"eval\",\"step\":{step},\"seq_len\":{len},\"loss\":{},\"accuracy\":0.5}}\n",
                loss + 0.1
            ));
        }
    }
    fs::write(dir.join("metrics.jsonl"), metrics).unwrap();
    if needle {
        fs::create_dir_all(dir.join("model")).unwrap();
        fs::write(dir.join("model/summary.json"), "{\"params\": 1234567}").unwrap();
    }

    let lengths = vec![256, 512, 1024];
    let depths = vec![0.0, 0.5, 1.0];
    NiahResult {
        run: name.into(),
        variant: "passkey".into(),
        samples: 10,
        accuracy: depths
            .iter()
            .map(|d| {
                lengths
                    .iter()
                    .map(|&l| (1.0 - d * 0.2) * 256.0 / l as f64)
                    .collect()
            })
            .collect(),
        lengths: lengths.clone(),
        depths,
        train_len: Some(512),
    }
    .write_json(&dir.join("eval/niah.json"))
    .unwrap();

    MqarResult {
        run: name.into(),
        rows: [128, 256]
            .iter()
            .flat_map(|&l| {
                [4, 8, 16].map(|kv| MqarRow {
                    seq_len: l,
                    num_kv_pairs: kv,
                    accuracy: 1.0 / kv as f64,
                    samples: 32,
                })
            })
            .collect(),
        train_len: Some(128),
        scaling: "none".into(),
    }
    .write_json(&dir.join("eval/mqar.json"))
    .unwrap();

    PplResult {
        run: name.into(),
        scaling: "none".into(),
        rows: lengths
            .iter()
            .map(|&l| {
                let loss = 2.0 + (l as f64 / 512.0).ln().max(0.0);
                PplRow {
                    seq_len: l,
                    loss,
                    ppl: loss.exp(),
                    tokens: 1000,
                }
            })
            .collect(),
        train_len: Some(512),
    }
    .write_json(&dir.join("eval/ppl.json"))
    .unwrap();

    let mut rows = Vec::new();
    for layer in 0..2 {
        for head in 0..2 {
            for &l in &lengths {
                rows.push(AttentionRow {
                    layer,
                    head,
                    seq_len: l,
                    entropy: ((l as f64 + 1.0) / 2.0).ln() * 0.5,
                    sparsity: 0.3 + 0.1 * layer as f64,
                    needle_mass: needle.then_some(0.5 / (1 + head) as f64),
                    uniform_entropy: ((l as f64 + 1.0) / 2.0).ln(),
                });
            }
        }
    }
    AttentionResult {
        run: name.into(),
        mixer: mixer.into(),
        rows,
    }
    .write_json(&dir.join("eval/attention.json"))
    .unwrap();
    dir
}

/// Number of non-overlapping occurrences of `needle` in `hay`.
pub fn count(hay: &str, needle: &str) -> usize {
    hay.matches(needle).count()
}
