//! A model folder's config.json is read safely: only a regular file of bounded size, only
//! objects where the schema has objects, and only sizes within the hard bounds — so a config
//! claiming a billion-wide model is one error line, never an abort in the allocator.

use std::path::PathBuf;

use zoo_model::checkpoint::{CONFIG_FILE, read_config};
use zoo_model::config::limits;
use zoo_model::{ModelConfig, memory};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("zoo-model-limits-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn config_json(edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let config = ModelConfig {
        vocab_size: Some(64),
        ..ModelConfig::default()
    };
    let mut value = serde_json::to_value(&config).unwrap();
    edit(&mut value);
    value.to_string()
}

fn read_error(dir: &std::path::Path, text: &str) -> String {
    std::fs::write(dir.join(CONFIG_FILE), text).unwrap();
    let err = read_config(dir).expect_err("must be refused").to_string();
    assert!(!err.contains('\n'), "{err}");
    assert!(err.len() < 1000, "{err}");
    err
}

#[test]
fn read_config_refuses_absurd_sizes_and_arrays() {
    let dir = scratch("sizes");
    std::fs::write(dir.join(CONFIG_FILE), config_json(|_| {})).unwrap();
    assert_eq!(read_config(&dir).unwrap().vocab_size, Some(64));

    let err = read_error(&dir, &config_json(|v| v["d_model"] = 1_000_000_000.into()));
    assert!(
        err.contains("model.d_model: 1000000000 is above the limit of 65536"),
        "{err}"
    );
    let err = read_error(&dir, &config_json(|v| v["n_layers"] = 10_000_000.into()));
    assert!(
        err.contains("model.n_layers: 10000000 is above the limit"),
        "{err}"
    );
    let err = read_error(
        &dir,
        &config_json(|v| v["vocab_size"] = 10_000_000_000u64.into()),
    );
    assert!(
        err.contains("model.vocab_size: 10000000000 is above the limit"),
        "{err}"
    );
    let err = read_error(
        &dir,
        &config_json(|v| v["mixer"] = serde_json::json!(["softmax"])),
    );
    assert!(
        err.contains("`mixer` should be an object, found an array"),
        "{err}"
    );
    let huge = "a".repeat(10 << 20);
    let err = read_error(&dir, &config_json(|v| v[huge.as_str()] = 1.into()));
    assert!(err.contains("unknown field"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn read_config_refuses_fifos_and_huge_files() {
    let dir = scratch("files");
    let path = dir.join(CONFIG_FILE);
    let have_fifo = std::process::Command::new("mkfifo")
        .arg(&path)
        .status()
        .is_ok_and(|s| s.success());
    if have_fifo {
        // Opening a FIFO blocks until a writer comes: a hang here is the bug.
        let err = read_config(&dir).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
        std::fs::remove_file(&path).unwrap();
    } else {
        eprintln!("skipping the FIFO case: mkfifo is not available");
    }
    let file = std::fs::File::create(&path).unwrap();
    file.set_len(64 << 20).unwrap(); // sparse
    let err = read_config(&dir).unwrap_err().to_string();
    assert!(
        err.contains("larger than the limit of 16777216 bytes"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bounded_configs_have_finite_estimates() {
    // The largest config the bounds allow: the estimate is a (huge) number, no overflow.
    let config = ModelConfig {
        vocab_size: Some(limits::VOCAB),
        d_model: limits::D_MODEL,
        n_layers: limits::N_LAYERS,
        n_heads: limits::N_HEADS,
        mlp_ratio: limits::MLP_RATIO,
        max_seq_len: limits::SEQ_LEN,
        ..ModelConfig::default()
    };
    config.validate().unwrap();
    let bytes = memory::training_bytes(
        &config,
        limits::BATCH,
        limits::SEQ_LEN,
        2,
        memory::Kernels::None,
    )
    .unwrap();
    assert!(bytes.is_finite() && bytes > 1e18, "{bytes}");
    assert!(memory::check_fits("k", "w", bytes, Some(u64::MAX), "").is_err());
}
