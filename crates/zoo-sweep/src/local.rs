//! Local execution: the runs of a sweep as child processes, `jobs` at a time.
//!
//! Each child is the current executable run as `zoo sweep SWEEP.toml --out SWEEP_DIR --only I`
//! (the same entry point a Slurm array task uses), with `RAYON_NUM_THREADS` = the cores divided
//! by the jobs (the fused kernels and the matrix products use rayon's global pool, so N runs
//! with all cores each would only fight over them), its output appended to
//! `SWEEP_DIR/logs/<id>.txt`. Processes rather than threads: Burn's CPU RNG and the rayon pool
//! are process-global, and a crash or an out-of-memory kill takes down one run, not the sweep.
//!
//! Children never outlive the sweep: on Linux each asks the kernel for SIGKILL when its parent
//! dies (`PR_SET_PDEATHSIG`, which also covers a SIGKILL of the sweep itself), and the handles
//! kill what is still running when the scheduler returns early. Ctrl-C reaches the children
//! directly (same process group). Runs checkpoint atomically, so a killed sweep resumes cleanly.

use std::collections::VecDeque;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::plan::Plan;
use crate::record::log_path;

/// How to start the children.
#[derive(Clone, Debug)]
pub struct LocalOptions {
    /// The `zoo` executable.
    pub exe: PathBuf,
    /// Absolute paths: children may run anywhere.
    pub sweep_file: PathBuf,
    pub sweep_dir: PathBuf,
    pub jobs: usize,
    /// `RAYON_NUM_THREADS` of each child.
    pub threads_per_job: usize,
    /// Passed on to every child (e.g. `--device wgpu`).
    pub extra_args: Vec<String>,
}

/// Something that happened to a run.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    Started {
        index: usize,
    },
    Finished {
        index: usize,
        seconds: f64,
    },
    Failed {
        index: usize,
        /// The run's last `error:` line (or how it ended), one line.
        message: String,
        log: PathBuf,
    },
    /// Nothing changed; time passed (for ETA displays).
    Tick,
}

/// Where the sweep stands.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Progress {
    pub done: usize,
    pub failed: usize,
    pub running: usize,
    pub left: usize,
    /// Estimated time to the end: mean time of the runs finished so far × the runs not yet
    /// finished ÷ jobs; None before the first run finished.
    pub eta: Option<Duration>,
}

/// A run that failed.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    pub index: usize,
    pub message: String,
    pub log: PathBuf,
}

struct Running {
    index: usize,
    child: Child,
    started: Instant,
}

/// Kills the children still running when dropped (an early return or a panic of the parent).
struct Children(Vec<Running>);

impl Drop for Children {
    fn drop(&mut self) {
        for r in &mut self.0 {
            let _ = r.child.kill();
            let _ = r.child.wait();
        }
    }
}

