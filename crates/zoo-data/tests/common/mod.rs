//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use zoo_data::Sample;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A scratch directory removed on drop (std only, no extra dependency).
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "zoo-data-{tag}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, contents).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// Invariants every sample of every task must satisfy.
pub fn check_sample(s: &Sample, seq_len: usize, vocab: usize) {
    assert_eq!(s.inputs.len(), seq_len);
    assert_eq!(s.targets.len(), seq_len);
    assert_eq!(s.loss_mask.len(), seq_len);
    assert!(s.inputs.iter().all(|&t| (t as usize) < vocab));
    assert!(s.targets.iter().all(|&t| (t as usize) < vocab));
    for r in s.answers.iter().chain(&s.needle_positions) {
        assert!(r.start < r.end && r.end <= seq_len, "{r:?}");
    }
}

/// The loss mask is exactly the union of the answer spans.
pub fn check_mask_is_answers(s: &Sample) {
    let mut expected = vec![false; s.loss_mask.len()];
    for r in &s.answers {
        for m in &mut expected[r.clone()] {
            *m = true;
        }
    }
    assert_eq!(s.loss_mask, expected);
}
