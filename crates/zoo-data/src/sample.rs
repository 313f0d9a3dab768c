//! Samples and batches: the contract between the generators and the trainer.
//!
//! Every generator builds a token *stream* of `seq_len + 1` tokens and shifts
//! it: `inputs = stream[..seq_len]`, `targets = stream[1..]`, so `targets[i]`
//! is the token the model should emit after reading `inputs[..=i]`. MQAR is the
//! one exception to the pure shift (as in Zoology, the target at a query is
//! the bound value, not the next noise token); its unscored targets still hold
//! the next input token so that every task reads the same way.
//!
//! `answers` are spans of *target* positions; a span scores as an exact match
//! only if every position in it is predicted right. `needle_positions` are
//! spans of *input* positions and, when present, run parallel to `answers`:
//! `needle_positions[k]` holds the evidence for `answers[k]`.
//!
//! A [`Batch`] is the row-major packing `[batch_size, seq_len]` of samples that
//! share one `seq_len`; the samples are kept for scoring by span.

use std::ops::Range;

use crate::error::TaskError;

/// One training/eval sequence. All vectors have length `seq_len`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Token ids fed to the model.
    pub inputs: Vec<u32>,
    /// Next-token labels: `targets[i]` is what the model should predict at position `i`.
    pub targets: Vec<u32>,
    /// True where the loss (and accuracy) is computed.
    pub loss_mask: Vec<bool>,
    /// Spans of target positions that form each answer (exact-match units).
    pub answers: Vec<Range<usize>>,
    /// Spans of input positions holding the evidence for each answer; empty for
    /// tasks without needles (copy, selective copy, text).
    pub needle_positions: Vec<Range<usize>>,
    /// Needle tasks: actual relative depth in `[0, 1]` of the first needle.
    pub depth: Option<f64>,
}

impl Sample {
    /// Length of the sequence (`inputs.len()`).
    pub fn seq_len(&self) -> usize {
        self.inputs.len()
    }

    /// Number of positions that carry loss.
    pub fn num_loss_positions(&self) -> usize {
        self.loss_mask.iter().filter(|&&m| m).count()
    }

    /// Checks the structural invariants every generator promises, so a batch
    /// never carries a sample whose vectors disagree.
    pub fn check(&self) -> Result<(), TaskError> {
        let n = self.inputs.len();
        if self.targets.len() != n || self.loss_mask.len() != n {
            return Err(TaskError::Batch {
                message: format!(
                    "sample has inputs {} / targets {} / loss_mask {} long (all must equal seq_len)",
                    n,
                    self.targets.len(),
                    self.loss_mask.len()
                ),
            });
        }
        let out_of_range = self
            .answers
            .iter()
            .chain(self.needle_positions.iter())
            .find(|r| r.start > r.end || r.end > n);
        if let Some(r) = out_of_range {
            return Err(TaskError::Batch {
                message: format!("sample span {r:?} falls outside seq_len {n}"),
            });
        }
        Ok(())
    }
}

/// A batch packed row-major: `[batch_size, seq_len]` flattened.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub batch_size: usize,
    pub seq_len: usize,
    pub inputs: Vec<u32>,
    pub targets: Vec<u32>,
    pub loss_mask: Vec<bool>,
    pub samples: Vec<Sample>,
}

