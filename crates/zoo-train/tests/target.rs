//! Training to a target accuracy and the run summary: `train.stop_at_accuracy` ends the run at
//! the first in-training evaluation that reaches it at every evaluation length (and nowhere
//! else), `summary.json` agrees with metrics.jsonl and the model, and resuming a stopped or
//! killed run gives the same summary as the uninterrupted one.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use burn::prelude::*;
use common::{copy_dir, opts, snapshot};
use serde_json::Value;
use zoo_model::{checkpoint, manifest};
use zoo_train::config::RunConfig;
use zoo_train::summary::{RunSummary, SUMMARY_FILE};
use zoo_train::{Silent, TrainSummary, train};

/// Copy of 3 tokens after a delay, trained on lengths 8 and 12 mixed and evaluated at both: a
/// 2-layer model copies perfectly at both lengths after about a hundred steps (0.2 s on flex),
/// while 300 steps are planned. Gradient accumulation and mixed lengths make the token count a
/// sum of unequal steps.
const TOML: &str = r#"
[run]
name = "target-test"
seed = 1

[model]
d_model = 32
n_layers = 2
n_heads = 2
mlp_ratio = 2.0
mixer = { kind = "softmax" }
position = { kind = "rope" }

[task]
kind = "copy"
vocab = 8
copy_len = 3

[train]
batch_size = 16
lr = 1e-2
warmup_steps = 5
grad_accum = 2
mixed_lengths = true
log_every = 1
eval_every = 10
eval_batches = 2
checkpoint_every = 50

[[train.stages]]
seq_len = 8
steps = 100

[[train.stages]]
seq_len = 12
steps = 200

[eval]
lengths = [8, 12]
batch_size = 16
"#;

const LENGTHS: [u64; 2] = [8, 12];

fn cfg(overrides: &[&str]) -> RunConfig {
    common::parse(TOML, overrides)
}

fn metrics(run_dir: &Path) -> Vec<Value> {
    fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn is_eval(line: &Value) -> bool {
    line["kind"] == "eval"
}

/// Per evaluation step, the accuracy at each length, in step order.
fn evals_by_step(lines: &[Value]) -> BTreeMap<u64, BTreeMap<u64, f64>> {
    let mut by_step: BTreeMap<u64, BTreeMap<u64, f64>> = BTreeMap::new();
    for l in lines.iter().filter(|l| is_eval(l)) {
        by_step
            .entry(l["step"].as_u64().unwrap())
            .or_default()
            .insert(
                l["seq_len"].as_u64().unwrap(),
                l["accuracy"].as_f64().unwrap(),
            );
    }
    by_step
}

/// The first evaluation step whose accuracy is ≥ `target` at both lengths, read off the log.
fn first_step_reaching(lines: &[Value], target: f64) -> Option<u64> {
    evals_by_step(lines).into_iter().find_map(|(step, acc)| {
        LENGTHS
            .iter()
            .all(|len| acc.get(len).is_some_and(|&a| a >= target))
            .then_some(step)
    })
}

/// A summary with its wall-clock figures zeroed (everything else is a pure function of the
/// config and the seeded run).
fn without_time(mut s: RunSummary) -> RunSummary {
    s.wall_seconds = 0.0;
    if let Some(t) = &mut s.to_target {
        t.seconds = 0.0;
    }
    s
}

/// Whether two floats are equal up to the last bits: metrics.jsonl and summary.json hold
/// shortest round-trip decimals, which serde_json's default parser may read one ulp off.
fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-12 * a.abs().max(b.abs())
}

/// JSON values equal up to [`close`] floats.
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            close(x.as_f64().unwrap(), y.as_f64().unwrap())
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

/// A summary read back from summary.json against the one in memory.
fn assert_same_summary(read: &RunSummary, written: &RunSummary) {
    let (a, b) = (
        serde_json::to_value(read).unwrap(),
        serde_json::to_value(written).unwrap(),
    );
    assert!(same_json(&a, &b), "read back:\n{a:#}\nwritten:\n{b:#}");
}

/// A metrics line without its wall-clock fields.
fn without_timing(line: &Value) -> Value {
    let mut line = line.clone();
    if let Some(map) = line.as_object_mut() {
        map.remove("tokens_per_s");
        map.remove("elapsed_s");
    }
    line
}

