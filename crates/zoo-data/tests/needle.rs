//! Needle in a haystack: placement depth, answers, variants, haystack files.

mod common;

use std::ops::Range;
use std::path::Path;
use std::sync::OnceLock;

use common::{TempDir, check_mask_is_answers, check_sample, rng};
use zoo_data::needle::{NeedleConfig, NeedleVariant, ValueKind};
use zoo_data::tokenizer::ZooTokenizer;
use zoo_data::{Sample, Task, TaskConfig, TaskError, filler};

const DEPTHS: [f64; 5] = [0.0, 0.25, 0.5, 0.75, 1.0];

fn build(config: NeedleConfig) -> Task {
    TaskConfig::Needle(config).build(Path::new(".")).unwrap()
}

/// Three distractors, values and queries, digits values.
fn digits_task() -> &'static Task {
    static TASK: OnceLock<Task> = OnceLock::new();
    TASK.get_or_init(|| {
        build(NeedleConfig {
            num_distractors: 3,
            num_values: 3,
            num_queries: 3,
            ..NeedleConfig::default()
        })
    })
}

fn tok(task: &Task) -> &ZooTokenizer {
    task.tokenizer().unwrap()
}

/// The full token stream: inputs plus the final target.
fn stream(s: &Sample) -> Vec<u32> {
    let mut v = s.inputs.clone();
    v.push(*s.targets.last().unwrap());
    v
}

/// (key, value) of a decoded needle sentence.
fn parse_needle(text: &str) -> (String, String) {
    let body = text
        .trim()
        .strip_prefix("The special magic ")
        .unwrap_or_else(|| panic!("not a needle: {text:?}"));
    let (_, rest) = body.split_once(" for ").unwrap();
    let (key, value) = rest.split_once(" is: ").unwrap();
    (key.to_string(), value.trim_end_matches('.').to_string())
}

/// Start of the question in the stream.
fn question_start(task: &Task, s: &Sample) -> usize {
    let st = stream(s);
    let text = tok(task).decode(&st);
    let q = text.find(" What ").expect("question present");
    // The smallest token prefix whose decoding reaches the question.
    let idx: Vec<usize> = (0..=st.len()).collect();
    idx[idx.partition_point(|&i| tok(task).decode(&st[..i]).len() < q)]
}

/// Haystack tokens before a needle: its start minus the other needles before it.
fn haystack_before(all_needles: &[Range<usize>], needle: &Range<usize>) -> usize {
    needle.start
        - all_needles
            .iter()
            .filter(|n| n.end <= needle.start)
            .map(|n| n.len())
            .sum::<usize>()
}

/// All needle sentences in the haystack part: token ranges and (key, value).
fn find_needles(task: &Task, s: &Sample, q_start: usize) -> Vec<(Range<usize>, String, String)> {
    let t = tok(task);
    let st = stream(s);
    let mut out = Vec::new();
    let mut i = 0;
    while i < q_start {
        if t.decode(&st[i..(i + 12).min(q_start)])
            .starts_with(" The special magic")
        {
            let end = (i + 1..=q_start)
                .find(|&e| {
                    t.decode(&st[i..e]).ends_with('.') && t.decode(&st[i..e]).contains(" is: ")
                })
                .unwrap();
            let (k, v) = parse_needle(&t.decode(&st[i..end]));
            out.push((i..end, k, v));
            i = end;
        } else {
            i += 1;
        }
    }
    out
}

/// The longest filler sentence in tokens: the placement tolerance.
fn max_sentence_tokens(task: &Task) -> usize {
    filler::sentences(20_000, 99)
        .iter()
        .map(|s| tok(task).encode(&format!(" {s}")).len())
        .max()
        .unwrap()
}

