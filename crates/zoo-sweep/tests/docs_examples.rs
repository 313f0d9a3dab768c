//! The sweep files in docs/sweeps.md and the README are real: each parses, expands to the number
//! of runs the text implies, and every one of its runs passes the checks made before training.

use std::path::Path;

use zoo_sweep::check::{CheckOptions, check_all};
use zoo_sweep::{plan, spec};

const WORKSPACE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// The ```toml blocks of a page that are sweep files.
fn sweep_blocks_of(page: &str) -> Vec<String> {
    let page = std::fs::read_to_string(Path::new(WORKSPACE).join(page)).unwrap();
    page.split("```toml\n")
        .skip(1)
        .filter_map(|rest| rest.split("```").next())
        .filter(|block| block.starts_with("[sweep]"))
        .map(str::to_string)
        .collect()
}

fn sweep_blocks() -> Vec<String> {
    let mut blocks = sweep_blocks_of("docs/sweeps.md");
    blocks.extend(sweep_blocks_of("README.md"));
    blocks
}

#[test]
fn documented_sweeps_expand_and_every_run_is_valid() {
    let blocks = sweep_blocks();
    assert_eq!(
        blocks.len(),
        3,
        "docs/sweeps.md shows two sweep files, the README one"
    );
    // The docs place them in sweeps/; any folder beside configs/ resolves `base` the same way
    // (and sweeps/ need not exist).
    let folder = Path::new(WORKSPACE).join("docs");
    let expected_runs = [6 * 3 * 3 * 3 * 3, (4 + 4 + 3) * 2 * 2, 3 * 2 * 2 * 3];
    for (block, runs) in blocks.iter().zip(expected_runs) {
        let sweep = spec::parse(block, "docs/sweeps.md", &folder).unwrap();
        let plan = plan::expand(&sweep).unwrap();
        assert_eq!(plan.runs.len(), runs, "{}", sweep.name);
        let dir = tempfile::tempdir().unwrap();
        let opts = CheckOptions {
            device: None,
            concurrent: 1,
        };
        let configs = check_all(&sweep, &plan, dir.path(), &opts).unwrap();
        assert_eq!(configs.len(), runs);
    }
}

#[test]
fn documented_zipped_axis_sets_training_length_and_pairs_together() {
    let blocks = sweep_blocks();
    let folder = Path::new(WORKSPACE).join("docs");
    let sweep = spec::parse(&blocks[0], "docs/sweeps.md", &folder).unwrap();
    let plan = plan::expand(&sweep).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let opts = CheckOptions {
        device: None,
        concurrent: 1,
    };
    let configs = check_all(&sweep, &plan, dir.path(), &opts).unwrap();
    for (run, cfg) in plan.runs.iter().zip(&configs) {
        let len = plan.value(run, "train.stages.0.seq_len").unwrap();
        let pairs = plan.value(run, "task.num_kv_pairs").unwrap();
        assert_eq!(cfg.final_seq_len() as i64, len.as_integer().unwrap());
        match &cfg.task {
            zoo_data::TaskConfig::Mqar(m) => {
                assert_eq!(m.num_kv_pairs as i64, pairs.as_integer().unwrap())
            }
            other => panic!("not MQAR: {}", other.kind()),
        }
        assert_eq!(cfg.train.stages.len(), 1);
        assert!(
            cfg.eval.lengths.is_empty(),
            "evaluated at the training length"
        );
    }
}

/// The experiments of EXPERIMENTS.md (experiments/*.toml) expand to the runs their headers
/// describe, and every run passes the checks made before training, so
/// `scripts/experiments.sh` cannot fail on a cell after hours of training.
#[test]
fn experiment_sweeps_expand_and_every_run_is_valid() {
    let folder = Path::new(WORKSPACE).join("experiments");
    let expected = [
        ("a-mqar-zoology.toml", 6 * 3 * 3),
        ("b-state-size.toml", 2 + 4 + 3 + 4 + 2),
        ("c-positions.toml", 6 * 3),
        ("d-progressive.toml", 3 * 3),
        ("e-diagnostics.toml", 3),
    ];
    for (file, runs) in expected {
        let sweep = spec::load(&folder.join(file)).unwrap();
        let plan = plan::expand(&sweep).unwrap();
        assert_eq!(plan.runs.len(), runs, "{file}");
        let dir = tempfile::tempdir().unwrap();
        let opts = CheckOptions {
            device: None,
            concurrent: 1,
        };
        assert_eq!(
            check_all(&sweep, &plan, dir.path(), &opts).unwrap().len(),
            runs,
            "{file}"
        );
    }
}
