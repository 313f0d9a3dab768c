//! Resuming a killed run reproduces the uninterrupted run exactly (bitwise on flex): the same
//! metrics lines, the same final weights. Plus the two ways a run stops early: resuming a
//! directory without checkpoints, and a loss that turns NaN.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use common::{copy_dir, opts, snapshot};
use zoo_model::{Lm, checkpoint};
use zoo_train::config::{self, RunConfig};
use zoo_train::{Silent, TrainOptions, train};

const TOML: &str = r#"
[run]
name = "resume-test"
seed = 3

[model]
d_model = 32
n_layers = 2
n_heads = 2
mixer = { kind = "softmax" }
position = { kind = "rope" }

[task]
kind = "mqar"
vocab = 64
num_kv_pairs = 4

[train]
batch_size = 8
lr = 3e-3
warmup_steps = 2
log_every = 1
eval_batches = 1
checkpoint_every = 4

[[train.stages]]
seq_len = 32
steps = 6

[[train.stages]]
seq_len = 48
steps = 6
"#;

/// Counts (non-finite, all) parameter values.
struct NonFinite(usize, usize);

impl ModuleVisitor for NonFinite {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let v = param.val().into_data().try_into_vec_as::<f32>().unwrap();
        self.0 += v.iter().filter(|x| !x.is_finite()).count();
        self.1 += v.len();
    }
}

fn cfg(overrides: &[&str]) -> RunConfig {
    common::parse(TOML, overrides)
}

fn step_of(line: &str) -> Option<u64> {
    serde_json::from_str::<serde_json::Value>(line)
        .ok()?
        .get("step")?
        .as_u64()
}

/// A metrics line without its wall-clock fields (`tokens_per_s` and `elapsed_s` are timings,
/// not results); everything else stays as written, so equal strings mean bitwise-equal losses,
/// lrs and norms.
fn without_timing(line: &str) -> String {
    let mut line = line.to_string();
    for field in [",\"tokens_per_s\":", ",\"elapsed_s\":"] {
        if let Some(i) = line.find(field) {
            let rest = &line[i + field.len()..];
            let end = rest.find([',', '}']).expect("a JSON object");
            line = format!("{}{}", &line[..i], &rest[end..]);
        }
    }
    line
}

fn logits_of(model_dir: &Path) -> Vec<f32> {
    let device = Device::flex();
    let model = checkpoint::load(model_dir, &device).expect("final model loads");
    let ids: Vec<i64> = (0..2 * 40).map(|i| (i * 7 % 64) as i64).collect();
    let tokens = Tensor::<2, Int>::from_data(TensorData::new(ids, [2, 40]), &device);
    model
        .forward(tokens)
        .into_data()
        .try_into_vec_as::<f32>()
        .unwrap()
}

