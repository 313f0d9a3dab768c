//! Checksum manifests for checkpoints and exported models.
//!
//! Every folder the zoo saves weights into (`checkpoints/step-N/`, `model/`) ends with a
//! `SHA256SUMS` file, written last, in the format of coreutils' `sha256sum`:
//!
//! ```text
//! <64 hex digits><two spaces><file name>\n      one line per file, sorted by name
//! ```
//!
//! so `cd runs/x/model && sha256sum -c SHA256SUMS` checks it without the zoo. Loading and resuming
//! verify it first: a bit flipped in the middle of a weights file is then an error naming the
//! file, not a run that silently continues from corrupted weights. The manifest doubles as the
//! completion marker of the folder: one without it was never finished.

use std::fs;
use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::ModelError;

pub const MANIFEST_FILE: &str = "SHA256SUMS";

/// Lowercase hex SHA-256 of a file, streamed.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Writes `dir/SHA256SUMS` over every regular file in `dir` (the manifest itself and temporary
/// files excepted). Call it after the last file of the folder is written.
pub fn write_manifest(dir: &Path) -> Result<(), ModelError> {
    let err = |e: std::io::Error| {
        ModelError::checkpoint(dir, format!("cannot write {MANIFEST_FILE}: {e}"))
    };
    let mut names: Vec<String> = fs::read_dir(dir)
        .map_err(err)?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n != MANIFEST_FILE && !n.contains(".tmp"))
        .collect();
    names.sort();
    let mut text = String::new();
    for name in &names {
        let digest = sha256_file(&dir.join(name)).map_err(err)?;
        text.push_str(&format!("{digest}  {name}\n"));
    }
    crate::checkpoint::write_atomic(&dir.join(MANIFEST_FILE), text.as_bytes()).map_err(err)
}

/// Checks every file listed in `dir/SHA256SUMS`. The error names the first file that is missing
/// or whose bytes changed.
pub fn verify_manifest(dir: &Path) -> Result<(), ModelError> {
    let manifest = dir.join(MANIFEST_FILE);
    let meta = fs::symlink_metadata(&manifest).map_err(|_| {
        ModelError::checkpoint(
            dir,
            format!("has no {MANIFEST_FILE} (the folder was never completed, or written by a zoo before checksums)"),
        )
    })?;
    if !meta.is_file() || meta.len() > 1 << 20 {
        return Err(ModelError::checkpoint(
            &manifest,
            "is not a checksum manifest (not a small regular file)",
        ));
    }
    let text = fs::read_to_string(&manifest)
        .map_err(|e| ModelError::checkpoint(&manifest, format!("cannot read: {e}")))?;
    let mut listed = 0;
    for (i, line) in text.lines().enumerate() {
        let malformed = || {
            ModelError::checkpoint(
                &manifest,
                format!("line {} is not `<sha256>  <file>`", i + 1),
            )
        };
        let (digest, name) = line.split_once("  ").ok_or_else(malformed)?;
        if digest.len() != 64
            || !digest.bytes().all(|b| b.is_ascii_hexdigit())
            || name.is_empty()
            || name.contains(['/', '\\'])
            || name == ".."
        {
            return Err(malformed());
        }
        let path = dir.join(name);
        let actual = sha256_file(&path).map_err(|e| {
            ModelError::checkpoint(
                &path,
                format!("is listed in {MANIFEST_FILE} but cannot be read ({e})"),
            )
        })?;
        if !actual.eq_ignore_ascii_case(digest) {
            return Err(ModelError::checkpoint(
                &path,
                format!("is corrupted: its SHA-256 differs from the one in {MANIFEST_FILE}"),
            ));
        }
        listed += 1;
    }
    if listed == 0 {
        return Err(ModelError::checkpoint(&manifest, "lists no files"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digest() {
        let dir = std::env::temp_dir().join(format!("zoo-manifest-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("abc"), b"abc").unwrap();
        // FIPS 180-2, appendix B.1.
        assert_eq!(
            sha256_file(&dir.join("abc")).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        write_manifest(&dir).unwrap();
        verify_manifest(&dir).unwrap();
        fs::write(dir.join("abc"), b"abd").unwrap();
        let err = verify_manifest(&dir).unwrap_err().to_string();
        assert!(err.contains("abc") && err.contains("corrupted"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
