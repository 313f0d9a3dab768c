//! Bounded handling of user-supplied input: files are read only when they are regular files
//! and only up to a size cap, and user text quoted in error messages is clipped.
//!
//! * [`read_file_capped`] checks the file's metadata *before* opening it (opening a FIFO blocks
//!   until a writer appears; a directory or a device is never what a config means) and reads at
//!   most `cap + 1` bytes (so `/dev/zero` or a file that grows while being read cannot exhaust
//!   memory), refusing anything above the cap with a message naming the file, the cap and the
//!   size.
//! * [`clip`] cuts quoted text to [`CLIP_CHARS`] characters, adding "…" and the full length:
//!   `"aaaa…" (10485760 bytes)`, so a pasted 10 MiB value gives a readable one-line error.

use std::io::Read;
use std::path::Path;

use crate::error::TaskError;

/// Largest text file (`task.path`) or haystack file (`task.haystack`) read: 1 GiB.
pub const MAX_TEXT_BYTES: u64 = 1 << 30;
/// Largest `tokenizer.json` read: 64 MiB.
pub const MAX_TOKENIZER_BYTES: u64 = 64 << 20;
/// Largest config file (run config TOML, model config.json, results JSON) read: 16 MiB.
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;
/// Largest vocabulary of a task or a trained tokenizer (2^24, as the model's bound).
pub const MAX_VOCAB: usize = 1 << 24;
/// Largest count of tokens a task places in one sample (copy length; half the longest
/// sequence, 2^24, the model's bound).
pub const MAX_TASK_TOKENS: usize = 1 << 23;
/// Longest needle value, in digits or words.
pub const MAX_VALUE_LEN: usize = 1024;

/// Refuses `value > max` for the config field `task.<field>`.
pub(crate) fn check_bound(field: &str, value: usize, max: usize) -> Result<(), TaskError> {
    if value > max {
        return Err(TaskError::InvalidConfig {
            field: field.to_string(),
            message: format!("{value} is above the limit of {max} (lower it)"),
        });
    }
    Ok(())
}

/// Characters of user text quoted in a message.
pub const CLIP_CHARS: usize = 200;

