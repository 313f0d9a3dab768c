//! Learning-rate and sequence-length schedules: pure arithmetic on a [`TrainConfig`].
//!
//! # Learning rate ([`lr_at`])
//!
//! Steps are 0-based and the schedule runs over all `T` training steps of all stages together
//! (stage boundaries do not restart it). With peak `lr`, `min = lr · min_lr_ratio` and
//! `W = warmup_steps`:
//!
//! * warmup, `s < W`: `lr · (s + 1) / W` — from `lr / W` at step 0 to `lr` at step `W − 1`;
//! * decay, `s ≥ W`: progress `p = (s − W) / (T − 1 − W)` (clamped to [0, 1]; `p = 0` when
//!   there is at most one step after warmup), then
//!   * `cosine`: `(lr + min)/2 + (lr − min)/2 · cos(π p)`, computed with `sin(π (½ − p))` so that
//!     the midpoint `p = ½` is exactly `(lr + min)/2`;
//!   * `linear`: `lr + (min − lr) · p`;
//!   * `constant`: `lr`;
//!
//!   with `p = 0` giving exactly `lr` and `p = 1` (the last step) exactly `min`.
//!
//! # Sequence lengths ([`LengthPlan`])
//!
//! A plan is a list of stages, each a run of consecutive steps at one length:
//!
//! * `[[train.stages]]`: stage k covers `steps_k` steps after the previous stages.
//! * `[train.length_warmup]` (MosaicML Composer's `SeqLengthWarmup`): at step `s < steps` the
//!   raw length is `min_len + (max_len − min_len) · s / steps` (linear, integer floor) or
//!   `min_len · (max_len / min_len)^(s / steps)` (geometric); it is rounded down to a multiple of
//!   `multiple_of` and raised to at least `min_len`. From step `steps` to `total_steps` the length
//!   is `max_len`. The length never decreases, so every distinct length is one contiguous run, and
//!   each is reported as its own stage (stage = index of the distinct length).
//!
//! Batch size of a stage: its `batch_size`, else `max(1, tokens_per_step / seq_len)` when
//! `train.tokens_per_step` is set, else `train.batch_size`.
//!
//! With `mixed_lengths`, step `s` of stage `k` draws a stage `j` uniformly from `0..=k` and uses
//! that stage's length and batch size (the reported stage stays `k`). The draw comes from a
//! ChaCha8 generator keyed by the run seed (plus a fixed domain tag) on stream `s`, so it depends
//! only on `(seed, step)`: resuming from a checkpoint repeats it exactly. Steps past the end of
//! the plan behave like its last step.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::{Growth, LrSchedule, TrainConfig};

/// Learning rate of 0-based `step` out of `total_steps` (see the module docs for the formulas).
pub fn lr_at(step: usize, total_steps: usize, cfg: &TrainConfig) -> f64 {
    let lr = cfg.lr;
    let warmup = cfg.warmup_steps;
    if step < warmup {
        return lr * (step + 1) as f64 / warmup as f64;
    }
    let min = lr * cfg.min_lr_ratio;
    let decay_steps = total_steps.saturating_sub(warmup);
    let p = if decay_steps <= 1 {
        0.0
    } else {
        ((step - warmup) as f64 / (decay_steps - 1) as f64).min(1.0)
    };
    match cfg.schedule {
        LrSchedule::Constant => lr,
        _ if p <= 0.0 => lr,
        _ if p >= 1.0 => min,
        LrSchedule::Linear => lr + (min - lr) * p,
        LrSchedule::Cosine => {
            let cos = (std::f64::consts::PI * (0.5 - p)).sin();
            0.5 * (lr + min) + 0.5 * (lr - min) * cos
        }
    }
}

/// What one training step does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepPlan {
    /// Index of the stage (or distinct warmup length) the step belongs to.
    pub stage: usize,
    /// Sequence length of the step's batch.
    pub seq_len: usize,
    /// Number of sequences in the step's batch (before gradient accumulation splits it).
    pub batch_size: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Segment {
    start: usize,
    steps: usize,
    seq_len: usize,
    batch_size: usize,
}

/// The length schedule of a run: which length and batch size every step uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LengthPlan {
    segments: Vec<Segment>,
    mixed: bool,
    total: usize,
}

/// Domain tag mixed into the seed of the length-mixing generator, so it never shares a stream
/// with the data generators that are seeded from the same run seed.
const MIX_TAG: u64 = 0x7a6f_6f2d_6c65_6e73; // "zoo-lens"