impl Batch {
    /// Packs samples that all share one `seq_len`; an empty list or mixed
    /// lengths are errors rather than panics because the trainer may assemble
    /// batches from user-controlled sources.
    pub fn from_samples(samples: Vec<Sample>) -> Result<Batch, TaskError> {
        let Some(first) = samples.first() else {
            return Err(TaskError::Batch {
                message: "no samples given (batch_size must be at least 1)".to_string(),
            });
        };
        let seq_len = first.seq_len();
        for (i, s) in samples.iter().enumerate() {
            s.check()?;
            if s.seq_len() != seq_len {
                return Err(TaskError::Batch {
                    message: format!(
                        "sample {i} has seq_len {} but sample 0 has {seq_len} (all samples in a batch must share seq_len)",
                        s.seq_len()
                    ),
                });
            }
        }
        let total = seq_len * samples.len();
        let mut inputs = Vec::with_capacity(total);
        let mut targets = Vec::with_capacity(total);
        let mut loss_mask = Vec::with_capacity(total);
        for s in &samples {
            inputs.extend_from_slice(&s.inputs);
            targets.extend_from_slice(&s.targets);
            loss_mask.extend_from_slice(&s.loss_mask);
        }
        Ok(Batch {
            batch_size: samples.len(),
            seq_len,
            inputs,
            targets,
            loss_mask,
            samples,
        })
    }
}

/// Shifts a stream of `seq_len + 1` tokens into a sample whose loss covers
/// exactly the answer spans. `answer_stream_spans` index the *stream*; a
/// token at stream position `p` is the target at position `p - 1`, so spans
/// must start at 1 or later (a generator always puts a prompt first).
pub(crate) fn from_stream(
    stream: Vec<u32>,
    answer_stream_spans: &[Range<usize>],
    needle_positions: Vec<Range<usize>>,
    depth: Option<f64>,
) -> Sample {
    let seq_len = stream.len().saturating_sub(1);
    let inputs = stream[..seq_len].to_vec();
    let targets = stream[1..].to_vec();
    let mut loss_mask = vec![false; seq_len];
    let answers: Vec<Range<usize>> = answer_stream_spans
        .iter()
        .map(|r| r.start.saturating_sub(1)..r.end.saturating_sub(1))
        .collect();
    for r in &answers {
        for m in &mut loss_mask[r.clone()] {
            *m = true;
        }
    }
    Sample {
        inputs,
        targets,
        loss_mask,
        answers,
        needle_positions,
        depth,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(seq_len: usize) -> Sample {
        let stream: Vec<u32> = (0..=seq_len as u32).collect();
        let answer = seq_len - 1..seq_len + 1;
        let needle = 0..1;
        from_stream(
            stream,
            std::slice::from_ref(&answer),
            std::slice::from_ref(&needle).to_vec(),
            None,
        )
    }

    #[test]
    fn stream_shift_aligns_targets_with_next_input() {
        let s = sample(6);
        assert_eq!(s.inputs, vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(s.targets, vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(s.answers, vec![4..6]);
        assert_eq!(s.loss_mask, vec![false, false, false, false, true, true]);
        assert_eq!(&s.targets[4..6], &[5, 6]);
    }

    #[test]
    fn batch_packs_row_major() {
        let a = sample(4);
        let mut b = sample(4);
        b.inputs = vec![9, 9, 9, 9];
        let batch = Batch::from_samples(vec![a.clone(), b.clone()]).unwrap();
        assert_eq!(batch.batch_size, 2);
        assert_eq!(batch.seq_len, 4);
        assert_eq!(&batch.inputs[..4], &a.inputs[..]);
        assert_eq!(&batch.inputs[4..], &b.inputs[..]);
        assert_eq!(batch.loss_mask.len(), 8);
    }

    #[test]
    fn batch_rejects_mixed_lengths_and_empty() {
        let err = Batch::from_samples(vec![sample(4), sample(5)]).unwrap_err();
        assert!(err.to_string().contains("sample 1 has seq_len 5"), "{err}");
        let err = Batch::from_samples(vec![]).unwrap_err();
        assert!(err.to_string().contains("batch_size"), "{err}");
    }

    #[test]
    fn batch_rejects_inconsistent_sample() {
        let mut s = sample(4);
        s.targets.pop();
        assert!(Batch::from_samples(vec![s]).is_err());
        let mut s = sample(4);
        s.answers.push(3..9);
        assert!(Batch::from_samples(vec![s]).is_err());
    }
}
