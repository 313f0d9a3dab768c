//! Sizes that cannot fit and input that cannot be read are refused with one line naming the
//! key, before anything large is allocated: hard bounds on every size, arrays where tables are
//! expected, clipped quotes of huge user text, and config files that are FIFOs, devices or too
//! large.

use std::path::{Path, PathBuf};

use zoo_train::config::{self, ConfigError, RunConfig};

const ORIGIN: &str = "configs/x.toml";

const BASE: &str = r#"
[run]
name = "t"

[model]
d_model = 32
n_layers = 1
n_heads = 2

[task]
kind = "mqar"
vocab = 64
num_kv_pairs = 4

[train]
batch_size = 4

[[train.stages]]
seq_len = 32
steps = 10
"#;

fn with(from: &str, to: &str) -> String {
    assert_eq!(BASE.matches(from).count(), 1, "`{from}` must occur once");
    BASE.replacen(from, to, 1)
}

fn parse(text: &str, sets: &[&str]) -> Result<RunConfig, ConfigError> {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    config::parse(text, ORIGIN, &sets)
}

/// The error of a config that must fail: one line, starting with the file name.
fn error_of(text: &str, sets: &[&str]) -> String {
    let err = parse(text, sets)
        .expect_err("the config must be refused")
        .to_string();
    assert!(!err.contains('\n'), "not one line: {err}");
    assert!(err.starts_with(&format!("{ORIGIN}: ")), "{err}");
    assert!(
        err.len() < 1000,
        "too long ({} bytes): {}",
        err.len(),
        &err[..300]
    );
    err
}

#[test]
fn absurd_sizes_are_refused_by_their_bounds() {
    let cases = [
        (
            with("d_model = 32", "d_model = 1000000000"),
            "model.d_model: 1000000000 is above the limit of 65536",
        ),
        (
            with("n_layers = 1", "n_layers = 10000000"),
            "model.n_layers: 10000000 is above the limit of 1024",
        ),
        (
            with("n_heads = 2", "n_heads = 1000000"),
            "model.n_heads: 1000000 is above the limit of 1024",
        ),
        (
            with("vocab = 64", "vocab = 10000000000"),
            "task.vocab: 10000000000 is above the limit of 16777216",
        ),
        (
            with("seq_len = 32", "seq_len = 1000000000000"),
            "train.stages.0.seq_len: 1000000000000 is above the limit of 16777216",
        ),
        (
            with("batch_size = 4", "batch_size = 1000000000"),
            "train.batch_size: 1000000000 is above the limit of 1048576",
        ),
        (
            with("steps = 10", "steps = 10000000000"),
            "train.stages.0.steps: 10000000000 is above the limit of 1000000000",
        ),
        (
            format!("{BASE}\n[eval]\nlengths = [64, 1000000000000]\n"),
            "eval.lengths.1: 1000000000000 is above the limit",
        ),
        (
            format!("{BASE}\n[eval]\nbatch_size = 1000000000\n"),
            "eval.batch_size: 1000000000 is above the limit",
        ),
        (
            with("d_model = 32", "d_model = 32\nmlp_ratio = 1e300"),
            "model.mlp_ratio: 1e300 is above the limit of 64",
        ),
        (
            with("d_model = 32", "d_model = 32\nvocab_size = 100000000000"),
            "model.vocab_size: 100000000000 is above the limit",
        ),
        (
            with(
                "d_model = 32",
                "d_model = 32\nmixer = { kind = \"sliding_window\", window = 1000000000000 }",
            ),
            "model.mixer.window: 1000000000000 is above the limit",
        ),
    ];
    for (text, expected) in cases {
        let err = error_of(&text, &[]);
        assert!(err.contains(expected), "expected `{expected}` in: {err}");
    }
    // The same through --set.
    let err = error_of(BASE, &["model.d_model=1000000000"]);
    assert!(
        err.contains("model.d_model: 1000000000 is above the limit of 65536"),
        "{err}"
    );
    let err = error_of(BASE, &["train.stages.0.seq_len=1000000000000"]);
    assert!(
        err.contains("train.stages.0.seq_len: 1000000000000 is above"),
        "{err}"
    );
}

