//! `zoo sweep --slurm` on a real one-node Slurm cluster: the sweep writes an sbatch job array
//! (one task per run, each `zoo sweep SWEEP --out DIR --only $SLURM_ARRAY_TASK_ID`), Slurm runs
//! the four tasks, and `zoo sweep --collect` tables the four finished runs.
//!
//! The cluster is `scripts/slurm-local.sh` (munge + slurmctld + slurmd for this host, its files
//! under `$SLURM_LOCAL_DIR`, default /tmp/zoo-slurm); the test starts it and stops it again when
//! it was not already running. Without Slurm (no `sbatch` on PATH, or the script cannot start the
//! cluster, e.g. not root) the test prints `SKIPPED slurm test: <why>` and passes, unless
//! `ZOO_REQUIRE_SLURM=1` (set by .ci/run, which installs `slurm-wlm` and `munge`): then it fails.
//! It lives in its own file so that it runs as its own process.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// Longest wait for the whole array (four runs of ten steps take seconds; a cold, busy machine
/// gets plenty of slack).
const ARRAY_TIMEOUT: Duration = Duration::from_secs(600);

const SEEDS: [u64; 2] = [3, 7];
const LRS: [f64; 2] = [1e-3, 3e-3];

/// One layer, d_model 16, ten steps at length 32 and a one-cell MQAR grid: a run of about a
/// second. Its own lr (2e-3) and seed (0) differ from every swept value, so a run that ignored
/// the sweep's overrides is caught.
const BASE_CONFIG: &str = r#"
[run]
name = "slurm-tiny"
seed = 0

[model]
d_model = 16
n_layers = 1
n_heads = 2
mixer = { kind = "softmax" }
position = { kind = "rope" }

[task]
kind = "mqar"
vocab = 64
num_kv_pairs = 4

[train]
batch_size = 4
lr = 2e-3
warmup_steps = 2
log_every = 5
eval_batches = 1

[[train.stages]]
seq_len = 32
steps = 10

[eval]
batch_size = 4

[eval.mqar]
lengths = [32]
num_kv_pairs = [4]
samples = 4
"#;

const SWEEP: &str = r#"
[sweep]
name = "slurm-test"
base = "base.toml"
seeds = [3, 7]

[axes]
"train.lr" = [1e-3, 3e-3]
"#;

#[test]
fn slurm_array_runs_every_sweep_run_and_collect_tables_them() {
    let Some(cluster) = local_cluster() else {
        return;
    };

    let t = tmp();
    let sweep_file = t.path().join("sweep.toml");
    fs::write(t.path().join("base.toml"), BASE_CONFIG).unwrap();
    fs::write(&sweep_file, SWEEP).unwrap();
    let out = t.path().join("out");

    expect_success(&mut zoo(&[
        "sweep",
        path(&sweep_file),
        "--out",
        path(&out),
        "--slurm",
    ]));
    let script_path = out.join("slurm.sbatch");
    let script = fs::read_to_string(&script_path)
        .unwrap_or_else(|e| panic!("--slurm wrote no {}: {e}", script_path.display()));
    assert!(
        script.contains("#SBATCH --array=0-3"),
        "four runs need the array 0-3:\n{script}"
    );
    assert!(
        script.contains("--only"),
        "each task must run one sweep entry:\n{script}"
    );
    assert!(
        !out.join("results.csv").exists(),
        "--slurm must only write the script, not run the sweep"
    );

    cluster.submit_and_wait(&script_path, &out);

    expect_success(&mut zoo(&[
        "sweep",
        path(&sweep_file),
        "--out",
        path(&out),
        "--collect",
    ]));

    let expected: BTreeSet<(u64, String)> = SEEDS
        .iter()
        .flat_map(|&seed| LRS.iter().map(move |&lr| (seed, lr_key(lr))))
        .collect();

    // The table: one row per run, every (seed, lr) pair exactly once.
    let csv = fs::read_to_string(out.join("results.csv")).expect("--collect writes results.csv");
    let mut lines = csv.lines().filter(|l| !l.trim().is_empty());
    let header = split_csv_line(lines.next().expect("results.csv has a header"));
    let rows: Vec<Vec<String>> = lines.map(split_csv_line).collect();
    assert_eq!(rows.len(), 4, "results.csv should have 4 runs:\n{csv}");
    let seed_col = column(&header, &["seed", "run.seed"], &csv);
    let lr_col = column(&header, &["train.lr", "lr"], &csv);
    let tabled: BTreeSet<(u64, String)> = rows
        .iter()
        .map(|row| {
            let seed = row[seed_col].parse::<u64>().unwrap_or_else(|e| {
                panic!("seed `{}` is not an integer ({e}):\n{csv}", row[seed_col])
            });
            let lr = row[lr_col]
                .parse::<f64>()
                .unwrap_or_else(|e| panic!("lr `{}` is not a number ({e}):\n{csv}", row[lr_col]));
            (seed, lr_key(lr))
        })
        .collect();
    assert_eq!(
        tabled, expected,
        "results.csv rows are not the 2 seeds x 2 lrs:\n{csv}"
    );

    let json: Value = serde_json::from_slice(
        &fs::read(out.join("results.json")).expect("--collect writes results.json"),
    )
    .expect("results.json is JSON");
    assert_eq!(
        json_records(&json),
        4,
        "results.json should hold 4 runs: {json}"
    );

    // The runs themselves: four folders, each trained with its own overrides and finished.
    let run_dirs = dirs_with_file(&out, "config.toml");
    assert_eq!(
        run_dirs.len(),
        4,
        "expected 4 run folders under {}, found {run_dirs:?}",
        out.display()
    );
    let mut trained = BTreeSet::new();
    for dir in &run_dirs {
        assert!(
            dir.join("summary.json").is_file(),
            "{} has no summary.json: the run did not finish",
            dir.display()
        );
        let config: toml::Value =
            toml::from_str(&fs::read_to_string(dir.join("config.toml")).unwrap()).unwrap();
        let seed = config["run"]["seed"].as_integer().expect("run.seed") as u64;
        let lr = config["train"]["lr"].as_float().expect("train.lr");
        trained.insert((seed, lr_key(lr)));
    }
    assert_eq!(
        trained, expected,
        "the run folders' configs are not the 2 seeds x 2 lrs"
    );
}