/// Checks everything a stopped run must hold; returns the stop step.
fn check_stopped_run(run_dir: &Path, result: &TrainSummary, target: f64) -> usize {
    let lines = metrics(run_dir);
    let stop = result.stopped_at.expect("the target stops the run");
    let summary = &result.summary;
    assert!(stop < 300, "stopped at the last planned step {stop}");
    assert_eq!(result.steps, stop);
    assert_eq!(summary.steps, stop);
    assert_eq!(summary.planned_steps, 300);
    assert_eq!(summary.target_accuracy, Some(target));
    // The stop is the first evaluation in the log that reaches the target at both lengths.
    assert_eq!(first_step_reaching(&lines, target), Some(stop as u64));
    let to_target = summary.to_target.as_ref().expect("to_target is set");
    assert_eq!(to_target.steps, stop);
    // Nothing after it: no training, and its evaluation was the final one (not repeated).
    assert!(
        lines
            .iter()
            .all(|l| l["step"].as_u64().unwrap() <= stop as u64)
    );
    let at_stop: Vec<&Value> = lines
        .iter()
        .filter(|l| is_eval(l) && l["step"] == stop)
        .collect();
    assert_eq!(at_stop.len(), LENGTHS.len(), "evaluations at the stop step");
    assert_eq!(result.evals.len(), LENGTHS.len());
    for (e, l) in result.evals.iter().zip(&at_stop) {
        assert_eq!(e.seq_len as u64, l["seq_len"].as_u64().unwrap());
        assert!(close(e.accuracy, l["accuracy"].as_f64().unwrap()));
        assert!(e.accuracy >= target);
    }
    // The stop step is checkpointed and the model exported, checksums and all.
    assert!(
        run_dir
            .join(format!("checkpoints/step-{stop}/state.json"))
            .is_file()
    );
    manifest::verify_manifest(&run_dir.join("model")).expect("model/ verifies");
    assert_same_summary(
        &RunSummary::read(run_dir).expect("summary.json reads back"),
        summary,
    );
    stop
}

#[test]
fn a_reachable_target_stops_at_the_first_evaluation_reaching_it() {
    let root = scratch("reach");
    let dir = root.join("run");
    let result = train(
        cfg(&["train.stop_at_accuracy=0.99"]),
        &opts(&dir, false),
        &mut Silent,
    )
    .expect("the run trains");
    let stop = check_stopped_run(&dir, &result, 0.99);
    let s = &result.summary;
    let lines = metrics(&dir);

    // Tokens: every step is logged (log_every = 1), each with its own length and batch size.
    let steps: Vec<&Value> = lines.iter().filter(|l| !is_eval(l)).collect();
    assert_eq!(steps.len(), stop, "one training line per step");
    let tokens: u64 = steps
        .iter()
        .map(|l| l["batch_size"].as_u64().unwrap() * l["seq_len"].as_u64().unwrap() * 2)
        .sum();
    let lengths_used: std::collections::BTreeSet<u64> = steps
        .iter()
        .map(|l| l["seq_len"].as_u64().unwrap())
        .collect();
    assert_eq!(lengths_used.len(), 2, "mixed lengths use both stages");
    assert_eq!(s.tokens, tokens);
    assert_eq!(s.to_target.as_ref().unwrap().tokens, tokens);

    // Accuracy per length: best is the maximum of the log (at its first step), last the last.
    assert_eq!(s.accuracy.len(), 2);
    for (entry, len) in s.accuracy.iter().zip(LENGTHS) {
        assert_eq!(entry.seq_len as u64, len);
        let at_len: Vec<&Value> = lines
            .iter()
            .filter(|l| is_eval(l) && l["seq_len"] == len)
            .collect();
        let max = at_len
            .iter()
            .map(|l| l["accuracy"].as_f64().unwrap())
            .fold(f64::MIN, f64::max);
        assert!(close(entry.best, max));
        let first_best = at_len
            .iter()
            .find(|l| l["accuracy"].as_f64().unwrap() == max)
            .unwrap();
        assert_eq!(entry.best_step as u64, first_best["step"].as_u64().unwrap());
        let last = at_len.last().unwrap();
        assert!(close(entry.last, last["accuracy"].as_f64().unwrap()));
        assert!(close(entry.last_loss, last["loss"].as_f64().unwrap()));
        assert!(entry.best >= entry.last);
    }
    // The model figures: parameters, and the decoding state at the final training length.
    let model = checkpoint::load(&dir.join("model"), &Device::flex()).unwrap();
    assert_eq!(s.num_params, model.num_params());
    assert_eq!(s.state_seq_len, 12);
    let bytes: usize = model.state_size_bytes(12).iter().map(|l| l.bytes).sum();
    assert_eq!(s.state_bits, 8 * bytes as u64);
    assert!(s.state_bits > 0);
    assert_eq!(
        s.config_digest,
        manifest::sha256_file(&dir.join("config.toml")).unwrap()
    );
    assert_eq!(s.mixers, vec!["softmax", "softmax"]);
    assert_eq!(s.position, "rope");
    let last_step = steps.last().unwrap();
    assert!(close(s.final_loss, last_step["loss"].as_f64().unwrap()));
    // Time: cumulative, so the target's seconds are within the run's.
    let t = s.to_target.as_ref().unwrap();
    assert!(t.seconds > 0.0 && t.seconds <= s.wall_seconds, "{s:?}");
    let logged: Vec<f64> = lines
        .iter()
        .map(|l| l["elapsed_s"].as_f64().unwrap())
        .collect();
    assert!(
        logged.windows(2).all(|w| w[0] <= w[1]),
        "elapsed_s decreases"
    );
    fs::remove_dir_all(&root).unwrap();
}

