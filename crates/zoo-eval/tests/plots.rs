//! Figures: both files exist, the PNG has the documented size, the SVG carries every label.

use std::fs;
use std::path::Path;

use zoo_eval::plot::{
    HEATMAP_SIZE, LINE_CHART_SIZE, LineOpts, Series, heatmap, line_chart, output_paths,
};
use zoo_eval::report::png_size;

fn png_dims(path: &Path) -> (u32, u32) {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    png_size(&bytes).unwrap_or_else(|| panic!("{} is not a PNG", path.display()))
}

/// Text contents of the SVG's `<text>` elements (plotters writes one per label).
fn svg_texts(svg: &str) -> Vec<String> {
    svg.split("<text")
        .skip(1)
        .filter_map(|t| {
            let start = t.find('>')? + 1;
            let end = t.find("</text>")?;
            Some(t[start..end].trim().to_string())
        })
        .collect()
}

/// Distinct colours in a PNG's pixel data are not checked (no decoder dependency); instead the
/// file must be well above the size of a blank image of that resolution.
fn assert_not_blank(png: &Path) {
    let len = fs::metadata(png).unwrap().len();
    assert!(len > 8_000, "{} is only {len} bytes: blank?", png.display());
}

#[test]
fn heatmap_writes_png_and_svg_with_all_labels() {
    let dir = tempfile::tempdir().unwrap();
    let stem = dir.path().join("niah");
    let lengths = ["256", "512", "1024", "2048"].map(String::from);
    let depths = ["0%", "50%", "100%"].map(String::from);
    let values = vec![
        vec![1.0, 0.9, 0.5, 0.25],
        vec![1.0, 0.75, f64::NAN, 0.0],
        vec![0.95, 0.6, 0.3, 0.125],
    ];
    heatmap(
        &stem,
        "NIAH accuracy",
        "context length",
        "needle depth",
        &lengths,
        &depths,
        &values,
    )
    .unwrap();
    let (png, svg) = output_paths(&stem);
    assert_eq!(png_dims(&png), HEATMAP_SIZE);
    assert_not_blank(&png);

    let svg = fs::read_to_string(&svg).unwrap();
    let texts = svg_texts(&svg);
    for want in ["NIAH accuracy", "context length", "needle depth"] {
        assert!(
            texts.iter().any(|t| t == want),
            "missing {want:?} in {texts:?}"
        );
    }
    for tick in lengths.iter().chain(&depths) {
        assert_eq!(
            texts.iter().filter(|t| *t == tick).count(),
            1,
            "tick {tick:?} should appear exactly once in {texts:?}"
        );
    }
    // Every cell prints its value; the NaN cell says n/a.
    for want in ["0.90", "0.50", "0.30", "n/a", "0.00"] {
        assert!(
            texts.iter().any(|t| t == want),
            "cell {want:?} missing in {texts:?}"
        );
    }
    // Colour bar ticks 0..1.
    for want in ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"] {
        assert!(
            texts.iter().any(|t| t == want),
            "colour-bar tick {want:?} missing"
        );
    }
    // No temp files left behind.
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn heatmap_renders_one_cell_and_twelve_by_twelve() {
    let dir = tempfile::tempdir().unwrap();
    let one = dir.path().join("one");
    heatmap(
        &one,
        "1x1",
        "x",
        "y",
        &["4096".to_string()],
        &["50%".to_string()],
        &[vec![0.5]],
    )
    .unwrap();
    let svg = fs::read_to_string(output_paths(&one).1).unwrap();
    let texts = svg_texts(&svg);
    assert!(texts.contains(&"4096".to_string()) && texts.contains(&"50%".to_string()));
    assert!(texts.contains(&"0.50".to_string()));

    let big = dir.path().join("big");
    let xs: Vec<String> = (0..12).map(|i| (256usize << i).to_string()).collect();
    let ys: Vec<String> = (0..12).map(|i| format!("{}%", i * 9)).collect();
    let vals: Vec<Vec<f64>> = (0..12)
        .map(|r| (0..12).map(|c| ((r * 12 + c) as f64) / 143.0).collect())
        .collect();
    heatmap(
        &big,
        "12x12",
        "context length",
        "needle depth",
        &xs,
        &ys,
        &vals,
    )
    .unwrap();
    let (png, svg) = output_paths(&big);
    assert_eq!(png_dims(&png), HEATMAP_SIZE);
    let texts = svg_texts(&fs::read_to_string(svg).unwrap());
    for t in xs.iter().chain(&ys) {
        assert!(texts.contains(t), "tick {t:?} missing");
    }
}

