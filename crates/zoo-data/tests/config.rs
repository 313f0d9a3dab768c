//! Strict config parsing: defaults, unknown kinds/fields rejected, round
//! trips, and validation messages that name the field.

use std::path::{Path, PathBuf};

use zoo_data::TaskConfig;
use zoo_data::copy::{CopyConfig, SelectiveCopyConfig};
use zoo_data::mqar::MqarConfig;
use zoo_data::needle::{NeedleConfig, NeedleVariant, ValueKind};
use zoo_data::text::TextConfig;

fn toml(s: &str) -> Result<TaskConfig, String> {
    toml::from_str::<TaskConfig>(s).map_err(|e| e.to_string())
}

#[test]
fn defaults_fill_every_omitted_field() {
    assert_eq!(
        toml(r#"kind = "mqar""#).unwrap(),
        TaskConfig::Mqar(MqarConfig {
            vocab: 8192,
            num_kv_pairs: 8,
            power_a: 0.01,
            num_kv_pairs_choices: vec![],
        })
    );
    assert_eq!(
        toml(r#"kind = "needle""#).unwrap(),
        TaskConfig::Needle(NeedleConfig {
            variant: NeedleVariant::Single,
            value_kind: ValueKind::Digits,
            value_len: 5,
            num_distractors: 2,
            num_values: 2,
            num_queries: 2,
            haystack: None,
            tokenizer: None,
            vocab_size: 256,
            depth: None,
        })
    );
    assert_eq!(
        toml(r#"kind = "copy""#).unwrap(),
        TaskConfig::Copy(CopyConfig::default())
    );
    assert_eq!(
        toml(r#"kind = "selective_copy""#).unwrap(),
        TaskConfig::SelectiveCopy(SelectiveCopyConfig::default())
    );
    assert_eq!(
        toml("kind = \"text\"\npath = \"a.txt\"").unwrap(),
        TaskConfig::Text(TextConfig {
            path: PathBuf::from("a.txt"),
            tokenizer: None,
            vocab_size: 512,
            valid_fraction: 0.05,
        })
    );
}

#[test]
fn explicit_fields_parse() {
    let c = toml(
        r#"
        kind = "needle"
        variant = "multikey"
        value_kind = "uuid"
        num_distractors = 4
        haystack = "essays.txt"
        depth = 0.25
        "#,
    )
    .unwrap();
    let TaskConfig::Needle(n) = c else {
        panic!("not a needle config")
    };
    assert_eq!(n.variant, NeedleVariant::MultiKey);
    assert_eq!(n.value_kind, ValueKind::Uuid);
    assert_eq!(n.num_distractors, 4);
    assert_eq!(n.haystack, Some(PathBuf::from("essays.txt")));
    assert_eq!(n.depth, Some(0.25));

    let c: TaskConfig =
        serde_json::from_str(r#"{"kind": "mqar", "num_kv_pairs_choices": [4, 8], "power_a": 0.1}"#)
            .unwrap();
    assert_eq!(
        c,
        TaskConfig::Mqar(MqarConfig {
            num_kv_pairs_choices: vec![4, 8],
            power_a: 0.1,
            ..MqarConfig::default()
        })
    );
}

#[test]
fn unknown_kinds_and_fields_are_rejected() {
    let err = toml("kind = \"mqar\"\nnum_pairs = 3").unwrap_err();
    assert!(err.contains("num_pairs"), "{err}");
    let err = toml("kind = \"needle\"\ndepht = 0.5").unwrap_err();
    assert!(err.contains("depht"), "{err}");
    let err = toml("kind = \"text\"\npath = \"a\"\nvocab = 3").unwrap_err();
    assert!(err.contains("vocab"), "{err}");
    let err = toml(r#"kind = "lm""#).unwrap_err();
    assert!(err.contains("lm"), "{err}");
    assert!(toml("vocab = 3").is_err(), "kind is required");
    assert!(toml("kind = \"text\"").is_err(), "text needs a path");
    assert!(toml("kind = \"needle\"\nvariant = \"double\"").is_err());
}

#[test]
fn serialisation_round_trips() {
    let configs = [
        TaskConfig::Mqar(MqarConfig {
            num_kv_pairs_choices: vec![2, 3],
            ..MqarConfig::default()
        }),
        TaskConfig::Needle(NeedleConfig::default()),
        TaskConfig::Needle(NeedleConfig {
            variant: NeedleVariant::MultiQuery,
            value_kind: ValueKind::Words,
            haystack: Some("h.txt".into()),
            tokenizer: Some("t.json".into()),
            depth: Some(0.5),
            ..NeedleConfig::default()
        }),
        TaskConfig::Copy(CopyConfig::default()),
        TaskConfig::SelectiveCopy(SelectiveCopyConfig::default()),
        TaskConfig::Text(TextConfig::new("x.txt")),
    ];
    for c in configs {
        let t = toml::to_string(&c).unwrap();
        assert_eq!(toml(&t).unwrap(), c, "{t}");
        let j = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<TaskConfig>(&j).unwrap(), c, "{j}");
        assert!(j.contains(&format!("\"kind\":\"{}\"", c.kind())));
    }
}

#[test]
fn validation_names_the_offending_field() {
    let cases: Vec<(TaskConfig, &str)> = vec![
        (
            TaskConfig::Mqar(MqarConfig {
                power_a: 0.0,
                ..MqarConfig::default()
            }),
            "task.power_a",
        ),
        (
            TaskConfig::Mqar(MqarConfig {
                num_kv_pairs: 0,
                ..MqarConfig::default()
            }),
            "task.num_kv_pairs",
        ),
        (
            TaskConfig::Mqar(MqarConfig {
                num_kv_pairs_choices: vec![4, 0],
                ..MqarConfig::default()
            }),
            "task.num_kv_pairs_choices",
        ),
        (
            TaskConfig::Needle(NeedleConfig {
                depth: Some(1.5),
                ..NeedleConfig::default()
            }),
            "task.depth",
        ),
        (
            TaskConfig::Needle(NeedleConfig {
                value_len: 1,
                num_values: 12,
                ..NeedleConfig::default()
            }),
            "task.value_len",
        ),
        (
            TaskConfig::Needle(NeedleConfig {
                value_len: 0,
                ..NeedleConfig::default()
            }),
            "task.value_len",
        ),
        (
            TaskConfig::Needle(NeedleConfig {
                vocab_size: 8,
                ..NeedleConfig::default()
            }),
            "task.vocab_size",
        ),
        (
            TaskConfig::Needle(NeedleConfig {
                num_queries: 0,
                ..NeedleConfig::default()
            }),
            "task.num_queries",
        ),
        (
            TaskConfig::Text(TextConfig {
                valid_fraction: 1.0,
                ..TextConfig::new("a.txt")
            }),
            "task.valid_fraction",
        ),
        (
            TaskConfig::Copy(CopyConfig {
                vocab: 16,
                copy_len: 0,
            }),
            "task.copy_len",
        ),
    ];
    for (c, field) in cases {
        let err = c.validate().unwrap_err().to_string();
        assert!(err.starts_with(&format!("invalid {field}:")), "{err}");
        // build validates before touching the file system.
        let err = c
            .build(Path::new("/definitely/missing"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(field), "{err}");
    }
    // A uuid needle ignores value_len, so 0 is fine there.
    assert!(
        TaskConfig::Needle(NeedleConfig {
            value_kind: ValueKind::Uuid,
            value_len: 0,
            ..NeedleConfig::default()
        })
        .validate()
        .is_ok()
    );
}
