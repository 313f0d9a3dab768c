//! Tokenizer: deterministic training, save/load round trip, single-digit
//! tokens, lossless decoding of filler text, errors naming the file.

mod common;

use common::TempDir;
use zoo_data::filler;
use zoo_data::tokenizer::ZooTokenizer;

fn trained() -> ZooTokenizer {
    ZooTokenizer::train_bpe(&filler::sentences(3000, 1), 256).unwrap()
}

#[test]
fn save_load_round_trip_gives_identical_ids() {
    let dir = TempDir::new("tok");
    let tok = trained();
    let path = dir.path().join("tokenizer.json");
    tok.save(&path).unwrap();
    let loaded = ZooTokenizer::from_file(&path).unwrap();
    assert_eq!(loaded.vocab_size(), tok.vocab_size());
    assert_eq!(loaded.pad_id(), 0);
    assert_eq!(loaded.eos_id(), Some(1));
    for text in filler::sentences(200, 2)
        .into_iter()
        .chain(["The special magic number for amber-falcon is: 90210.".to_string()])
    {
        assert_eq!(loaded.encode(&text), tok.encode(&text), "{text}");
    }
    assert!(loaded.origin().contains("tokenizer.json"));
}

#[test]
fn training_is_deterministic_and_fast_enough() {
    let corpus = filler::sentences(4000, 3);
    let start = std::time::Instant::now();
    let a = ZooTokenizer::train_bpe(&corpus, 300).unwrap();
    let elapsed = start.elapsed();
    let b = ZooTokenizer::train_bpe(&corpus, 300).unwrap();
    let dir = TempDir::new("tok-det");
    a.save(dir.path().join("a.json")).unwrap();
    b.save(dir.path().join("b.json")).unwrap();
    let ja = std::fs::read_to_string(dir.path().join("a.json")).unwrap();
    let jb = std::fs::read_to_string(dir.path().join("b.json")).unwrap();
    assert_eq!(ja, jb);
    // Generous bound (shared CI machine); the real cost is a few ms.
    assert!(elapsed.as_secs_f64() < 5.0, "training took {elapsed:?}");
    // The vocabulary is actually used: common words become single tokens.
    assert_eq!(a.encode(" the").len(), 1);
}

#[test]
fn digits_are_always_single_tokens() {
    let tok = trained();
    for text in [
        "12345",
        " 9876543210",
        "is: 00700.",
        "x1y22z333",
        " 4 44 444",
    ] {
        let enc = tok.try_encode_with_offsets(text).unwrap();
        let ids = &enc.ids;
        for (id, &(s, e)) in ids.iter().zip(&enc.offsets) {
            let piece = &text[s..e];
            if piece.chars().any(|c| c.is_ascii_digit()) {
                assert_eq!(piece.len(), 1, "token {id} covers {piece:?} in {text:?}");
            }
        }
        let digits = text.chars().filter(|c| c.is_ascii_digit()).count();
        let digit_tokens = ids
            .iter()
            .filter(|&&i| tok.decode(&[i]).chars().any(|c| c.is_ascii_digit()))
            .count();
        assert_eq!(digit_tokens, digits, "{text}");
    }
}

#[test]
fn decode_inverts_encode_on_filler() {
    let tok = trained();
    let text = filler::corpus(500, 4);
    assert_eq!(tok.decode(&tok.encode(&text)), text);
    for s in filler::sentences(100, 5) {
        let spaced = format!(" {s}");
        assert_eq!(tok.decode(&tok.encode(&spaced)), spaced);
    }
    // Splicing sentence encodings equals encoding the joined text.
    let parts = filler::sentences(20, 6);
    let spliced: Vec<u32> = parts
        .iter()
        .flat_map(|p| tok.encode(&format!(" {p}")))
        .collect();
    let joined: String = parts.iter().map(|p| format!(" {p}")).collect();
    assert_eq!(spliced, tok.encode(&joined));
}

#[test]
fn bad_files_are_errors_naming_the_path() {
    let dir = TempDir::new("tok-err");
    let missing = dir.path().join("nope.json");
    let msg = ZooTokenizer::from_file(&missing).unwrap_err().to_string();
    assert!(
        msg.contains("nope.json") && msg.contains("tokenizer file"),
        "{msg}"
    );

    let bad = dir.write("broken.json", r#"{"model": 3}"#);
    let msg = ZooTokenizer::from_file(&bad).unwrap_err().to_string();
    assert!(
        msg.contains("broken.json") && msg.contains("not a valid tokenizer.json"),
        "{msg}"
    );

    let msg = trained()
        .save(dir.path().join("no/such/dir/t.json"))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("t.json"), "{msg}");
}
