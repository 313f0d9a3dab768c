//! Text LM task: windows come from the training split, eval windows tile the
//! held-out split in order, bad files are errors naming the file.

mod common;

use common::{TempDir, check_sample, rng};
use zoo_data::text::TextConfig;
use zoo_data::{TaskConfig, TaskError, filler};

fn corpus_file(dir: &TempDir) -> std::path::PathBuf {
    let text: String = filler::sentences(3000, 8)
        .chunks(5)
        .map(|c| c.join(" ") + "\n")
        .collect();
    dir.write("corpus.txt", text)
}

#[test]
fn training_windows_are_slices_of_the_training_split() {
    let dir = TempDir::new("text");
    corpus_file(&dir);
    let task = TaskConfig::Text(TextConfig::new("corpus.txt"))
        .build(dir.path())
        .unwrap();
    assert!(task.is_text());
    assert_eq!(task.min_seq_len(), 1);
    let text = task.as_text().unwrap();
    let total = text.tokens().len();
    assert_eq!(text.num_train_tokens() + text.num_valid_tokens(), total);
    let expected_valid = (total as f64 * 0.05).round() as usize;
    assert_eq!(text.num_valid_tokens(), expected_valid);

    let train = &text.tokens()[..text.num_train_tokens()];
    let mut r = rng(1);
    let mut starts = std::collections::HashSet::new();
    for _ in 0..50 {
        let s = task.sample(64, &mut r).unwrap();
        check_sample(&s, 64, task.vocab_size());
        assert!(s.loss_mask.iter().all(|&m| m));
        assert_eq!(&s.inputs[1..], &s.targets[..63]);
        let mut window = s.inputs.clone();
        window.push(s.targets[63]);
        let start = train
            .windows(65)
            .position(|w| w == &window[..])
            .expect("window is inside the training split");
        starts.insert(start);
    }
    assert!(starts.len() > 40, "windows must be spread out");

    let decoded = task.tokenizer().unwrap().decode(text.tokens());
    let original = std::fs::read_to_string(dir.path().join("corpus.txt")).unwrap();
    assert_eq!(decoded, original, "tokenisation is lossless");
}

#[test]
fn eval_windows_tile_the_held_out_split_in_order() {
    let dir = TempDir::new("text-eval");
    corpus_file(&dir);
    let task = TaskConfig::Text(TextConfig {
        valid_fraction: 0.2,
        ..TextConfig::new("corpus.txt")
    })
    .build(dir.path())
    .unwrap();
    let text = task.as_text().unwrap();
    let valid = &text.tokens()[text.num_train_tokens()..];
    let seq_len = 50;
    let all = task.eval_windows(seq_len, usize::MAX).unwrap();
    assert_eq!(all.len(), (valid.len() - 1) / seq_len);
    for (k, s) in all.iter().enumerate() {
        assert_eq!(&s.inputs[..], &valid[k * seq_len..(k + 1) * seq_len]);
        assert_eq!(
            &s.targets[..],
            &valid[k * seq_len + 1..(k + 1) * seq_len + 1]
        );
        assert!(s.loss_mask.iter().all(|&m| m));
    }
    let few = text.eval_windows(seq_len, 3);
    assert_eq!(few, all[..3].to_vec());
    assert!(text.eval_windows(valid.len(), 10).is_empty());
    assert!(text.eval_windows(0, 10).is_empty());
}

#[test]
fn bad_text_files_are_errors_naming_the_file() {
    let dir = TempDir::new("text-err");
    let build = |name: &str| {
        TaskConfig::Text(TextConfig::new(name))
            .build(dir.path())
            .unwrap_err()
    };
    let err = build("absent.txt");
    assert!(matches!(err, TaskError::Io { .. }));
    assert!(err.to_string().contains("absent.txt"), "{err}");

    dir.write("empty.txt", "\n  \n");
    let msg = build("empty.txt").to_string();
    assert!(msg.contains("empty.txt") && msg.contains("empty"), "{msg}");

    dir.write("binary.txt", [0xffu8, 0xfe, 0x00, 0x41]);
    let msg = build("binary.txt").to_string();
    assert!(msg.contains("binary.txt") && msg.contains("UTF-8"), "{msg}");

    dir.write("tiny.txt", "Hi.");
    let task = TaskConfig::Text(TextConfig::new("tiny.txt"))
        .build(dir.path())
        .unwrap();
    let msg = task.sample(64, &mut rng(0)).unwrap_err().to_string();
    assert!(
        msg.starts_with("seq_len 64 is too long for text file"),
        "{msg}"
    );
    assert!(msg.contains("tiny.txt"), "{msg}");

    let mqar = TaskConfig::Mqar(Default::default())
        .build(dir.path())
        .unwrap();
    assert!(matches!(
        mqar.eval_windows(10, 1),
        Err(TaskError::WrongTask { .. })
    ));
}
