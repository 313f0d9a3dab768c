//! The evaluation after training (`zoo_eval::evaluate_after_training`, what `zoo train` and
//! sweeps run): for an MQAR run, the state table and the MQAR grid at the default lengths of
//! `zoo_eval::grids`, on held-out draw 0 — the same numbers `zoo eval mqar` gives by default.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use zoo_eval::after_training::is_done;
use zoo_eval::grids::{self, Eval};
use zoo_eval::{EvalOptions, evaluate_after_training, load_run};
use zoo_train::config;
use zoo_train::seeds::HeldOut;
use zoo_train::{Silent, TrainOptions, train};

const TOML: &str = r#"
[run]
name = "after-training"
seed = 5
[model]
d_model = 16
n_layers = 1
n_heads = 2
[task]
kind = "mqar"
vocab = 64
num_kv_pairs = 4
[train]
batch_size = 4
warmup_steps = 1
eval_batches = 1
[[train.stages]]
seq_len = 48
steps = 3
[eval]
batch_size = 8
mqar = { samples = 8 }
"#;

fn options(draw: u64) -> EvalOptions {
    EvalOptions {
        device: Device::flex(),
        batch_size: 8,
        seed: draw,
        progress: false,
        base_dir: PathBuf::from("."),
    }
}

fn trained_run(root: &Path) -> PathBuf {
    let dir = root.join("run");
    let cfg = config::parse(TOML, "test", &[]).unwrap();
    let opts = TrainOptions {
        run_dir: dir.clone(),
        device: Device::flex(),
        resume: false,
        overwrite: false,
        base_dir: PathBuf::from("."),
    };
    train(cfg, &opts, &mut Silent).expect("the run trains");
    dir
}

#[test]
fn an_mqar_run_gets_the_state_table_and_the_mqar_grid_at_the_default_lengths() {
    let root = tempfile::tempdir().unwrap();
    let dir = trained_run(root.path());
    let cfg = config::load(&dir.join("config.toml"), &[]).unwrap();
    assert!(!is_done(&dir, &cfg));

    let done = evaluate_after_training(&dir, &Device::flex(), Path::new("."), false).unwrap();
    assert!(is_done(&dir, &cfg));
    assert!(done.niah.is_none());
    let mqar = done.mqar.expect("an MQAR run gets the MQAR grid");
    // [L/2, L, 2L] with L = 48 (MQAR with 4 pairs needs 16 tokens, so 24 stays).
    let lengths: Vec<usize> = mqar.rows.iter().map(|r| r.seq_len).collect();
    assert_eq!(lengths, vec![24, 48, 96]);
    assert!(
        mqar.rows
            .iter()
            .all(|r| r.num_kv_pairs == 4 && r.samples == 8)
    );
    let state_lengths: Vec<usize> = done.state.rows.iter().map(|r| r.seq_len).collect();
    assert!(state_lengths.contains(&24) && state_lengths.contains(&96));
    for f in ["state.json", "state.csv", "mqar.json", "mqar.csv"] {
        assert!(dir.join("eval").join(f).is_file(), "{f} missing");
    }

    // `zoo eval mqar` without flags: the same lengths, pairs and held-out draw, so the same
    // numbers.
    let run = load_run(&dir, &options(0), |_| {}).unwrap();
    let again = zoo_eval::mqar::run_mqar(
        &run,
        &grids::lengths(&run.config, Eval::Mqar, run.task.min_seq_len()),
        &grids::mqar_pairs(&run.config),
        8,
        &options(0),
    )
    .unwrap();
    assert_eq!(again.rows, mqar.rows);

    // Another draw (`--seed 1`) is another held-out sample set.
    let sample = |draw: u64| {
        let mut rng = run.held_out_rng(HeldOut::Mqar, &options(draw), 48, 4);
        run.task.sample(48, &mut rng).unwrap()
    };
    assert_eq!(sample(0), sample(0));
    assert_ne!(sample(0), sample(1));
}
