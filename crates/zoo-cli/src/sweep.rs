//! `zoo sweep SWEEP.toml`: a grid of runs from one sweep file (see zoo_sweep and docs/sweeps.md).
//!
//! ```text
//! zoo sweep SWEEP.toml [--jobs N] [--out DIR] [--device D] [--quiet|--json]   train what is left, then the table
//! zoo sweep SWEEP.toml --only I [--out DIR]                                   one run (what a child / array task runs)
//! zoo sweep SWEEP.toml --slurm [--out DIR]                                    write DIR/slurm.sbatch, train nothing
//! zoo sweep SWEEP.toml --collect [--out DIR]                                  the table from the finished runs
//! ```
//!
//! Every mode first loads the sweep and expands it; every mode that trains (or prepares
//! training) checks all runs it will train before the first one starts, so an invalid cell is
//! one error line and nothing is written.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use zoo_sweep::check::{self, CheckOptions};
use zoo_sweep::execute::{self, Outcome};
use zoo_sweep::local::{self, Event, LocalOptions, Progress};
use zoo_sweep::plan::{self, Plan};
use zoo_sweep::spec::{self, Sweep};
use zoo_sweep::{plots, record, results, slurm};
use zoo_train::{EvalLog, Observer, StepLog};

use crate::{Output, device};

#[derive(Args)]
pub struct SweepArgs {
    /// The sweep file (a base config plus axes; see docs/sweeps.md).
    sweep: PathBuf,
    /// Runs trained at the same time; the cores are split between them.
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// Sweep folder (default sweeps/<sweep.name>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Train (or resume, or skip if finished) run I only (0-based), as one array task does.
    #[arg(long, value_name = "I", conflicts_with_all = ["slurm", "collect", "jobs"])]
    only: Option<usize>,
    /// Write DIR/slurm.sbatch, a job array of one task per run, and print how to submit it.
    #[arg(long, conflicts_with = "collect")]
    slurm: bool,
    /// Build results.csv / results.json and the plots from the runs finished in DIR; train nothing.
    #[arg(long)]
    collect: bool,
    /// flex (default CPU), ndarray, wgpu, cuda; overrides every run's run.device.
    #[arg(long)]
    device: Option<String>,
}

pub fn run(args: SweepArgs, output: &Output) -> Result<()> {
    anyhow::ensure!(args.jobs > 0, "--jobs is 0 (use at least 1)");
    if let Some(d) = &args.device {
        device::check_name(d)?;
    }
    let sweep = spec::load(&args.sweep)?;
    let plan = plan::expand(&sweep)?;
    let dir = args
        .out
        .clone()
        .unwrap_or_else(|| Path::new("sweeps").join(&sweep.name));
    record::check_dir(&dir)?;
    if args.collect {
        return collect(&plan, &sweep, &dir, output);
    }
    if let Some(index) = args.only {
        return only(&sweep, &plan, &dir, index, &args, output);
    }
    if args.slurm {
        return write_slurm(&sweep, &plan, &dir, &args, output);
    }
    local_sweep(&sweep, &plan, &dir, &args, output)
}

fn check_options(args: &SweepArgs, concurrent: usize) -> CheckOptions {
    CheckOptions {
        device: args.device.clone(),
        concurrent,
    }
}

/// Checks every run and every device name; nothing is written.
fn check_all(
    sweep: &Sweep,
    plan: &Plan,
    dir: &Path,
    opts: &CheckOptions,
) -> Result<Vec<zoo_train::config::RunConfig>> {
    let configs = check::check_all(sweep, plan, dir, opts)?;
    for (run, cfg) in plan.runs.iter().zip(&configs) {
        device::check_name(&check::device_name(cfg, opts))
            .with_context(|| format!("run {} ({}): run.device", run.index, run.id))?;
    }
    Ok(configs)
}

fn prepare(sweep: &Sweep, plan: &Plan, dir: &Path) -> Result<()> {
    record::create_dirs(dir)?;
    record::write(dir, &record::record(sweep, plan)?)
}

/// Writes the table and plots; returns the summary line's tail.
fn write_results(sweep: &Sweep, plan: &Plan, dir: &Path, output: &Output) -> Result<String> {
    let table = results::collect(plan, dir)?;
    let (figures, notes) = plots::draw(&table, &sweep.plots, dir)?;
    table.write(dir, &figures, &notes)?;
    if !output.quiet && !output.json {
        for note in &notes {
            println!("note: {note}");
        }
    }
    Ok(format!(
        "results in {} ({}), {} plots in {}",
        dir.join(results::CSV_FILE).display(),
        table.describe(),
        figures.len(),
        dir.join(plots::PLOTS_DIR).display()
    ))
}