#[test]
fn single_needle_sits_at_requested_depth_and_answers_decode() {
    let task = digits_task();
    let tol = max_sentence_tokens(task) as f64;
    let t = tok(task);
    let mut r = rng(1);
    for seq_len in [96, 200, 512, 1500] {
        for depth in DEPTHS {
            for _ in 0..3 {
                let s = task
                    .needle_sample(seq_len, depth, NeedleVariant::Single, &mut r)
                    .unwrap();
                check_sample(&s, seq_len, task.vocab_size());
                check_mask_is_answers(&s);
                assert_eq!(s.needle_positions.len(), 1);
                assert_eq!(s.answers.len(), 1);
                let needle = s.needle_positions[0].clone();
                let (key, value) = parse_needle(&t.decode(&s.inputs[needle.clone()]));
                assert_eq!(value.len(), 5);
                assert!(value.chars().all(|c| c.is_ascii_digit()) && !value.starts_with('0'));
                // Digits are single tokens, so the answer is exactly 5 positions.
                assert_eq!(s.answers[0].len(), 5);
                assert_eq!(t.decode(&s.targets[s.answers[0].clone()]), value);
                assert_eq!(s.answers[0].end, seq_len, "the answer ends the sequence");

                let st = stream(&s);
                let question = t.encode(&format!(
                    " What is the special magic number for {key}? The special magic number for {key} is: {value}"
                ));
                let q_start = st.len() - question.len();
                assert_eq!(&st[q_start..], &question[..]);
                let found = find_needles(task, &s, q_start);
                assert_eq!(found.len(), 1, "exactly one needle in the haystack");

                let h = q_start - needle.len();
                let before = needle.start;
                assert!(
                    (before as f64 - depth * h as f64).abs() <= tol,
                    "seq_len {seq_len} depth {depth}: {before} of {h}"
                );
                let reported = s.depth.unwrap();
                assert!((reported - before as f64 / h as f64).abs() < 1e-12);
                if depth == 0.0 {
                    assert_eq!(needle.start, 0);
                }
                if depth == 1.0 {
                    assert_eq!(needle.end, q_start);
                }
            }
        }
    }
}

#[test]
fn multi_key_asks_one_key_among_distractors() {
    let task = digits_task();
    let t = tok(task);
    let tol = max_sentence_tokens(task) as f64;
    let mut r = rng(2);
    for depth in DEPTHS {
        let s = task
            .needle_sample(700, depth, NeedleVariant::MultiKey, &mut r)
            .unwrap();
        check_sample(&s, 700, task.vocab_size());
        check_mask_is_answers(&s);
        let q_start = question_start(task, &s);
        let found = find_needles(task, &s, q_start);
        assert_eq!(found.len(), 4, "asked needle + 3 distractors");
        let keys: std::collections::HashSet<&String> = found.iter().map(|f| &f.1).collect();
        let values: std::collections::HashSet<&String> = found.iter().map(|f| &f.2).collect();
        assert_eq!(keys.len(), 4);
        assert_eq!(values.len(), 4);

        let (asked_key, asked_value) =
            parse_needle(&t.decode(&s.inputs[s.needle_positions[0].clone()]));
        let question = t.decode(&stream(&s)[q_start..]);
        assert!(
            question.starts_with(&format!(
                " What is the special magic number for {asked_key}?"
            )),
            "{question}"
        );
        assert_eq!(s.answers.len(), 1);
        assert_eq!(t.decode(&s.targets[s.answers[0].clone()]), asked_value);

        let ranges: Vec<Range<usize>> = found.iter().map(|f| f.0.clone()).collect();
        assert!(ranges.contains(&s.needle_positions[0]));
        let h = q_start - ranges.iter().map(|r| r.len()).sum::<usize>();
        let before = haystack_before(&ranges, &s.needle_positions[0]);
        assert!((before as f64 - depth * h as f64).abs() <= tol);
        assert!((s.depth.unwrap() - before as f64 / h as f64).abs() < 1e-12);
    }
}

