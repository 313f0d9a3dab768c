//! No evaluation sample is ever drawn with a training batch's seed: a brute-force check over the
//! first steps of several runs against every held-out cell of many lengths (the proof is the
//! bijection argument in `zoo_train::seeds`; this checks the code follows it).

use std::collections::HashSet;

use zoo_train::seeds::{HeldOut, held_out_seed, train_batch_seed};

const SETS: [HeldOut; 5] = [
    HeldOut::InTraining,
    HeldOut::Niah,
    HeldOut::Mqar,
    HeldOut::Ppl,
    HeldOut::Attention,
];

#[test]
fn held_out_seeds_never_equal_training_seeds() {
    let lengths: Vec<usize> = (1..=128).chain([256, 512, 1024, 4096, 1 << 24]).collect();
    for run_seed in [0, 1, 3, 0xDEAD_BEEF, u64::MAX] {
        let mut train = HashSet::new();
        for accum in 1..=4 {
            for step in 0..5_000 {
                for micro in 0..accum {
                    train.insert(train_batch_seed(run_seed, step, micro, accum));
                }
            }
        }
        let mut held_out = HashSet::new();
        for set in SETS {
            for draw in 0..3 {
                for &len in &lengths {
                    for index in (0..16).chain([0.5f64.to_bits(), 1.0f64.to_bits()]) {
                        let seed = held_out_seed(run_seed, set, draw, len, index);
                        assert!(
                            !train.contains(&seed),
                            "run seed {run_seed}: held-out cell ({set:?}, draw {draw}, len {len}, index {index}) has a training seed"
                        );
                        held_out.insert(seed);
                    }
                }
            }
        }
        // The held-out cells are distinct from each other too (nothing here collides).
        assert_eq!(held_out.len(), SETS.len() * 3 * lengths.len() * 18);
    }
}

#[test]
fn the_held_out_set_is_fixed_by_the_run_seed() {
    let a = held_out_seed(7, HeldOut::InTraining, 0, 64, 1);
    assert_eq!(a, held_out_seed(7, HeldOut::InTraining, 0, 64, 1));
    // Every coordinate of a cell changes its seed.
    for other in [
        held_out_seed(8, HeldOut::InTraining, 0, 64, 1),
        held_out_seed(7, HeldOut::Mqar, 0, 64, 1),
        held_out_seed(7, HeldOut::InTraining, 1, 64, 1),
        held_out_seed(7, HeldOut::InTraining, 0, 65, 1),
        held_out_seed(7, HeldOut::InTraining, 0, 64, 2),
    ] {
        assert_ne!(a, other);
    }
}
