//! Scoring of predicted token ids against targets.
//!
//! - `exact_match`: a span (a needle's value, an MQAR answer) counts as recalled only if every
//!   token in it is predicted correctly — partial recall of a multi-token value is a miss, as in
//!   the NIAH/passkey and MQAR literature (Mohtashami & Jaggi 2023; Arora et al. 2023).
//! - `token_accuracy`: fraction of masked positions predicted correctly, for per-token metrics.
//!
//! Both return (hits, total) counts rather than a ratio so callers can sum over batches and divide
//! once, which weights every span/token equally regardless of how batches were cut.

use std::ops::Range;

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