#[test]
fn resumed_run_matches_the_uninterrupted_run_bitwise() {
    let root = scratch("bitwise");
    let a = root.join("a");
    let b = root.join("b");

    let summary = train(cfg(&[]), &opts(&a, false), &mut Silent).expect("run A trains");
    assert_eq!(summary.steps, 12);
    for step in [4, 8, 12] {
        assert!(
            a.join(format!("checkpoints/step-{step}/state.json"))
                .exists(),
            "A has no checkpoint {step}"
        );
    }
    let a_metrics = fs::read_to_string(a.join("metrics.jsonl")).unwrap();
    let a_lines: Vec<&str> = a_metrics.lines().collect();
    // 12 training lines (log_every = 1) and one eval line at the end.
    assert_eq!(a_lines.len(), 13, "A's metrics:\n{a_metrics}");
    assert_eq!(
        a_lines
            .iter()
            .filter(|l| l.contains("\"kind\":\"eval\""))
            .count(),
        1
    );

    // B = A killed just after the step-4 checkpoint: later checkpoints and the final model are
    // gone, and metrics.jsonl holds lines up to step 4 plus lines from steps after the checkpoint
    // (one complete, one cut off mid-write) that the resumed run must drop.
    copy_dir(&a, &b);
    fs::remove_dir_all(b.join("checkpoints/step-8")).unwrap();
    fs::remove_dir_all(b.join("checkpoints/step-12")).unwrap();
    fs::remove_dir_all(b.join("model")).unwrap();
    let mut cut: String = a_lines
        .iter()
        .filter(|l| step_of(l).unwrap() <= 4)
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(cut.lines().count(), 4);
    let later = a_lines.iter().find(|l| step_of(l) == Some(7)).unwrap();
    cut.push_str(&later.replace("\"loss\":", "\"loss\":1"));
    cut.push('\n');
    cut.push_str(&later[..later.len() / 2]); // a partial line, no newline
    let mut bytes = cut.into_bytes();
    // Bytes that are not UTF-8 (a disk that returned garbage), then a valid-looking early line
    // that must not be kept either: everything after the first bad line goes.
    bytes.extend_from_slice(b"\n\xff\xfe\x00garbage\n");
    bytes.extend_from_slice(a_lines[0].as_bytes());
    bytes.push(b'\n');
    fs::write(b.join("metrics.jsonl"), bytes).unwrap();

    let resumed = train(cfg(&[]), &opts(&b, true), &mut Silent).expect("run B resumes");
    assert_eq!(resumed.steps, 12);
    assert_eq!(
        resumed.final_loss.to_bits(),
        summary.final_loss.to_bits(),
        "final loss differs"
    );
    // The same summary.json, wall time aside (tokens, accuracies, digest, state size …).
    let untimed = |mut s: zoo_train::summary::RunSummary| {
        assert!(s.wall_seconds > 0.0);
        s.wall_seconds = 0.0;
        s
    };
    assert_eq!(
        untimed(resumed.summary.clone()),
        untimed(summary.summary.clone())
    );

    let b_metrics = fs::read_to_string(b.join("metrics.jsonl")).unwrap();
    let b_lines: Vec<&str> = b_metrics.lines().collect();
    assert_eq!(
        b_lines.len(),
        a_lines.len(),
        "resumed metrics have {} lines, uninterrupted {}:\n--- A\n{a_metrics}--- B\n{b_metrics}",
        b_lines.len(),
        a_lines.len()
    );
    for (i, (la, lb)) in a_lines.iter().zip(&b_lines).enumerate() {
        assert_eq!(
            without_timing(la),
            without_timing(lb),
            "metrics line {} differs",
            i + 1
        );
    }
    for step in [4, 8, 12] {
        assert!(
            b.join(format!("checkpoints/step-{step}/state.json"))
                .exists(),
            "B has no checkpoint {step}"
        );
    }

    // Identical weights give an identical file, byte for byte (and so identical checksums).
    let weights = |d: &Path| fs::read(d.join("model/model.safetensors")).unwrap();
    assert!(
        weights(&a) == weights(&b),
        "model.safetensors differs between A and B"
    );
    assert_eq!(
        fs::read_to_string(a.join("model/SHA256SUMS")).unwrap(),
        fs::read_to_string(b.join("model/SHA256SUMS")).unwrap()
    );

    let (la, lb) = (logits_of(&a.join("model")), logits_of(&b.join("model")));
    assert_eq!(la.len(), 2 * 40 * 64);
    let differing = la
        .iter()
        .zip(&lb)
        .filter(|(x, y)| x.to_bits() != y.to_bits())
        .count();
    assert_eq!(
        differing,
        0,
        "{differing} of {} final logits differ between A and resumed B",
        la.len()
    );

    fs::remove_dir_all(&root).unwrap();
}

