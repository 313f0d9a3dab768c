//! The results table, its best-of marking and its plots, from run folders whose `summary.json`
//! files are written here (no training): every column has the value its summary implies, the
//! best rows are the ones an independent computation picks, missing runs are listed, and every
//! default plot is drawn (or skipped with a note) with the labels of the axes in it.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use serde_json::Value;
use zoo_sweep::plan::{self, Plan, run_dir};
use zoo_sweep::results::{self, Results};
use zoo_sweep::{plots, spec};
use zoo_train::summary::{LengthAccuracy, RunSummary, ToTarget};

const SWEEP: &str = r#"
[sweep]
name = "synthetic"
base = "base.toml"
seeds = [0, 1]
best_of = ["train.lr"]

[axes]
"train.mixed_lengths" = [false, true]
"model.mixer" = [{ kind = "softmax" }, { kind = "linear", feature_map = "elu" }]
"model.d_model" = [32, 64]
"train.lr" = [1e-3, 3e-3]
"#;

fn plan() -> Plan {
    let sweep = spec::parse(SWEEP, "synthetic.toml", Path::new(".")).unwrap();
    plan::expand(&sweep).unwrap()
}

/// A deterministic, varied accuracy for run `i` at length `len`.
fn accuracy(i: usize, len: usize) -> f64 {
    ((i * 37 + len * 11) % 17) as f64 / 16.0
}

fn summary(i: usize) -> RunSummary {
    let lengths = [64, 128];
    RunSummary {
        name: format!("run{i}"),
        config_digest: "0".repeat(64),
        mixers: vec!["softmax".into()],
        position: "none".into(),
        num_params: 1000 + i,
        state_bits: 1 << (10 + i % 4),
        state_seq_len: 128,
        target_accuracy: Some(0.5),
        steps: 100,
        planned_steps: 100,
        tokens: 100 * 4096,
        wall_seconds: 1.5,
        final_loss: 0.1,
        accuracy: lengths
            .iter()
            .map(|&len| LengthAccuracy {
                seq_len: len,
                best: accuracy(i, len).max(0.5),
                best_step: 50,
                last: accuracy(i, len),
                last_loss: 0.2,
            })
            .collect(),
        // Every third run never reaches its target.
        to_target: (!i.is_multiple_of(3)).then(|| ToTarget {
            steps: 10 * i,
            tokens: 4096 * (10 * i as u64 + 1),
            seconds: 0.25 * i as f64,
        }),
    }
}

fn write_summaries(plan: &Plan, dir: &Path, skip: &[usize]) {
    for run in &plan.runs {
        if skip.contains(&run.index) {
            continue;
        }
        let d = run_dir(dir, run);
        fs::create_dir_all(&d).unwrap();
        fs::write(
            d.join("summary.json"),
            serde_json::to_string(&summary(run.index)).unwrap(),
        )
        .unwrap();
    }
}

fn column(table: &Results, name: &str) -> usize {
    table
        .header()
        .iter()
        .position(|h| h == name)
        .unwrap_or_else(|| panic!("no column {name} in {:?}", table.header()))
}

