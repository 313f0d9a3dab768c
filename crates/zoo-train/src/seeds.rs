//! Seeds of training batches and of held-out evaluation samples, disjoint by construction.
//!
//! Every sample the zoo draws comes from ChaCha8 seeded with `derive_seed(run_seed, counter)`
//! (`zoo_model::sync::derive_seed`, the SplitMix64 finaliser of `seed ^ counter·φ`). For a fixed
//! run seed that map is a bijection in `counter`: multiplying by the odd constant φ is invertible
//! mod 2⁶⁴, so is the xor with the seed, and so is each finaliser step (`z ^ (z >> k)` and a
//! multiplication by an odd constant). Two different counters therefore never give the same seed,
//! and splitting the counters splits the seeds:
//!
//! - training: counter `step · grad_accum + micro` ∈ [0, 2⁶²) ([`train_counter`]; the config
//!   limits keep steps ≤ 10⁹ and grad_accum ≤ 2²⁰, so it stays below 2⁵⁰);
//! - held out: counter with the top bit set, ∈ [2⁶³, 2⁶⁴) ([`held_out_counter`]): the bit above a
//!   hash of (which evaluation, which draw, length, index). Hash collisions between two held-out
//!   cells only make two cells share samples; they can never reach a training counter.
//!
//! So no evaluation — in-training, NIAH, MQAR, perplexity or attention — ever scores a sequence
//! drawn with a training batch's seed, and the held-out set of a run is fixed by its seed alone.
//! (The training stream's counters are the ones the trainer always used, so runs trained before
//! this split resume bitwise.)

use zoo_model::sync::derive_seed;

/// Training counters lie below this.
pub const TRAIN_COUNTER_END: u64 = 1 << 62;
/// Held-out counters have this bit set.
pub const HELD_OUT_BIT: u64 = 1 << 63;

/// Which evaluation a held-out sample is for (each draws its own cells).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeldOut {
    /// The evaluation every `train.eval_every` steps and at the end of training.
    InTraining,
    Niah,
    Mqar,
    /// Task sequences scored at every position (synthetic tasks; text tasks use their held-out
    /// split of the file instead).
    Ppl,
    Attention,
}

impl HeldOut {
    fn tag(self) -> u64 {
        match self {
            HeldOut::InTraining => 0,
            HeldOut::Niah => 1,
            HeldOut::Mqar => 2,
            HeldOut::Ppl => 3,
            HeldOut::Attention => 4,
        }
    }
}

/// The counter of micro-batch `micro` of 0-based `step` with `grad_accum` micro-batches a step.
pub fn train_counter(step: usize, micro: usize, grad_accum: usize) -> u64 {
    let counter = (step as u64)
        .checked_mul(grad_accum as u64)
        .and_then(|c| c.checked_add(micro as u64))
        .filter(|&c| c < TRAIN_COUNTER_END);
    // The config limits (train.stages.*.steps, train.grad_accum) keep this far below 2⁶².
    counter.expect("training counter within the limits the config enforces")
}

/// The seed of micro-batch `micro` of 0-based `step`.
pub fn train_batch_seed(run_seed: u64, step: usize, micro: usize, grad_accum: usize) -> u64 {
    derive_seed(run_seed, train_counter(step, micro, grad_accum))
}

/// The counter of held-out cell (`set`, `draw`, `seq_len`, `index`): [`HELD_OUT_BIT`] over 63
/// bits of a hash of the four. `draw` picks another held-out sample set (`zoo eval --seed`; 0 is
/// the one training and the post-training evaluation use); `index` tells the cells of one length
/// apart (a batch number, a pair count, a depth's bits).
pub fn held_out_counter(set: HeldOut, draw: u64, seq_len: usize, index: u64) -> u64 {
    // Any fixed tag works; this one keeps the hash chain's first input away from 0.
    const TAG: u64 = 0x6865_6c64_2d6f_7574; // "held-out"
    let hash = derive_seed(
        derive_seed(derive_seed(TAG ^ set.tag(), draw), seq_len as u64),
        index,
    );
    HELD_OUT_BIT | (hash >> 1)
}

/// The seed of held-out cell (`set`, `draw`, `seq_len`, `index`) of the run seeded `run_seed`.
pub fn held_out_seed(run_seed: u64, set: HeldOut, draw: u64, seq_len: usize, index: u64) -> u64 {
    derive_seed(run_seed, held_out_counter(set, draw, seq_len, index))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_ranges_cannot_meet() {
        // The largest training counter the config limits allow is below the split …
        let (steps, accum) = (crate::config::limits::STEPS, crate::config::limits::BATCH);
        assert!(train_counter(steps, accum - 1, accum) < TRAIN_COUNTER_END);
        // … and every held-out counter is above it, whatever it hashes.
        for set in [
            HeldOut::InTraining,
            HeldOut::Niah,
            HeldOut::Mqar,
            HeldOut::Ppl,
            HeldOut::Attention,
        ] {
            for (draw, len, index) in [(0, 0, 0), (u64::MAX, usize::MAX, u64::MAX), (7, 64, 3)] {
                assert!(held_out_counter(set, draw, len, index) >= HELD_OUT_BIT);
            }
        }
    }

    #[test]
    fn the_training_stream_keeps_its_seeds() {
        // Runs trained before the split must resume bitwise: micro-batch seeds are unchanged.
        for (step, micro, accum) in [(0, 0, 1), (5, 1, 2), (1234, 3, 4)] {
            assert_eq!(
                train_batch_seed(9, step, micro, accum),
                derive_seed(9, (step * accum + micro) as u64)
            );
        }
    }
}