#[test]
fn resume_finishes_an_unexported_run_once_and_then_says_it_is_finished() {
    let root = scratch("finish");
    let a = root.join("a");
    let b = root.join("b");
    let summary = train(cfg(&[]), &opts(&a, false), &mut Silent).expect("run A trains");
    assert!(!summary.already_finished);

    // B = A killed after its last checkpoint, before the final evaluation and the export.
    copy_dir(&a, &b);
    fs::remove_dir_all(b.join("model")).unwrap();
    let a_metrics = fs::read_to_string(a.join("metrics.jsonl")).unwrap();
    let without_eval: String = a_metrics
        .lines()
        .filter(|l| !l.contains("\"kind\":\"eval\""))
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(b.join("metrics.jsonl"), &without_eval).unwrap();
    let resumed = train(cfg(&[]), &opts(&b, true), &mut Silent).expect("B completes");
    assert!(!resumed.already_finished);
    assert_eq!(resumed.final_loss.to_bits(), summary.final_loss.to_bits());
    let b_metrics = fs::read_to_string(b.join("metrics.jsonl")).unwrap();
    assert_eq!(
        b_metrics.lines().map(without_timing).collect::<Vec<_>>(),
        a_metrics.lines().map(without_timing).collect::<Vec<_>>()
    );
    assert!(
        fs::read(a.join("model/model.safetensors")).unwrap()
            == fs::read(b.join("model/model.safetensors")).unwrap()
    );

    // C = A killed after the final evaluation, before the export: the eval lines stay once.
    let c = root.join("c");
    copy_dir(&a, &c);
    fs::remove_dir_all(c.join("model")).unwrap();
    let resumed = train(cfg(&[]), &opts(&c, true), &mut Silent).expect("C completes");
    assert_eq!(resumed.final_loss.to_bits(), summary.final_loss.to_bits());
    assert_eq!(resumed.evals, summary.evals);
    assert_eq!(
        fs::read_to_string(c.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(without_timing)
            .collect::<Vec<_>>(),
        a_metrics.lines().map(without_timing).collect::<Vec<_>>()
    );

    // A finished run says so and changes nothing.
    let before = snapshot(&a);
    let again = train(cfg(&[]), &opts(&a, true), &mut Silent).expect("A resumes as finished");
    assert!(again.already_finished);
    assert_eq!(again.final_loss.to_bits(), summary.final_loss.to_bits());
    assert!(
        snapshot(&a) == before,
        "resuming a finished run changed files"
    );
    fs::remove_dir_all(&root).unwrap();
}

#[test]
fn corrupted_checkpoint_names_the_file_and_the_last_good_checkpoint() {
    let root = scratch("corrupt");
    let a = root.join("a");
    train(cfg(&[]), &opts(&a, false), &mut Silent).expect("run A trains");
    fs::remove_dir_all(a.join("model")).unwrap();
    // Flip one byte in the middle of the newest checkpoint's weights.
    let newest = a.join("checkpoints/step-12");
    let weights = fs::read_dir(&newest)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("model")
        })
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .expect("a model file in the checkpoint");
    let mut bytes = fs::read(&weights).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    fs::write(&weights, bytes).unwrap();
    let before = snapshot(&a);
    let err = train(cfg(&[]), &opts(&a, true), &mut Silent).expect_err("corruption is refused");
    let msg = format!("{err:#}");
    assert!(msg.contains(&weights.display().to_string()), "{msg}");
    assert!(msg.contains("corrupted"), "{msg}");
    assert!(
        msg.contains(&a.join("checkpoints/step-8").display().to_string()),
        "{msg}"
    );
    assert!(!msg.contains('\n'));
    assert!(snapshot(&a) == before, "a refused resume changed files");
    fs::remove_dir_all(&root).unwrap();
}

#[test]
fn overwrite_replaces_only_runs_and_a_failed_start_keeps_the_old_run() {
    let root = scratch("overwrite");
    let a = root.join("a");
    train(
        cfg(&["train.stages.1.steps=1"]),
        &opts(&a, false),
        &mut Silent,
    )
    .unwrap();
    let before = snapshot(&a);
    let replace = TrainOptions {
        overwrite: true,
        ..opts(&a, false)
    };
    // A start that fails (a needle task whose haystack file is missing) loses nothing.
    let bad = config::parse(
        &TOML.replace(
            "kind = \"mqar\"\nvocab = 64\nnum_kv_pairs = 4",
            "kind = \"needle\"\nhaystack = \"/nonexistent/haystack.txt\"",
        ),
        "test",
        &[
            "train.stages.0.seq_len=256".into(),
            "train.stages.1.seq_len=256".into(),
        ],
    )
    .expect("the needle config parses");
    assert!(train(bad, &replace, &mut Silent).is_err());
    assert!(snapshot(&a) == before, "a failed start changed the old run");
    let leftovers: Vec<_> = fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, vec![std::ffi::OsString::from("a")]);
    // Without --overwrite an existing run is refused; with it, the run is replaced.
    assert!(train(cfg(&[]), &opts(&a, false), &mut Silent).is_err());
    let summary = train(cfg(&[]), &replace, &mut Silent).expect("the run is replaced");
    assert_eq!(summary.steps, 12);
    // A folder that is not a run is never replaced.
    let other = root.join("notes");
    fs::create_dir_all(&other).unwrap();
    fs::write(other.join("thesis.tex"), "irreplaceable").unwrap();
    assert!(train(cfg(&[]), &opts(&other, false), &mut Silent).is_err());
    let err = train(
        cfg(&[]),
        &TrainOptions {
            overwrite: true,
            ..opts(&other, false)
        },
        &mut Silent,
    )
    .expect_err("a folder that is not a run is not replaced");
    assert!(format!("{err:#}").contains("holds no run"), "{err:#}");
    assert_eq!(
        fs::read_to_string(other.join("thesis.tex")).unwrap(),
        "irreplaceable"
    );
    fs::remove_dir_all(&root).unwrap();
}