#[test]
fn table_columns_hold_what_the_summaries_say() {
    let plan = plan();
    assert_eq!(plan.runs.len(), 2 * 2 * 2 * 2 * 2);
    let dir = tempfile::tempdir().unwrap();
    write_summaries(&plan, dir.path(), &[]);
    let table = results::collect(&plan, dir.path()).unwrap();
    assert_eq!(table.rows.len(), plan.runs.len());
    assert!(table.missing.is_empty());
    assert_eq!(
        table.header(),
        [
            "index",
            "id",
            "train.mixed_lengths",
            "model.mixer",
            "model.d_model",
            "train.lr",
            "seed",
            "best",
            "accuracy",
            "num_params",
            "state_bits",
            "acc@64",
            "acc@128",
            "best_acc@64",
            "best_acc@128",
            "steps",
            "tokens",
            "wall_seconds",
            "steps_to_target",
            "tokens_to_target",
            "seconds_to_target"
        ]
    );
    for row in &table.rows {
        let cells = table.cells(row);
        let i = row.index;
        let s = summary(i);
        let get = |name: &str| cells[column(&table, name)].clone();
        assert_eq!(get("id"), Value::from(plan.runs[i].id.clone()));
        assert_eq!(get("seed"), Value::from((i % 2) as u64));
        assert_eq!(get("num_params"), Value::from(s.num_params));
        assert_eq!(get("acc@128"), Value::from(accuracy(i, 128)));
        assert_eq!(get("best_acc@64"), Value::from(accuracy(i, 64).max(0.5)));
        let mean = (accuracy(i, 64) + accuracy(i, 128)) / 2.0;
        assert!((get("accuracy").as_f64().unwrap() - mean).abs() < 1e-12);
        match &s.to_target {
            Some(t) => assert_eq!(get("tokens_to_target"), Value::from(t.tokens)),
            None => assert_eq!(get("tokens_to_target"), Value::Null),
        }
        // Axis values: numbers stay numbers, tables get their short label.
        let lr = plan
            .value(&plan.runs[i], "train.lr")
            .unwrap()
            .as_float()
            .unwrap();
        assert_eq!(get("train.lr"), Value::from(lr));
        let mixer = get("model.mixer");
        assert!(mixer == "softmax" || mixer == "linear(elu)", "{mixer}");
    }

    // CSV: a header and one line per row; the mixer label with a comma-free form needs no quotes.
    let csv = table.to_csv();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 1 + plan.runs.len());
    assert!(lines[0].starts_with("index,id,train.mixed_lengths,model.mixer,"));
    assert!(lines[1].starts_with(&format!("0,{},false,softmax,32,0.001,0,", plan.runs[0].id)));
}

#[test]
fn best_rows_are_the_best_mean_over_seeds_within_each_cell() {
    let plan = plan();
    let dir = tempfile::tempdir().unwrap();
    write_summaries(&plan, dir.path(), &[]);
    let table = results::collect(&plan, dir.path()).unwrap();

    // Independently: a cell is (mixed_lengths, mixer, d_model); candidates are lrs.
    let mut cells: BTreeMap<String, BTreeMap<String, Vec<usize>>> = BTreeMap::new();
    for run in &plan.runs {
        let v = |k: &str| plan.value(run, k).unwrap().to_string();
        let cell = format!(
            "{}|{}|{}",
            v("train.mixed_lengths"),
            v("model.mixer"),
            v("model.d_model")
        );
        cells
            .entry(cell)
            .or_default()
            .entry(v("train.lr"))
            .or_default()
            .push(run.index);
    }
    let mean_acc = |runs: &[usize]| {
        runs.iter()
            .map(|&i| (accuracy(i, 64) + accuracy(i, 128)) / 2.0)
            .sum::<f64>()
            / runs.len() as f64
    };
    let mean_tokens = |runs: &[usize]| {
        runs.iter()
            .map(|&i| {
                summary(i)
                    .to_target
                    .map_or(f64::INFINITY, |t| t.tokens as f64)
            })
            .sum::<f64>()
            / runs.len() as f64
    };
    let mut expected = vec![false; plan.runs.len()];
    for candidates in cells.values() {
        // Candidates in sweep order (by their first run).
        let mut list: Vec<&Vec<usize>> = candidates.values().collect();
        list.sort_by_key(|runs| runs[0]);
        let mut best = list[0];
        for c in &list[1..] {
            let (a, b) = (mean_acc(c), mean_acc(best));
            if a > b || (a == b && mean_tokens(c) < mean_tokens(best)) {
                best = c;
            }
        }
        for &i in best {
            expected[i] = true;
        }
    }
    let marked: Vec<bool> = table.rows.iter().map(|r| r.best).collect();
    assert_eq!(marked, expected);
    // Exactly one lr per cell, with both its seeds.
    assert_eq!(marked.iter().filter(|b| **b).count(), cells.len() * 2);
}

#[test]
fn missing_runs_are_listed_and_the_rest_tabulated() {
    let plan = plan();
    let dir = tempfile::tempdir().unwrap();
    write_summaries(&plan, dir.path(), &[3, 17]);
    let table = results::collect(&plan, dir.path()).unwrap();
    assert_eq!(table.rows.len(), plan.runs.len() - 2);
    let missing: Vec<usize> = table.missing.iter().map(|(i, _)| *i).collect();
    assert_eq!(missing, [3, 17]);
    let text = table.describe();
    assert!(
        text.contains(&format!("30 of 32 runs (missing: 3 ({})", plan.runs[3].id)),
        "{text}"
    );
    table.write(dir.path(), &[], &[]).unwrap();
    let json: Value =
        serde_json::from_str(&fs::read_to_string(dir.path().join("results.json")).unwrap())
            .unwrap();
    assert_eq!(json["rows"].as_array().unwrap().len(), 30);
    assert_eq!(json["missing"][1]["index"], 17);
    assert_eq!(
        json["rows"][0]["axis_values"]["model.mixer"],
        serde_json::json!({"kind": "softmax"})
    );
}

