//! The lengths each evaluation uses — one rule for the evaluation during training, the one after
//! it and every `zoo eval` command (zoo-eval re-exports this module as `zoo_eval::grids`; it lives
//! here because the trainer, below zoo-eval, needs the in-training grid too).
//!
//! With `L` the final training length:
//!
//! | evaluation | given by | default |
//! |---|---|---|
//! | [`Eval::InTraining`] (every `train.eval_every` steps, at the end, `stop_at_accuracy`) | `eval.lengths` | `[L]` |
//! | [`Eval::Niah`] | `--lengths`, else `eval.niah.lengths` | `[L/2, L, 2L]` |
//! | [`Eval::Mqar`] | `--lengths`, else `eval.mqar.lengths` | `[L/2, L, 2L]` |
//! | [`Eval::Ppl`] | `--lengths`, else `eval.ppl.lengths` | `[L/2, L, 2L]` |
//! | [`Eval::Attention`] (and the state table) | `--lengths` | `[L/2, L, 2L]` |
//!
//! The in-training grid is the training length alone because it runs inside the training loop
//! (its cost is paid every `eval_every` steps); the others are one-off and span half to twice
//! the training length, to show both interpolation and extrapolation. A default grid keeps only
//! the lengths the run can take — at least the task's shortest sequence and, for learned
//! positions, at most `model.max_seq_len` — so a default never fails where `L` works; lengths
//! given explicitly are used as given (and refused with a message if the model cannot take them).

use crate::config::RunConfig;

/// An evaluation whose lengths [`lengths`] resolves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Eval {
    InTraining,
    Niah,
    Mqar,
    Ppl,
    Attention,
}

/// The lengths `eval` uses for the run `cfg` when no `--lengths` flag is given: the config's own
/// list, else the default of the table above. `task_min_len` is the shortest sequence the built
/// task can fill (`zoo_data::Task::min_seq_len`); shorter default lengths are dropped.
pub fn lengths(cfg: &RunConfig, eval: Eval, task_min_len: usize) -> Vec<usize> {
    let configured = match eval {
        Eval::InTraining => &cfg.eval.lengths,
        Eval::Niah => &cfg.eval.niah.lengths,
        Eval::Mqar => &cfg.eval.mqar.lengths,
        Eval::Ppl => &cfg.eval.ppl.lengths,
        Eval::Attention => &Vec::new(),
    };
    if !configured.is_empty() {
        return configured.clone();
    }
    let final_len = cfg.final_seq_len();
    let candidates = match eval {
        Eval::InTraining => vec![final_len],
        _ => vec![final_len / 2, final_len, 2 * final_len],
    };
    let mut lengths: Vec<usize> = candidates
        .into_iter()
        .filter(|&len| len >= task_min_len.max(1) && cfg.model.check_length(len).is_ok())
        .collect();
    lengths.dedup();
    lengths
}

/// The pair counts of the MQAR grid: `--pairs`, else `eval.mqar.num_kv_pairs`, else the pair
/// counts the task trained with (empty for other tasks).
pub fn mqar_pairs(cfg: &RunConfig) -> Vec<usize> {
    if !cfg.eval.mqar.num_kv_pairs.is_empty() {
        return cfg.eval.mqar.num_kv_pairs.clone();
    }
    match &cfg.task {
        zoo_data::TaskConfig::Mqar(c) => c.pair_counts(),
        _ => Vec::new(),
    }
}