#[test]
fn heatmap_rejects_ragged_grids() {
    let dir = tempfile::tempdir().unwrap();
    let err = heatmap(
        &dir.path().join("bad"),
        "t",
        "x",
        "y",
        &["a".into(), "b".into()],
        &["r".into()],
        &[vec![0.1]],
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("row 0 has 1 values for 2 x ticks"),
        "{err}"
    );
}

#[test]
fn line_chart_handles_nan_empty_and_log_axes() {
    let dir = tempfile::tempdir().unwrap();
    let stem = dir.path().join("ppl");
    let series = vec![
        Series::new(
            "softmax",
            vec![
                (128.0, 12.0),
                (256.0, f64::NAN),
                (512.0, 14.0),
                (1024.0, 90.0),
            ],
        ),
        Series::new(
            "rwkv",
            vec![
                (128.0, 13.0),
                (0.0, 5.0),
                (2048.0, -1.0),
                (f64::INFINITY, 1.0),
            ],
        ),
        Series::new("empty", vec![]),
    ];
    line_chart(
        &stem,
        "ppl vs length",
        "sequence length",
        "perplexity",
        &series,
        LineOpts {
            log_x: true,
            log_y: true,
            vlines: vec![(256.0, "train L=256".into()), (f64::NAN, "ignored".into())],
        },
    )
    .unwrap();
    let (png, svg) = output_paths(&stem);
    assert_eq!(png_dims(&png), LINE_CHART_SIZE);
    let texts = svg_texts(&fs::read_to_string(svg).unwrap());
    for want in [
        "softmax",
        "rwkv",
        "empty (no data)",
        "train L=256",
        "sequence length",
        "perplexity",
    ] {
        assert!(
            texts.iter().any(|t| t == want),
            "{want:?} missing in {texts:?}"
        );
    }
    // Powers of two on the log x axis.
    for want in ["128", "256", "512", "1024"] {
        assert!(
            texts.iter().any(|t| t == want),
            "x tick {want:?} missing in {texts:?}"
        );
    }
}

#[test]
fn line_chart_without_data_still_renders() {
    let dir = tempfile::tempdir().unwrap();
    for (i, series) in [
        vec![],
        vec![Series::new("all nan", vec![(f64::NAN, f64::NAN)])],
    ]
    .into_iter()
    .enumerate()
    {
        for log in [false, true] {
            let stem = dir.path().join(format!("empty{i}{log}"));
            line_chart(
                &stem,
                "nothing",
                "x",
                "y",
                &series,
                LineOpts {
                    log_x: log,
                    log_y: log,
                    vlines: vec![],
                },
            )
            .unwrap();
            let (png, svg) = output_paths(&stem);
            assert_eq!(png_dims(&png), LINE_CHART_SIZE);
            let texts = svg_texts(&fs::read_to_string(svg).unwrap());
            assert!(texts.iter().any(|t| t == "no data"), "{texts:?}");
        }
    }
}

#[test]
fn line_chart_single_point_and_linear_axes() {
    let dir = tempfile::tempdir().unwrap();
    let stem = dir.path().join("loss");
    let curve: Vec<(f64, f64)> = (0..5000)
        .map(|s| (s as f64, 5.0 * (-(s as f64) / 800.0).exp() + 1.0))
        .collect();
    line_chart(
        &stem,
        "loss",
        "step",
        "loss",
        &[
            Series::new("run-a", curve),
            Series::new("single", vec![(100.0, 3.0)]),
        ],
        LineOpts {
            vlines: vec![(1000.0, "L=512".into()), (3000.0, "L=1024".into())],
            ..Default::default()
        },
    )
    .unwrap();
    let (png, svg) = output_paths(&stem);
    assert_not_blank(&png);
    let texts = svg_texts(&fs::read_to_string(svg).unwrap());
    for want in ["L=512", "L=1024", "0", "1000", "5000"] {
        assert!(
            texts.iter().any(|t| t == want),
            "{want:?} missing in {texts:?}"
        );
    }
}

