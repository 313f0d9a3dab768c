//! `zoo sweep` end to end with the built binary: a 2 × 2 (× 2 seeds) sweep of tiny MQAR runs
//! gives the table, the plots and the best-of marking its own summaries imply, and `zoo report`
//! shows it; a sweep killed mid-run resumes each run where it stopped; an invalid cell is refused
//! before anything trains; `--slurm` writes a job-array script whose tasks train runs, and
//! `--collect` tabulates whatever has finished.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// Fixed overrides that make configs/mqar/softmax.toml a run of a fraction of a second.
const SET: &str = r#"
[sweep.set]
"model.n_layers" = 1
"model.n_heads" = 2
"task.vocab" = 64
"task.num_kv_pairs" = 4
"train.batch_size" = 4
"train.warmup_steps" = 2
"train.stages" = [{ seq_len = 32, steps = STEPS }]
"train.mixed_lengths" = false
"train.log_every" = 4
"train.eval_every" = 6
"train.eval_batches" = 1
"train.checkpoint_every" = CHECKPOINT
"eval.batch_size" = 4
"eval.mqar.lengths" = [32]
"eval.mqar.num_kv_pairs" = [4]
"eval.mqar.samples" = 4
"#;

/// Writes `dir/sweep.toml` (and `dir/base.toml`, a copy of the MQAR softmax config it starts
/// from) and returns the sweep file.
fn write_sweep(dir: &Path, head: &str, axes: &str, steps: usize, checkpoint: usize) -> PathBuf {
    let base = fs::read_to_string(Path::new(WORKSPACE).join("configs/mqar/softmax.toml")).unwrap();
    fs::write(dir.join("base.toml"), base).unwrap();
    let set = SET
        .replace("STEPS", &steps.to_string())
        .replace("CHECKPOINT", &checkpoint.to_string());
    let text =
        format!("[sweep]\nname = \"tiny\"\nbase = \"base.toml\"\n{head}\n{set}\n[axes]\n{axes}\n");
    let file = dir.join("sweep.toml");
    fs::write(&file, text).unwrap();
    file
}

/// The CSV as (header, rows of cells); the tiny sweeps' cells never need quoting.
fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let text = fs::read_to_string(path).unwrap();
    let mut lines = text
        .lines()
        .map(|l| l.split(',').map(str::to_string).collect::<Vec<_>>());
    let header = lines.next().unwrap();
    (header, lines.collect())
}

