//! Best-of marking (Zoology reports each cell at its best learning rate).
//!
//! A cell is the set of runs that agree on the grid and on every axis that is not a best-of
//! axis; within it, the runs that also agree on the best-of axes form a candidate (its seeds).
//! The best candidate has the highest mean final accuracy over its seeds; ties go to fewer mean
//! training tokens to the target (a seed that never reached it counts as infinitely many), then
//! to the candidate that comes first in the sweep's order. Every row of the best candidate is
//! marked; the table keeps all rows. Without best-of axes every candidate is its own cell, so
//! every row is marked.

use std::collections::BTreeMap;

/// What the marking needs of a row.
pub trait Candidate {
    /// Identifies the cell: grid and non-best-of axis values.
    fn cell_key(&self) -> String;
    /// Identifies the candidate within the cell: the best-of axis values.
    fn candidate_key(&self) -> String;
    /// Final accuracy (NaN when unknown: ranks last).
    fn accuracy(&self) -> f64;
    /// Training tokens to the target, None when not reached.
    fn tokens_to_target(&self) -> Option<u64>;
    fn set_best(&mut self, best: bool);
}

/// The candidates of one cell: (candidate key, row positions), in order of first appearance.
type Candidates = Vec<(String, Vec<usize>)>;

/// Marks the best candidate's rows in every cell (rows in sweep order).
pub fn mark_best<R: Candidate>(rows: &mut [R]) {
    // cell → candidates, in order of first appearance.
    let mut cells: Vec<(String, Candidates)> = Vec::new();
    let mut cell_at: BTreeMap<String, usize> = BTreeMap::new();
    for (i, row) in rows.iter().enumerate() {
        let cell = row.cell_key();
        let c = *cell_at.entry(cell.clone()).or_insert_with(|| {
            cells.push((cell, Vec::new()));
            cells.len() - 1
        });
        let candidates = &mut cells[c].1;
        let key = row.candidate_key();
        match candidates.iter_mut().find(|(k, _)| *k == key) {
            Some((_, members)) => members.push(i),
            None => candidates.push((key, vec![i])),
        }
    }
    for row in rows.iter_mut() {
        row.set_best(false);
    }
    for (_, candidates) in &cells {
        let score = |members: &Vec<usize>| {
            let n = members.len() as f64;
            let acc: f64 = members
                .iter()
                .map(|&i| rows[i].accuracy())
                .map(|a| if a.is_nan() { f64::NEG_INFINITY } else { a })
                .sum::<f64>()
                / n;
            let tokens: f64 = members
                .iter()
                .map(|&i| {
                    rows[i]
                        .tokens_to_target()
                        .map_or(f64::INFINITY, |t| t as f64)
                })
                .sum::<f64>()
                / n;
            (acc, tokens)
        };
        let mut best: Option<(f64, f64, &Vec<usize>)> = None;
        for (_, members) in candidates {
            let (acc, tokens) = score(members);
            let better = match best {
                None => true,
                Some((b_acc, b_tokens, _)) => acc > b_acc || (acc == b_acc && tokens < b_tokens),
            };
            if better {
                best = Some((acc, tokens, members));
            }
        }
        if let Some((_, _, members)) = best {
            for &i in members.clone().iter() {
                rows[i].set_best(true);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct R {
        cell: &'static str,
        lr: &'static str,
        acc: f64,
        tokens: Option<u64>,
        best: bool,
    }

    impl Candidate for R {
        fn cell_key(&self) -> String {
            self.cell.into()
        }
        fn candidate_key(&self) -> String {
            self.lr.into()
        }
        fn accuracy(&self) -> f64 {
            self.acc
        }
        fn tokens_to_target(&self) -> Option<u64> {
            self.tokens
        }
        fn set_best(&mut self, best: bool) {
            self.best = best;
        }
    }

    fn r(cell: &'static str, lr: &'static str, acc: f64, tokens: Option<u64>) -> R {
        R {
            cell,
            lr,
            acc,
            tokens,
            best: false,
        }
    }

    fn marked(rows: &[R]) -> Vec<bool> {
        rows.iter().map(|r| r.best).collect()
    }

    #[test]
    fn best_mean_over_seeds_marks_all_its_seeds() {
        // Cell a: lr 1 has one lucky seed (0.9, 0.1 → 0.5); lr 2 is steady (0.6, 0.6 → 0.6).
        let mut rows = vec![
            r("a", "1", 0.9, None),
            r("a", "1", 0.1, None),
            r("a", "2", 0.6, None),
            r("a", "2", 0.6, None),
            r("b", "1", 0.2, None),
            r("b", "1", 0.2, None),
            r("b", "2", f64::NAN, None),
            r("b", "2", 0.9, None),
        ];
        mark_best(&mut rows);
        assert_eq!(
            marked(&rows),
            [false, false, true, true, true, true, false, false]
        );
    }

    #[test]
    fn ties_go_to_fewer_tokens_then_first() {
        let mut rows = vec![
            r("a", "1", 1.0, Some(500)),
            r("a", "2", 1.0, Some(300)),
            r("a", "3", 1.0, None),
            r("b", "1", 0.5, None),
            r("b", "2", 0.5, None),
        ];
        mark_best(&mut rows);
        assert_eq!(marked(&rows), [false, true, false, true, false]);
    }

    #[test]
    fn every_row_is_its_own_cell_without_best_of() {
        let mut rows = vec![r("a", "", 0.1, None), r("b", "", 0.9, None)];
        mark_best(&mut rows);
        assert_eq!(marked(&rows), [true, true]);
    }
}