#[test]
fn resume_without_checkpoint_names_the_directory() {
    let root = scratch("nockpt");
    let dir = root.join("never-trained");
    fs::create_dir_all(&dir).unwrap();
    let err = train(cfg(&[]), &opts(&dir, true), &mut Silent).expect_err("nothing to resume");
    let msg = format!("{err:#}");
    assert!(
        msg.contains(&dir.display().to_string()),
        "error does not name {}: {msg}",
        dir.display()
    );
    assert!(msg.contains("no checkpoint"), "{msg}");
    fs::remove_dir_all(&root).unwrap();
}

#[test]
fn nan_loss_stops_naming_the_step_and_keeps_the_last_checkpoint() {
    let root = scratch("nan");
    let dir = root.join("run");
    // Step 1 sees the initial weights (finite loss); its update with lr 1e30 blows the weights
    // up, so within a few steps the loss is no longer finite. Every step is checkpointed, so the
    // checkpoint of the step before the failing one must be named and kept.
    let config = cfg(&[
        "train.lr=1e30",
        "train.warmup_steps=0",
        "train.checkpoint_every=1",
    ]);
    let err = train(config, &opts(&dir, false), &mut Silent).expect_err("lr 1e30 must diverge");
    let msg = format!("{err:#}");
    assert!(
        msg.contains(" became NaN at step ") || msg.contains(" became inf at step "),
        "{msg}"
    );
    let step: usize = msg
        .split("at step ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("error does not name the step: {msg}"));
    assert!((2..=12).contains(&step), "diverged at step {step}: {msg}");
    let kept = dir.join(format!("checkpoints/step-{}", step - 1));
    assert!(
        msg.contains(&kept.display().to_string()),
        "error does not name the kept checkpoint {}: {msg}",
        kept.display()
    );
    assert!(
        kept.join("state.json").exists(),
        "checkpoint step-{} is gone",
        step - 1
    );
    assert!(
        !dir.join(format!("checkpoints/step-{step}")).exists(),
        "the diverged step was checkpointed"
    );
    assert!(
        !dir.join("model").exists(),
        "a diverged run wrote a final model"
    );
    // "Good" means it: the kept checkpoint holds finite weights only.
    let run_cfg =
        config::load(&dir.join("config.toml"), &[]).expect("the run's resolved config loads");
    let model = Lm::new(&run_cfg.model, &Device::flex().autodiff())
        .unwrap()
        .try_load_file(kept.join("model"))
        .expect("the kept checkpoint loads");
    let mut check = NonFinite(0, 0);
    model.visit(&mut check);
    assert!(check.1 > 0);
    assert_eq!(
        check.0,
        0,
        "the kept checkpoint step-{} has {} non-finite weights of {}",
        step - 1,
        check.0,
        check.1
    );
    // The metrics log ends at the last finite step.
    let metrics = fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), step - 1, "{metrics}");
    assert!(
        metrics
            .lines()
            .all(|l| !l.contains("NaN") && !l.contains("null")),
        "{metrics}"
    );
    fs::remove_dir_all(&root).unwrap();
}

fn scratch(name: &str) -> PathBuf {
    common::scratch("resume", name)
}
