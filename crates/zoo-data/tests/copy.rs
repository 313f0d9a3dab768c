//! Copy and selective copy: the copy after the separator reproduces the data.

mod common;

use common::{check_mask_is_answers, check_sample, rng};
use zoo_data::copy::{
    BLANK, CopyConfig, CopyTask, SEPARATOR, SelectiveCopyConfig, SelectiveCopyTask,
};

#[test]
fn copy_targets_after_separator_equal_the_data() {
    for (vocab, l, seq_len) in [(16, 16, 32), (16, 16, 100), (3, 5, 40), (1000, 1, 2)] {
        let t = CopyTask::new(CopyConfig { vocab, copy_len: l }).unwrap();
        let mut r = rng(seq_len as u64);
        for _ in 0..10 {
            let s = t.sample(seq_len, &mut r).unwrap();
            check_sample(&s, seq_len, vocab);
            check_mask_is_answers(&s);
            let data = &s.inputs[..l];
            assert!(data.iter().all(|&x| x >= 2));
            let sep = seq_len - l;
            assert_eq!(s.inputs[sep], SEPARATOR);
            assert!(s.inputs[l..sep].iter().all(|&x| x == BLANK));
            assert_eq!(&s.targets[seq_len - l..], data);
            assert_eq!(s.answers, vec![seq_len - l..seq_len]);
            assert!(s.needle_positions.is_empty());
        }
    }
}

#[test]
fn selective_copy_reproduces_scattered_tokens_in_order() {
    for (m, seq_len) in [(16, 32), (16, 200), (4, 9)] {
        let t = SelectiveCopyTask::new(SelectiveCopyConfig {
            vocab: 16,
            num_tokens_to_copy: m,
        })
        .unwrap();
        let mut r = rng(m as u64);
        let mut layouts = std::collections::HashSet::new();
        for _ in 0..20 {
            let s = t.sample(seq_len, &mut r).unwrap();
            check_sample(&s, seq_len, 16);
            check_mask_is_answers(&s);
            let region = &s.inputs[..seq_len - m];
            let data: Vec<u32> = region.iter().copied().filter(|&x| x != BLANK).collect();
            assert_eq!(data.len(), m);
            assert!(data.iter().all(|&x| x >= 2));
            assert_eq!(s.inputs[seq_len - m], SEPARATOR);
            assert_eq!(&s.targets[seq_len - m..], &data[..]);
            assert_eq!(s.answers, vec![seq_len - m..seq_len]);
            layouts.insert(region.iter().map(|&x| x != BLANK).collect::<Vec<bool>>());
        }
        if seq_len > 2 * m {
            assert!(layouts.len() > 1, "positions must be random");
        }
    }
}

#[test]
fn too_short_and_bad_configs_are_errors() {
    let t = CopyTask::new(CopyConfig {
        vocab: 16,
        copy_len: 10,
    })
    .unwrap();
    let err = t.sample(19, &mut rng(0)).unwrap_err().to_string();
    assert!(
        err.contains("seq_len 19") && err.contains("20") && err.contains("copy_len"),
        "{err}"
    );
    let t = SelectiveCopyTask::new(SelectiveCopyConfig::default()).unwrap();
    let err = t.sample(31, &mut rng(0)).unwrap_err().to_string();
    assert!(
        err.contains("32") && err.contains("num_tokens_to_copy"),
        "{err}"
    );
    let err = CopyTask::new(CopyConfig {
        vocab: 2,
        copy_len: 4,
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("task.vocab"), "{err}");
    let err = SelectiveCopyTask::new(SelectiveCopyConfig {
        vocab: 16,
        num_tokens_to_copy: 0,
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("task.num_tokens_to_copy"), "{err}");
}
