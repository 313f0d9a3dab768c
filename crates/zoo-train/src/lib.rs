//! Training for attention-zoo: the strict run config (`[run]`, `[model]`, `[task]`, `[train]`,
//! `[eval]`), the learning-rate and sequence-length schedules, and the training loop.

pub mod config;
pub mod grids;
pub mod optim;
pub mod resources;
pub mod run_dir;
pub mod schedule;
pub mod seeds;
pub mod summary;
pub mod trainer;

pub use trainer::{EvalLog, Observer, Silent, StepLog, TrainOptions, TrainSummary, train};