#[test]
fn multi_value_lists_every_value_in_haystack_order() {
    let task = digits_task();
    let t = tok(task);
    let mut r = rng(3);
    for depth in DEPTHS {
        let s = task
            .needle_sample(600, depth, NeedleVariant::MultiValue, &mut r)
            .unwrap();
        check_sample(&s, 600, task.vocab_size());
        check_mask_is_answers(&s);
        let q_start = question_start(task, &s);
        let found = find_needles(task, &s, q_start);
        assert_eq!(found.len(), 3);
        assert!(found.iter().all(|f| f.1 == found[0].1), "one key");
        let found_values: Vec<&String> = found.iter().map(|f| &f.2).collect();
        assert_eq!(
            found_values
                .iter()
                .collect::<std::collections::HashSet<_>>()
                .len(),
            3
        );

        assert_eq!(s.answers.len(), 3);
        assert_eq!(s.needle_positions.len(), 3);
        for (k, (span, needle)) in s.answers.iter().zip(&s.needle_positions).enumerate() {
            let (_, v) = parse_needle(&t.decode(&s.inputs[needle.clone()]));
            assert_eq!(t.decode(&s.targets[span.clone()]), v);
            assert_eq!(&v, found_values[k], "answers follow haystack order");
        }
        let question = t.decode(&stream(&s)[q_start..]);
        assert!(question.contains(&format!(
            "are: {}, {}, {}",
            found_values[0], found_values[1], found_values[2]
        )));
        // The requested-depth needle is one of them, at the reported depth.
        let ranges: Vec<Range<usize>> = found.iter().map(|f| f.0.clone()).collect();
        let h = q_start - ranges.iter().map(|r| r.len()).sum::<usize>();
        let reported = s.depth.unwrap();
        assert!(
            ranges.iter().any(|n| {
                (haystack_before(&ranges, n) as f64 / h as f64 - reported).abs() < 1e-12
            })
        );
    }
}

#[test]
fn multi_query_answers_every_key() {
    let task = digits_task();
    let t = tok(task);
    let tol = max_sentence_tokens(task) as f64;
    let mut r = rng(4);
    let mut asked_in_haystack_order = 0;
    for (i, depth) in DEPTHS.iter().cycle().take(15).enumerate() {
        let s = task
            .needle_sample(800 + i, *depth, NeedleVariant::MultiQuery, &mut r)
            .unwrap();
        check_sample(&s, 800 + i, task.vocab_size());
        check_mask_is_answers(&s);
        let q_start = question_start(task, &s);
        let found = find_needles(task, &s, q_start);
        assert_eq!(found.len(), 3);
        assert_eq!(s.answers.len(), 3);
        let question = t.decode(&stream(&s)[q_start..]);
        let mut asked_keys = Vec::new();
        for (span, needle) in s.answers.iter().zip(&s.needle_positions) {
            let (k, v) = parse_needle(&t.decode(&s.inputs[needle.clone()]));
            assert_eq!(t.decode(&s.targets[span.clone()]), v);
            assert!(question.contains(&format!("The special magic number for {k} is: {v}")));
            asked_keys.push(k);
        }
        assert_eq!(
            asked_keys
                .iter()
                .collect::<std::collections::HashSet<_>>()
                .len(),
            3
        );
        let haystack_keys: Vec<&String> = found.iter().map(|f| &f.1).collect();
        if asked_keys.iter().collect::<Vec<_>>() == haystack_keys {
            asked_in_haystack_order += 1;
        }
        let ranges: Vec<Range<usize>> = found.iter().map(|f| f.0.clone()).collect();
        let h = q_start - ranges.iter().map(|r| r.len()).sum::<usize>();
        let before = haystack_before(&ranges, &s.needle_positions[0]);
        assert!((before as f64 - depth * h as f64).abs() <= tol);
    }
    assert!(
        asked_in_haystack_order < 15,
        "question order must not leak haystack order"
    );
}