/// An lr as a set key: 1e-3 and 0.001 (or 0.0010000000000000002 after a text round trip) agree.
fn lr_key(lr: f64) -> String {
    format!("{lr:.6e}")
}

fn column(header: &[String], names: &[&str], csv: &str) -> usize {
    header
        .iter()
        .position(|h| names.contains(&h.as_str()))
        .unwrap_or_else(|| panic!("results.csv has no column named any of {names:?}:\n{csv}"))
}

/// Fields of one CSV line (RFC 4180 quoting: `"a,b"` is one field, `""` inside quotes is `"`).
fn split_csv_line(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.trim_end_matches('\r').chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                fields.last_mut().unwrap().push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(String::new()),
            _ => fields.last_mut().unwrap().push(c),
        }
    }
    fields
}

/// Runs in results.json: its `rows` (docs/sweeps.md).
fn json_records(json: &Value) -> usize {
    json["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("results.json has no `rows` array: {json}"))
        .len()
}

/// Folders under `root` (at any depth) that directly hold a file named `name`.
fn dirs_with_file(root: &Path, name: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        if dir.join(name).is_file() {
            found.push(dir.clone());
        }
        for entry in fs::read_dir(&dir).unwrap().flatten() {
            if entry.file_type().is_ok_and(|k| k.is_dir()) {
                stack.push(entry.path());
            }
        }
    }
    found.sort();
    found
}

// ---------------------------------------------------------------------------------------------
// The cluster
// ---------------------------------------------------------------------------------------------

/// The test cluster of scripts/slurm-local.sh, stopped on drop when this test started it.
struct LocalCluster {
    script: PathBuf,
    dir: PathBuf,
    conf: PathBuf,
    stop_on_drop: bool,
}