#[test]
fn an_unreachable_target_trains_every_step() {
    let root = scratch("unreachable");
    let dir = root.join("run");
    // 40 steps cannot copy perfectly at both lengths (measured: below 0.9 at length 12).
    let result = train(
        cfg(&[
            "train.stop_at_accuracy=1.0",
            "train.stages.0.steps=20",
            "train.stages.1.steps=20",
        ]),
        &opts(&dir, false),
        &mut Silent,
    )
    .expect("the run trains");
    assert_eq!(result.stopped_at, None);
    assert_eq!(result.steps, 40);
    let s = RunSummary::read(&dir).unwrap();
    assert_eq!((s.steps, s.planned_steps), (40, 40));
    assert_eq!(s.to_target, None);
    assert_eq!(s.target_accuracy, Some(1.0));
    assert_eq!(first_step_reaching(&metrics(&dir), 1.0), None);
    assert!(dir.join("checkpoints/step-40/state.json").is_file());
    // Every evaluation step ran, the last at the final step.
    let steps: Vec<u64> = evals_by_step(&metrics(&dir)).into_keys().collect();
    assert_eq!(steps, [10, 20, 30, 40]);
    fs::remove_dir_all(&root).unwrap();
}

#[test]
fn no_target_means_no_stop_and_a_null_to_target() {
    let root = scratch("none");
    let dir = root.join("run");
    let result = train(
        cfg(&["train.stages.0.steps=10", "train.stages.1.steps=10"]),
        &opts(&dir, false),
        &mut Silent,
    )
    .unwrap();
    assert_eq!(result.stopped_at, None);
    let s = RunSummary::read(&dir).unwrap();
    assert_eq!((s.target_accuracy, &s.to_target), (None, &None));
    assert!(dir.join(SUMMARY_FILE).is_file());
    fs::remove_dir_all(&root).unwrap();
}

#[test]
fn a_stopped_run_resumes_as_finished_and_a_killed_one_stops_at_the_same_step() {
    let root = scratch("resume");
    let a = root.join("a");
    let config = || cfg(&["train.stop_at_accuracy=0.99"]);
    let first = train(config(), &opts(&a, false), &mut Silent).expect("A trains");
    let stop = check_stopped_run(&a, &first, 0.99);
    assert!(
        stop > 50,
        "the test needs a checkpoint before the stop (stopped at {stop})"
    );

    // A stopped run is finished: resuming it trains nothing and writes nothing.
    let before = snapshot(&a);
    let again = train(config(), &opts(&a, true), &mut Silent).expect("A resumes");
    assert!(again.already_finished);
    assert_eq!(again.stopped_at, Some(stop));
    assert_same_summary(&again.summary, &first.summary);
    assert!(
        snapshot(&a) == before,
        "resuming a stopped run changed files"
    );

    // B = A killed after its step-50 checkpoint: it trains on and stops at the same step with
    // the same weights and the same summary (wall time aside).
    let b = root.join("b");
    copy_dir(&a, &b);
    for entry in fs::read_dir(b.join("checkpoints")).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap() != "step-50" {
            fs::remove_dir_all(path).unwrap();
        }
    }
    fs::remove_dir_all(b.join("model")).unwrap();
    fs::remove_file(b.join(SUMMARY_FILE)).unwrap();
    let resumed = train(config(), &opts(&b, true), &mut Silent).expect("B resumes");
    assert!(!resumed.already_finished);
    let b_stop = check_stopped_run(&b, &resumed, 0.99);
    assert_eq!(b_stop, stop);
    assert_eq!(
        without_time(resumed.summary.clone()),
        without_time(first.summary.clone())
    );
    assert_eq!(
        metrics(&b).iter().map(without_timing).collect::<Vec<_>>(),
        metrics(&a).iter().map(without_timing).collect::<Vec<_>>()
    );
    assert!(
        fs::read(a.join("model/model.safetensors")).unwrap()
            == fs::read(b.join("model/model.safetensors")).unwrap()
    );

    // C = A killed after the stop's checkpoint, before the export: resuming exports the same
    // model and writes the same summary — wall time included, as it comes from the log — with
    // no evaluation repeated.
    let c = root.join("c");
    copy_dir(&a, &c);
    fs::remove_dir_all(c.join("model")).unwrap();
    fs::remove_file(c.join(SUMMARY_FILE)).unwrap();
    let finished = train(config(), &opts(&c, true), &mut Silent).expect("C resumes");
    assert!(!finished.already_finished);
    assert_eq!(finished.stopped_at, Some(stop));
    assert_eq!(finished.summary, first.summary);
    assert_eq!(finished.evals, first.evals);
    assert_eq!(
        fs::read(c.join("metrics.jsonl")).unwrap(),
        fs::read(a.join("metrics.jsonl")).unwrap()
    );
    assert!(
        fs::read(a.join("model/model.safetensors")).unwrap()
            == fs::read(c.join("model/model.safetensors")).unwrap()
    );
    fs::remove_dir_all(&root).unwrap();
}

fn scratch(name: &str) -> PathBuf {
    common::scratch("target", name)
}
