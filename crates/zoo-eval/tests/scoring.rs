//! Scoring against hand-made cases.

// `&[a..b]` is a one-span list, which is what these APIs take, not a mistaken range-to-vec.
#![allow(clippy::single_range_in_vec_init)]

use zoo_eval::scoring::{exact_match, token_accuracy};

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
