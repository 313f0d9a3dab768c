//! MQAR: answers are bound values, keys/values come from the right halves,
//! queries follow the power law.

mod common;

use std::collections::HashSet;
use std::path::Path;

use common::{check_mask_is_answers, check_sample, rng};
use zoo_data::TaskConfig;
use zoo_data::mqar::{MqarConfig, MqarTask};

fn task(vocab: usize, n: usize, power_a: f64) -> MqarTask {
    MqarTask::new(MqarConfig {
        vocab,
        num_kv_pairs: n,
        power_a,
        num_kv_pairs_choices: vec![],
    })
    .unwrap()
}

#[test]
fn every_answer_is_the_value_bound_to_its_query_key() {
    let vocab = 512;
    for (seed, (n, seq_len)) in [(4, 16), (8, 64), (8, 65), (16, 256), (32, 128)]
        .into_iter()
        .enumerate()
    {
        let t = task(vocab, n, 0.01);
        let mut r = rng(seed as u64);
        for _ in 0..20 {
            let s = t.sample(seq_len, &mut r).unwrap();
            check_sample(&s, seq_len, vocab);
            check_mask_is_answers(&s);
            let block = &s.inputs[..2 * n];
            let keys: Vec<u32> = block.iter().step_by(2).copied().collect();
            let values: Vec<u32> = block.iter().skip(1).step_by(2).copied().collect();
            assert!(keys.iter().all(|&k| k >= 1 && (k as usize) < vocab / 2));
            assert!(
                values
                    .iter()
                    .all(|&v| (v as usize) >= vocab / 2 && (v as usize) < vocab)
            );
            assert_eq!(keys.iter().collect::<HashSet<_>>().len(), n);
            assert_eq!(values.iter().collect::<HashSet<_>>().len(), n);

            assert_eq!(s.answers.len(), n);
            assert_eq!(s.num_loss_positions(), n);
            assert_eq!(s.needle_positions.len(), n);
            let mut asked = HashSet::new();
            for (span, pair) in s.answers.iter().zip(&s.needle_positions) {
                assert_eq!(span.len(), 1);
                let p = span.start;
                assert!(p >= 2 * n, "query inside the kv block");
                assert_eq!((p - 2 * n) % 2, 0, "queries sit on even offsets");
                let key = s.inputs[p];
                let j = keys.iter().position(|&k| k == key).expect("query is a key");
                assert_eq!(s.targets[p], values[j]);
                assert_eq!(*pair, 2 * j..2 * j + 2);
                asked.insert(key);
            }
            assert_eq!(asked.len(), n, "every key is queried exactly once");
            assert!(s.answers.windows(2).all(|w| w[0].start < w[1].start));
            assert_eq!(s.depth, None);
        }
    }
}

#[test]
fn unscored_targets_are_the_next_input() {
    let t = task(256, 8, 0.01);
    let s = t.sample(100, &mut rng(9)).unwrap();
    for i in 0..99 {
        if !s.loss_mask[i] {
            assert_eq!(s.targets[i], s.inputs[i + 1]);
        }
    }
}

/// Gap index of each query: (position - 2n) / 2.
fn gaps(t: &MqarTask, n: usize, seq_len: usize, samples: usize, seed: u64) -> Vec<usize> {
    let mut r = rng(seed);
    (0..samples)
        .flat_map(|_| {
            let s = t.sample(seq_len, &mut r).unwrap();
            s.answers
                .iter()
                .map(|a| (a.start - 2 * n) / 2)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn query_gaps_follow_the_power_law() {
    let (n, seq_len) = (8, 512);
    let space = (seq_len - 2 * n) / 2;
    let count =
        |g: &[usize], lo: usize, hi: usize| g.iter().filter(|&&x| x >= lo && x < hi).count();

    let skewed = gaps(&task(8192, n, 0.01), n, seq_len, 300, 1);
    let near = count(&skewed, 0, space / 4);
    let far = count(&skewed, 3 * space / 4, space);
    assert!(near > 5 * far, "power_a 0.01: near {near} far {far}");
    // The first slot alone has the largest weight: it is the most frequent gap.
    let first = count(&skewed, 0, 1);
    let tenth = count(&skewed, 10, 11);
    assert!(first > tenth, "{first} vs {tenth}");

    let uniform = gaps(&task(8192, n, 1.0), n, seq_len, 300, 2);
    let near = count(&uniform, 0, space / 4) as f64;
    let far = count(&uniform, 3 * space / 4, space) as f64;
    assert!(
        (near / far - 1.0).abs() < 0.25,
        "power_a 1: near {near} far {far}"
    );
}

#[test]
fn pair_count_choices_are_mixed() {
    let t = MqarTask::new(MqarConfig {
        vocab: 256,
        num_kv_pairs: 99,
        power_a: 0.01,
        num_kv_pairs_choices: vec![2, 4, 8],
    })
    .unwrap();
    assert_eq!(t.min_seq_len(), 32);
    let mut r = rng(3);
    let seen: HashSet<usize> = (0..60)
        .map(|_| t.sample(64, &mut r).unwrap().num_loss_positions())
        .collect();
    assert_eq!(seen, HashSet::from([2, 4, 8]));
    let s = t.sample_with_pairs(64, 5, &mut r).unwrap();
    assert_eq!(s.answers.len(), 5);
}

#[test]
fn too_short_seq_len_names_the_bound_and_the_field() {
    let cfg = TaskConfig::Mqar(MqarConfig {
        num_kv_pairs: 16,
        ..MqarConfig::default()
    });
    let task = cfg.build(Path::new(".")).unwrap();
    assert_eq!(task.min_seq_len(), 64);
    let err = task.sample(32, &mut rng(0)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "seq_len 32 is too short for mqar with num_kv_pairs 16: needs at least 64 (raise seq_len or lower task.num_kv_pairs)"
    );
    assert!(task.sample(64, &mut rng(0)).is_ok());
}

#[test]
fn vocab_too_small_for_the_pairs_is_rejected() {
    let err = MqarTask::new(MqarConfig {
        vocab: 16,
        num_kv_pairs: 8,
        ..MqarConfig::default()
    })
    .unwrap_err();
    assert!(err.to_string().contains("task.vocab"), "{err}");
    let t = task(64, 4, 0.01);
    let err = t.sample_with_pairs(4096, 40, &mut rng(0)).unwrap_err();
    assert!(err.to_string().contains("num_kv_pairs"), "{err}");
}
