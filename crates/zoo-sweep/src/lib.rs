//! zoo-sweep: grids of runs from one SWEEP.toml — a base run config plus axes of overrides,
//! seeds and best-of axes — expanded into a fixed plan, checked as a whole before anything
//! trains, run locally (`--jobs N` child processes) or as a Slurm job array, and gathered into
//! one results table with plots.
//!
//! - `spec`: the SWEEP.toml schema (strict, one-line errors naming file and key).
//! - `plan`: expansion into runs (order, ids, overrides); `labels`: short value labels.
//! - `check`: every run's config loaded, validated and resource-checked up front.
//! - `record`: the sweep folder and its `sweep.json`.
//! - `execute`: one run (`--only I`): train or resume through `zoo_train::train`, then the
//!   post-training evaluation `zoo train` runs (`zoo_eval::evaluate_after_training`).
//! - `local`: the scheduler of child processes.
//! - `results`, `best_of`, `plots`: the table, its best-of marking, its figures.
//! - `slurm`: the job-array script.

pub mod best_of;
pub mod check;
pub mod execute;
pub mod labels;
pub mod local;
pub mod plan;
pub mod plots;
pub mod record;
pub mod results;
pub mod slurm;
pub mod spec;