fn collect(plan: &Plan, sweep: &Sweep, dir: &Path, output: &Output) -> Result<()> {
    anyhow::ensure!(
        dir.join(record::RUNS_DIR).is_dir(),
        "{} holds no runs yet; nothing to collect (run the sweep, or give the folder with --out)",
        dir.display()
    );
    let tail = write_results(sweep, plan, dir, output)?;
    if output.json {
        let table = results::collect(plan, dir)?;
        println!(
            "{}",
            serde_json::json!({"kind": "done", "sweep": plan.name, "dir": dir, "rows": table.rows.len(), "missing": table.missing.len()})
        );
    } else {
        println!("sweep {}: {tail}", plan.name);
    }
    Ok(())
}

fn only(
    sweep: &Sweep,
    plan: &Plan,
    dir: &Path,
    index: usize,
    args: &SweepArgs,
    output: &Output,
) -> Result<()> {
    let total = plan.runs.len();
    if index >= total {
        let range = if total == 1 {
            "1 run (index 0)".to_string()
        } else {
            format!("{total} runs (indices 0 to {})", total - 1)
        };
        bail!("--only {index}: the sweep has {range}");
    }
    record::check_index(dir, plan, index)?;
    let opts = check_options(args, 1);
    let cfg = check::check_one(sweep, plan, index, dir, &opts)?;
    let dev = device::select(&check::device_name(&cfg, &opts))?;
    record::create_dirs(dir)?;
    if !record::is_sweep_dir(dir) {
        record::write(dir, &record::record(sweep, plan)?)?;
    }
    let run = &plan.runs[index];
    let mut observer = RunLog::new(output, cfg.train.log_every, cfg.train.total_steps());
    let outcome = execute::run_one(dir, plan, index, cfg, &dev, &mut observer)?;
    let (status, line) = match &outcome {
        Outcome::AlreadyFinished => (
            "already_finished",
            "already finished; nothing to do".to_string(),
        ),
        Outcome::Finished {
            resumed_from,
            trained,
            seconds,
        } => {
            let how = match (trained, resumed_from) {
                (false, _) => "evaluated".to_string(),
                (true, Some(step)) => format!("resumed from step {step} and finished"),
                (true, None) => "trained".to_string(),
            };
            ("finished", format!("{how} in {}", human_duration(*seconds)))
        }
    };
    if output.json {
        println!(
            "{}",
            serde_json::json!({"kind": "done", "index": index, "id": run.id, "status": status, "run_dir": plan::run_dir(dir, run)})
        );
    } else {
        println!("run {index} ({}): {line}", run.id);
    }
    Ok(())
}

