//! Attention diagnostics against context length, per layer and head:
//! - entropy H(a) = −Σ a_j ln a_j of the rows (ln n for uniform weights: dilution);
//! - sparsity S(a) = E|a| / √E[a²] (1 uniform, 1/√n one-hot; lower = more concentrated);
//! - attention mass on the needle tokens, Σ_{j ∈ needle} a_j, in NIAH inputs.
//!
//! Rows are those of the positions that predict answers (where recall happens). For linear
//! mixers the weights are the implied normalised φ(q)·φ(k) weights, whose S(a) has a floor.
//! Also the decoding-state size per layer and its ratio to the n·log₂n bits exact recall needs.

use anyhow::Result;
use zoo_train::seeds::HeldOut;

use crate::diagnostics::AttentionAccumulator;
use crate::plot::attention_figures;
use crate::results::{AttentionResult, StateResult, StateRow};
use crate::runner::{EvalOptions, LoadedRun, progress};
use zoo_train::trainer::batch_tensors;

/// The dense weights of every layer at every length must fit: bounds `--lengths` and
/// `--samples` (one batch), then estimates the weights' memory.
fn check_weights(run: &LoadedRun, lengths: &[usize], samples: usize) -> Result<()> {
    use zoo_model::config::limits;
    use zoo_model::memory;
    limits::check("--samples", samples, limits::BATCH)?;
    let available = memory::available_memory();
    for &len in lengths {
        limits::check("--lengths", len, limits::SEQ_LEN)?;
        let needed = memory::attention_weights_bytes(run.model.config(), samples, len)?;
        let key = if samples > len {
            "--samples"
        } else {
            "--lengths"
        };
        memory::check_fits(
            key,
            &format!(
                "the attention weights of {samples} samples × length {len} (every layer's [samples, heads, n, n] at once)"
            ),
            needed,
            available,
            "lower --lengths or --samples",
        )?;
    }
    Ok(())
}

pub fn run_attention(
    run: &LoadedRun,
    lengths: &[usize],
    samples: usize,
    opts: &EvalOptions,
) -> Result<AttentionResult> {
    check_weights(run, lengths, samples)?;
    for &len in lengths {
        run.config.model.check_length(len)?;
    }
    let bar = progress(lengths.len(), "attention", opts.progress);
    let mut acc = AttentionAccumulator::new();
    for &len in lengths {
        let mut rng = run.held_out_rng(HeldOut::Attention, opts, len, 0);
        let batch: Vec<_> = (0..samples)
            .map(|_| match run.task.as_needle() {
                Some(_) => run.task.needle_sample(
                    len,
                    0.5,
                    zoo_data::needle::NeedleVariant::Single,
                    &mut rng,
                ),
                None => run.task.sample(len, &mut rng),
            })
            .collect::<Result<_, _>>()?;
        let batch = zoo_data::Batch::from_samples(batch)?;
        let (inputs, _, _) = batch_tensors(&batch, &opts.device);
        for (layer, weights) in run.model.attention_weights(inputs).into_iter().enumerate() {
            let Some(weights) = weights else { continue };
            let [b, h, n, _] = weights.dims();
            let w = weights.into_data().try_into_vec_as::<f32>()?;
            for s in 0..b {
                let sample = &batch.samples[s];
                let mut rows: Vec<usize> = (0..n).filter(|&i| sample.loss_mask[i]).collect();
                if rows.is_empty() {
                    rows.push(n - 1);
                }
                for head in 0..h {
                    for &i in &rows {
                        let start = ((s * h + head) * n + i) * n;
                        let needle = evidence_of_row(sample, i);
                        acc.push(layer, head, len, &w[start..start + i + 1], needle);
                    }
                }
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let mixers: Vec<&str> = run
        .config
        .model
        .layer_mixers()
        .iter()
        .map(|m| m.kind())
        .collect();
    let result = AttentionResult {
        run: run.name.clone(),
        mixer: mixers.join("+"),
        rows: acc.rows(),
    };
    let dir = run.eval_dir()?;
    result.write_csv(&dir.join("attention.csv"))?;
    result.write_json(&dir.join("attention.json"))?;
    attention_figures(&result, &dir.join("attention"))?;
    Ok(result)
}

/// The needle of row `i`: the evidence span of the answer that row `i` predicts
/// (`needle_positions` runs parallel to `answers`), so that with several answers — MQAR's
/// queries — each row's needle mass counts only its own key-value pair; all evidence spans when
/// the row belongs to no answer; None for tasks without needles.
fn evidence_of_row(sample: &zoo_data::Sample, i: usize) -> Option<&[std::ops::Range<usize>]> {
    let needles = &sample.needle_positions;
    if needles.is_empty() {
        return None;
    }
    let own = (needles.len() == sample.answers.len())
        .then(|| sample.answers.iter().position(|a| a.contains(&i)))
        .flatten();
    Some(match own {
        Some(k) => &needles[k..k + 1],
        None => needles.as_slice(),
    })
}

/// Decoding state per layer at each length, and bits of state per n·log₂n bits of context.
pub fn state_table(run_name: &str, model: &zoo_model::Lm, lengths: &[usize]) -> StateResult {
    let mut rows = Vec::new();
    for &n in lengths {
        for layer in model.state_size_bytes(n) {
            let needed = (n as f64) * (n.max(2) as f64).log2();
            rows.push(StateRow {
                layer: layer.layer,
                mixer: layer.mixer.to_string(),
                seq_len: n,
                state_bytes: layer.bytes as u64,
                capacity_ratio: layer.bytes as f64 * 8.0 / needed,
            });
        }
    }
    StateResult {
        run: run_name.to_string(),
        rows,
    }
}

#[cfg(test)]
mod tests {
    use super::evidence_of_row;
    use zoo_data::Sample;

    fn sample(
        answers: Vec<std::ops::Range<usize>>,
        needles: Vec<std::ops::Range<usize>>,
    ) -> Sample {
        Sample {
            inputs: vec![0; 12],
            targets: vec![0; 12],
            loss_mask: vec![false; 12],
            answers,
            needle_positions: needles,
            depth: None,
        }
    }

    #[test]
    // One-span lists of ranges are the data here, not a mistyped range of indices.
    #[allow(clippy::single_range_in_vec_init)]
    fn each_answer_row_is_scored_against_its_own_evidence() {
        // Two MQAR queries: the answer at 8 binds the pair at 0..2, the answer at 10 the pair at 2..4.
        let s = sample(vec![8..9, 10..11], vec![0..2, 2..4]);
        assert_eq!(evidence_of_row(&s, 8), Some(&[0..2][..]));
        assert_eq!(evidence_of_row(&s, 10), Some(&[2..4][..]));
        // A row outside every answer falls back to all the evidence.
        assert_eq!(evidence_of_row(&s, 5), Some(&[0..2, 2..4][..]));
        // A needle span per sample but several answer spans (a passkey's digits): all evidence.
        let passkey = sample(vec![8..9, 9..10], vec![0..4]);
        assert_eq!(evidence_of_row(&passkey, 9), Some(&[0..4][..]));
        assert_eq!(evidence_of_row(&sample(vec![8..9], vec![]), 8), None);
    }
}