#[test]
fn word_and_uuid_values_decode_from_answers() {
    for (kind, len) in [(ValueKind::Words, 2), (ValueKind::Uuid, 0)] {
        let task = build(NeedleConfig {
            value_kind: kind,
            value_len: len,
            variant: NeedleVariant::MultiQuery,
            ..NeedleConfig::default()
        });
        let t = tok(&task);
        let mut r = rng(5);
        for _ in 0..5 {
            let s = task.sample(400, &mut r).unwrap();
            check_sample(&s, 400, task.vocab_size());
            check_mask_is_answers(&s);
            assert_eq!(s.answers.len(), 2);
            for (span, needle) in s.answers.iter().zip(&s.needle_positions) {
                let (_, v) = parse_needle(&t.decode(&s.inputs[needle.clone()]));
                assert_eq!(t.decode(&s.targets[span.clone()]).trim(), v);
                match kind {
                    ValueKind::Words => assert_eq!(v.split(' ').count(), 2),
                    _ => {
                        assert_eq!(v.len(), 36);
                        assert_eq!(v.matches('-').count(), 4);
                    }
                }
            }
            assert!(!s.inputs.contains(&2), "no <unk> in the sample");
        }
    }
}

#[test]
fn configured_depth_and_variant_drive_sample() {
    let task = build(NeedleConfig {
        depth: Some(1.0),
        variant: NeedleVariant::MultiValue,
        num_values: 2,
        ..NeedleConfig::default()
    });
    let mut r = rng(6);
    for _ in 0..5 {
        let s = task.sample(300, &mut r).unwrap();
        assert_eq!(s.answers.len(), 2);
        assert!(s.depth.unwrap() > 0.9, "{:?}", s.depth);
    }
}

#[test]
fn min_seq_len_fits_every_sample_and_shorter_is_an_error() {
    let task = digits_task();
    let needle = task.as_needle().unwrap();
    let mut r = rng(7);
    for v in NeedleVariant::ALL {
        let min = needle.min_seq_len_for(v);
        assert!(min > 10 && min < 400, "{v}: {min}");
        for _ in 0..30 {
            let s = task.needle_sample(min, 0.5, v, &mut r).unwrap();
            assert_eq!(s.inputs.len(), min);
        }
    }
    assert_eq!(
        task.min_seq_len(),
        needle.min_seq_len_for(NeedleVariant::Single)
    );
    let err = task.sample(10, &mut r).unwrap_err().to_string();
    assert!(
        err.starts_with("seq_len 10 is too short for needle"),
        "{err}"
    );
    assert!(err.contains("needs at least"), "{err}");
}

#[test]
fn haystack_file_provides_the_text() {
    let dir = TempDir::new("haystack");
    let text = "Zebras graze quietly on the open savanna. Lions watch from the shade!\n\
                Rain arrives late in the season? Rivers swell and the herds move north. "
        .repeat(40);
    dir.write("hay.txt", &text);
    let task = TaskConfig::Needle(NeedleConfig {
        haystack: Some("hay.txt".into()),
        ..NeedleConfig::default()
    })
    .build(dir.path())
    .unwrap();
    let t = tok(&task);
    let tol = split_max_tokens(t, &text) as f64;
    let mut r = rng(8);
    for depth in DEPTHS {
        let s = task
            .needle_sample(400, depth, NeedleVariant::Single, &mut r)
            .unwrap();
        check_sample(&s, 400, task.vocab_size());
        let decoded = t.decode(&s.inputs);
        assert!(
            decoded.contains("savanna") || decoded.contains("herds"),
            "{decoded}"
        );
        let needle = s.needle_positions[0].clone();
        let (_, value) = parse_needle(&t.decode(&s.inputs[needle.clone()]));
        assert_eq!(t.decode(&s.targets[s.answers[0].clone()]), value);
        let q_start = question_start(&task, &s);
        let h = q_start - needle.len();
        assert!((needle.start as f64 - depth * h as f64).abs() <= tol);
    }

    // A file without sentence punctuation is still cut into insertion points.
    let words: Vec<String> = (0..3000).map(|i| format!("w{}", i % 50)).collect();
    dir.write("flat.txt", words.join(" "));
    let task = TaskConfig::Needle(NeedleConfig {
        haystack: Some(dir.path().join("flat.txt")),
        ..NeedleConfig::default()
    })
    .build(Path::new("/nonexistent"))
    .unwrap();
    let s = task
        .needle_sample(1000, 0.5, NeedleVariant::Single, &mut r)
        .unwrap();
    let q_start = question_start(&task, &s);
    let needle = s.needle_positions[0].clone();
    let h = q_start - needle.len();
    let off = (needle.start as f64 - 0.5 * h as f64).abs();
    assert!(off <= 100.0, "{off}");
}