fn write_slurm(
    sweep: &Sweep,
    plan: &Plan,
    dir: &Path,
    args: &SweepArgs,
    output: &Output,
) -> Result<()> {
    check_all(sweep, plan, dir, &check_options(args, 1))?;
    prepare(sweep, plan, dir)?;
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let exe = std::env::current_exe().context("cannot find the zoo executable")?;
    let cwd = std::env::current_dir().context("cannot read the current folder")?;
    let text = slurm::script(&slurm::ScriptInput {
        job_name: &sweep.name,
        runs: plan.runs.len(),
        zoo_exe: &exe,
        sweep_file: &abs(&args.sweep),
        sweep_dir: &abs(dir),
        workdir: &cwd,
        device: args.device.as_deref(),
        slurm: &sweep.slurm,
    });
    let path = dir.join(slurm::SCRIPT_FILE);
    zoo_eval::write_file_atomic(&path, text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    if output.json {
        println!(
            "{}",
            serde_json::json!({"kind": "slurm", "script": path, "runs": plan.runs.len()})
        );
    } else {
        println!(
            "wrote {} ({} array tasks); submit with: sbatch {} — then: zoo sweep {} --out {} --collect",
            path.display(),
            plan.runs.len(),
            path.display(),
            args.sweep.display(),
            dir.display()
        );
    }
    Ok(())
}

fn local_sweep(
    sweep: &Sweep,
    plan: &Plan,
    dir: &Path,
    args: &SweepArgs,
    output: &Output,
) -> Result<()> {
    let configs = check_all(sweep, plan, dir, &check_options(args, args.jobs))?;
    prepare(sweep, plan, dir)?;
    let todo: Vec<usize> = plan
        .runs
        .iter()
        .zip(&configs)
        .filter(|(run, cfg)| !execute::is_finished(&plan::run_dir(dir, run), cfg))
        .map(|(run, _)| run.index)
        .collect();
    let skipped = plan.runs.len() - todo.len();
    let cores = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut extra_args = Vec::new();
    if let Some(d) = &args.device {
        extra_args.extend(["--device".to_string(), d.clone()]);
    }
    let opts = LocalOptions {
        exe: std::env::current_exe().context("cannot find the zoo executable")?,
        sweep_file: abs(&args.sweep),
        sweep_dir: abs(dir),
        jobs: args.jobs,
        threads_per_job: (cores / args.jobs).max(1),
        extra_args,
    };

    let show_bar = !output.quiet && !output.json && std::io::stderr().is_terminal();
    let bar = if show_bar {
        let bar = ProgressBar::new_spinner();
        bar.set_style(ProgressStyle::with_template("{msg}").expect("valid template"));
        bar.enable_steady_tick(Duration::from_millis(500));
        bar
    } else {
        ProgressBar::hidden()
    };
    let name = &plan.name;
    let line = |p: &Progress| {
        let failed = if p.failed > 0 {
            format!(", {} failed", p.failed)
        } else {
            String::new()
        };
        let eta = p
            .eta
            .map(|d| format!(" · ETA {}", human_duration(d.as_secs_f64())))
            .unwrap_or_default();
        format!(
            "sweep {name}: {} done, {} running, {} left{failed}{eta}",
            p.done + skipped,
            p.running,
            p.left
        )
    };
    bar.set_message(line(&Progress {
        done: 0,
        failed: 0,
        running: 0,
        left: todo.len(),
        eta: None,
    }));
    let failures = local::run_local(plan, &todo, &opts, |event, progress| {
        bar.set_message(line(progress));
        let run_of = |i: usize| &plan.runs[i];
        match event {
            Event::Finished { index, seconds } if output.json => println!(
                "{}",
                serde_json::json!({"kind": "run", "index": index, "id": run_of(*index).id, "status": "finished", "seconds": seconds})
            ),
            Event::Failed {
                index,
                message,
                log,
            } => {
                if output.json {
                    println!(
                        "{}",
                        serde_json::json!({"kind": "run", "index": index, "id": run_of(*index).id, "status": "failed", "error": message, "log": log})
                    );
                } else if !bar.is_hidden() {
                    // On a terminal at once; elsewhere the final error line names every failure.
                    bar.println(format!(
                        "run {index} ({}) failed: {message} (log: {})",
                        run_of(*index).id,
                        log.display()
                    ));
                }
            }
            _ => {}
        }
    })?;
    bar.finish_and_clear();
    let tail = write_results(sweep, plan, dir, output)?;
    let trained = todo.len() - failures.len();
    if !failures.is_empty() {
        let mut parts: Vec<String> = failures
            .iter()
            .take(5)
            .map(|f| {
                format!(
                    "run {} ({}): {} (log: {})",
                    f.index,
                    plan.runs[f.index].id,
                    f.message,
                    f.log.display()
                )
            })
            .collect();
        if failures.len() > 5 {
            parts.push(format!("… {} more", failures.len() - 5));
        }
        bail!(
            "{} of {} failed ({}); the others finished and the table holds them; rerun the sweep to retry",
            failures.len(),
            runs(todo.len()),
            parts.join("; ")
        );
    }
    if output.json {
        println!(
            "{}",
            serde_json::json!({"kind": "done", "sweep": name, "dir": dir, "trained": trained, "skipped": skipped})
        );
    } else {
        println!(
            "sweep {name}: {} trained, {skipped} already finished; {tail}",
            runs(trained)
        );
    }
    Ok(())
}

/// "1 run", "3 runs".
fn runs(n: usize) -> String {
    if n == 1 {
        "1 run".into()
    } else {
        format!("{n} runs")
    }
}

/// 4m10s, 1h02m, 35s.
fn human_duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// Training output of one run as plain lines, for a log file or a Slurm output file: every
/// `train.log_every` steps, every evaluation and every message (`--json`: one JSON object each;
/// `--quiet`: none).
struct RunLog {
    quiet: bool,
    json: bool,
    log_every: usize,
    total: usize,
}

impl RunLog {
    fn new(output: &Output, log_every: usize, total: usize) -> Self {
        RunLog {
            quiet: output.quiet,
            json: output.json,
            log_every: log_every.max(1),
            total,
        }
    }
}

impl Observer for RunLog {
    fn step(&mut self, log: &StepLog) {
        if self.quiet || (!log.step.is_multiple_of(self.log_every) && log.step != self.total) {
            return;
        }
        if self.json {
            println!("{}", serde_json::to_string(log).expect("serialisable"));
        } else {
            println!(
                "step {}/{} stage {} len {} loss {:.4} lr {:.2e} {:.0} tok/s",
                log.step, self.total, log.stage, log.seq_len, log.loss, log.lr, log.tokens_per_s
            );
        }
    }

    fn eval(&mut self, log: &EvalLog) {
        if self.quiet {
            return;
        }
        if self.json {
            println!("{}", serde_json::to_string(log).expect("serialisable"));
        } else {
            println!("{}", crate::observe::eval_line(log));
        }
    }

    fn message(&mut self, text: &str) {
        if self.quiet {
            return;
        }
        if self.json {
            println!("{}", serde_json::json!({"kind": "message", "text": text}));
        } else {
            println!("{text}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(human_duration(35.2), "35s");
        assert_eq!(human_duration(250.0), "4m10s");
        assert_eq!(human_duration(3720.0), "1h02m");
    }
}