fn run_dirs(sweep_dir: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(sweep_dir.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&fs::read_to_string(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn is_png(path: &Path) -> bool {
    let bytes = fs::read(path).unwrap_or_default();
    zoo_eval::report::png_size(&bytes).is_some_and(|(w, h)| w > 300 && h > 200)
}

fn is_svg(path: &Path) -> bool {
    let text = fs::read_to_string(path).unwrap_or_default();
    text.starts_with("<svg") && text.trim_end().ends_with("</svg>")
}

#[test]
fn sweep_end_to_end_table_plots_best_of_report_and_rerun() {
    let t = tmp();
    let file = write_sweep(
        t.path(),
        "seeds = [0, 1]\nbest_of = [\"train.lr\"]",
        "\"model.d_model\" = [16, 32]\n\"train.lr\" = [1e-3, 3e-3]",
        12,
        4,
    );
    let out = t.path().join("out");
    let stdout = expect_success(&mut zoo(&[
        "sweep",
        path(&file),
        "--out",
        path(&out),
        "--jobs",
        "2",
    ]));
    assert!(
        stdout.contains("sweep tiny: 8 runs trained, 0 already finished"),
        "{stdout}"
    );
    assert!(out.join("sweep.json").is_file());
    assert_eq!(
        json(&out.join("sweep.json"))["runs"]
            .as_array()
            .unwrap()
            .len(),
        8
    );

    // The table: one row per run, in plan order (d_model slowest, seeds fastest).
    let (header, rows) = read_csv(&out.join("results.csv"));
    assert_eq!(
        header.join(","),
        "index,id,model.d_model,train.lr,seed,best,accuracy,num_params,state_bits,acc@32,best_acc@32,mqar@32x4,steps,tokens,wall_seconds,steps_to_target,tokens_to_target,seconds_to_target"
    );
    assert_eq!(rows.len(), 8);
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let dirs = run_dirs(&out);
    assert_eq!(dirs.len(), 8);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row[col("index")], i.to_string());
        assert_eq!(row[col("model.d_model")], ["16", "32"][i / 4]);
        assert_eq!(row[col("train.lr")], ["0.001", "0.003"][(i / 2) % 2]);
        assert_eq!(row[col("seed")], (i % 2).to_string());
        assert_eq!(row[col("steps")], "12");
        // 12 steps × batch 4 × length 32.
        assert_eq!(row[col("tokens")], "1536");
        // The accuracies are the run's own summary and post-training MQAR grid.
        let dir = out.join("runs").join(&row[col("id")]);
        assert_eq!(dir, dirs[i]);
        let summary = json(&dir.join("summary.json"));
        let last = summary["accuracy"][0]["last"].as_f64().unwrap();
        assert_eq!(summary["accuracy"][0]["seq_len"], 32);
        assert_eq!(row[col("acc@32")].parse::<f64>().unwrap(), last);
        assert_eq!(row[col("accuracy")].parse::<f64>().unwrap(), last);
        let mqar = json(&dir.join("eval/mqar.json"));
        assert_eq!(
            row[col("mqar@32x4")].parse::<f64>().unwrap(),
            mqar["rows"][0]["accuracy"].as_f64().unwrap()
        );
        assert_eq!(row[col("tokens_to_target")], "");
    }
    let params = |i: usize| rows[i][col("num_params")].parse::<u64>().unwrap();
    assert!(params(0) < params(4), "d_model 32 has more parameters");

    // Best-of, computed here from the rows: per d_model the lr with the highest mean accuracy
    // over the two seeds (a tie keeps the first lr), both its seeds marked.
    let acc = |i: usize| rows[i][col("accuracy")].parse::<f64>().unwrap();
    let mut expected = vec![false; 8];
    for d in 0..2 {
        let mean = |lr: usize| (acc(4 * d + 2 * lr) + acc(4 * d + 2 * lr + 1)) / 2.0;
        let best = if mean(1) > mean(0) { 1 } else { 0 };
        expected[4 * d + 2 * best] = true;
        expected[4 * d + 2 * best + 1] = true;
    }
    let marked: Vec<bool> = rows.iter().map(|r| r[col("best")] == "true").collect();
    assert_eq!(marked, expected);

    // results.json mirrors the table; plots exist; the schedule plot is skipped with a note.
    let results = json(&out.join("results.json"));
    assert_eq!(results["rows"].as_array().unwrap().len(), 8);
    assert_eq!(results["rows"][2]["train.lr"], 0.003);
    assert_eq!(results["rows"][2]["best"], expected[2]);
    let plots: Vec<&str> = results["plots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap())
        .collect();
    assert_eq!(plots, ["accuracy", "state"]);
    for kind in ["accuracy", "state"] {
        assert!(is_png(&out.join(format!("plots/{kind}.png"))), "{kind}.png");
        assert!(is_svg(&out.join(format!("plots/{kind}.svg"))), "{kind}.svg");
    }
    assert!(
        results["notes"][0]
            .as_str()
            .unwrap()
            .contains("to_target plot skipped"),
        "{}",
        results["notes"]
    );

    // The report shows the sweep: its table with the best rows highlighted, and its plots.
    let report = t.path().join("report.html");
    let stdout = expect_success(&mut zoo(&["report", path(&out), "--out", path(&report)]));
    assert!(stdout.contains("1 sweep, 2 figures"), "{stdout}");
    let html = fs::read_to_string(&report).unwrap();
    assert!(html.contains("<h2 id=\"sweep-0\">Sweep tiny</h2>"));
    assert_eq!(html.matches("<tr class=\"best\">").count(), 4);
    assert_eq!(html.matches("<figure>").count(), 2);

    // A second sweep finds everything done and touches no run.
    let before: BTreeMap<PathBuf, (Vec<u8>, std::time::SystemTime)> = dirs
        .iter()
        .map(|d| {
            let p = d.join("summary.json");
            (
                p.clone(),
                (
                    fs::read(&p).unwrap(),
                    fs::metadata(&p).unwrap().modified().unwrap(),
                ),
            )
        })
        .collect();
    let stdout = expect_success(&mut zoo(&[
        "sweep",
        path(&file),
        "--out",
        path(&out),
        "--json",
    ]));
    let done = json_lines(&stdout).pop().unwrap();
    assert_eq!(done["kind"], "done");
    assert_eq!(done["trained"], 0);
    assert_eq!(done["skipped"], 8);
    for (p, (bytes, mtime)) in &before {
        assert_eq!(&fs::read(p).unwrap(), bytes);
        assert_eq!(&fs::metadata(p).unwrap().modified().unwrap(), mtime);
    }

    // An edited base config no longer matches the finished runs: refused, nothing touched.
    let base = t.path().join("base.toml");
    let text = fs::read_to_string(&base).unwrap();
    assert!(text.contains("\nweight_decay = 0.1\n"), "{text}");
    fs::write(
        &base,
        text.replace("\nweight_decay = 0.1\n", "\nweight_decay = 0.05\n"),
    )
    .unwrap();
    let line = expect_error(&mut zoo(&["sweep", path(&file), "--out", path(&out)]));
    assert!(
        line.contains("train.weight_decay = 0.1") && line.contains("now gives 0.05"),
        "{line}"
    );
    for (p, (bytes, _)) in &before {
        assert_eq!(&fs::read(p).unwrap(), bytes);
    }
}

#[test]
fn killed_sweep_resumes_each_run_where_it_stopped() {
    let t = tmp();
    let file = write_sweep(
        t.path(),
        "seeds = [0]",
        "\"train.lr\" = [1e-3, 3e-3]",
        400,
        10,
    );
    let out = t.path().join("out");
    // Killed and waited for below once run 1 has a checkpoint; if an assertion fails first, the
    // test has failed and the small sweep runs to its end on its own.
    #[allow(clippy::zombie_processes)]
    let mut sweep = zoo(&[
        "sweep",
        path(&file),
        "--out",
        path(&out),
        "--jobs",
        "1",
        "--quiet",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();

    // Wait until run 0 has finished and run 1 has a checkpoint but no summary, then SIGKILL the
    // sweep (not its child: the child must die with it).
    let started = Instant::now();
    let (run0, run1) = loop {
        let dirs = if out.join("runs").is_dir() {
            run_dirs(&out)
        } else {
            Vec::new()
        };
        if let [a, b] = dirs.as_slice() {
            assert!(
                !b.join("summary.json").exists(),
                "run 1 finished before the test could kill it"
            );
            if a.join("summary.json").is_file()
                && zoo_train::trainer::latest_checkpoint(b).is_some()
            {
                sweep.kill().unwrap();
                sweep.wait().unwrap();
                break (a.clone(), b.clone());
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the sweep did not get to run 1"
        );
        std::thread::sleep(Duration::from_millis(5));
    };

    // The child died with the sweep: run 1's metrics stop growing.
    let metrics = run1.join("metrics.jsonl");
    std::thread::sleep(Duration::from_millis(300));
    let frozen = fs::read_to_string(&metrics).unwrap();
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(
        fs::read_to_string(&metrics).unwrap(),
        frozen,
        "run 1 kept training after its sweep was killed"
    );
    assert!(!run1.join("summary.json").exists());
    let checkpoint = zoo_train::trainer::latest_checkpoint(&run1).unwrap();
    let summary0 = run0.join("summary.json");
    let (bytes0, mtime0) = (
        fs::read(&summary0).unwrap(),
        fs::metadata(&summary0).unwrap().modified().unwrap(),
    );

    let stdout = expect_success(&mut zoo(&["sweep", path(&file), "--out", path(&out)]));
    assert!(
        stdout.contains("1 run trained, 1 already finished"),
        "{stdout}"
    );
    // The finished run was not touched.
    assert_eq!(fs::read(&summary0).unwrap(), bytes0);
    assert_eq!(fs::metadata(&summary0).unwrap().modified().unwrap(), mtime0);
    // The interrupted run resumed from its checkpoint, keeping the lines logged up to it.
    let log = fs::read_to_string(out.join("logs").join(format!(
        "{}.txt",
        run1.file_name().unwrap().to_string_lossy()
    )))
    .unwrap();
    assert!(
        log.contains(&format!("from step {checkpoint}")) && log.contains("resumed from step"),
        "{log}"
    );
    let kept: Vec<&str> = frozen
        .lines()
        .filter(|l| {
            serde_json::from_str::<Value>(l)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s as usize <= checkpoint)
        })
        .collect();
    assert!(!kept.is_empty());
    let finished = fs::read_to_string(&metrics).unwrap();
    assert!(
        finished.starts_with(&(kept.join("\n") + "\n")),
        "the lines up to step {checkpoint} were rewritten"
    );
    assert!(run1.join("summary.json").is_file());
    let (_, rows) = read_csv(&out.join("results.csv"));
    assert_eq!(rows.len(), 2);
}

#[test]
fn invalid_cell_is_refused_before_anything_trains() {
    let t = tmp();
    let file = write_sweep(
        t.path(),
        "seeds = [0]",
        "\"model.d_model\" = [16, 15]\n\"train.lr\" = [1e-3]",
        12,
        4,
    );
    let out = t.path().join("out");
    let line = expect_error(&mut zoo(&["sweep", path(&file), "--out", path(&out)]));
    assert!(
        line.contains("run 1 (r001-")
            && line.contains("model.d_model=15, train.lr=0.001, seed 0")
            && line.contains("divisible by model.n_heads")
            && line.contains("nothing was trained"),
        "{line}"
    );
    assert!(!out.exists(), "the sweep folder was created");
    // The same for the Slurm script.
    expect_error(&mut zoo(&[
        "sweep",
        path(&file),
        "--out",
        path(&out),
        "--slurm",
    ]));
    assert!(!out.exists());
}

#[test]
fn slurm_script_tasks_train_runs_and_collect_tabulates_the_finished_ones() {
    let t = tmp();
    let file = write_sweep(
        t.path(),
        "seeds = [0]",
        "\"model.d_model\" = [16, 32]\n\"train.lr\" = [1e-3, 3e-3]",
        8,
        4,
    );
    let out = t.path().join("out");
    let stdout = expect_success(&mut zoo(&[
        "sweep",
        path(&file),
        "--out",
        path(&out),
        "--slurm",
    ]));
    assert!(stdout.contains("(4 array tasks)"), "{stdout}");
    let script_path = out.join("slurm.sbatch");
    let script = fs::read_to_string(&script_path).unwrap();
    let exe = fs::canonicalize(env!("CARGO_BIN_EXE_zoo")).unwrap();
    let workspace = fs::canonicalize(WORKSPACE).unwrap();
    for want in [
        "#SBATCH --array=0-3\n".to_string(),
        "#SBATCH --job-name=tiny\n".to_string(),
        format!("#SBATCH --output={}/logs/slurm-%A_%a.out\n", out.display()),
        format!("cd '{}'\n", workspace.display()),
        format!(
            "exec '{}' sweep '{}' --out '{}' --only \"$SLURM_ARRAY_TASK_ID\"\n",
            exe.display(),
            file.display(),
            out.display()
        ),
    ] {
        assert!(script.contains(&want), "missing {want:?} in:\n{script}");
    }
    assert!(run_dirs(&out).is_empty(), "--slurm trained something");

    // Two array tasks, run as Slurm would run them (from another folder).
    for task in ["1", "2"] {
        let output = std::process::Command::new("bash")
            .arg(&script_path)
            .env("SLURM_ARRAY_TASK_ID", task)
            .current_dir(t.path())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "task {task}: {}",
            text(&output.stderr)
        );
        assert!(text(&output.stdout).contains(&format!("run {task} (r00{task}-")));
    }
    // A task started again finds its run finished.
    let stdout = expect_success(&mut zoo(&[
        "sweep",
        path(&file),
        "--out",
        path(&out),
        "--only",
        "1",
    ]));
    assert!(stdout.contains("already finished"), "{stdout}");

    let stdout = expect_success(&mut zoo(&[
        "sweep",
        path(&file),
        "--out",
        path(&out),
        "--collect",
    ]));
    assert!(
        stdout.contains("(2 of 4 runs (missing: 0 (r000-") && stdout.contains("3 (r003-"),
        "{stdout}"
    );
    let (header, rows) = read_csv(&out.join("results.csv"));
    let index = header.iter().position(|h| h == "index").unwrap();
    let indices: Vec<&str> = rows.iter().map(|r| r[index].as_str()).collect();
    assert_eq!(indices, ["1", "2"]);
    let results = json(&out.join("results.json"));
    let missing: Vec<u64> = results["missing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["index"].as_u64().unwrap())
        .collect();
    assert_eq!(missing, [0, 3]);

    // An edited sweep file no longer matches the script's indices: a task refuses to run.
    let edited = fs::read_to_string(&file)
        .unwrap()
        .replace("[16, 32]", "[8, 16, 32]");
    let moved = t.path().join("edited.toml");
    fs::write(&moved, edited).unwrap();
    let line = expect_error(&mut zoo(&[
        "sweep",
        path(&moved),
        "--out",
        path(&out),
        "--only",
        "3",
    ]));
    assert!(line.contains("the sweep file changed"), "{line}");

    // --only out of range, and --collect of a folder with nothing in it.
    let line = expect_error(&mut zoo(&[
        "sweep",
        path(&file),
        "--out",
        path(&out),
        "--only",
        "4",
    ]));
    assert!(line.contains("indices 0 to 3"), "{line}");
    let line = expect_error(&mut zoo(&[
        "sweep",
        path(&file),
        "--out",
        path(&t.path().join("empty")),
        "--collect",
    ]));
    assert!(line.contains("nothing to collect"), "{line}");
}

#[test]
fn failed_run_is_reported_and_the_others_finish() {
    let t = tmp();
    let file = write_sweep(
        t.path(),
        "seeds = [0]",
        "\"train.lr\" = [1e-3, 2e-3, 3e-3]",
        8,
        4,
    );
    let out = t.path().join("out");
    // Prepare the folder, then put a stranger's file where run 1 will train.
    expect_success(&mut zoo(&[
        "sweep",
        path(&file),
        "--out",
        path(&out),
        "--slurm",
    ]));
    let id1 = json(&out.join("sweep.json"))["runs"][1]["id"]
        .as_str()
        .unwrap()
        .to_string();
    fs::create_dir_all(out.join("runs").join(&id1)).unwrap();
    fs::write(out.join("runs").join(&id1).join("notes.txt"), "mine\n").unwrap();

    let line = expect_error(&mut zoo(&[
        "sweep",
        path(&file),
        "--out",
        path(&out),
        "--jobs",
        "2",
    ]));
    assert!(
        line.contains(&format!("1 of 3 runs failed (run 1 ({id1}): "))
            && line.contains("notes.txt")
            && line.contains(&format!(
                "log: {}",
                out.join("logs").join(format!("{id1}.txt")).display()
            )),
        "{line}"
    );
    // The others trained and are in the table; the stranger's file is untouched.
    let (_, rows) = read_csv(&out.join("results.csv"));
    let indices: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(indices, ["0", "2"]);
    assert_eq!(
        fs::read_to_string(out.join("runs").join(&id1).join("notes.txt")).unwrap(),
        "mine\n"
    );
}