/// Reads the regular file at `path` (called `what` in messages, e.g. "haystack file"), refusing
/// other file types before opening them and anything larger than `cap` bytes.
pub fn read_file_capped(path: &Path, what: &str, cap: u64) -> Result<Vec<u8>, TaskError> {
    let io = |source: std::io::Error| TaskError::Io {
        what: what.to_string(),
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(TaskError::NotAFile {
            what: what.to_string(),
            path: path.to_path_buf(),
            kind: file_kind(&meta).to_string(),
        });
    }
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::with_capacity(meta.len().min(cap) as usize);
    file.take(cap.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > cap {
        return Err(TaskError::TooLarge {
            what: what.to_string(),
            path: path.to_path_buf(),
            cap,
            size: meta.len().max(bytes.len() as u64),
        });
    }
    Ok(bytes)
}

/// Like [`read_file_capped`], as UTF-8 text.
pub fn read_text_capped(path: &Path, what: &str, cap: u64) -> Result<String, TaskError> {
    let bytes = read_file_capped(path, what, cap)?;
    String::from_utf8(bytes).map_err(|e| TaskError::NotUtf8 {
        what: what.to_string(),
        path: path.to_path_buf(),
        detail: e.utf8_error().to_string(),
    })
}

fn file_kind(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if t.is_char_device() || t.is_block_device() {
            return "a device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    "not a regular file"
}

/// `text` quoted, cut to [`CLIP_CHARS`] characters: `"abc"`, or `"aaaa…" (10485760 bytes)`.
pub fn clip(text: &str) -> String {
    match text.char_indices().nth(CLIP_CHARS) {
        None => format!("{text:?}"),
        Some((end, _)) => format!("{:?} ({} bytes)", format!("{}…", &text[..end]), text.len()),
    }
}

/// `text` cut to [`CLIP_CHARS`] characters without quotes: `abc`, or `aaaa… (10485760 bytes)`;
/// for text that is already inside backticks or is a path.
pub fn clip_bare(text: &str) -> String {
    match text.char_indices().nth(CLIP_CHARS) {
        None => text.to_string(),
        Some((end, _)) => format!("{}… ({} bytes)", &text[..end], text.len()),
    }
}

/// A path for a message, clipped like [`clip_bare`].
pub fn clip_path(path: &Path) -> String {
    clip_bare(&path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::needle::NeedleConfig;
    use crate::text::TextConfig;
    use crate::{TaskConfig, TaskError};
    use std::path::PathBuf;

    /// A fresh folder under the system temp dir for one test.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("zoo-input-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A FIFO at `path`, or None where `mkfifo` is unavailable.
    fn fifo(path: &Path) -> Option<()> {
        let status = std::process::Command::new("mkfifo")
            .arg(path)
            .status()
            .ok()?;
        status.success().then_some(())
    }

    #[test]
    fn fifo_is_refused_without_opening_it() {
        let dir = scratch("fifo");
        let pipe = dir.join("pipe");
        if fifo(&pipe).is_none() {
            eprintln!("skipping: mkfifo is not available");
            return;
        }
        // Opening a FIFO for reading blocks until a writer appears: a hang here is the bug.
        let err = read_file_capped(&pipe, "haystack file", MAX_TEXT_BYTES).unwrap_err();
        assert!(matches!(err, TaskError::NotAFile { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.starts_with("haystack file ") && msg.contains("FIFO"),
            "{msg}"
        );
        let text = dir.join("t.txt");
        std::fs::write(&text, "some text to model\n".repeat(20)).unwrap();

        for task in [
            TaskConfig::Needle(NeedleConfig {
                haystack: Some(pipe.clone()),
                ..NeedleConfig::default()
            }),
            TaskConfig::Text(TextConfig::new(pipe.clone())),
            TaskConfig::Text(TextConfig {
                tokenizer: Some(pipe.clone()),
                ..TextConfig::new(text)
            }),
        ] {
            let err = task.build(&dir).unwrap_err().to_string();
            assert!(
                err.contains("is a FIFO (named pipe), not a regular file"),
                "{err}"
            );
            assert!(!err.contains('\n'));
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn devices_and_directories_are_refused() {
        let zero = Path::new("/dev/zero");
        if zero.exists() {
            let err = read_file_capped(zero, "text file", 1024)
                .unwrap_err()
                .to_string();
            assert!(err.contains("is a device, not a regular file"), "{err}");
        }
        let dir = scratch("dir");
        let err = read_file_capped(&dir, "tokenizer file", 1024)
            .unwrap_err()
            .to_string();
        assert!(err.contains("is a directory"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn files_above_the_cap_are_refused_naming_cap_and_size() {
        let dir = scratch("cap");
        let path = dir.join("big.txt");
        std::fs::write(&path, "x".repeat(100)).unwrap();
        let err = read_file_capped(&path, "text file", 10).unwrap_err();
        assert!(
            matches!(
                err,
                TaskError::TooLarge {
                    cap: 10,
                    size: 100,
                    ..
                }
            ),
            "{err}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("big.txt") && msg.contains("10 bytes") && msg.contains("100 bytes"),
            "{msg}"
        );
        assert_eq!(
            read_file_capped(&path, "text file", 100).unwrap().len(),
            100
        );
        let err = read_text_capped(&path, "text file", 99).unwrap_err();
        assert!(matches!(err, TaskError::TooLarge { .. }));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn clip_keeps_short_text_and_cuts_long_text() {
        assert_eq!(clip("abc"), "\"abc\"");
        let long = "a".repeat(10 << 20);
        let c = clip(&long);
        assert!(
            c.starts_with(&format!("\"{}…\"", "a".repeat(CLIP_CHARS))),
            "{c}"
        );
        assert!(c.ends_with(" (10485760 bytes)"), "{c}");
        assert!(c.chars().count() < CLIP_CHARS + 40);
        assert_eq!(
            clip_bare("é".repeat(300).as_str()).chars().count(),
            200 + 1 + 12
        );
    }
}