impl LengthPlan {
    /// The plan of `cfg`: its stages, or the steps of its length warmup (stages win if both
    /// are given; an empty plan if neither is — [`crate::config::RunConfig::validate`] rejects
    /// both cases).
    pub fn new(cfg: &TrainConfig) -> LengthPlan {
        let batch = |stage_batch: Option<usize>, seq_len: usize| {
            stage_batch.unwrap_or_else(|| match cfg.tokens_per_step {
                Some(tokens) => (tokens / seq_len.max(1)).max(1),
                None => cfg.batch_size,
            })
        };
        let mut segments = Vec::new();
        let mut total = 0;
        if !cfg.stages.is_empty() || cfg.length_warmup.is_none() {
            for stage in &cfg.stages {
                segments.push(Segment {
                    start: total,
                    steps: stage.steps,
                    seq_len: stage.seq_len,
                    batch_size: batch(stage.batch_size, stage.seq_len),
                });
                total += stage.steps;
            }
        } else if let Some(w) = &cfg.length_warmup {
            total = w.total_steps;
            let mut push = |step: usize, seq_len: usize| match segments.last_mut() {
                Some(last) if last.seq_len == seq_len => last.steps += 1,
                _ => segments.push(Segment {
                    start: step,
                    steps: 1,
                    seq_len,
                    batch_size: batch(None, seq_len),
                }),
            };
            let ramp = w.steps.min(total);
            for step in 0..ramp {
                push(step, warmup_len(step, w));
            }
            if total > ramp {
                push(ramp, w.max_len);
                if let Some(last) = segments.last_mut() {
                    last.steps += total - ramp - 1;
                }
            }
        }
        LengthPlan {
            segments,
            mixed: cfg.mixed_lengths,
            total,
        }
    }

    /// Number of training steps.
    pub fn total_steps(&self) -> usize {
        self.total
    }

    /// Number of stages (distinct lengths, for a length warmup).
    pub fn num_stages(&self) -> usize {
        self.segments.len()
    }

    /// Stage index of `step` (the last stage for steps past the end).
    pub fn stage_of(&self, step: usize) -> usize {
        self.segments
            .partition_point(|s| s.start <= step)
            .saturating_sub(1)
    }

    /// The plan of 0-based `step`; deterministic in `(seed, step)`.
    pub fn at(&self, step: usize, seed: u64) -> StepPlan {
        if self.segments.is_empty() {
            return StepPlan {
                stage: 0,
                seq_len: 0,
                batch_size: 0,
            };
        }
        let stage = self.stage_of(step);
        let drawn = if self.mixed && stage > 0 {
            let mut key = [0u8; 32];
            key[..8].copy_from_slice(&seed.to_le_bytes());
            key[8..16].copy_from_slice(&MIX_TAG.to_le_bytes());
            let mut rng = ChaCha8Rng::from_seed(key);
            rng.set_stream(step as u64);
            rng.gen_range(0..=stage)
        } else {
            stage
        };
        let s = &self.segments[drawn];
        StepPlan {
            stage,
            seq_len: s.seq_len,
            batch_size: s.batch_size,
        }
    }

    /// Training tokens of the first `steps` steps: Σ batch_size · seq_len · `grad_accum` over
    /// the lengths and batch sizes those steps actually use (mixed lengths included).
    pub fn tokens_through(&self, steps: usize, seed: u64, grad_accum: usize) -> u64 {
        (0..steps)
            .map(|step| {
                let at = self.at(step, seed);
                (at.batch_size * at.seq_len * grad_accum) as u64
            })
            .sum()
    }

    /// The first step of every stage after the first.
    pub fn stage_boundaries(&self) -> Vec<usize> {
        self.segments.iter().skip(1).map(|s| s.start).collect()
    }

    /// Length of the last stage (0 for an empty plan).
    pub fn final_seq_len(&self) -> usize {
        self.segments.last().map_or(0, |s| s.seq_len)
    }

    /// Longest length of the plan (0 for an empty plan).
    pub fn max_seq_len(&self) -> usize {
        self.segments.iter().map(|s| s.seq_len).max().unwrap_or(0)
    }

    /// The distinct lengths of the plan, ascending.
    pub fn lengths(&self) -> Vec<usize> {
        let mut lengths: Vec<usize> = self.segments.iter().map(|s| s.seq_len).collect();
        lengths.sort_unstable();
        lengths.dedup();
        lengths
    }
}

/// Length of warmup step `step < w.steps`, before the plateau at `max_len`.
fn warmup_len(step: usize, w: &crate::config::LengthWarmup) -> usize {
    let (min, max) = (w.min_len, w.max_len.max(w.min_len));
    let raw = match w.growth {
        Growth::Linear => min + (max - min) * step / w.steps.max(1),
        Growth::Geometric => {
            let ratio = max as f64 / min.max(1) as f64;
            let exact = min as f64 * ratio.powf(step as f64 / w.steps.max(1) as f64);
            // Guard against 127.99999… for an exact 128.
            ((exact * (1.0 + 1e-12)).floor() as usize).min(max)
        }
    };
    let multiple = w.multiple_of.max(1);
    (raw / multiple * multiple).max(min)
}
