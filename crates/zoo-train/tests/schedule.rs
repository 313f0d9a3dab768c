//! LR and sequence-length schedule arithmetic.

use zoo_train::config::{Growth, LengthWarmup, LrSchedule, Stage, TrainConfig};
use zoo_train::schedule::{LengthPlan, StepPlan, lr_at};

fn stage(seq_len: usize, steps: usize) -> Stage {
    Stage {
        seq_len,
        steps,
        batch_size: None,
    }
}

fn staged(stages: Vec<Stage>) -> TrainConfig {
    TrainConfig {
        stages,
        ..TrainConfig::default()
    }
}

fn warmup(
    min_len: usize,
    max_len: usize,
    steps: usize,
    total: usize,
    growth: Growth,
) -> TrainConfig {
    TrainConfig {
        length_warmup: Some(LengthWarmup {
            min_len,
            max_len,
            steps,
            total_steps: total,
            growth,
            multiple_of: 8,
        }),
        ..TrainConfig::default()
    }
}

fn lr_config(schedule: LrSchedule, warmup_steps: usize) -> TrainConfig {
    TrainConfig {
        lr: 1e-3,
        min_lr_ratio: 0.1,
        warmup_steps,
        schedule,
        ..TrainConfig::default()
    }
}

#[test]
fn warmup_goes_from_lr_over_w_to_lr() {
    let cfg = lr_config(LrSchedule::Cosine, 10);
    assert_eq!(lr_at(0, 101, &cfg), 1e-3 / 10.0);
    for s in 0..9 {
        assert!(lr_at(s, 101, &cfg) < lr_at(s + 1, 101, &cfg));
    }
    assert_eq!(lr_at(9, 101, &cfg), 1e-3);
    assert_eq!(lr_at(10, 101, &cfg), 1e-3, "decay starts at the peak");
}

#[test]
fn cosine_midpoint_and_end_are_exact() {
    // 10 warmup steps, then 91 decay steps: progress (s - 10) / 90, midpoint at s = 55.
    let cfg = lr_config(LrSchedule::Cosine, 10);
    let min = 1e-3 * 0.1;
    assert_eq!(lr_at(55, 101, &cfg), (1e-3 + min) / 2.0);
    assert_eq!(lr_at(100, 101, &cfg), min);
    // Past the end it stays at the minimum.
    assert_eq!(lr_at(150, 101, &cfg), min);
    // Monotone decreasing after warmup.
    for s in 10..100 {
        assert!(lr_at(s, 101, &cfg) > lr_at(s + 1, 101, &cfg), "step {s}");
    }
    // Without warmup the first step is the peak.
    let cfg = lr_config(LrSchedule::Cosine, 0);
    assert_eq!(lr_at(0, 11, &cfg), 1e-3);
    assert_eq!(lr_at(5, 11, &cfg), (1e-3 + min) / 2.0);
    assert_eq!(lr_at(10, 11, &cfg), min);
    // min_lr_ratio 0: midpoint exactly half the peak.
    let cfg = TrainConfig {
        min_lr_ratio: 0.0,
        ..lr_config(LrSchedule::Cosine, 0)
    };
    assert_eq!(lr_at(5, 11, &cfg), 0.5e-3);
    assert_eq!(lr_at(10, 11, &cfg), 0.0);
}

#[test]
fn linear_and_constant_schedules() {
    let min = 1e-4;
    let cfg = lr_config(LrSchedule::Linear, 0);
    assert_eq!(lr_at(0, 11, &cfg), 1e-3);
    assert!((lr_at(5, 11, &cfg) - (1e-3 + min) / 2.0).abs() < 1e-18);
    assert_eq!(lr_at(10, 11, &cfg), min);
    let cfg = lr_config(LrSchedule::Constant, 4);
    assert_eq!(lr_at(0, 11, &cfg), 1e-3 / 4.0);
    for s in 3..20 {
        assert_eq!(lr_at(s, 11, &cfg), 1e-3);
    }
    // Degenerate lengths do not divide by zero.
    let cfg = lr_config(LrSchedule::Cosine, 0);
    assert_eq!(lr_at(0, 1, &cfg), 1e-3);
    assert_eq!(lr_at(0, 0, &cfg), 1e-3);
}

