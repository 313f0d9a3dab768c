//! The run-config schema: every kind of mistake gives one precise line, `--set` overrides go
//! through the same checks, and every shipped config parses, validates and round-trips.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use zoo_data::TaskConfig;
use zoo_model::config::{MixerConfig, PositionConfig};
use zoo_train::config::{self, ConfigError, LrSchedule, RunConfig};

const ORIGIN: &str = "configs/x.toml";

/// A small valid config that the cases below break one way at a time.
const BASE: &str = r#"
[run]
name = "t"

[model]
d_model = 32
n_layers = 1
n_heads = 2
mixer = { kind = "softmax" }
position = { kind = "rope" }

[task]
kind = "mqar"
vocab = 64
num_kv_pairs = 4

[train]
batch_size = 4
lr = 3e-3
warmup_steps = 2

[[train.stages]]
seq_len = 32
steps = 10

[[train.stages]]
seq_len = 64
steps = 10
"#;

/// BASE with `from` (which must occur exactly once) replaced by `to`.
fn with(from: &str, to: &str) -> String {
    assert_eq!(
        BASE.matches(from).count(),
        1,
        "`{from}` must occur once in BASE"
    );
    BASE.replacen(from, to, 1)
}

fn parse(text: &str, sets: &[&str]) -> Result<RunConfig, ConfigError> {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    config::parse(text, ORIGIN, &sets)
}

