//! The one rule for evaluation lengths (`zoo_train::grids`): the config's list wins; otherwise
//! the training length during training and [L/2, L, 2L] after it, keeping only lengths the run
//! can take.

use zoo_train::config::{self, RunConfig};
use zoo_train::grids::{Eval, lengths, mqar_pairs};

const TOML: &str = r#"
[run]
name = "grids"
[model]
d_model = 16
n_layers = 1
n_heads = 2
[task]
kind = "mqar"
vocab = 64
num_kv_pairs = 4
[train]
[[train.stages]]
seq_len = 32
steps = 2
[[train.stages]]
seq_len = 64
steps = 2
"#;

fn cfg(overrides: &[&str]) -> RunConfig {
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    config::parse(TOML, "test", &overrides).unwrap()
}

const AFTER: [Eval; 4] = [Eval::Niah, Eval::Mqar, Eval::Ppl, Eval::Attention];

#[test]
fn defaults_span_half_to_twice_the_final_length_and_training_uses_it_alone() {
    let c = cfg(&[]);
    assert_eq!(lengths(&c, Eval::InTraining, 16), vec![64]);
    for eval in AFTER {
        assert_eq!(lengths(&c, eval, 16), vec![32, 64, 128], "{eval:?}");
    }
}

#[test]
fn the_config_list_wins_and_is_used_as_given() {
    let c = cfg(&[
        "eval.lengths=[48, 16]",
        "eval.niah.lengths=[100]",
        "eval.mqar.lengths=[32, 256]",
        "eval.ppl.lengths=[8]",
    ]);
    // Given lengths are not filtered, not even below the task's minimum.
    assert_eq!(lengths(&c, Eval::InTraining, 16), vec![48, 16]);
    assert_eq!(lengths(&c, Eval::Niah, 16), vec![100]);
    assert_eq!(lengths(&c, Eval::Mqar, 16), vec![32, 256]);
    assert_eq!(lengths(&c, Eval::Ppl, 16), vec![8]);
    // The attention diagnostics have no config list.
    assert_eq!(lengths(&c, Eval::Attention, 16), vec![32, 64, 128]);
}

#[test]
fn defaults_keep_only_lengths_the_run_can_take() {
    // Shorter than the task's shortest sequence: dropped.
    let c = cfg(&[]);
    for eval in AFTER {
        assert_eq!(lengths(&c, eval, 40), vec![64, 128], "{eval:?}");
    }
    // Learned positions cannot go past their table.
    let c = cfg(&[r#"model.position={kind="learned"}"#, "model.max_seq_len=64"]);
    for eval in AFTER {
        assert_eq!(lengths(&c, eval, 16), vec![32, 64], "{eval:?}");
    }
    assert_eq!(lengths(&c, Eval::InTraining, 16), vec![64]);
}

#[test]
fn mqar_pairs_come_from_the_config_else_the_task() {
    assert_eq!(mqar_pairs(&cfg(&[])), vec![4]);
    assert_eq!(
        mqar_pairs(&cfg(&["eval.mqar.num_kv_pairs=[2, 8]"])),
        vec![2, 8]
    );
}
