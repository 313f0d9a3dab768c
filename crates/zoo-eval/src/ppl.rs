//! Loss and perplexity against evaluation length (the ALiBi paper's Figure 1, Press et al. 2022):
//! on held-out windows of a text task, or — for synthetic tasks — on task sequences scored at
//! every position. RoPE interpolation / NTK scaling and log-n scaling are applied to the model
//! config at load time, so the same weights can be compared under each.

use anyhow::Result;
use zoo_train::seeds::HeldOut;

use crate::plot::ppl_figure;
use crate::results::{PplResult, PplRow};
use crate::runner::{EvalOptions, LoadedRun, predict, progress};

/// Host bytes of one window token: inputs and targets (u32), the loss mask and the batch copies.
const WINDOW_BYTES_PER_TOKEN: f64 = 24.0;

/// Bounds `--max-windows` and the windows of every length that are built before scoring.
fn check_windows(lengths: &[usize], max_windows: usize) -> Result<()> {
    use zoo_model::config::limits;
    use zoo_model::memory;
    limits::check("--max-windows", max_windows, limits::BATCH)?;
    let longest = lengths.iter().copied().max().unwrap_or(0);
    memory::check_fits(
        "--max-windows",
        &format!("holding {max_windows} windows of {longest} tokens"),
        max_windows as f64 * (longest as f64 + 1.0) * WINDOW_BYTES_PER_TOKEN,
        memory::available_memory(),
        "lower --max-windows or --lengths",
    )?;
    Ok(())
}

pub fn run_ppl(
    run: &LoadedRun,
    lengths: &[usize],
    max_windows: usize,
    scaling: &str,
    opts: &EvalOptions,
) -> Result<PplResult> {
    run.check_eval_lengths(lengths, max_windows, opts)?;
    check_windows(lengths, max_windows)?;
    let bar = progress(lengths.len(), "ppl", opts.progress);
    let mut rows = Vec::new();
    for &len in lengths {
        let samples = if run.task.is_text() {
            run.task.eval_windows(len, max_windows)?
        } else {
            let mut rng = run.held_out_rng(HeldOut::Ppl, opts, len, 0);
            (0..max_windows)
                .map(|_| {
                    run.task.sample(len, &mut rng).map(|mut s| {
                        s.loss_mask = vec![true; len];
                        s
                    })
                })
                .collect::<Result<_, _>>()?
        };
        anyhow::ensure!(
            !samples.is_empty(),
            "the held-out text has no window of {len} tokens; use shorter --lengths or a longer file"
        );
        let (mut loss_sum, mut tokens) = (0.0, 0usize);
        for chunk in samples.chunks(opts.batch_size.max(1)) {
            let n_tok = chunk.len() * len;
            let (_, loss, _) = predict(&run.model, chunk.to_vec(), &opts.device)?;
            loss_sum += loss * n_tok as f64;
            tokens += n_tok;
        }
        let loss = loss_sum / tokens as f64;
        rows.push(PplRow {
            seq_len: len,
            loss,
            ppl: loss.exp(),
            tokens,
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    let result = PplResult {
        run: run.name.clone(),
        scaling: scaling.to_string(),
        rows,
        train_len: run.train_len(),
    };
    let dir = run.eval_dir()?;
    result.write_csv(&dir.join("ppl.csv"))?;
    result.write_json(&dir.join("ppl.json"))?;
    ppl_figure(std::slice::from_ref(&result), &dir.join("ppl"))?;
    Ok(result)
}