/// Starts (or finds) the cluster; `None` after printing why Slurm is unavailable, or a panic
/// with that reason under `ZOO_REQUIRE_SLURM=1`.
fn local_cluster() -> Option<LocalCluster> {
    let unavailable = |reason: String| {
        if std::env::var("ZOO_REQUIRE_SLURM").as_deref() == Ok("1") {
            panic!("ZOO_REQUIRE_SLURM=1 but Slurm is unavailable: {reason}");
        }
        // Straight to the stderr handle: the test harness captures `eprintln!` of passing tests,
        // and a skip must show in a plain `cargo test` run.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED slurm test: {reason} (set ZOO_REQUIRE_SLURM=1 to make this a failure)"
        );
        None
    };
    if !on_path("sbatch") {
        return unavailable(
            "`sbatch` is not on PATH (apt-get install -y slurm-wlm munge)".to_string(),
        );
    }
    let dir = PathBuf::from(
        std::env::var("SLURM_LOCAL_DIR").unwrap_or_else(|_| "/tmp/zoo-slurm".to_string()),
    );
    let script = Path::new(WORKSPACE).join("scripts/slurm-local.sh");
    let script_cmd = |action: &str| {
        let mut cmd = Command::new("bash");
        cmd.arg(&script).arg(action).env("SLURM_LOCAL_DIR", &dir);
        cmd
    };
    let already_running = script_cmd("status")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let started = run(&mut script_cmd("start"));
    if !started.status.success() {
        // The script's last line names the problem; the lines before are the daemons' logs.
        let why = text(&started.stderr);
        eprintln!("{why}");
        let last = why.lines().last().unwrap_or("no message").to_string();
        if !already_running {
            // Leave no half-started cluster (munged alone, say) behind a skip.
            let _ = script_cmd("stop").stdout(Stdio::null()).status();
        }
        return unavailable(format!("scripts/slurm-local.sh start failed: {last}"));
    }
    Some(LocalCluster {
        conf: dir.join("slurm.conf"),
        script,
        dir,
        stop_on_drop: !already_running,
    })
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

impl LocalCluster {
    fn slurm(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("SLURM_CONF", &self.conf);
        cmd
    }

    /// `sbatch --wait SCRIPT` from `work_dir` (where Slurm writes `slurm-*.out` unless the script
    /// says otherwise); fails with the queue and every job output file when a task fails or the
    /// array outlives [`ARRAY_TIMEOUT`].
    fn submit_and_wait(&self, script: &Path, work_dir: &Path) {
        // A name unique to this process, so a timeout can cancel exactly this job.
        let job_name = format!("zoo-slurm-test-{}", std::process::id());
        let mut child = self
            .slurm("sbatch")
            .args(["--wait", "--job-name", &job_name])
            .arg(script)
            .current_dir(work_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sbatch starts");
        let deadline = Instant::now() + ARRAY_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                break None;
            }
            std::thread::sleep(Duration::from_millis(500));
        };
        let output = child.wait_with_output().unwrap();
        let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
        let failure = match status {
            Some(s) if s.success() => return,
            Some(s) => format!("sbatch --wait failed ({s})"),
            None => format!("the job array did not finish in {ARRAY_TIMEOUT:?}"),
        };
        let queue = self.slurm("squeue").output().map(|o| text(&o.stdout));
        let _ = self.slurm("scancel").args(["--name", &job_name]).status();
        panic!(
            "{failure}\nsbatch stdout:\n{stdout}\nsbatch stderr:\n{stderr}\nsqueue:\n{}\n{}{}",
            queue.unwrap_or_else(|e| format!("squeue did not run: {e}")),
            job_outputs(work_dir),
            log_tail(&self.dir.join("log/slurmd.log")),
        );
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        if self.stop_on_drop {
            let _ = Command::new("bash")
                .arg(&self.script)
                .arg("stop")
                .env("SLURM_LOCAL_DIR", &self.dir)
                .stdout(Stdio::null())
                .status();
        }
    }
}

/// Every Slurm job output file under `dir` (two levels deep), with its contents.
fn job_outputs(dir: &Path) -> String {
    let mut report = String::new();
    let mut stack = vec![(dir.to_path_buf(), 0)];
    while let Some((d, depth)) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let p = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if p.is_dir() && depth < 2 {
                stack.push((p, depth + 1));
            } else if name.starts_with("slurm-") || name.ends_with(".out") || name.ends_with(".err")
            {
                let body = fs::read_to_string(&p).unwrap_or_default();
                report.push_str(&format!("---- {} ----\n{body}\n", p.display()));
            }
        }
    }
    if report.is_empty() {
        report = format!("(no job output files under {})\n", dir.display());
    }
    report
}

fn log_tail(log: &Path) -> String {
    let body = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = body.lines().collect();
    let start = lines.len().saturating_sub(30);
    format!(
        "---- last lines of {} ----\n{}",
        log.display(),
        lines[start..].join("\n")
    )
}
