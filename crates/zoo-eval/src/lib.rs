//! zoo-eval: evaluations of trained attention-zoo models and everything around them.
//!
//! The model-independent half lives in these modules:
//! - `results`: serde result types (NIAH, MQAR, perplexity vs length, attention diagnostics,
//!   state size) with atomic CSV/JSON writers — the files under `runs/<name>/eval/`.
//! - `plot`: heat maps and line charts (plotters; PNG + SVG).
//! - `panels`: small-multiples figures with whiskers (sweep results).
//! - `diagnostics`: entropy, sparsity and needle mass of attention rows, and their aggregation.
//! - `report`: the self-contained HTML report of `zoo report` (`report_sweep`: its sweep
//!   sections).
//!
//! The model-running half: `niah`, `mqar`, `ppl`, `attention` (one evaluation each), `runner`
//! (loading a run, batching, held-out sampling), `after_training` (what `zoo train` and sweeps
//! evaluate once training ends) and `grids` (the lengths every evaluation uses by default).
//! Scoring (what a correct answer is) is `zoo_data::scoring`, shared with training.

pub mod diagnostics;
pub mod panels;
pub mod plot;
pub mod report;
mod report_sweep;
pub mod results;

pub use diagnostics::{AttentionAccumulator, RowStats, Welford};
pub use plot::{LineOpts, Series};
pub use report::{ReportSummary, write_report};
pub use results::{
    AttentionResult, AttentionRow, MqarResult, MqarRow, NiahResult, PplResult, PplRow, StateResult,
    StateRow, write_file_atomic,
};

pub mod after_training;
pub mod attention;
pub mod mqar;
pub mod niah;
pub mod ppl;
pub mod runner;

/// The lengths of every evaluation (one rule; it lives in zoo-train, whose in-training
/// evaluation uses it too).
pub use zoo_train::grids;

pub use after_training::{AfterTraining, evaluate_after_training};
pub use runner::{EvalOptions, LoadedRun, load_model, load_run, run_tokenizer};
