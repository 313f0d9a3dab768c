//! Needle in a haystack over a depth × context-length grid (Kamradt 2023; RULER, Hsieh et al.
//! 2024): for every (depth, length) cell, `samples` haystacks with the needle(s) at that depth,
//! scored by exact match of each requested value (so multi-value / multi-query cells give the
//! fraction of references recalled). Lengths may exceed the training length.

use anyhow::Result;
use zoo_data::needle::NeedleVariant;
use zoo_data::scoring::{AccuracyRule, score_batch};
use zoo_train::seeds::HeldOut;

use crate::plot::niah_figure;
use crate::results::NiahResult;
use crate::runner::{EvalOptions, LoadedRun, predict, progress};

pub fn run_niah(
    run: &LoadedRun,
    lengths: &[usize],
    depths: &[f64],
    samples: usize,
    variant: NeedleVariant,
    opts: &EvalOptions,
) -> Result<NiahResult> {
    anyhow::ensure!(
        run.task.as_needle().is_some(),
        "run {} trained on task `{}`; `zoo eval niah` needs a needle task",
        run.name,
        run.task.kind()
    );
    run.check_eval_lengths(lengths, samples, opts)?;
    let bar = progress(lengths.len() * depths.len(), "niah", opts.progress);
    let mut accuracy = vec![vec![0.0; lengths.len()]; depths.len()];
    for (d, &depth) in depths.iter().enumerate() {
        for (l, &len) in lengths.iter().enumerate() {
            // Keyed by the depth itself, so a cell's haystacks do not depend on the other depths.
            let mut rng = run.held_out_rng(HeldOut::Niah, opts, len, depth.to_bits());
            let (mut ok, mut total) = (0, 0);
            let mut remaining = samples;
            while remaining > 0 {
                let take = remaining.min(opts.batch_size.max(1));
                let batch: Vec<_> = (0..take)
                    .map(|_| run.task.needle_sample(len, depth, variant, &mut rng))
                    .collect::<Result<_, _>>()?;
                let (pred, _, batch) = predict(&run.model, batch, &opts.device)?;
                let (good, spans) = score_batch(AccuracyRule::of(run.task.config()), &pred, &batch);
                ok += good;
                total += spans;
                remaining -= take;
            }
            accuracy[d][l] = ok as f64 / total.max(1) as f64;
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    let result = NiahResult {
        run: run.name.clone(),
        variant: variant.name().to_string(),
        samples,
        lengths: lengths.to_vec(),
        depths: depths.to_vec(),
        accuracy,
        train_len: run.train_len(),
    };
    let dir = run.eval_dir()?;
    result.write_csv(&dir.join("niah.csv"))?;
    result.write_json(&dir.join("niah.json"))?;
    niah_figure(&result, &dir.join("niah"))?;
    Ok(result)
}