#[test]
fn arrays_where_tables_belong_are_refused() {
    let err = error_of(BASE, &["model=[64,32]"]);
    assert!(
        err.contains("`model` should be a table, found an array"),
        "{err}"
    );
    // In a file (a top-level key, before the first section).
    let text = format!(
        "model = [64, 32]\n{}",
        BASE.replace("[model]\nd_model = 32\nn_layers = 1\nn_heads = 2\n", "")
    );
    assert_ne!(text, BASE);
    let err = error_of(&text, &[]);
    assert!(
        err.contains("`model` should be a table, found an array"),
        "{err}"
    );
    let err = error_of(BASE, &["model.mixer=[\"softmax\"]"]);
    assert!(
        err.contains("`model.mixer` should be a table, found an array"),
        "{err}"
    );
    // Arrays where the schema has arrays stay fine.
    parse(BASE, &["eval.lengths=[32, 64]"]).unwrap();
}

#[test]
fn huge_user_text_is_clipped_in_messages() {
    let huge = "a".repeat(10 << 20);
    // A 10 MiB run name.
    let err = error_of(&with("name = \"t\"", &format!("name = \"{huge}\"")), &[]);
    assert!(err.contains("run.name \"aaaa"), "{}", &err[..300]);
    assert!(err.contains("… (10485760 bytes)"), "{}", &err[..300]);
    // The same through --set, and a 10 MiB unknown key and value.
    let set = format!("run.name=\"{huge}\"");
    let err = error_of(BASE, &[&set]);
    assert!(err.contains("(10485760 bytes)"), "{}", &err[..300]);
    let set = format!("model.{huge}=1");
    let err = error_of(BASE, &[&set]);
    assert!(err.contains("unknown key `model.aaaa"), "{}", &err[..300]);
    let set = format!("train.schedule=\"{huge}\"");
    let err = error_of(BASE, &[&set]);
    assert!(err.contains("train.schedule = \"aaaa"), "{}", &err[..300]);
    let set = format!("train.lr=[{huge}");
    error_of(BASE, &[&set]);
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("zoo-limits-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn config_files_that_are_not_regular_or_too_large_are_refused() {
    let dir = scratch("files");
    let pipe = dir.join("pipe.toml");
    let have_fifo = std::process::Command::new("mkfifo")
        .arg(&pipe)
        .status()
        .is_ok_and(|s| s.success());
    if have_fifo {
        // Opening a FIFO blocks until a writer comes: a hang here is the bug.
        let err = config::load(&pipe, &[]).unwrap_err().to_string();
        assert!(
            err.contains("is a FIFO (named pipe), not a regular file"),
            "{err}"
        );
    } else {
        eprintln!("skipping the FIFO case: mkfifo is not available");
    }
    if Path::new("/dev/zero").exists() {
        let err = config::load(Path::new("/dev/zero"), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("is a device, not a regular file"), "{err}");
    }
    let big = dir.join("big.toml");
    let file = std::fs::File::create(&big).unwrap();
    file.set_len((16 << 20) + 1).unwrap(); // sparse: no disk, no memory
    let err = config::load(&big, &[]).unwrap_err().to_string();
    assert!(
        err.contains("larger than the limit of 16777216 bytes (16777217 bytes)"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

fn toml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            toml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "toml") {
            out.push(path);
        }
    }
}

/// The estimate must not refuse what the project itself ships: every config fits in 2 GiB
/// with the fused CPU kernels and in 16 GiB without them.
#[test]
fn every_shipped_config_fits_the_estimate() {
    use zoo_data::TaskConfig;
    use zoo_model::memory::Kernels;
    use zoo_train::resources::check_run_with;
    let mut files = Vec::new();
    toml_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs"),
        &mut files,
    );
    assert!(!files.is_empty());
    for path in files {
        let mut c = config::load(&path, &[]).unwrap();
        let vocab = match &c.task {
            TaskConfig::Mqar(t) => t.vocab,
            TaskConfig::Copy(t) => t.vocab,
            TaskConfig::SelectiveCopy(t) => t.vocab,
            TaskConfig::Needle(t) => t.vocab_size,
            TaskConfig::Text(t) => t.vocab_size,
        };
        c.resolve(vocab);
        let gib = 1u64 << 30;
        check_run_with(&c, Kernels::Cpu, Some(2 * gib))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        check_run_with(&c, Kernels::None, Some(16 * gib))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}
