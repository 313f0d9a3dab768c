//! MQAR accuracy sliced by sequence length and number of key-value pairs (Zoology, Arora et al.
//! 2023, whose slice keys these are), per answer token, including lengths beyond training.

use anyhow::Result;
use zoo_data::scoring::{AccuracyRule, score_batch};
use zoo_train::seeds::HeldOut;

use crate::plot::mqar_figure;
use crate::results::{MqarResult, MqarRow};
use crate::runner::{EvalOptions, LoadedRun, predict, progress};

/// The stem of the files of an MQAR evaluation under `scaling`: `mqar`, or `mqar-<scaling>` with
/// ":" and "+" as "_".
pub fn file_stem(scaling: &str) -> String {
    if scaling == "none" {
        "mqar".to_string()
    } else {
        format!("mqar-{}", scaling.replace([':', '+'], "_"))
    }
}

/// MQAR of the run as trained: writes `eval/mqar.{csv,json,png,svg}`.
pub fn run_mqar(
    run: &LoadedRun,
    lengths: &[usize],
    pairs: &[usize],
    samples: usize,
    opts: &EvalOptions,
) -> Result<MqarResult> {
    run_mqar_scaled(run, lengths, pairs, samples, "none", opts)
}

/// MQAR of a run loaded with an evaluation-time length scaling (`scaling` names it, e.g.
/// "rope_pi:4", "ntk:4", "logn"): writes `eval/mqar-<scaling>.*` (":" and "+" as "_"), so the
/// unscaled `eval/mqar.json` that `zoo train`, reports and sweeps read is never replaced.
pub fn run_mqar_scaled(
    run: &LoadedRun,
    lengths: &[usize],
    pairs: &[usize],
    samples: usize,
    scaling: &str,
    opts: &EvalOptions,
) -> Result<MqarResult> {
    let task = run.task.as_mqar().ok_or_else(|| {
        anyhow::anyhow!(
            "run {} trained on task `{}`; `zoo eval mqar` needs an mqar task",
            run.name,
            run.task.kind()
        )
    })?;
    run.check_eval_lengths(lengths, samples, opts)?;
    let cells: Vec<(usize, usize)> = lengths
        .iter()
        .flat_map(|&l| pairs.iter().map(move |&p| (l, p)))
        .filter(|&(l, p)| l >= 4 * p)
        .collect();
    anyhow::ensure!(
        !cells.is_empty(),
        "no (length, num_kv_pairs) cell fits: MQAR needs seq_len ≥ 4·num_kv_pairs"
    );
    let bar = progress(cells.len(), "mqar", opts.progress);
    let mut rows = Vec::new();
    for (len, kv) in cells {
        let mut rng = run.held_out_rng(HeldOut::Mqar, opts, len, kv as u64);
        let (mut ok, mut total) = (0, 0);
        let mut remaining = samples;
        while remaining > 0 {
            let take = remaining.min(opts.batch_size.max(1));
            let batch: Vec<_> = (0..take)
                .map(|_| task.sample_with_pairs(len, kv, &mut rng))
                .collect::<Result<_, _>>()?;
            let (pred, _, batch) = predict(&run.model, batch, &opts.device)?;
            let (good, count) = score_batch(AccuracyRule::of(run.task.config()), &pred, &batch);
            ok += good;
            total += count;
            remaining -= take;
        }
        rows.push(MqarRow {
            seq_len: len,
            num_kv_pairs: kv,
            accuracy: ok as f64 / total.max(1) as f64,
            samples,
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    let result = MqarResult {
        run: run.name.clone(),
        rows,
        train_len: run.train_len(),
        scaling: scaling.to_string(),
    };
    let stem = file_stem(scaling);
    let dir = run.eval_dir()?;
    result.write_csv(&dir.join(format!("{stem}.csv")))?;
    result.write_json(&dir.join(format!("{stem}.json")))?;
    mqar_figure(&result, &dir.join(stem))?;
    Ok(result)
}
