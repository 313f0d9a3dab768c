//! Helpers shared by the CLI test files: run the `zoo` binary, expect one `error:` line or a
//! success, and the tiny MQAR training run the tests build on.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

pub const WORKSPACE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

pub fn zoo(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_zoo"));
    cmd.args(args).current_dir(WORKSPACE);
    cmd
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("the zoo binary runs")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

pub fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 temp path")
}

/// Fails unless the command failed with exactly one stderr line `error: ...` and no panic text;
/// returns that line.
pub fn expect_error(cmd: &mut Command) -> String {
    let out = run(cmd);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        !out.status.success(),
        "{cmd:?} succeeded; stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    for bad in ["panicked", "RUST_BACKTRACE", "internal failure"] {
        assert!(
            !stderr.contains(bad) && !stdout.contains(bad),
            "{cmd:?}: panic text `{bad}` in output:\n{stderr}"
        );
    }
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "{cmd:?}: expected one stderr line, got:\n{stderr}"
    );
    assert!(
        lines[0].starts_with("error: "),
        "{cmd:?}: stderr line does not start with `error:`: {}",
        lines[0]
    );
    lines[0].to_string()
}

pub fn expect_success(cmd: &mut Command) -> String {
    let out = run(cmd);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}); stdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(!stderr.contains("panicked"), "{cmd:?}: {stderr}");
    stdout
}

/// Overrides that shrink configs/mqar/softmax.toml to a run of seconds with every output kind:
/// periodic logs, evals and checkpoints, two stages, and a small post-training MQAR grid.
pub const TINY: &[&str] = &[
    "model.d_model=32",
    "model.n_heads=2",
    "task.vocab=64",
    "task.num_kv_pairs=4",
    "train.batch_size=4",
    "train.warmup_steps=2",
    "train.stages=[{ seq_len = 32, steps = 6 }, { seq_len = 48, steps = 4 }]",
    "train.log_every=2",
    "train.eval_every=5",
    "train.eval_batches=1",
    "train.checkpoint_every=5",
    "eval.batch_size=4",
    "eval.mqar.lengths=[32, 64]",
    "eval.mqar.num_kv_pairs=[2, 4]",
    "eval.mqar.samples=4",
];

pub fn tiny_train(out: &Path, extra: &[&str]) -> Command {
    let mut args = vec!["train", "configs/mqar/softmax.toml", "--out", path(out)];
    for s in TINY {
        args.extend(["--set", s]);
    }
    args.extend(extra);
    zoo(&args)
}

pub fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect()
}

pub fn assert_files(dir: &Path, names: &[&str]) {
    for name in names {
        let p = dir.join(name);
        let len = fs::metadata(&p)
            .unwrap_or_else(|_| panic!("{} is missing", p.display()))
            .len();
        assert!(len > 0, "{} is empty", p.display());
    }
}

/// Every entry under `root`: regular files by content, other kinds by what they are (reading a
/// FIFO would block, /dev/zero would never end).
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let p = entry.path();
            let kind = entry.file_type().unwrap();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            if kind.is_dir() {
                out.insert(rel, "dir".into());
                stack.push(p);
            } else if kind.is_file() {
                let bytes = fs::read(&p).unwrap();
                out.insert(
                    rel,
                    format!("{} bytes, {:016x}", bytes.len(), fnv1a(&bytes)),
                );
            } else if kind.is_fifo() {
                out.insert(rel, "fifo".into());
            } else {
                out.insert(rel, "other".into());
            }
        }
    }
    out
}

pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Copies the folder `from` to `to`, recursively.
pub fn copy_dir(from: &Path, to: &Path) {
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
