//! A table of hostile and mistaken inputs, one row per class a new user's first hour produces:
//! run names that point outside `runs/`, `--overwrite` of folders that are not runs, sizes that
//! cannot fit in memory, special files where a file is expected, corrupted checkpoint bytes,
//! garbage in metrics.jsonl, arguments that cannot give a result, arrays for tables, runs
//! missing their tokenizer. Every row must exit non-zero with exactly one `error:` line (no
//! panic, no abort) that names what is wrong — and leave every file of the working folder as it
//! was (a checksum of the whole folder before and after each row).
//!
//! Sizes are refused before anything is allocated, so no row needs memory; each command also
//! runs under a 6 GiB address-space limit and a 60 s deadline, so a regression fails the test
//! instead of taking the machine down or hanging (a FIFO opened for reading blocks forever).

mod common;

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Runs `zoo args…` in `cwd` under an address-space limit and a deadline; returns the status
/// code (None when killed) and stderr.
fn run_limited(cwd: &Path, args: &[String]) -> (Option<i32>, String, String) {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_zoo"));
    cmd.args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 6 << 30,
                rlim_max: 6 << 30,
            };
            libc::setrlimit(libc::RLIMIT_AS, &limit);
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("the zoo binary starts");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > Duration::from_secs(60) {
            child.kill().ok();
            child.wait().ok();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .ok();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .ok();
    (status.and_then(|s| s.code()), stdout, stderr)
}

fn flip_middle_byte(file: &Path) {
    let mut bytes = fs::read(file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    fs::write(file, bytes).unwrap();
}

/// Rewrites a folder's SHA256SUMS with coreutils, as a user who edited a file by hand would.
fn reseal(dir: &Path) {
    let out = Command::new("sh")
        .arg("-c")
        .arg("sha256sum $(ls | grep -v SHA256SUMS) > SHA256SUMS")
        .current_dir(dir)
        .output()
        .expect("sha256sum runs");
    assert!(out.status.success(), "{}", text(&out.stderr));
}

fn largest_file_starting_with(dir: &Path, prefix: &str) -> PathBuf {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with(prefix))
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap_or_else(|| panic!("no {prefix}* in {}", dir.display()))
}

struct Row {
    what: &'static str,
    args: Vec<String>,
    /// Each must appear in the error line.
    names: Vec<String>,
}

fn row(what: &'static str, args: &[&str], names: &[&str]) -> Row {
    Row {
        what,
        args: args.iter().map(|s| s.to_string()).collect(),
        names: names.iter().map(|s| s.to_string()).collect(),
    }
}

