//! Run folders: what a run may be called, what `--overwrite` may replace, and how it replaces it.
//!
//! A run name becomes a folder under `runs/`, so it is one path component of ASCII letters,
//! digits, `-`, `_` and `.` (not `.` or `..`, at most [`MAX_NAME_BYTES`]): no name can point
//! outside `runs/` or at `runs/` itself. `--out` may be any path, but replacing a folder is
//! allowed only when it holds a run (its `config.toml` and `metrics.jsonl`) or nothing, and the
//! replacement is built beside it first and swapped in with renames, so a start that fails
//! (a missing haystack file, a config the task refuses) leaves the old run as it was.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use zoo_data::input::{clip_bare, clip_path};

use crate::trainer::{CONFIG_FILE, METRICS_FILE};

pub const MAX_NAME_BYTES: usize = 100;

/// Checks `run.name`: one path component of `[A-Za-z0-9._-]`, not `.` or `..`, ≤ 100 bytes.
pub fn check_name(name: &str) -> std::result::Result<(), String> {
    let shown = clip_bare(name);
    if name.is_empty() {
        return Err("run.name is empty (give the run a name, e.g. name = \"my-run\")".into());
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(format!(
            "run.name \"{shown}\" is longer than {MAX_NAME_BYTES} bytes (use a shorter name)"
        ));
    }
    if name == "." || name == ".." {
        return Err(format!(
            "run.name \"{name}\" names a folder, not a run (use letters, digits, -, _ and .)"
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "run.name \"{shown}\" contains {bad:?}; a run name is one folder name of letters, digits, -, _ and . (put the run elsewhere with --out instead)"
        ));
    }
    Ok(())
}

/// Whether `dir` holds a run: its `config.toml` and `metrics.jsonl` are regular files.
pub fn is_run(dir: &Path) -> bool {
    [CONFIG_FILE, METRICS_FILE].iter().all(|f| {
        fs::symlink_metadata(dir.join(f))
            .map(|m| m.is_file())
            .unwrap_or(false)
    })
}

/// Whether `dir` is an empty folder.
pub fn is_empty_dir(dir: &Path) -> bool {
    fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none())
}

/// What starting a new run in `dir` will do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `dir` does not exist or is an empty folder: the run is written there directly.
    Fresh,
    /// `dir` holds a run that `--overwrite` replaces.
    Replace,
}

/// Decides whether a new run may be started in `dir`; refuses, touching nothing, when it may not.
pub fn check_target(dir: &Path, overwrite: bool) -> Result<Target> {
    let shown = clip_path(dir);
    let Ok(meta) = fs::symlink_metadata(dir) else {
        return Ok(Target::Fresh);
    };
    if !meta.is_dir() {
        bail!("{shown} exists and is not a folder (choose another --out)");
    }
    if is_empty_dir(dir) {
        return Ok(Target::Fresh);
    }
    if !is_run(dir) {
        bail!(
            "{shown} is not empty and holds no run (no config.toml and metrics.jsonl); the zoo only replaces run folders, so choose another --out"
        );
    }
    if !overwrite {
        bail!(
            "{shown} already exists; add --overwrite to replace it, or --resume {shown} to continue it"
        );
    }
    Ok(Target::Replace)
}

/// A folder beside `dir` (same parent, so renames stay on one file system) for building its
/// replacement.
pub fn staging_dir(dir: &Path) -> PathBuf {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "run".into());
    dir.with_file_name(format!(".{name}.zoo-new-{}", std::process::id()))
}

/// Moves the run built in `staged` into `dir`, replacing the run there: `dir` → a trash name,
/// `staged` → `dir`, then the trash is deleted. Between the two renames a crash leaves both runs
/// on disk under their own names; nothing is lost at any point.
pub fn swap_in(staged: &Path, dir: &Path) -> Result<()> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "run".into());
    let trash = dir.with_file_name(format!(".{name}.zoo-old-{}", std::process::id()));
    fs::rename(dir, &trash)
        .with_context(|| format!("cannot move the old run {} aside", dir.display()))?;
    if let Err(e) = fs::rename(staged, dir) {
        // Put the old run back before reporting.
        let _ = fs::rename(&trash, dir);
        return Err(e).with_context(|| format!("cannot move the new run into {}", dir.display()));
    }
    fs::remove_dir_all(&trash)
        .with_context(|| format!("cannot remove the replaced run {}", trash.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["quickstart", "mqar-softmax_64", "a.b", "..x", "x.."] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", ".", "..", "../x", "a/b", "/abs", "a\\b", "a b", "ü", "a\0",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_name(&"a".repeat(100)).is_ok());
        let err = check_name(&"a".repeat(10 << 20)).unwrap_err();
        assert!(err.len() < 300, "{} bytes", err.len());
    }
}
