//! Helpers shared by the training integration tests: scratch folders, train options, parsing a
//! test config with overrides, folder copies and snapshots.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

use burn::prelude::*;
use zoo_train::TrainOptions;
use zoo_train::config::{self, RunConfig};

/// `toml` with `--set`-style overrides, which must be valid.
pub fn parse(toml: &str, overrides: &[&str]) -> RunConfig {
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    config::parse(toml, "test", &overrides).expect("the test config is valid")
}

/// A fresh, empty directory `<prefix>-<name>-<pid>` under Cargo's per-target scratch folder.
pub fn scratch(prefix: &str, name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{prefix}-{name}-{}", std::process::id()));
    if dir.exists() {
        fs::remove_dir_all(&dir).unwrap();
    }
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// Training into `run_dir` on flex (deterministic), fresh or resumed.
pub fn opts(run_dir: &Path, resume: bool) -> TrainOptions {
    TrainOptions {
        run_dir: run_dir.to_path_buf(),
        device: Device::flex(),
        resume,
        overwrite: false,
        base_dir: PathBuf::from("."),
    }
}

pub fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Files and their bytes under `dir`, for "nothing changed" checks.
pub fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}
