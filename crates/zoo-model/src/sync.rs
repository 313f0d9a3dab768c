//! One project-wide lock around Burn's process-global RNG.
//!
//! Burn's CPU backends keep one RNG per process and its state cannot be saved. Anything that
//! draws from it (dropout) seeds it right before use, inside this lock, with a seed derived from
//! (run seed, step), so runs are reproducible and parallel test threads do not interleave draws.

use std::sync::{Mutex, MutexGuard};

use burn::prelude::Device;

static BURN_RNG: Mutex<()> = Mutex::new(());

/// Hold the lock while seeding and using Burn's RNG.
pub fn seeded(device: &Device, seed: u64) -> MutexGuard<'static, ()> {
    let guard = BURN_RNG
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    device.seed(seed);
    guard
}

/// Mix a run seed and a counter into a new seed (SplitMix64 finaliser).
pub fn derive_seed(seed: u64, counter: u64) -> u64 {
    let mut z = seed ^ counter.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