fn split_max_tokens(t: &ZooTokenizer, text: &str) -> usize {
    zoo_data::needle::split_sentences(text, 40)
        .iter()
        .map(|s| t.encode(&format!(" {s}")).len())
        .max()
        .unwrap()
}

#[test]
fn saved_tokenizer_can_be_reused() {
    let dir = TempDir::new("needle-tok");
    let task = digits_task();
    tok(task).save(dir.path().join("tok.json")).unwrap();
    let reused = TaskConfig::Needle(NeedleConfig {
        tokenizer: Some("tok.json".into()),
        ..NeedleConfig::default()
    })
    .build(dir.path())
    .unwrap();
    assert_eq!(reused.vocab_size(), task.vocab_size());
    let a = task
        .needle_sample(300, 0.3, NeedleVariant::Single, &mut rng(9))
        .unwrap();
    let b = reused
        .needle_sample(300, 0.3, NeedleVariant::Single, &mut rng(9))
        .unwrap();
    assert_eq!(a, b, "same tokenizer, same seed: same sample");
}

#[test]
fn errors_name_the_file_or_field() {
    let dir = TempDir::new("needle-err");
    let err = TaskConfig::Needle(NeedleConfig {
        haystack: Some("missing.txt".into()),
        ..NeedleConfig::default()
    })
    .build(dir.path())
    .unwrap_err();
    assert!(matches!(err, TaskError::Io { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("haystack file") && msg.contains("missing.txt"),
        "{msg}"
    );

    dir.write("bad.json", "{ this is not json");
    let msg = TaskConfig::Needle(NeedleConfig {
        tokenizer: Some("bad.json".into()),
        ..NeedleConfig::default()
    })
    .build(dir.path())
    .unwrap_err()
    .to_string();
    assert!(
        msg.contains("bad.json") && msg.contains("tokenizer"),
        "{msg}"
    );

    dir.write("empty.txt", "  \n\n ");
    let msg = TaskConfig::Needle(NeedleConfig {
        haystack: Some("empty.txt".into()),
        ..NeedleConfig::default()
    })
    .build(dir.path())
    .unwrap_err()
    .to_string();
    assert!(
        msg.contains("empty.txt") && msg.contains("no text"),
        "{msg}"
    );

    dir.write("latin1.txt", [0x48u8, 0x69, 0xe9, 0x2e]);
    let msg = TaskConfig::Needle(NeedleConfig {
        haystack: Some("latin1.txt".into()),
        ..NeedleConfig::default()
    })
    .build(dir.path())
    .unwrap_err()
    .to_string();
    assert!(msg.contains("latin1.txt") && msg.contains("UTF-8"), "{msg}");

    let task = digits_task();
    let msg = task
        .needle_sample(300, 1.5, NeedleVariant::Single, &mut rng(0))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("depth") && msg.contains("1.5"), "{msg}");

    let mqar = TaskConfig::Mqar(Default::default())
        .build(Path::new("."))
        .unwrap();
    let err = mqar
        .needle_sample(300, 0.5, NeedleVariant::Single, &mut rng(0))
        .unwrap_err();
    assert!(matches!(err, TaskError::WrongTask { .. }), "{err}");
    assert!(err.to_string().contains("mqar"));
}