#[test]
fn bad_inputs_are_refused_in_one_line_and_change_nothing() {
    let t = tmp();
    let w = t.path();
    let ws = Path::new(WORKSPACE).canonicalize().unwrap();
    let mqar_cfg = ws.join("configs/mqar/softmax.toml");
    let mqar = mqar_cfg.to_str().unwrap();
    let quick_cfg = ws.join("configs/quickstart.toml");
    let quick = quick_cfg.to_str().unwrap();

    // Fixtures: a tiny MQAR run and a tiny needle run (it has a tokenizer.json), then damaged
    // copies of them.
    let runs = w.join("runs");
    expect_success(&mut tiny_train(&runs.join("r"), &["--quiet"]));
    let mut needle = vec![
        "train",
        quick,
        "--out",
        "runs/needle",
        "--quiet",
        "--no-eval",
    ];
    for s in [
        "model.d_model=16",
        "model.n_heads=2",
        "train.batch_size=2",
        "train.warmup_steps=1",
        "train.stages.0.steps=2",
        "train.stages.1.steps=1",
        "train.eval_every=0",
        "train.eval_batches=1",
        "eval.batch_size=2",
    ] {
        needle.extend(["--set", s]);
    }
    let mut cmd = zoo(&needle);
    cmd.current_dir(w);
    expect_success(&mut cmd);
    let ckpt = |run: &str| -> PathBuf {
        let mut steps: Vec<usize> = fs::read_dir(runs.join(run).join("checkpoints"))
            .unwrap()
            .filter_map(|e| {
                e.unwrap()
                    .file_name()
                    .to_str()?
                    .strip_prefix("step-")?
                    .parse()
                    .ok()
            })
            .collect();
        steps.sort();
        runs.join(run)
            .join(format!("checkpoints/step-{}", steps.last().unwrap()))
    };
    copy_dir(&runs.join("r"), &runs.join("corrupt-ckpt"));
    flip_middle_byte(&largest_file_starting_with(&ckpt("corrupt-ckpt"), "model"));
    copy_dir(&runs.join("r"), &runs.join("corrupt-model"));
    flip_middle_byte(&runs.join("corrupt-model/model/model.safetensors"));
    copy_dir(&runs.join("r"), &runs.join("huge"));
    let config_json = runs.join("huge/model/config.json");
    let mut model_cfg: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&config_json).unwrap()).unwrap();
    model_cfg["d_model"] = serde_json::json!(1_000_000_000u64);
    fs::write(&config_json, serde_json::to_vec(&model_cfg).unwrap()).unwrap();
    reseal(&runs.join("huge/model"));
    copy_dir(&runs.join("r"), &runs.join("garbage"));
    let mut metrics = fs::read(runs.join("garbage/metrics.jsonl")).unwrap();
    metrics.extend_from_slice(b"\xff\xfe\x00 not json\n");
    fs::write(runs.join("garbage/metrics.jsonl"), metrics).unwrap();
    copy_dir(&runs.join("needle"), &runs.join("notok"));
    fs::remove_file(runs.join("notok/tokenizer.json")).unwrap();
    fs::create_dir_all(w.join("notarun")).unwrap();
    fs::write(w.join("notarun/thesis.tex"), "irreplaceable").unwrap();
    fs::write(
        w.join("long-name.toml"),
        fs::read_to_string(&mqar_cfg).unwrap().replace(
            "name = \"mqar-softmax\"",
            &format!("name = \"{}\"", "a".repeat(10 << 20)),
        ),
    )
    .unwrap();
    let status = Command::new("mkfifo").arg(w.join("fifo")).status().unwrap();
    assert!(status.success(), "mkfifo failed");
    for (name, haystack) in [
        ("needle-fifo.toml", "fifo"),
        ("needle-zero.toml", "/dev/zero"),
    ] {
        let path = if haystack.starts_with('/') {
            haystack.to_string()
        } else {
            w.join(haystack).display().to_string()
        };
        fs::write(
            w.join(name),
            fs::read_to_string(&quick_cfg).unwrap().replace(
                "value_len = 5",
                &format!("value_len = 5\nhaystack = \"{path}\""),
            ),
        )
        .unwrap();
    }

    let big = "1000000000000";
    let rows = vec![
        // Training to a target that cannot be checked or reached.
        row(
            "target above 1",
            &[
                "train",
                mqar,
                "--set",
                "train.stop_at_accuracy=1.5",
                "--set",
                "train.eval_every=5",
            ],
            &["train.stop_at_accuracy", "(0, 1]"],
        ),
        row(
            "target without evaluations",
            &[
                "train",
                mqar,
                "--set",
                "train.stop_at_accuracy=0.9",
                "--set",
                "train.eval_every=0",
            ],
            &["train.stop_at_accuracy", "train.eval_every"],
        ),
        // Run names and folders.
        row(
            "name `.`",
            &["train", mqar, "--set", "run.name=.", "--overwrite"],
            &["run.name"],
        ),
        row(
            "name `..`",
            &["train", mqar, "--set", "run.name=..", "--overwrite"],
            &["run.name"],
        ),
        row(
            "name with ..",
            &["train", mqar, "--set", "run.name=../../x"],
            &["run.name"],
        ),
        row(
            "absolute name",
            &["train", mqar, "--set", "run.name=/tmp/zoo-abs"],
            &["run.name"],
        ),
        row(
            "10 MiB name",
            &["train", "long-name.toml"],
            &["run.name", "bytes"],
        ),
        row(
            "overwrite a non-run",
            &["train", mqar, "--out", "notarun", "--overwrite"],
            &["notarun", "holds no run"],
        ),
        row(
            "existing run",
            &["train", mqar, "--out", "runs/r"],
            &["runs/r", "--overwrite"],
        ),
        row(
            "out is a file",
            &["train", mqar, "--out", "notarun/thesis.tex", "--overwrite"],
            &["thesis.tex"],
        ),
        // Sizes that cannot fit.
        row(
            "d_model 1e9",
            &["train", mqar, "--set", "model.d_model=1000000000"],
            &["model.d_model"],
        ),
        row(
            "seq_len 1e12",
            &[
                "train",
                mqar,
                "--set",
                &format!("train.stages.0.seq_len={big}"),
            ],
            &["train.stages.0.seq_len"],
        ),
        row(
            "n_layers 1e7",
            &["train", mqar, "--set", "model.n_layers=10000000"],
            &["model.n_layers"],
        ),
        row(
            "vocab 1e10",
            &["train", mqar, "--set", "task.vocab=10000000000"],
            &["vocab"],
        ),
        row(
            "batch 1e9",
            &["train", mqar, "--set", "train.batch_size=1000000000"],
            &["batch_size"],
        ),
        row(
            "info d_model 1e9",
            &["info", mqar, "--set", "model.d_model=1000000000"],
            &["model.d_model"],
        ),
        row(
            "eval length 1e12",
            &["eval", "mqar", "--run", "runs/r", "--lengths", big],
            &["--lengths"],
        ),
        row(
            "config.json claims 1e9",
            &["eval", "mqar", "--run", "runs/huge"],
            &["d_model"],
        ),
        row(
            "generate 1e12 tokens",
            &[
                "generate",
                "--run",
                "runs/r",
                "--prompt",
                "1 2 3",
                "--max-tokens",
                big,
            ],
            &["max"],
        ),
        // Special files.
        row(
            "config is /dev/zero",
            &["train", "/dev/zero"],
            &["/dev/zero"],
        ),
        row("config is a FIFO", &["train", "fifo"], &["fifo"]),
        row(
            "haystack is a FIFO",
            &["train", "needle-fifo.toml"],
            &["fifo"],
        ),
        row(
            "haystack is /dev/zero",
            &["train", "needle-zero.toml"],
            &["/dev/zero"],
        ),
        // Corrupted bytes.
        row(
            "corrupted checkpoint",
            &["train", "--resume", "runs/corrupt-ckpt"],
            &["corrupted", "last good checkpoint"],
        ),
        row(
            "corrupted model (eval)",
            &["eval", "mqar", "--run", "runs/corrupt-model"],
            &["model.safetensors", "corrupted"],
        ),
        row(
            "corrupted model (generate)",
            &["generate", "--run", "runs/corrupt-model", "--prompt", "1 2"],
            &["model.safetensors", "corrupted"],
        ),
        // Garbage in metrics.jsonl.
        row(
            "report of garbage metrics",
            &["report", "runs/garbage", "--out", "garbage.html"],
            &["metrics.jsonl"],
        ),
        // Arguments that cannot give a result.
        row(
            "niah --samples 0",
            &["eval", "niah", "--run", "runs/needle", "--samples", "0"],
            &["--samples"],
        ),
        row(
            "mqar --samples 0",
            &["eval", "mqar", "--run", "runs/r", "--samples", "0"],
            &["--samples"],
        ),
        row(
            "mqar --lengths 0",
            &["eval", "mqar", "--run", "runs/r", "--lengths", "0"],
            &["--lengths"],
        ),
        row(
            "mqar --pairs 0",
            &["eval", "mqar", "--run", "runs/r", "--pairs", "0"],
            &["--pairs"],
        ),
        row(
            "attention --samples 0",
            &["eval", "attention", "--run", "runs/r", "--samples", "0"],
            &["--samples"],
        ),
        row(
            "--batch-size 0",
            &["eval", "mqar", "--run", "runs/r", "--batch-size", "0"],
            &["--batch-size"],
        ),
        row(
            "mqar --ntk 0.5",
            &["eval", "mqar", "--run", "runs/r", "--ntk", "0.5"],
            &["--ntk", "≥ 1"],
        ),
        row(
            "ppl --rope-interpolation NaN",
            &[
                "eval",
                "ppl",
                "--run",
                "runs/needle",
                "--rope-interpolation",
                "NaN",
            ],
            &["--rope-interpolation", "finite"],
        ),
        row(
            "ppl --max-windows 0",
            &["eval", "ppl", "--run", "runs/needle", "--max-windows", "0"],
            &["--max-windows"],
        ),
        row(
            "--lengths abc",
            &["eval", "mqar", "--run", "runs/r", "--lengths", "abc"],
            &["--lengths"],
        ),
        row(
            "report over a run file",
            &["report", "runs/r", "--out", "runs/r/config.toml"],
            &[".html"],
        ),
        row(
            "report over a folder",
            &["report", "runs/r", "--out", "runs/r.html/"],
            &[],
        ),
        // Arrays for tables.
        row(
            "model = [64, 32]",
            &["train", mqar, "--set", "model=[64,32]"],
            &["model", "table"],
        ),
        // A run without its tokenizer.
        row(
            "eval without tokenizer.json",
            &["eval", "niah", "--run", "runs/notok"],
            &["tokenizer.json"],
        ),
        row(
            "generate without tokenizer.json",
            &["generate", "--run", "runs/notok", "--prompt", "x"],
            &["tokenizer.json"],
        ),
    ];
    fs::create_dir_all(w.join("runs/r.html")).unwrap();

    let mut failures = Vec::new();
    for r in &rows {
        let before = snapshot(w);
        let (code, stdout, stderr) = run_limited(w, &r.args);
        let after = snapshot(w);
        let lines: Vec<&str> = stderr.lines().collect();
        let mut problems = Vec::new();
        match code {
            None => {
                problems.push("killed (hung for 60 s or by a signal such as an abort)".to_string())
            }
            Some(0) => problems.push("succeeded".to_string()),
            Some(_) => {}
        }
        if lines.len() != 1 || !lines[0].starts_with("error: ") {
            problems.push(format!(
                "stderr is not one `error:` line: {:?}",
                clip_text(&stderr)
            ));
        }
        for bad in [
            "panicked",
            "RUST_BACKTRACE",
            "internal failure",
            "memory allocation",
        ] {
            if stderr.contains(bad) || stdout.contains(bad) {
                problems.push(format!("`{bad}` in the output"));
            }
        }
        if let Some(line) = lines.first() {
            if line.len() > 1000 {
                problems.push(format!("the error line is {} bytes long", line.len()));
            }
            for name in &r.names {
                if !line.contains(name.as_str()) {
                    problems.push(format!(
                        "the error does not name `{name}`: {}",
                        clip_text(line)
                    ));
                }
            }
        }
        if before != after {
            let changed: Vec<_> = before
                .keys()
                .chain(after.keys())
                .filter(|k| before.get(*k) != after.get(*k))
                .collect();
            problems.push(format!("files changed: {changed:?}"));
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{} ({}): {}",
                r.what,
                r.args.join(" ").chars().take(120).collect::<String>(),
                problems.join("; ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

fn clip_text(s: &str) -> String {
    s.chars().take(300).collect()
}
