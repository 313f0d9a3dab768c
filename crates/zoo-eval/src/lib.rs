//! zoo-eval: evaluations of trained attention-zoo models and everything around them.
//!
//! The model-independent half lives in these modules:
//! - `results`: serde result types (NIAH, MQAR, perplexity vs length, attention diagnostics,
//!   state size) with atomic CSV/JSON writers — the files under `runs/<name>/eval/`.
//! - `plot`: heat maps and line charts (plotters; PNG + SVG).
//! - `panels`: small-multiples figures with whiskers (sweep results).
//! - `diagnostics`: entropy, sparsity and needle mass of attention rows, and their aggregation.
//! - `scoring`: exact-match and token accuracy of predicted token ids.
//! - `report`: the self-contained HTML report of `zoo report` (`report_sweep`: its sweep
//!   sections).

pub mod diagnostics;
pub mod panels;
pub mod plot;
pub mod report;
mod report_sweep;
pub mod results;
pub mod scoring;

pub use diagnostics::{AttentionAccumulator, RowStats, Welford};
pub use plot::{LineOpts, Series};
pub use report::{ReportSummary, write_report};
pub use results::{
    AttentionResult, AttentionRow, MqarResult, MqarRow, NiahResult, PplResult, PplRow, StateResult,
    StateRow, write_file_atomic,
};

// model-running evals are added below by the lead
pub mod attention;
pub mod mqar;
pub mod niah;
pub mod ppl;
pub mod runner;

pub use runner::{EvalOptions, LoadedRun, load_model, load_run, run_tokenizer};
