//! A saved run is self-contained: loading it maps text to ids with the run's own tokenizer.json,
//! never with a tokenizer trained again from `task.path` — so editing or deleting the text file
//! cannot hand the same weights other ids — and a run without its tokenizer.json is refused,
//! naming the file.

use std::fs;
use std::path::{Path, PathBuf};

use burn::prelude::*;
use zoo_data::tokenizer::ZooTokenizer;
use zoo_eval::{EvalOptions, load_run, run_tokenizer};
use zoo_train::config;
use zoo_train::{Silent, TrainOptions, train};

fn corpus(words: &[&str], lines: usize) -> String {
    (0..lines)
        .map(|i| {
            format!(
                "{} {} {} number {}.\n",
                words[i % words.len()],
                words[(i * 7 + 3) % words.len()],
                words[(i * 5 + 1) % words.len()],
                i * 37 % 1000
            )
        })
        .collect()
}

fn options() -> EvalOptions {
    EvalOptions {
        device: Device::flex(),
        batch_size: 2,
        seed: 0,
        progress: false,
        base_dir: PathBuf::from("."),
    }
}

#[test]
fn a_run_keeps_its_own_tokenizer() {
    let root = tempfile::tempdir().unwrap();
    let text: PathBuf = root.path().join("corpus.txt");
    fs::write(
        &text,
        corpus(
            &[
                "the", "quick", "brown", "fox", "jumps", "over", "lazy", "dogs",
            ],
            400,
        ),
    )
    .unwrap();
    let toml = format!(
        r#"
[run]
name = "text-run"
[model]
d_model = 16
n_layers = 1
n_heads = 2
[task]
kind = "text"
path = "{}"
vocab_size = 120
[train]
batch_size = 2
warmup_steps = 1
eval_batches = 1
[[train.stages]]
seq_len = 32
steps = 2
"#,
        text.display()
    );
    let cfg = config::parse(&toml, "test", &[]).unwrap();
    let run_dir = root.path().join("run");
    let opts = TrainOptions {
        run_dir: run_dir.clone(),
        device: Device::flex(),
        resume: false,
        overwrite: false,
        base_dir: PathBuf::from("."),
    };
    train(cfg, &opts, &mut Silent).expect("the text run trains");
    let saved = ZooTokenizer::from_file(run_dir.join("tokenizer.json")).unwrap();
    let probe = "the lazy fox jumps over number 417 of the brown dogs";
    let saved_ids = saved.encode(probe);

    // Another corpus at the same path would train another tokenizer…
    let other = corpus(
        &[
            "zebra", "quartz", "waltz", "jinx", "vexed", "nymph", "fjord", "glyph",
        ],
        400,
    );
    fs::write(&text, &other).unwrap();
    let retrained = ZooTokenizer::train_bpe(std::slice::from_ref(&other), 120).unwrap();
    assert_ne!(
        retrained.encode(probe),
        saved_ids,
        "the probe cannot tell the two tokenizers apart"
    );
    // …but loading the run keeps the ids it was trained with.
    let run = load_run(&run_dir, &options(), |_| {}).expect("the run loads");
    assert_eq!(run.task.tokenizer().unwrap().encode(probe), saved_ids);
    assert_eq!(
        run_tokenizer(&run_dir, &run.config)
            .unwrap()
            .unwrap()
            .encode(probe),
        saved_ids
    );

    // Without tokenizer.json the run is refused, naming the file.
    fs::remove_file(run_dir.join("tokenizer.json")).unwrap();
    let err = load_run(&run_dir, &options(), |_| {})
        .err()
        .expect("a run without its tokenizer is refused");
    let msg = format!("{err:#}");
    assert!(
        msg.contains(&path_str(&run_dir.join("tokenizer.json"))),
        "{msg}"
    );
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}
