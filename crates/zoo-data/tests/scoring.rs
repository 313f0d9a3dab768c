//! Scoring against hand-made cases.

// `&[a..b]` is a one-span list, which is what these APIs take, not a mistaken range-to-vec.
#![allow(clippy::single_range_in_vec_init)]

use zoo_data::Batch;
use zoo_data::scoring::{AccuracyRule, exact_match, score_batch, token_accuracy};

#[test]
fn exact_match_needs_every_token_of_a_span() {
    let target = [1, 2, 3, 4, 5, 6, 7, 8];
    // Span 0..3 fully right, span 3..6 has one wrong token, span 6..8 right.
    let pred = [1, 2, 3, 4, 0, 6, 7, 8];
    assert_eq!(exact_match(&pred, &target, &[0..3, 3..6, 6..8]), (2, 3));
    // Only the broken span: a partially recalled value is not recalled.
    assert_eq!(exact_match(&pred, &target, &[3..6]), (0, 1));
    // Tokens outside every span do not matter.
    let pred_noise = [9, 9, 3, 4, 5, 9, 9, 9];
    assert_eq!(exact_match(&pred_noise, &target, &[2..5]), (1, 1));
}

#[test]
fn exact_match_fractions_over_many_spans() {
    let target: Vec<u32> = (0..20).collect();
    let mut pred = target.clone();
    pred[1] = 99; // breaks span 0..2
    pred[9] = 99; // breaks span 8..10
    let spans: Vec<_> = (0..10).map(|i| 2 * i..2 * i + 2).collect();
    let (hit, total) = exact_match(&pred, &target, &spans);
    assert_eq!((hit, total), (8, 10));
    assert!((hit as f64 / total as f64 - 0.8).abs() < 1e-12);
}

#[test]
fn exact_match_edge_cases() {
    let t = [1, 2, 3];
    // Empty spans are skipped, not counted as hits.
    assert_eq!(exact_match(&t, &t, &[1..1, 0..1]), (1, 1));
    // A span past the end of the prediction is a miss.
    assert_eq!(exact_match(&t[..2], &t, &[1..3]), (0, 1));
    assert_eq!(exact_match(&t, &t, &[]), (0, 0));
}

#[test]
fn token_accuracy_counts_only_masked_positions() {
    let target = [1, 2, 3, 4, 5];
    let pred = [1, 0, 3, 0, 5];
    let mask = [true, true, false, false, true];
    // Masked: 0 (right), 1 (wrong), 4 (right).
    assert_eq!(token_accuracy(&pred, &target, &mask), (2, 3));
    assert_eq!(token_accuracy(&pred, &target, &[false; 5]), (0, 0));
    // A masked position missing from the prediction counts as wrong.
    assert_eq!(
        token_accuracy(&pred[..3], &target, &[true, false, true, true, false]),
        (2, 3)
    );
}

fn task(kind: &str) -> zoo_data::TaskConfig {
    // Every key has a default except a text task's file (never read here).
    let path = if kind == "text" {
        "\npath = \"corpus.txt\""
    } else {
        ""
    };
    toml::from_str(&format!("kind = \"{kind}\"{path}")).expect("a valid task table")
}

#[test]
fn the_task_decides_the_accuracy_rule() {
    assert_eq!(AccuracyRule::of(&task("needle")), AccuracyRule::WholeAnswer);
    for kind in ["mqar", "copy", "selective_copy", "text"] {
        assert_eq!(
            AccuracyRule::of(&task(kind)),
            AccuracyRule::AnswerToken,
            "{kind}"
        );
    }
}

/// Two samples of length 4 whose answers are the spans 1..3 (two tokens) and 3..4.
fn two_sample_batch() -> Batch {
    let sample = |targets: Vec<u32>| zoo_data::Sample {
        inputs: vec![0; 4],
        targets,
        loss_mask: vec![false, true, true, true],
        answers: vec![1..3, 3..4],
        needle_positions: vec![],
        depth: None,
    };
    Batch::from_samples(vec![sample(vec![9, 1, 2, 3]), sample(vec![9, 4, 5, 6])]).unwrap()
}

#[test]
fn score_batch_applies_the_rule_row_by_row() {
    let batch = two_sample_batch();
    // Row 0: everything right. Row 1: one token of the two-token answer wrong, the other
    // answer right; the unscored position 0 is wrong in both rows and must not matter.
    let pred = [0, 1, 2, 3, 0, 4, 0, 6];
    // Per token: 3 + 2 of 6 answer tokens.
    assert_eq!(
        score_batch(AccuracyRule::AnswerToken, &pred, &batch),
        (5, 6)
    );
    // Whole answers: 2 + 1 of 4 answers (row 1's broken span is a miss).
    assert_eq!(
        score_batch(AccuracyRule::WholeAnswer, &pred, &batch),
        (3, 4)
    );
    // Answers are matched against their own row: row 1 predicted as row 0 gets nothing right.
    let shifted = [0, 1, 2, 3, 0, 1, 2, 3];
    assert_eq!(
        score_batch(AccuracyRule::WholeAnswer, &shifted, &batch),
        (2, 4)
    );
    // A prediction cut short scores the missing rows as misses, not as absent.
    assert_eq!(
        score_batch(AccuracyRule::WholeAnswer, &pred[..4], &batch),
        (2, 4)
    );
    assert_eq!(
        score_batch(AccuracyRule::AnswerToken, &pred[..4], &batch),
        (3, 6)
    );
}