#[test]
fn default_plots_follow_the_axes() {
    let plan = plan();
    let dir = tempfile::tempdir().unwrap();
    write_summaries(&plan, dir.path(), &[]);
    let table = results::collect(&plan, dir.path()).unwrap();
    let (files, notes) = plots::draw(&table, &[], dir.path()).unwrap();
    let kinds: Vec<&str> = files.iter().map(|f| f.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["accuracy", "state", "to_target"],
        "notes: {notes:?}"
    );
    for f in &files {
        let png = fs::read(dir.path().join(&f.png)).unwrap();
        let (w, h) = zoo_eval::report::png_size(&png).expect("a PNG");
        assert!(w > 400 && h > 300, "{w}×{h}");
        let svg = fs::read_to_string(dir.path().join(&f.svg)).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..40]);
        // Series named after the mixer axis; the schedule axis, not a best-of, in the rest.
        assert!(
            svg.contains("softmax") && svg.contains("linear(elu)"),
            "{}",
            f.kind
        );
        assert!(
            !svg.contains("lr=0.001"),
            "best-of values must not name series"
        );
    }
    let accuracy_svg = fs::read_to_string(dir.path().join(&files[0].svg)).unwrap();
    assert!(accuracy_svg.contains("model.d_model"));
    let to_target_svg = fs::read_to_string(dir.path().join(&files[2].svg)).unwrap();
    // Categories of the schedule axis are its labels.
    assert!(to_target_svg.contains(">false<") || to_target_svg.contains("false"));
    // A third of the runs never reach the target: the note says how many, and they are drawn
    // as a series of their own at the tokens they trained instead of vanishing from the figure.
    assert!(
        notes
            .iter()
            .any(|n| n.contains("never reached their target")),
        "{notes:?}"
    );
    assert!(to_target_svg.contains("— not reached"));
}

#[test]
fn plots_without_their_axis_are_skipped_with_a_note() {
    let text = "[sweep]\nname = \"s\"\nbase = \"b.toml\"\n[axes]\n\"train.lr\" = [1e-3, 3e-3]\n";
    let sweep = spec::parse(text, "s.toml", Path::new(".")).unwrap();
    let plan = plan::expand(&sweep).unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_summaries(&plan, dir.path(), &[]);
    let table = results::collect(&plan, dir.path()).unwrap();
    let (files, notes) = plots::draw(&table, &[], dir.path()).unwrap();
    let kinds: Vec<&str> = files.iter().map(|f| f.kind.as_str()).collect();
    assert_eq!(kinds, ["state"]);
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(notes[0].contains("accuracy plot skipped") && notes[0].contains("model.d_model"));
    assert!(notes[1].contains("to_target plot skipped"));
}

#[test]
fn zipped_partners_go_with_the_panel_and_do_not_split_series() {
    let text = r#"
[sweep]
name = "zipped"
base = "b.toml"
[axes]
"model.mixer,model.position" = [[{ kind = "softmax" }, { kind = "rope" }], [{ kind = "rwkv" }, { kind = "none" }]]
"model.d_model" = [32, 64, 128]
"train.stages.0.seq_len,task.num_kv_pairs" = [[64, 4], [128, 8]]
"#;
    let sweep = spec::parse(text, "z.toml", Path::new(".")).unwrap();
    let plan = plan::expand(&sweep).unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_summaries(&plan, dir.path(), &[]);
    let table = results::collect(&plan, dir.path()).unwrap();
    let (files, _) = plots::draw(&table, &[], dir.path()).unwrap();
    assert_eq!(files[0].kind, "accuracy");
    let svg = fs::read_to_string(dir.path().join(&files[0].svg)).unwrap();
    assert!(
        svg.contains("stages.0.seq_len = 64 · task.num_kv_pairs = 4")
            && svg.contains("stages.0.seq_len = 128 · task.num_kv_pairs = 8"),
        "panel titles name both zipped keys"
    );
    // Series are the mixers alone: the zipped position and pairs do not split them.
    assert!(svg.contains(">softmax<") || svg.contains("softmax"));
    assert!(!svg.contains("position=") && !svg.contains("num_kv_pairs="));
}