#[test]
fn result_figures_use_the_eval_file_names() {
    use zoo_eval::plot::{
        AttentionFigure, attention_figures, mqar_figure, niah_figure, ppl_figure,
    };
    use zoo_eval::results::*;

    let dir = tempfile::tempdir().unwrap();
    let eval = dir.path().join("eval");

    let niah = NiahResult {
        run: "r".into(),
        variant: "passkey".into(),
        samples: 4,
        lengths: vec![128, 256],
        depths: vec![0.0, 0.25, 1.0],
        accuracy: vec![vec![1.0, 0.5]; 3],
        train_len: Some(128),
    };
    niah_figure(&niah, &eval.join("niah")).unwrap();
    let texts = svg_texts(&fs::read_to_string(eval.join("niah.svg")).unwrap());
    for want in [
        "128",
        "256",
        "0%",
        "25%",
        "100%",
        "NIAH accuracy — r (passkey)",
    ] {
        assert!(
            texts.iter().any(|t| t == want),
            "{want:?} missing in {texts:?}"
        );
    }

    // (256, 16) was not measured: its cell must say n/a rather than be dropped or shifted.
    let mqar = MqarResult {
        run: "r".into(),
        rows: vec![
            MqarRow {
                seq_len: 128,
                num_kv_pairs: 8,
                accuracy: 0.75,
                samples: 8,
            },
            MqarRow {
                seq_len: 256,
                num_kv_pairs: 8,
                accuracy: 0.5,
                samples: 8,
            },
            MqarRow {
                seq_len: 128,
                num_kv_pairs: 16,
                accuracy: 0.25,
                samples: 8,
            },
        ],
        train_len: None,
        scaling: "none".into(),
    };
    mqar_figure(&mqar, &eval.join("mqar")).unwrap();
    let texts = svg_texts(&fs::read_to_string(eval.join("mqar.svg")).unwrap());
    for want in [
        "0.75",
        "0.50",
        "0.25",
        "n/a",
        "key-value pairs",
        "sequence length",
    ] {
        assert!(
            texts.iter().any(|t| t == want),
            "{want:?} missing in {texts:?}"
        );
    }

    let ppl = PplResult {
        run: "r".into(),
        scaling: "ntk:4".into(),
        rows: vec![PplRow {
            seq_len: 128,
            loss: 2.0,
            ppl: 7.39,
            tokens: 10,
        }],
        train_len: Some(128),
    };
    ppl_figure(&[ppl], &eval.join("ppl")).unwrap();
    let texts = svg_texts(&fs::read_to_string(eval.join("ppl.svg")).unwrap());
    assert!(texts.iter().any(|t| t == "r (ntk:4)"), "{texts:?}");
    assert!(texts.iter().any(|t| t == "train L=128"), "{texts:?}");

    let row = |layer, needle| AttentionRow {
        layer,
        head: 0,
        seq_len: 64,
        entropy: 1.0,
        sparsity: 0.5,
        needle_mass: needle,
        uniform_entropy: 3.0,
    };
    let without = AttentionResult {
        run: "r".into(),
        mixer: "softmax".into(),
        rows: vec![row(0, None)],
    };
    let drawn = attention_figures(&without, &eval.join("attention")).unwrap();
    let kinds: Vec<_> = drawn.iter().map(|d| d.0).collect();
    assert_eq!(kinds, [AttentionFigure::Entropy, AttentionFigure::Sparsity]);
    let with = AttentionResult {
        rows: vec![row(0, Some(0.3)), row(1, None)],
        ..without
    };
    let drawn = attention_figures(&with, &eval.join("attention")).unwrap();
    assert_eq!(drawn.len(), 3);
    for f in [
        "attention_entropy",
        "attention_sparsity",
        "attention_needle",
    ] {
        for ext in ["png", "svg"] {
            assert!(
                eval.join(format!("{f}.{ext}")).is_file(),
                "{f}.{ext} missing"
            );
        }
    }
}
