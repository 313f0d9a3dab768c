//! Same seed → identical samples and batches, for every task kind; different
//! seeds → different samples.

mod common;

use std::path::Path;

use common::{TempDir, check_sample, rng};
use zoo_data::copy::{CopyConfig, SelectiveCopyConfig};
use zoo_data::mqar::MqarConfig;
use zoo_data::needle::NeedleConfig;
use zoo_data::text::TextConfig;
use zoo_data::{Task, TaskConfig, filler};

fn tasks(dir: &TempDir) -> Vec<(Task, usize)> {
    dir.write("lm.txt", filler::corpus(800, 2));
    let configs = [
        (
            TaskConfig::Mqar(MqarConfig {
                num_kv_pairs_choices: vec![4, 8, 16],
                ..MqarConfig::default()
            }),
            128,
        ),
        (TaskConfig::Needle(NeedleConfig::default()), 256),
        (TaskConfig::Copy(CopyConfig::default()), 64),
        (
            TaskConfig::SelectiveCopy(SelectiveCopyConfig::default()),
            64,
        ),
        (TaskConfig::Text(TextConfig::new("lm.txt")), 64),
    ];
    configs
        .into_iter()
        .map(|(c, seq_len)| (c.build(dir.path()).unwrap(), seq_len))
        .collect()
}

#[test]
fn same_seed_same_samples_different_seed_different_samples() {
    let dir = TempDir::new("det");
    for (task, seq_len) in tasks(&dir) {
        let draw = |seed: u64| {
            let mut r = rng(seed);
            (0..5)
                .map(|_| task.sample(seq_len, &mut r).unwrap())
                .collect::<Vec<_>>()
        };
        let a = draw(42);
        assert_eq!(a, draw(42), "{}", task.kind());
        assert_ne!(a, draw(43), "{}", task.kind());
        // Consecutive samples from one stream differ too.
        assert_ne!(a[0], a[1], "{}", task.kind());
        for s in &a {
            check_sample(s, seq_len, task.vocab_size());
            assert!(s.num_loss_positions() > 0);
        }
    }
}

#[test]
fn batches_are_deterministic_and_match_their_samples() {
    let dir = TempDir::new("det-batch");
    for (task, seq_len) in tasks(&dir) {
        let a = task.batch(4, seq_len, &mut rng(7)).unwrap();
        let b = task.batch(4, seq_len, &mut rng(7)).unwrap();
        assert_eq!(a, b);
        assert_eq!((a.batch_size, a.seq_len), (4, seq_len));
        assert_eq!(a.inputs.len(), 4 * seq_len);
        // A batch is the same as drawing the samples one by one.
        let mut r = rng(7);
        for (i, s) in a.samples.iter().enumerate() {
            assert_eq!(s, &task.sample(seq_len, &mut r).unwrap());
            assert_eq!(&a.inputs[i * seq_len..(i + 1) * seq_len], &s.inputs[..]);
            assert_eq!(&a.targets[i * seq_len..(i + 1) * seq_len], &s.targets[..]);
            assert_eq!(
                &a.loss_mask[i * seq_len..(i + 1) * seq_len],
                &s.loss_mask[..]
            );
        }
        let err = task.batch(0, seq_len, &mut rng(7)).unwrap_err();
        assert!(err.to_string().contains("batch_size"), "{err}");
        let short = task.batch(2, 0, &mut rng(7)).unwrap_err();
        assert!(short.to_string().contains("seq_len 0"), "{short}");
    }
}

#[test]
fn tokenizer_training_is_identical_across_builds() {
    let a = TaskConfig::Needle(NeedleConfig::default())
        .build(Path::new("."))
        .unwrap();
    let b = TaskConfig::Needle(NeedleConfig::default())
        .build(Path::new("."))
        .unwrap();
    let s1 = a.sample(300, &mut rng(5)).unwrap();
    let s2 = b.sample(300, &mut rng(5)).unwrap();
    assert_eq!(s1, s2);
}

#[test]
fn tasks_are_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<Task>();
}
