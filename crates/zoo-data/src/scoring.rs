//! Scoring of predicted token ids against a task's targets — the one definition of "correct"
//! that training-time evaluation (zoo-train) and every post-training evaluation (zoo-eval) use.
//!
//! - [`exact_match`]: a span (a needle's value, an MQAR answer) counts as recalled only if every
//!   token in it is predicted correctly — partial recall of a multi-token value is a miss, as in
//!   the NIAH/passkey and MQAR literature (Mohtashami & Jaggi 2023; Arora et al. 2023).
//! - [`token_accuracy`]: fraction of masked positions predicted correctly, for per-token metrics.
//! - [`AccuracyRule`]: which of the two a task's accuracy is. The task decides what a correct
//!   answer is, so the rule is a function of the task: needle answers are multi-token values
//!   recalled whole or not at all (exact match per answer); MQAR, copy, selective copy and text
//!   are scored per answer token (MQAR's answers are one token each, where the two agree).
//! - [`score_batch`]: a batch's argmax predictions under a rule.
//!
//! All return (hits, total) counts rather than a ratio so callers can sum over batches and divide
//! once, which weights every span/token equally regardless of how batches were cut.

use std::ops::Range;

use crate::sample::Batch;
use crate::task::TaskConfig;

/// Counts spans whose tokens are all predicted correctly: returns (all-correct spans, spans).
///
/// `pred[i]` is compared with `target[i]`. Empty spans are skipped (there is nothing to recall,
/// and counting them would inflate accuracy). A span reaching past the end of `pred` or `target`
/// is counted as a miss: its missing tokens cannot have been predicted.
pub fn exact_match(pred: &[u32], target: &[u32], spans: &[Range<usize>]) -> (usize, usize) {
    let mut correct = 0;
    let mut total = 0;
    for span in spans.iter().filter(|s| s.start < s.end) {
        total += 1;
        let in_bounds = span.end <= pred.len() && span.end <= target.len();
        if in_bounds && pred[span.clone()] == target[span.clone()] {
            correct += 1;
        }
    }
    (correct, total)
}

/// Counts correct predictions at positions where `mask` is true: returns (correct, counted).
///
/// The mask decides which positions count; a masked position beyond the end of `pred` or
/// `target` counts as wrong rather than being dropped, so a truncated prediction is penalised.
pub fn token_accuracy(pred: &[u32], target: &[u32], mask: &[bool]) -> (usize, usize) {
    let mut correct = 0;
    let mut counted = 0;
    for (i, _) in mask.iter().enumerate().filter(|(_, m)| **m) {
        counted += 1;
        if let (Some(p), Some(t)) = (pred.get(i), target.get(i))
            && p == t
        {
            correct += 1;
        }
    }
    (correct, counted)
}

/// What counts as one correct unit of a task's held-out accuracy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccuracyRule {
    /// Exact match of whole answer spans ([`exact_match`] over each sample's `answers`).
    WholeAnswer,
    /// Per answer token ([`token_accuracy`] over the loss mask).
    AnswerToken,
}

impl AccuracyRule {
    /// The rule of a task (no wildcard: a new task kind must decide what its accuracy is).
    pub fn of(task: &TaskConfig) -> AccuracyRule {
        match task {
            TaskConfig::Needle(_) => AccuracyRule::WholeAnswer,
            TaskConfig::Mqar(_)
            | TaskConfig::Copy(_)
            | TaskConfig::SelectiveCopy(_)
            | TaskConfig::Text(_) => AccuracyRule::AnswerToken,
        }
    }
}

/// (correct, counted) of the argmax predictions `pred` (row-major `[batch_size, seq_len]`, as
/// the batch itself) under `rule`.
pub fn score_batch(rule: AccuracyRule, pred: &[u32], batch: &Batch) -> (usize, usize) {
    match rule {
        AccuracyRule::AnswerToken => token_accuracy(pred, &batch.targets, &batch.loss_mask),
        AccuracyRule::WholeAnswer => {
            let n = batch.seq_len;
            batch
                .samples
                .iter()
                .enumerate()
                .map(|(s, sample)| {
                    let row = pred.get(s * n..(s + 1) * n).unwrap_or(&[]);
                    exact_match(row, &sample.targets, &sample.answers)
                })
                .fold((0, 0), |(a, b), (c, d)| (a + c, b + d))
        }
    }
}
