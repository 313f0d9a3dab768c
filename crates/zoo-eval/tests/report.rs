//! The HTML report: self-contained, one figure per chart, clear errors, atomic output.

mod common;

use std::fs;

use base64::Engine as _;
use common::{EXPECTED_FIGURES, count, fake_runs};
use zoo_eval::report::{png_size, write_report};

#[test]
fn report_of_two_runs_is_self_contained() {
    let dir = tempfile::tempdir().unwrap();
    let runs = fake_runs(dir.path());
    let out = dir.path().join("report.html");
    let summary = write_report(&runs, &out).unwrap();
    assert_eq!(summary.runs, 2);
    assert_eq!(summary.figures, EXPECTED_FIGURES);

    let html = fs::read_to_string(&out).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert_eq!(count(&html, "<figure>"), EXPECTED_FIGURES);
    assert_eq!(count(&html, "</figure>"), EXPECTED_FIGURES);
    assert_eq!(count(&html, "<figcaption>"), EXPECTED_FIGURES);
    assert_eq!(count(&html, "<img "), EXPECTED_FIGURES);
    // Nothing is fetched from elsewhere.
    for bad in [
        "src=\"http",
        "href=\"http",
        "src='http",
        "url(http",
        "<link",
        "<script",
        "@import",
    ] {
        assert!(!html.contains(bad), "report contains {bad:?}");
    }
    for name in ["run-a", "run-b"] {
        assert!(html.contains(name), "run name {name} missing");
    }
    // Config table content.
    for want in [
        "softmax",
        "linear",
        "rope",
        "1.23 M",
        "mqar",
        "L=256 (steps 0–119) → L=512 (steps 120–199)",
    ] {
        assert!(html.contains(want), "config table lacks {want:?}");
    }
    // MQAR tables: 2 runs × (2 lengths × 3 kv counts) cells, 1/4 printed as 0.250.
    assert_eq!(count(&html, "title=\"32 samples\""), 12);
    assert!(html.contains(">0.250</td>"));
    // No state.json anywhere: both runs point at the command that makes it.
    assert_eq!(
        count(
            &html,
            "state size not evaluated (run <code>zoo eval state --run "
        ),
        2
    );

    // Every image is a PNG data URI that decodes to the size the tag declares.
    for chunk in html.split("<img src=\"data:image/png;base64,").skip(1) {
        let b64 = &chunk[..chunk.find('"').unwrap()];
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        let (w, h) = png_size(&bytes).expect("decodes to a PNG");
        let attrs = &chunk[b64.len()..chunk.find('>').unwrap()];
        assert!(
            attrs.contains(&format!("width=\"{w}\" height=\"{h}\"")),
            "{attrs}"
        );
    }
}

#[test]
fn missing_evals_say_how_to_produce_them() {
    let dir = tempfile::tempdir().unwrap();
    let runs = fake_runs(dir.path());
    fs::remove_dir_all(runs[1].join("eval")).unwrap();
    let out = dir.path().join("r.html");
    let summary = write_report(&runs, &out).unwrap();
    // run-b loses its heat map and both attention charts; the ppl chart keeps run-a.
    assert_eq!(summary.figures, EXPECTED_FIGURES - 3);
    let html = fs::read_to_string(&out).unwrap();
    let b = runs[1].display().to_string();
    for kind in ["niah", "mqar", "ppl", "attention"] {
        let want = format!("not evaluated (run <code>zoo eval {kind} --run {b}</code>)");
        assert!(html.contains(&want), "missing {want:?}");
    }
}

#[test]
fn bad_run_dir_is_named_and_output_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let mut runs = fake_runs(dir.path());
    let out = dir.path().join("report.html");

    // Nonexistent directory: error names it, no output file appears.
    let ghost = dir.path().join("no-such-run");
    let err = write_report(&[runs[0].clone(), ghost.clone()], &out)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&ghost.display().to_string()) && err.contains("does not exist"),
        "{err}"
    );
    assert!(!err.contains('\n'), "one-line error: {err}");
    assert!(!out.exists());

    // An existing report is not replaced when a later run lacks metrics.jsonl.
    fs::write(&out, "previous report").unwrap();
    fs::remove_file(runs[1].join("metrics.jsonl")).unwrap();
    let err = write_report(&runs, &out).unwrap_err().to_string();
    assert!(
        err.contains(&runs[1].display().to_string()) && err.contains("metrics.jsonl"),
        "{err}"
    );
    assert_eq!(fs::read_to_string(&out).unwrap(), "previous report");

    // Missing config.toml.
    fs::remove_file(runs[0].join("config.toml")).unwrap();
    runs.truncate(1);
    let err = write_report(&runs, &out).unwrap_err().to_string();
    assert!(err.contains("config.toml"), "{err}");
    assert_eq!(fs::read_to_string(&out).unwrap(), "previous report");
    // No temp files were left next to the output.
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
}

#[test]
fn corrupt_eval_file_fails_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let runs = fake_runs(dir.path());
    fs::write(runs[0].join("eval/mqar.json"), "{\"run\": 3").unwrap();
    let out = dir.path().join("report.html");
    let err = format!("{:#}", write_report(&runs, &out).unwrap_err());
    assert!(err.contains("mqar.json"), "{err}");
    assert!(!out.exists());
}

#[test]
fn invalid_config_is_a_one_line_error_with_line_number() {
    let dir = tempfile::tempdir().unwrap();
    let runs = fake_runs(dir.path());
    fs::write(
        runs[1].join("config.toml"),
        "[run]\nname = \"x\"\nseed = = 3\n",
    )
    .unwrap();
    let out = dir.path().join("report.html");
    let err = write_report(&runs, &out).unwrap_err().to_string();
    assert!(err.contains("config.toml: invalid TOML at line 3"), "{err}");
    assert!(!err.contains('\n'), "one line: {err}");
    assert!(!out.exists());
}

#[test]
fn half_written_metrics_line_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let runs = fake_runs(dir.path());
    let metrics = runs[0].join("metrics.jsonl");
    let mut text = fs::read_to_string(&metrics).unwrap();
    text.push_str("{\"step\":200,\"stage\":1,\"seq_l");
    fs::write(&metrics, text).unwrap();
    let out = dir.path().join("report.html");
    write_report(&runs, &out).unwrap();
    let html = fs::read_to_string(&out).unwrap();
    assert!(html.contains("run-a: skipped 1 unparseable line(s) of metrics.jsonl."));
}