/// Runs `todo` (run indices, in order) and reports every change to `on_event`; returns the
/// runs that failed (the others went on).
pub fn run_local(
    plan: &Plan,
    todo: &[usize],
    opts: &LocalOptions,
    mut on_event: impl FnMut(&Event, &Progress),
) -> Result<Vec<Failure>> {
    let jobs = opts.jobs.max(1);
    let mut queue: VecDeque<usize> = todo.iter().copied().collect();
    let mut running = Children(Vec::new());
    let mut failures = Vec::new();
    let mut durations: Vec<f64> = Vec::new();
    let mut last_tick = Instant::now();
    let progress = |running: usize, left: usize, durations: &[f64], failed: usize| {
        let done = durations.len();
        let eta = (done > 0).then(|| {
            let mean = durations.iter().sum::<f64>() / done as f64;
            Duration::from_secs_f64(mean * (left + running) as f64 / jobs as f64)
        });
        Progress {
            done,
            failed,
            running,
            left,
            eta,
        }
    };

    loop {
        while running.0.len() < jobs
            && let Some(index) = queue.pop_front()
        {
            let run = &plan.runs[index];
            let log = log_path(&opts.sweep_dir, &run.id);
            match spawn(index, &log, opts) {
                Ok(child) => {
                    running.0.push(Running {
                        index,
                        child,
                        started: Instant::now(),
                    });
                    let p = progress(running.0.len(), queue.len(), &durations, failures.len());
                    on_event(&Event::Started { index }, &p);
                }
                Err(e) => {
                    let failure = Failure {
                        index,
                        message: format!("{e:#}").replace('\n', " "),
                        log,
                    };
                    let p = progress(running.0.len(), queue.len(), &durations, failures.len() + 1);
                    on_event(&failed_event(&failure), &p);
                    failures.push(failure);
                }
            }
        }
        if running.0.is_empty() && queue.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        let mut i = 0;
        while i < running.0.len() {
            let status = running.0[i]
                .child
                .try_wait()
                .context("cannot check on a run")?;
            let Some(status) = status else {
                i += 1;
                continue;
            };
            let done = running.0.swap_remove(i);
            let seconds = done.started.elapsed().as_secs_f64();
            let run = &plan.runs[done.index];
            if status.success() {
                durations.push(seconds);
                let p = progress(running.0.len(), queue.len(), &durations, failures.len());
                on_event(
                    &Event::Finished {
                        index: done.index,
                        seconds,
                    },
                    &p,
                );
            } else {
                let log = log_path(&opts.sweep_dir, &run.id);
                let failure = Failure {
                    index: done.index,
                    message: failure_message(&log, status),
                    log,
                };
                let p = progress(running.0.len(), queue.len(), &durations, failures.len() + 1);
                on_event(&failed_event(&failure), &p);
                failures.push(failure);
            }
        }
        if last_tick.elapsed() >= Duration::from_secs(1) {
            last_tick = Instant::now();
            let p = progress(running.0.len(), queue.len(), &durations, failures.len());
            on_event(&Event::Tick, &p);
        }
    }
    Ok(failures)
}

fn failed_event(f: &Failure) -> Event {
    Event::Failed {
        index: f.index,
        message: f.message.clone(),
        log: f.log.clone(),
    }
}

fn spawn(index: usize, log: &Path, opts: &LocalOptions) -> Result<Child> {
    let mut out = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open the log {}", log.display()))?;
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    writeln!(
        out,
        "== zoo sweep --only {index} (started at unix time {since_epoch})"
    )?;
    let err = out.try_clone()?;
    let mut cmd = Command::new(&opts.exe);
    cmd.arg("sweep")
        .arg(&opts.sweep_file)
        .arg("--out")
        .arg(&opts.sweep_dir)
        .arg("--only")
        .arg(index.to_string())
        .args(&opts.extra_args)
        .env("RAYON_NUM_THREADS", opts.threads_per_job.max(1).to_string())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    die_with_parent(&mut cmd);
    cmd.spawn()
        .with_context(|| format!("cannot start {}", opts.exe.display()))
}

#[cfg(target_os = "linux")]
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: getpid is async-signal-safe; the closure runs in the forked child before exec and
    // only calls prctl, getppid and _exit, which are async-signal-safe too.
    let parent = unsafe { libc::getpid() };
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent died before prctl took effect: nobody will collect this run.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_cmd: &mut Command) {}

/// The last `error:` line of the run's log, else how the process ended.
fn failure_message(log: &Path, status: ExitStatus) -> String {
    let text = fs::read(log).unwrap_or_default();
    // Only the tail matters; logs of long runs can be large.
    let tail = &text[text.len().saturating_sub(64 * 1024)..];
    let tail = String::from_utf8_lossy(tail);
    if let Some(line) = tail.lines().rev().find(|l| l.starts_with("error: ")) {
        return zoo_data::input::clip_bare(line.trim_start_matches("error: "));
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return format!("killed by signal {signal}");
        }
    }
    format!("exited with {status}")
}
