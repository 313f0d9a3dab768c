//! Resuming a killed run reproduces the uninterrupted run exactly (bitwise on flex): the same
//! metrics lines, the same final weights. Plus the two ways a run stops early: resuming a
//! directory without checkpoints, and a loss that turns NaN.

use std::fs;
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
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
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    config::parse(TOML, "test", &overrides).expect("the test config is valid")
}

/// A fresh, empty directory under Cargo's per-target scratch folder.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("resume-{name}-{}", std::process::id()));
    if dir.exists() {
        fs::remove_dir_all(&dir).unwrap();
    }
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn opts(run_dir: &Path, resume: bool) -> TrainOptions {
    TrainOptions {
        run_dir: run_dir.to_path_buf(),
        device: Device::flex(),
        resume,
        base_dir: PathBuf::from("."),
    }
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn step_of(line: &str) -> Option<u64> {
    serde_json::from_str::<serde_json::Value>(line)
        .ok()?
        .get("step")?
        .as_u64()
}

/// A metrics line without its wall-clock field (`tokens_per_s` is a timing, not a result);
/// everything else stays as written, so equal strings mean bitwise-equal losses, lrs and norms.
fn without_timing(line: &str) -> String {
    match line.find(",\"tokens_per_s\":") {
        Some(i) => {
            let end = line[i..].find('}').map(|j| i + j).expect("a JSON object");
            format!("{}{}", &line[..i], &line[end..])
        }
        None => line.to_string(),
    }
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
    fs::write(b.join("metrics.jsonl"), cut).unwrap();

    let resumed = train(cfg(&[]), &opts(&b, true), &mut Silent).expect("run B resumes");
    assert_eq!(resumed.steps, 12);
    assert_eq!(
        resumed.final_loss.to_bits(),
        summary.final_loss.to_bits(),
        "final loss differs"
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