fn error_of(text: &str, sets: &[&str]) -> String {
    match parse(text, sets) {
        Ok(_) => panic!("expected an error for sets {sets:?} and text:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn base_config_is_valid() {
    let c = parse(BASE, &[]).unwrap();
    assert_eq!(c.run.name, "t");
    assert_eq!(c.run.device, "flex");
    assert_eq!(c.train.lr, 3e-3);
    assert_eq!(c.train.schedule, LrSchedule::Cosine);
    assert_eq!(c.train.weight_decay, 0.1);
    assert_eq!(c.eval.niah.depths, vec![0.0, 0.25, 0.5, 0.75, 1.0]);
    assert_eq!(c.final_seq_len(), 64);
    assert_eq!(c.max_train_len(), 64);
}

#[test]
fn bad_configs_give_one_precise_line() {
    // (config text, --set overrides, expected substring of the message)
    let cases: Vec<(String, Vec<&str>, &str)> = vec![
        // Unknown keys, with the full dotted path and a suggestion.
        (
            with("lr = 3e-3", "lrr = 3e-3"),
            vec![],
            "unknown key `train.lrr`; did you mean `lr`? (valid keys: batch_size, lr, ",
        ),
        (
            with(
                r#"mixer = { kind = "softmax" }"#,
                r#"mixer = { kind = "sliding_window", windw = 16 }"#,
            ),
            vec![],
            "unknown key `model.mixer.windw`; did you mean `window`?",
        ),
        (
            with("vocab = 64", "vocabb = 64"),
            vec![],
            "unknown key `task.vocabb`; did you mean `vocab`?",
        ),
        (
            with("seq_len = 64", "seqlen = 64"),
            vec![],
            "unknown key `train.stages.1.seqlen`; did you mean `seq_len`?",
        ),
        (
            with("[run]", "[rnu]\n[run]"),
            vec![],
            "unknown key `rnu`; did you mean `run`?",
        ),
        (
            with(
                r#"position = { kind = "rope" }"#,
                r#"position = { kind = "alibi", theta = 5.0 }"#,
            ),
            vec![],
            "unknown key `model.position.theta`",
        ),
        (
            with("d_model = 32", "d_model = 32\nflux_capacitor = 1"),
            vec![],
            "unknown key `model.flux_capacitor` (valid keys: ",
        ),
        (
            with(
                "d_model = 32",
                "d_model = 32\nmixers = [{ kind = \"softmax\", foo = 1 }]",
            ),
            vec![],
            "unknown key `model.mixers.0.foo` (valid keys: kind, logit_scale, log_n_scaling)",
        ),
        // No suggestion when nothing is close.
        (
            with(
                r#"mixer = { kind = "softmax" }"#,
                r#"mixer = { kind = "softmax", windw = 4 }"#,
            ),
            vec![],
            "unknown key `model.mixer.windw` (valid keys: kind, logit_scale, log_n_scaling)",
        ),
        // Wrong types name the path and the expected type.
        (
            with("lr = 3e-3", r#"lr = "fast""#),
            vec![],
            r#"`train.lr` should be a float, found string "fast""#,
        ),
        (
            with(
                r#"mixer = { kind = "softmax" }"#,
                r#"mixer = { kind = "sliding_window", window = "big" }"#,
            ),
            vec![],
            r#"`model.mixer.window` should be a non-negative integer, found string "big""#,
        ),
        (
            with("batch_size = 4", "batch_size = -4"),
            vec![],
            "`train.batch_size` should be a non-negative integer, found integer -4",
        ),
        (
            with("steps = 10\n\n[[", "steps = true\n\n[["),
            vec![],
            "`train.stages.0.steps` should be a non-negative integer, found boolean true",
        ),
        (
            with("[train]", "[train]\nmixed_lengths = 1"),
            vec![],
            "`train.mixed_lengths` should be a boolean",
        ),
        (
            with(r#"mixer = { kind = "softmax" }"#, r#"mixer = "softmax""#),
            vec![],
            r#"`model.mixer` should be a table with a `kind` key, found string "softmax""#,
        ),
        (
            with(
                r#"position = { kind = "rope" }"#,
                r#"position = { kind = "rope", theta = "big" }"#,
            ),
            vec![],
            r#"`model.position.theta` should be a float, found string "big""#,
        ),
        (
            with(r#"mixer = { kind = "softmax" }"#, "mixer = { kind = 5 }"),
            vec![],
            "`model.mixer.kind` should be one of softmax, linear, rwkv, sliding_window, bigbird, deltanet, gated_deltanet, mamba2 (a string), found integer 5",
        ),
        (
            with("[train]", "[train]\nschedule = 5"),
            vec![],
            "`train.schedule` should be one of cosine, linear, constant (a string), found integer 5",
        ),
        (
            format!("{BASE}\n[eval.niah]\ndepths = [0.5, \"a\"]\n"),
            vec![],
            r#"`eval.niah.depths.1` should be a float, found string "a""#,
        ),
        // Unknown names of tagged kinds and enums.
        (
            with(r#"kind = "softmax""#, r#"kind = "softmaxx""#),
            vec![],
            r#"model.mixer.kind = "softmaxx" is not one of softmax, linear, rwkv, sliding_window, bigbird, deltanet, gated_deltanet, mamba2; did you mean softmax?"#,
        ),
        (
            with(r#"kind = "mqar""#, r#"kind = "mqr""#),
            vec![],
            r#"task.kind = "mqr" is not one of mqar, needle, copy, selective_copy, text; did you mean mqar?"#,
        ),
        (
            with(r#"kind = "rope""#, r#"kind = "rotary""#),
            vec![],
            r#"model.position.kind = "rotary" is not one of none, sinusoidal, learned, rope, alibi"#,
        ),
        (
            with(
                "d_model = 32",
                "d_model = 32\nmixers = [{ kind = \"softmax\" }, { kind = \"linear\", feature_map = \"elux\" }]",
            ),
            vec![],
            r#"model.mixers.1.feature_map = "elux" is not one of elu, relu, identity, taylor2; did you mean elu?"#,
        ),
        (
            with("[train]", "[train]\nschedule = \"cosin\""),
            vec![],
            r#"train.schedule = "cosin" is not one of cosine, linear, constant; did you mean cosine?"#,
        ),
        // Missing keys.
        (
            with("name = \"t\"", ""),
            vec![],
            "missing required key `run.name`",
        ),
        (
            with(r#"mixer = { kind = "softmax" }"#, "mixer = { window = 16 }"),
            vec![],
            "missing required key `model.mixer.kind` (add kind = one of softmax, linear, rwkv, sliding_window, bigbird, deltanet, gated_deltanet, mamba2)",
        ),
        (
            with("seq_len = 32\n", ""),
            vec![],
            "missing required key `train.stages.0.seq_len`",
        ),
        (
            BASE.split("[train]").next().unwrap().to_string(),
            vec![],
            "missing required key `train` (add a [train] table)",
        ),
        // Malformed TOML gives the line.
        (
            with("lr = 3e-3", "lr = 3e-3 oops"),
            vec![],
            "malformed TOML at line 19",
        ),
        (with("[task]", "[task"), vec![], "malformed TOML at line 12"),
        // Cross-field checks.
        (
            with("n_heads = 2", "n_heads = 3"),
            vec![],
            "model.d_model: 32 is not divisible by model.n_heads = 3",
        ),
        (
            with("num_kv_pairs = 4", "num_kv_pairs = 0"),
            vec![],
            "invalid task.num_kv_pairs",
        ),
        (
            format!(
                "{BASE}\n[train.length_warmup]\nmin_len = 32\nmax_len = 64\nsteps = 5\ntotal_steps = 20\n"
            ),
            vec![],
            "train.stages and train.length_warmup are both given",
        ),
        (
            BASE.split("[[train.stages]]").next().unwrap().to_string(),
            vec![],
            "no length schedule given",
        ),
        (
            with("seq_len = 32", "seq_len = 0"),
            vec![],
            "train.stages.0.seq_len is 0",
        ),
        (
            with("steps = 10\n\n[[", "steps = 0\n\n[["),
            vec![],
            "train.stages.0.steps is 0",
        ),
        (
            with(
                r#"mixer = { kind = "softmax" }"#,
                r#"mixer = { kind = "sliding_window", window = 100 }"#,
            ),
            vec![],
            "model.mixer.window = 100 is larger than the longest training length 64 (train.stages)",
        ),
        (
            with(
                r#"mixer = { kind = "softmax" }"#,
                r#"mixer = { kind = "bigbird", block_size = 128 }"#,
            ),
            vec![],
            "model.mixer.block_size = 128 is larger than the longest training length 64",
        ),
        (
            with(
                r#"position = { kind = "rope" }"#,
                "position = { kind = \"learned\" }\nmax_seq_len = 48",
            ),
            vec![],
            "model.max_seq_len = 48 is smaller than the longest training length 64",
        ),
        (
            with("num_kv_pairs = 4", "num_kv_pairs = 12"),
            vec![],
            "train.stages.0.seq_len = 32 is too short for task mqar: it needs at least 48",
        ),
        (
            with("batch_size = 4", "batch_size = 0"),
            vec![],
            "train.batch_size is 0",
        ),
        (
            with("[train]", "[train]\ngrad_accum = 0"),
            vec![],
            "train.grad_accum is 0",
        ),
        (
            with("lr = 3e-3", "lr = 0.0"),
            vec![],
            "train.lr = 0 must be positive",
        ),
        (
            with("[train]", "[train]\nmin_lr_ratio = 1.5"),
            vec![],
            "train.min_lr_ratio = 1.5 is outside [0, 1]",
        ),
        (
            with("[train]", "[train]\ntokens_per_step = 16"),
            vec![],
            "train.tokens_per_step = 16 is smaller than the shortest training length 32",
        ),
        (
            with("warmup_steps = 2", "warmup_steps = 50"),
            vec![],
            "train.warmup_steps = 50 exceeds the 20 training steps",
        ),
        (
            format!(
                "{}\n[train.length_warmup]\nmin_len = 128\nmax_len = 64\nsteps = 5\ntotal_steps = 20\n",
                BASE.split("[[train.stages]]").next().unwrap()
            ),
            vec![],
            "train.length_warmup.min_len = 128 is greater than train.length_warmup.max_len = 64",
        ),
        (
            format!(
                "{}\n[train.length_warmup]\nmin_len = 32\nmax_len = 64\nsteps = 50\ntotal_steps = 20\n",
                BASE.split("[[train.stages]]").next().unwrap()
            ),
            vec![],
            "train.length_warmup.steps = 50 is greater than train.length_warmup.total_steps = 20",
        ),
        (
            format!(
                "{}\n[train.length_warmup]\nmin_len = 32\nmax_len = 64\nsteps = 5\ntotal_steps = 20\ngrowht = \"linear\"\n",
                BASE.split("[[train.stages]]").next().unwrap()
            ),
            vec![],
            "unknown key `train.length_warmup.growht`; did you mean `growth`?",
        ),
        (
            format!(
                "{}\n[train.length_warmup]\nmin_len = 32\nmax_len = 64\nsteps = 5\ntotal_steps = 20\ngrowth = \"exponential\"\n",
                BASE.split("[[train.stages]]").next().unwrap()
            ),
            vec![],
            r#"train.length_warmup.growth = "exponential" is not one of linear, geometric"#,
        ),
        (
            format!(
                "{}\n[train.length_warmup]\nmin_len = 32\nmax_len = 60\nsteps = 5\ntotal_steps = 20\n",
                BASE.split("[[train.stages]]").next().unwrap()
            ),
            vec![],
            "must be multiples of train.length_warmup.multiple_of = 8",
        ),
        (
            format!("{BASE}\n[eval]\nlengths = [64, 0]\n"),
            vec![],
            "eval.lengths.1 is 0",
        ),
        (
            format!("{BASE}\n[eval.niah]\nlengths = [0]\n"),
            vec![],
            "eval.niah.lengths.0 is 0",
        ),
        (
            format!("{BASE}\n[eval.niah]\nvariant = \"multikey2\"\n"),
            vec![],
            "eval.niah.variant = \"multikey2\" is not one of",
        ),
        // --set overrides get the same checks, plus their own.
        (
            BASE.to_string(),
            vec!["train.stages.5.steps=1"],
            "--set train.stages.5.steps=1: index 5 is past the end of `train.stages`, which has 2 entries",
        ),
        (
            BASE.to_string(),
            vec!["train.lrr=1"],
            "unknown key `train.lrr`; did you mean `lr`?",
        ),
        (
            BASE.to_string(),
            vec!["train.lr"],
            "--set train.lr: no `=` found (expected the form path.to.key=value",
        ),
        (
            BASE.to_string(),
            vec!["train..lr=1"],
            "is not a dotted key path",
        ),
        (
            BASE.to_string(),
            vec!["train.lr=fast"],
            r#"`train.lr` should be a float, found string "fast""#,
        ),
        (
            BASE.to_string(),
            vec!["train.lr.x=1"],
            "`train.lr` is the float 0.003, not a table, so `train.lr.x` cannot be set",
        ),
        (
            BASE.to_string(),
            vec!["train.stages.x.steps=1"],
            "`train.stages` is an array, so `x` must be an index below 2",
        ),
        (
            BASE.to_string(),
            vec!["model.mixer.kind=softmaxx"],
            r#"model.mixer.kind = "softmaxx" is not one of"#,
        ),
        (
            BASE.to_string(),
            vec![r#"model.position={kind="alibi""#],
            "is not a valid TOML value",
        ),
        (
            BASE.to_string(),
            vec!["model.mixer.windw=4"],
            "unknown key `model.mixer.windw`",
        ),
        (
            BASE.to_string(),
            vec!["eval.foo.bar=5"],
            "unknown key `eval.foo` (valid keys: lengths, batch_size, niah, mqar, ppl)",
        ),
        (
            BASE.to_string(),
            vec!["=5"],
            "--set =5: the key path before `=` is empty",
        ),
    ];
    assert!(cases.len() >= 15);
    let mut failures = Vec::new();
    for (text, sets, expected) in &cases {
        let message = error_of(text, sets);
        if std::env::var_os("ZOO_SHOW_MESSAGES").is_some() {
            println!("{message}");
        }
        let ok = message.contains(expected)
            && !message.contains('\n')
            && message.starts_with(&format!("{ORIGIN}: "));
        if !ok {
            failures.push(format!("expected `{expected}`\n     got `{message}`"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn missing_file_names_it() {
    let e = config::load(Path::new("configs/nope.toml"), &[])
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "cannot read configs/nope.toml: No such file or directory"
    );
}

#[test]
fn valid_overrides_change_values() {
    let c = parse(
        BASE,
        &[
            "train.stages.1.steps=500",
            "model.mixer.kind=linear",
            r#"model.position={kind="alibi"}"#,
            "run.name=foo",
            "run.seed = 7",
            "train.lr=1e-4",
            "eval.niah.lengths=[64, 128]",
            "train.stages.0={seq_len = 48, steps = 3, batch_size = 2}",
        ],
    );
    // linear + alibi is refused by the model: the overrides are applied before validation.
    let e = c.unwrap_err().to_string();
    assert!(e.contains("model.mixer.kind + model.position.kind"), "{e}");
    // RoPE rotates linear attention's features in pairs: an odd feature_dim is refused (it
    // used to drop a channel and fail later on a shape mismatch).
    let e = parse(
        BASE,
        &[
            r#"model.mixer={kind="linear", feature_dim=5}"#,
            r#"model.position={kind="rope"}"#,
        ],
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("model.mixer.feature_dim") && e.contains("odd"),
        "{e}"
    );
    assert!(
        parse(
            BASE,
            &[
                r#"model.mixer={kind="linear", feature_dim=6}"#,
                r#"model.position={kind="rope"}"#,
            ],
        )
        .is_ok()
    );

    let c = parse(
        BASE,
        &[
            "train.stages.1.steps=500",
            "model.mixer.kind=linear",
            r#"model.position={kind="none"}"#,
            "run.name=foo",
            "run.seed = 7",
            "train.lr=1e-4",
            "eval.niah.lengths=[64, 128]",
            "train.stages.0={seq_len = 48, steps = 3, batch_size = 2}",
        ],
    )
    .unwrap();
    assert_eq!(c.train.stages[1].steps, 500);
    assert!(matches!(
        &c.model.mixer,
        MixerConfig::Linear(l) if l.chunk_size == 64
    ));
    assert_eq!(c.model.position, PositionConfig::None);
    assert_eq!(c.run.name, "foo");
    assert_eq!(c.run.seed, 7);
    assert_eq!(c.train.lr, 1e-4);
    assert_eq!(c.eval.niah.lengths, vec![64, 128]);
    assert_eq!(c.train.stages[0].seq_len, 48);
    assert_eq!(c.train.stages[0].batch_size, Some(2));

    // Later overrides win; a quoted string stays a string.
    let c = parse(BASE, &["run.name=a", r#"run.name="b-c""#]).unwrap();
    assert_eq!(c.run.name, "b-c");
}

#[test]
fn resolve_fills_model_fields() {
    let mut c = parse(BASE, &["run.seed=42"]).unwrap();
    assert_eq!(c.model.vocab_size, None);
    c.resolve(64);
    assert_eq!(c.model.vocab_size, Some(64));
    assert_eq!(c.model.train_len, Some(64));
    assert_eq!(c.model.init_seed, 42);
    // An explicit vocab size is kept.
    let mut c = parse(&with("d_model = 32", "d_model = 32\nvocab_size = 100"), &[]).unwrap();
    c.resolve(64);
    assert_eq!(c.model.vocab_size, Some(100));
    assert!(c.check_task_vocab(64).is_ok());
    assert!(
        c.check_task_vocab(200)
            .unwrap_err()
            .to_string()
            .contains("model.vocab_size = 100")
    );
}

fn configs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs")
}

fn toml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            toml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "toml") {
            out.push(path);
        }
    }
}

fn shipped_configs() -> Vec<PathBuf> {
    let mut files = Vec::new();
    toml_files(&configs_dir(), &mut files);
    files
}

#[test]
fn every_shipped_config_parses_validates_and_round_trips() {
    let files = shipped_configs();
    assert!(
        files.len() >= 17,
        "expected the shipped configs, found {files:?}"
    );
    let mut names = HashSet::new();
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        assert!(
            text.starts_with('#'),
            "{} must start with a comment",
            path.display()
        );
        let c = config::load(path, &[]).unwrap_or_else(|e| panic!("{e}"));
        c.validate().unwrap();
        assert!(
            names.insert(c.run.name.clone()),
            "duplicate run.name {}",
            c.run.name
        );

        let written = c.to_toml();
        let back = config::parse(&written, "resolved.toml", &[])
            .unwrap_or_else(|e| panic!("{}: {e}\n{written}", path.display()));
        assert_eq!(
            back,
            c,
            "{} does not round-trip:\n{written}",
            path.display()
        );
        // Every default is spelled out.
        for key in [
            "weight_decay",
            "grad_clip",
            "eval_batches",
            "device",
            "max_windows",
            "depths",
            "d_model",
        ] {
            assert!(
                written.contains(key),
                "{}: `{key}` missing from\n{written}",
                path.display()
            );
        }

        let mut resolved = c.clone();
        resolved.resolve(777);
        let written = resolved.to_toml();
        let back = config::parse(&written, "resolved.toml", &[]).unwrap();
        assert_eq!(back, resolved);
        assert_eq!(back.model.train_len, Some(c.final_seq_len()));
    }
}

/// The needle configs cannot have their minimum length checked without building the task
/// (it depends on the trained tokenizer); do that here once per distinct task.
#[test]
fn shipped_needle_configs_fit_their_task() {
    let mut built: Vec<(TaskConfig, usize)> = Vec::new();
    for path in shipped_configs() {
        let c = config::load(&path, &[]).unwrap();
        if !matches!(c.task, TaskConfig::Needle(_)) {
            continue;
        }
        let needed = match built.iter().find(|(t, _)| *t == c.task) {
            Some((_, n)) => *n,
            None => {
                let task = c.task.build(path.parent().unwrap()).unwrap();
                built.push((c.task.clone(), task.min_seq_len()));
                task.min_seq_len()
            }
        };
        let shortest = c
            .train
            .stages
            .iter()
            .map(|s| s.seq_len)
            .chain(c.eval.niah.lengths.iter().copied())
            .min()
            .unwrap();
        assert!(
            needed <= shortest,
            "{}: needs {needed} tokens, has {shortest}",
            path.display()
        );
    }
    assert!(!built.is_empty());
}

#[test]
fn stop_at_accuracy_must_be_a_reachable_fraction_checked_during_training() {
    let c = parse(BASE, &["train.stop_at_accuracy=0.99", "train.eval_every=5"]).unwrap();
    assert_eq!(c.train.stop_at_accuracy, Some(0.99));
    assert_eq!(parse(BASE, &[]).unwrap().train.stop_at_accuracy, None);
    // It round-trips through the resolved config a run writes.
    let again = parse(&c.to_toml(), &[]).unwrap();
    assert_eq!(again.train.stop_at_accuracy, Some(0.99));
    assert!(parse(BASE, &["train.stop_at_accuracy=1", "train.eval_every=5"]).is_ok());

    for bad in ["0", "-0.5", "1.01", "nan", "inf"] {
        let e = error_of(
            BASE,
            &[
                &format!("train.stop_at_accuracy={bad}"),
                "train.eval_every=5",
            ],
        );
        assert!(
            e.contains("train.stop_at_accuracy") && e.contains("outside (0, 1]"),
            "{bad}: {e}"
        );
        assert!(!e.contains('\n'));
    }
    // Without in-training evaluations the target could never be checked.
    let e = error_of(BASE, &["train.stop_at_accuracy=0.9"]);
    assert!(
        e.contains("train.stop_at_accuracy") && e.contains("train.eval_every > 0"),
        "{e}"
    );
    let e = error_of(
        BASE,
        &["train.stop_at_accuracy=\"high\"", "train.eval_every=5"],
    );
    assert!(e.contains("train.stop_at_accuracy"), "{e}");
}