#[test]
fn lr_is_continuous_across_stage_boundaries() {
    let cfg = TrainConfig {
        warmup_steps: 5,
        ..staged(vec![stage(64, 40), stage(128, 30), stage(256, 30)])
    };
    let plan = LengthPlan::new(&cfg);
    let total = plan.total_steps();
    assert_eq!(total, 100);
    let max_jump = (1..total)
        .map(|s| (lr_at(s, total, &cfg) - lr_at(s - 1, total, &cfg)).abs())
        .skip(5)
        .fold(0.0, f64::max);
    for b in plan.stage_boundaries() {
        let jump = (lr_at(b, total, &cfg) - lr_at(b - 1, total, &cfg)).abs();
        assert!(
            jump <= max_jump && jump < 0.05 * cfg.lr,
            "jump {jump} at boundary {b}"
        );
        assert!(lr_at(b, total, &cfg) < lr_at(b - 1, total, &cfg));
    }
}

#[test]
fn staged_plan_boundaries_and_lengths() {
    let mut cfg = staged(vec![
        stage(64, 3),
        Stage {
            seq_len: 128,
            steps: 2,
            batch_size: Some(7),
        },
        stage(256, 4),
    ]);
    cfg.batch_size = 16;
    let plan = LengthPlan::new(&cfg);
    assert_eq!(plan.total_steps(), 9);
    assert_eq!(plan.num_stages(), 3);
    assert_eq!(plan.stage_boundaries(), vec![3, 5]);
    assert_eq!(plan.final_seq_len(), 256);
    assert_eq!(plan.max_seq_len(), 256);
    assert_eq!(plan.lengths(), vec![64, 128, 256]);
    let got: Vec<StepPlan> = (0..9).map(|s| plan.at(s, 0)).collect();
    let want = [
        (0, 64, 16),
        (0, 64, 16),
        (0, 64, 16),
        (1, 128, 7),
        (1, 128, 7),
        (2, 256, 16),
        (2, 256, 16),
        (2, 256, 16),
        (2, 256, 16),
    ];
    for (s, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!((g.stage, g.seq_len, g.batch_size), w, "step {s}");
    }
    // Past the end: the last stage.
    assert_eq!(plan.at(100, 0), got[8]);
    // Shorter then longer then shorter again: final is the last, max the longest.
    let plan = LengthPlan::new(&staged(vec![stage(64, 1), stage(256, 1), stage(128, 1)]));
    assert_eq!((plan.final_seq_len(), plan.max_seq_len()), (128, 256));
    assert_eq!(plan.lengths(), vec![64, 128, 256]);
}

fn warmup_lengths(cfg: &TrainConfig) -> Vec<usize> {
    let plan = LengthPlan::new(cfg);
    (0..plan.total_steps())
        .map(|s| plan.at(s, 0).seq_len)
        .collect()
}

#[test]
fn length_warmup_grows_monotonically_to_max_len() {
    for growth in [Growth::Linear, Growth::Geometric] {
        let cfg = warmup(64, 1024, 100, 150, growth);
        let plan = LengthPlan::new(&cfg);
        assert_eq!(plan.total_steps(), 150);
        let lengths = warmup_lengths(&cfg);
        assert_eq!(lengths[0], 64, "{growth:?}");
        assert!(
            lengths.windows(2).all(|w| w[0] <= w[1]),
            "{growth:?}: not monotone"
        );
        assert!(
            lengths
                .iter()
                .all(|l| l % 8 == 0 && (64..=1024).contains(l)),
            "{growth:?}"
        );
        assert!(lengths[99] < 1024, "{growth:?}: reached max_len early");
        assert!(
            lengths[100..].iter().all(|&l| l == 1024),
            "{growth:?}: not at max_len from `steps`"
        );
        // Each distinct length is one stage; stages are numbered by distinct length.
        assert_eq!(plan.lengths().len(), plan.num_stages());
        let mut distinct = lengths.clone();
        distinct.dedup();
        assert_eq!(plan.lengths(), distinct);
        for s in 0..150 {
            let p = plan.at(s, 0);
            assert_eq!(p.seq_len, distinct[p.stage]);
        }
        assert_eq!(plan.final_seq_len(), 1024);
        assert_eq!(plan.max_seq_len(), 1024);
    }
}

