//! Training progress for people (an indicatif bar with stage, seq_len, loss, lr, tokens/s and
//! ETA), for scripts (`--json`: one JSON object per log line) or for nobody (`--quiet`).

use indicatif::{ProgressBar, ProgressStyle};
use zoo_train::{EvalLog, Observer, StepLog};

/// The human-readable line of one in-training evaluation.
pub fn eval_line(log: &EvalLog) -> String {
    format!(
        "eval step {} seq_len {}: loss {:.4}, accuracy {:.1}%",
        log.step,
        log.seq_len,
        log.loss,
        100.0 * log.accuracy
    )
}

pub struct Progress {
    bar: Option<ProgressBar>,
    json: bool,
    quiet: bool,
}

impl Progress {
    pub fn new(quiet: bool, json: bool) -> Self {
        Progress {
            bar: None,
            json,
            quiet,
        }
    }

    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish();
        }
    }
}

impl Observer for Progress {
    fn start(&mut self, total_steps: usize, first_step: usize) {
        if self.quiet || self.json {
            return;
        }
        let bar = ProgressBar::new(total_steps as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:30} {pos}/{len} {msg} [{elapsed_precise} < {eta_precise}]",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_position(first_step as u64);
        self.bar = Some(bar);
    }

    fn step(&mut self, log: &StepLog) {
        if self.json {
            println!("{}", serde_json::to_string(log).expect("serialisable"));
        } else if let Some(bar) = &self.bar {
            bar.set_position(log.step as u64);
            bar.set_message(format!(
                "stage {} len {} loss {:.4} lr {:.2e} {:.0} tok/s",
                log.stage, log.seq_len, log.loss, log.lr, log.tokens_per_s
            ));
        }
    }

    fn eval(&mut self, log: &EvalLog) {
        if self.json {
            println!("{}", serde_json::to_string(log).expect("serialisable"));
        } else if let Some(bar) = &self.bar {
            bar.println(eval_line(log));
        }
    }

    fn message(&mut self, text: &str) {
        if self.json {
            println!("{}", serde_json::json!({"kind": "message", "text": text}));
        } else if !self.quiet {
            match &self.bar {
                Some(bar) => bar.println(text),
                None => eprintln!("{text}"),
            }
        }
    }
}
