//! Criterion micro-benchmarks live in `benches/`; run them with `cargo bench -p zoo-bench`.