#[test]
fn linear_and_geometric_warmup_values() {
    // Linear: 64 + 960 * s / 100, rounded down to a multiple of 8.
    let l = warmup_lengths(&warmup(64, 1024, 100, 100, Growth::Linear));
    assert_eq!(l[1], 72); // 64 + 9 = 73 -> 72
    assert_eq!(l[50], 544);
    assert_eq!(l[99], 1008); // 64 + 950 = 1014 -> 1008
    // Geometric: 64 * 16^(s / 4) = 64, 128, 256, 512, then 1024.
    let g = warmup_lengths(&warmup(64, 1024, 4, 6, Growth::Geometric));
    assert_eq!(g, vec![64, 128, 256, 512, 1024, 1024]);
    // Geometric stays shorter than linear for longer.
    let l = warmup_lengths(&warmup(64, 1024, 100, 100, Growth::Linear));
    let g = warmup_lengths(&warmup(64, 1024, 100, 100, Growth::Geometric));
    assert!(g[50] < l[50]);
    assert_eq!(g[50], 256);
}

#[test]
fn tokens_per_step_sets_batch_from_length() {
    let cfg = TrainConfig {
        tokens_per_step: Some(4096),
        ..staged(vec![
            stage(64, 1),
            stage(512, 1),
            stage(3000, 1),
            stage(8192, 1),
        ])
    };
    let plan = LengthPlan::new(&cfg);
    let batches: Vec<usize> = (0..4).map(|s| plan.at(s, 0).batch_size).collect();
    assert_eq!(batches, vec![64, 8, 1, 1]); // 4096/3000 = 1, 4096/8192 -> at least 1
    // A length warmup too.
    let cfg = TrainConfig {
        tokens_per_step: Some(8192),
        ..warmup(64, 256, 2, 3, Growth::Geometric)
    };
    let plan = LengthPlan::new(&cfg);
    let got: Vec<(usize, usize)> = (0..3)
        .map(|s| (plan.at(s, 0).seq_len, plan.at(s, 0).batch_size))
        .collect();
    assert_eq!(got, vec![(64, 128), (128, 64), (256, 32)]);
}

#[test]
fn mixed_lengths_are_deterministic_and_only_use_earlier_stages() {
    let mut cfg = staged(vec![
        Stage {
            seq_len: 64,
            steps: 100,
            batch_size: Some(8),
        },
        Stage {
            seq_len: 128,
            steps: 100,
            batch_size: Some(4),
        },
        Stage {
            seq_len: 256,
            steps: 300,
            batch_size: Some(2),
        },
    ]);
    cfg.mixed_lengths = true;
    let plan = LengthPlan::new(&cfg);
    let again = LengthPlan::new(&cfg);
    let mut seen = vec![std::collections::BTreeSet::new(); 3];
    for s in 0..500 {
        let p = plan.at(s, 7);
        assert_eq!(p, again.at(s, 7), "not deterministic at step {s}");
        assert_eq!(p, plan.at(s, 7));
        let expected_stage = if s < 100 {
            0
        } else if s < 200 {
            1
        } else {
            2
        };
        assert_eq!(p.stage, expected_stage);
        let allowed = &[64, 128, 256][..=p.stage];
        assert!(allowed.contains(&p.seq_len), "step {s}: {p:?}");
        // The batch size goes with the drawn length.
        let batch = match p.seq_len {
            64 => 8,
            128 => 4,
            _ => 2,
        };
        assert_eq!(p.batch_size, batch);
        seen[p.stage].insert(p.seq_len);
    }
    // Stage 0 only has its own length; later stages draw every allowed length.
    assert_eq!(seen[0].iter().copied().collect::<Vec<_>>(), vec![64]);
    assert_eq!(seen[1].iter().copied().collect::<Vec<_>>(), vec![64, 128]);
    assert_eq!(
        seen[2].iter().copied().collect::<Vec<_>>(),
        vec![64, 128, 256]
    );
    // Another seed gives another draw sequence.
    let a: Vec<usize> = (200..500).map(|s| plan.at(s, 7).seq_len).collect();
    let b: Vec<usize> = (200..500).map(|s| plan.at(s, 8).seq_len).collect();
    assert_ne!(a, b);
    // Roughly uniform over the three stages in stage 2.
    for len in [64, 128, 256] {
        let n = a.iter().filter(|&&l| l == len).count();
        assert!(
            (60..=140).contains(&n),
            "length {len} drawn {n} times of 300"
        );
    }
    // Without mixing every step uses its stage's length.
    cfg.mixed_lengths = false;
    let plain = LengthPlan::new(&cfg);
    assert!((200..500).all(|s| plain.at(s, 7).seq_len == 256));
}
