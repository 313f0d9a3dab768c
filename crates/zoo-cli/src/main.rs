//! `zoo`: train attention-zoo models from TOML configs, evaluate long-context recall, compare
//! runs in one HTML report, and benchmark the mixers — on the CPU or a GPU with `--device`.

mod bench;
mod device;
mod info;
mod observe;
mod sweep;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::{Args, Parser, Subcommand};
use zoo_eval::grids::{self, Eval};
use zoo_eval::{EvalOptions, load_run};
use zoo_train::config;
use zoo_train::{TrainOptions, train};

#[derive(Parser)]
#[command(
    name = "zoo",
    version,
    about = "Train small LMs with pluggable attention and measure long-context recall"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct Output {
    /// Print nothing but errors and the final line.
    #[arg(long, global = true, conflicts_with = "json")]
    quiet: bool,
    /// One JSON object per log line on stdout.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model from a config (then evaluate it), or continue a run with --resume.
    Train {
        /// The TOML config (not needed with --resume).
        config: Option<PathBuf>,
        /// Override a key: --set train.lr=3e-4 --set train.stages.1.steps=500
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// flex (default CPU), ndarray, wgpu, cuda; overrides run.device.
        #[arg(long)]
        device: Option<String>,
        /// Run directory (default runs/<run.name>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Replace an existing run directory.
        #[arg(long)]
        overwrite: bool,
        /// Continue the run in DIR from its last checkpoint.
        #[arg(long, value_name = "DIR", conflicts_with_all = ["config", "overwrite", "out"])]
        resume: Option<PathBuf>,
        /// Skip the evaluation after training.
        #[arg(long)]
        no_eval: bool,
        #[command(flatten)]
        output: Output,
    },
    /// Resolved config, parameter count, state size per layer, FLOPs per token.
    Info {
        config: PathBuf,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Lengths for the state-size table (default: training and eval lengths).
        #[arg(long, value_delimiter = ',')]
        lengths: Vec<usize>,
    },
    /// Generate text from a trained run with incremental decoding.
    Generate {
        #[arg(long)]
        run: PathBuf,
        #[arg(long)]
        prompt: String,
        #[arg(long, default_value_t = 32)]
        max_tokens: usize,
        #[arg(long, default_value = "flex")]
        device: String,
        /// Also print the prompt and output token ids and, for each generated position, the
        /// top-k logits (to compare with an outside implementation of the model).
        #[arg(long)]
        ids: bool,
        /// How many logits --ids prints per generated position.
        #[arg(long, default_value_t = 5)]
        top_k: usize,
    },
    /// Evaluate a trained run.
    #[command(subcommand)]
    Eval(EvalCommand),
    /// Compare runs (and sweep folders: their results table and plots) in one self-contained
    /// HTML page.
    Report {
        #[arg(required = true)]
        runs: Vec<PathBuf>,
        #[arg(long, default_value = "report.html")]
        out: PathBuf,
    },
    /// Speed benchmarks.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Train a grid of runs from a sweep file (locally, or as a Slurm job array) and tabulate
    /// and plot their results.
    Sweep {
        #[command(flatten)]
        args: sweep::SweepArgs,
        #[command(flatten)]
        output: Output,
    },
}

#[derive(Args, Clone)]
struct EvalCommon {
    #[arg(long)]
    run: PathBuf,
    #[arg(long, default_value = "flex")]
    device: String,
    /// Which held-out sample draw to evaluate on (0 = the one the evaluation after training
    /// used); samples always derive from the run's seed, apart from every training batch.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    #[arg(long)]
    quiet: bool,
}

/// Length scalings applied to the model at evaluation time (never to its training).
#[derive(Args, Clone, Default)]
struct ScalingArgs {
    /// RoPE position interpolation factor (Chen et al. 2023): positions are divided by it.
    #[arg(long)]
    rope_interpolation: Option<f64>,
    /// RoPE NTK-aware base scaling factor.
    #[arg(long)]
    ntk: Option<f64>,
    /// Turn on log-n scaling of softmax logits.
    #[arg(long)]
    log_n: bool,
}

#[derive(Subcommand)]
enum EvalCommand {
    /// Needle in a haystack: depth × length heat map.
    Niah {
        #[command(flatten)]
        common: EvalCommon,
        #[arg(long, value_delimiter = ',')]
        lengths: Vec<usize>,
        #[arg(long, value_delimiter = ',')]
        depths: Vec<f64>,
        #[arg(long)]
        samples: Option<usize>,
        /// single | multikey | multivalue | multiquery
        #[arg(long)]
        variant: Option<String>,
    },
    /// MQAR accuracy by sequence length and number of key-value pairs.
    Mqar {
        #[command(flatten)]
        common: EvalCommon,
        #[arg(long, value_delimiter = ',')]
        lengths: Vec<usize>,
        #[arg(long, value_delimiter = ',')]
        pairs: Vec<usize>,
        #[arg(long)]
        samples: Option<usize>,
        #[command(flatten)]
        scaling: ScalingArgs,
    },
    /// Loss and perplexity against evaluation length.
    Ppl {
        #[command(flatten)]
        common: EvalCommon,
        #[arg(long, value_delimiter = ',')]
        lengths: Vec<usize>,
        /// Windows per length (default: the run's eval.ppl.max_windows).
        #[arg(long)]
        max_windows: Option<usize>,
        #[command(flatten)]
        scaling: ScalingArgs,
    },
    /// Attention entropy, sparsity S(a), needle mass and state size against length.
    Attention {
        #[command(flatten)]
        common: EvalCommon,
        #[arg(long, value_delimiter = ',')]
        lengths: Vec<usize>,
        #[arg(long, default_value_t = 4)]
        samples: usize,
    },
}

/// glibc serves allocations above 128 KiB with a fresh mmap and unmaps them on free, so each
/// training step faulted in (and zeroed) its activation buffers anew: ~10 % of a reference step
/// was page faults. No chunk is mmapped (not even those above glibc's 32 MiB ceiling for the
/// mmap threshold: at 16k tokens a [n, 4d] projection is 32 MiB, and faulting those in made a
/// Gated DeltaNet layer's step 3.5× slower from 8k to 16k tokens instead of 2×; docs/benchmarks.md),
/// and the heap is not trimmed, so steps reuse freed buffers. Large requests from worker
/// threads fall back to the main arena, which grows by brk.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts allocator parameters; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}

fn main() -> ExitCode {
    keep_freed_memory();
    // Burn falls back to Device::default() in a few places; with wgpu compiled in that would
    // initialise a GPU runtime even for CPU runs. Pin the default before any thread starts.
    if std::env::var_os("BURN_DEVICE").is_none() {
        // SAFETY: single-threaded at this point; nothing else reads the environment concurrently.
        unsafe { std::env::set_var("BURN_DEVICE", "flex") };
    }
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| info.payload().downcast_ref::<&str>().map(|s| s.to_string()));
        eprintln!(
            "error: internal failure: {}",
            msg.unwrap_or_default().replace('\n', " ")
        );
    }));
    // The kernels read the instruction-set cap lazily, deep inside a training step; a misspelt
    // one is a usage error to report before anything runs, not a panic mid-run.
    if let Err(message) = zoo_model::kernels::isa_cap() {
        eprintln!("error: {message}");
        return ExitCode::from(2);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {}", one_line_clap_error(&e));
            return ExitCode::from(2);
        }
    };
    match std::panic::catch_unwind(|| run(cli)) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            let mut line = chain.join(": ");
            line = line.replace('\n', " ");
            eprintln!("error: {line}");
            ExitCode::FAILURE
        }
        Err(_) => ExitCode::FAILURE,
    }
}

/// Clap's error without its blank lines, usage block and "For more information" trailer, on
/// one line, with the user's text cut to 200 characters.
fn one_line_clap_error(e: &clap::Error) -> String {
    let rendered = e.render().to_string();
    let mut parts: Vec<&str> = Vec::new();
    for line in rendered.lines().map(str::trim) {
        if line.is_empty() || line.starts_with("Usage:") || line.starts_with("For more information")
        {
            continue;
        }
        parts.push(line.strip_prefix("error: ").unwrap_or(line));
    }
    // Quoted values (clap quotes the user's text in '…') are cut to 200 characters.
    let text = parts
        .join("; ")
        .split('\'')
        .enumerate()
        .map(|(i, piece)| {
            if i % 2 == 1 {
                zoo_data::input::clip_bare(piece)
            } else {
                piece.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("'");
    format!("{} (see `zoo --help`)", text.replace('\n', " "))
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Train {
            config,
            set,
            device,
            out,
            overwrite,
            resume,
            no_eval,
            output,
        } => cmd_train(config, set, device, out, overwrite, resume, no_eval, output),
        Command::Info {
            config,
            set,
            lengths,
        } => info::run(&config, &set, &lengths),
        Command::Generate {
            run,
            prompt,
            max_tokens,
            device,
            ids,
            top_k,
        } => cmd_generate(&run, &prompt, max_tokens, &device, ids.then_some(top_k)),
        Command::Eval(e) => cmd_eval(e),
        Command::Report { runs, out } => {
            check_report_out(&out)?;
            let summary = zoo_eval::write_report(&runs, &out)?;
            let sweeps = match summary.sweeps {
                0 => String::new(),
                1 => ", 1 sweep".to_string(),
                n => format!(", {n} sweeps"),
            };
            println!(
                "wrote {} ({} runs{sweeps}, {} figures)",
                out.display(),
                summary.runs,
                summary.figures
            );
            Ok(())
        }
        Command::Bench(b) => bench::run(b),
        Command::Sweep { args, output } => sweep::run(args, &output),
    }
}

/// `zoo report --out FILE` writes a new page or replaces an earlier report, never another file
/// (a typo such as `--out runs/x/config.toml` must not destroy a run).
fn check_report_out(out: &Path) -> Result<()> {
    let shown = zoo_data::input::clip_path(out);
    let is_html = out
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("html") || e.eq_ignore_ascii_case("htm"));
    anyhow::ensure!(
        is_html,
        "--out {shown}: the report is an HTML page; give a file name ending in .html"
    );
    let Ok(meta) = std::fs::symlink_metadata(out) else {
        return Ok(());
    };
    anyhow::ensure!(
        meta.is_file(),
        "--out {shown} exists and is not a regular file (choose another --out)"
    );
    let mut head = [0u8; 15];
    let starts_as_report = std::fs::File::open(out)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
        .is_ok()
        && head.eq_ignore_ascii_case(b"<!DOCTYPE html>");
    anyhow::ensure!(
        starts_as_report,
        "--out {shown} exists and is not an HTML page; the zoo only replaces earlier reports (choose another --out)"
    );
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn cmd_train(
    config_path: Option<PathBuf>,
    set: Vec<String>,
    device: Option<String>,
    out: Option<PathBuf>,
    overwrite: bool,
    resume: Option<PathBuf>,
    no_eval: bool,
    output: Output,
) -> Result<()> {
    let (mut cfg, run_dir, resuming) = match resume {
        Some(dir) => {
            if !set.is_empty() {
                bail!(
                    "--set cannot change a run being resumed (the curve would no longer match); start a new run instead"
                );
            }
            anyhow::ensure!(
                zoo_train::run_dir::is_run(&dir),
                "{} is not a run directory (no config.toml and metrics.jsonl); train it first with `zoo train CONFIG`",
                zoo_data::input::clip_path(&dir)
            );
            let path = dir.join(zoo_train::trainer::CONFIG_FILE);
            (config::load(&path, &[])?, dir, true)
        }
        None => {
            let Some(path) = config_path else {
                bail!(
                    "give a config file (`zoo train configs/quickstart.toml`) or --resume RUN_DIR"
                );
            };
            let cfg = config::load(&path, &set)?;
            let dir = out.unwrap_or_else(|| Path::new("runs").join(&cfg.run.name));
            // Refuse before any work; the trainer checks again right before it writes.
            zoo_train::run_dir::check_target(&dir, overwrite)?;
            (cfg, dir, false)
        }
    };
    if let Some(d) = device {
        cfg.run.device = d;
    }
    let dev = device::select(&cfg.run.device)?;
    let opts = TrainOptions {
        run_dir: run_dir.clone(),
        device: dev.clone(),
        resume: resuming,
        overwrite,
        base_dir: PathBuf::from("."),
    };
    let mut observer = observe::Progress::new(output.quiet, output.json);
    let summary = train(cfg.clone(), &opts, &mut observer)?;
    observer.finish();
    let eval_missing = !no_eval && !zoo_eval::after_training::is_done(&run_dir, &cfg);
    let target_line = summary.stopped_at.map(|step| {
        let reached = summary
            .evals
            .iter()
            .map(|e| e.accuracy)
            .fold(f64::INFINITY, f64::min);
        format!(
            "reached eval accuracy {reached:.4} ≥ {} at step {step} of {}; stopped",
            summary.summary.target_accuracy.unwrap_or(f64::NAN),
            summary.summary.planned_steps
        )
    });
    let done_json = |already_finished: bool| {
        serde_json::json!({
            "kind": "done",
            "run_dir": run_dir,
            "steps": summary.steps,
            "final_loss": summary.final_loss,
            "stopped_at": summary.stopped_at,
            "already_finished": already_finished,
        })
    };
    if summary.already_finished && !eval_missing {
        if output.json {
            println!("{}", done_json(true));
        } else {
            println!(
                "{} already finished: {} steps, final loss {:.4}; nothing to do (evaluate it again with `zoo eval … --run {}`)",
                run_dir.display(),
                summary.steps,
                summary.final_loss,
                run_dir.display()
            );
        }
        return Ok(());
    }
    let final_eval = summary
        .evals
        .last()
        .map(|e| {
            format!(
                ", eval accuracy {:.1}% at seq_len {}",
                100.0 * e.accuracy,
                e.seq_len
            )
        })
        .unwrap_or_default();
    if !output.quiet && !output.json {
        if let Some(line) = &target_line {
            println!("{line}");
        }
        println!(
            "trained {} params for {} steps, final loss {:.4}{final_eval}",
            summary.num_params, summary.steps, summary.final_loss
        );
    }
    if !no_eval {
        let done = zoo_eval::evaluate_after_training(
            &run_dir,
            &dev,
            Path::new("."),
            !output.quiet && !output.json,
        )?;
        if !output.quiet && !output.json {
            if let Some(r) = &done.niah {
                print_niah(r);
            }
            if let Some(r) = &done.mqar {
                println!("MQAR accuracy (seq_len × num_kv_pairs):");
                for row in &r.rows {
                    println!(
                        "  {:>6} {:>4}  {:>6.1}%",
                        row.seq_len,
                        row.num_kv_pairs,
                        100.0 * row.accuracy
                    );
                }
            }
        }
    }
    if output.json {
        println!("{}", done_json(false));
    } else {
        println!("run saved to {}", run_dir.display());
    }
    Ok(())
}

fn print_niah(r: &zoo_eval::NiahResult) {
    println!(
        "NIAH exact match ({}), rows = depth, columns = context length:",
        r.variant
    );
    print!("        ");
    for l in &r.lengths {
        print!("{l:>7}");
    }
    println!();
    for (d, row) in r.depths.iter().zip(&r.accuracy) {
        print!("  {:>4.0}% ", 100.0 * d);
        for a in row {
            print!("{:>6.0}%", 100.0 * a);
        }
        println!();
    }
}

/// Refuses evaluation arguments that cannot give a meaningful result, before anything is loaded
/// or written (a zero-sample grid would overwrite a run's real results with zeros).
fn check_eval_args(
    c: &EvalCommon,
    lengths: &[usize],
    samples: Option<usize>,
    other: &[(&str, Option<usize>)],
) -> Result<()> {
    anyhow::ensure!(c.batch_size > 0, "--batch-size is 0 (use at least 1)");
    if let Some(i) = lengths.iter().position(|&l| l == 0) {
        bail!("--lengths: entry {} is 0 (lengths must be positive)", i + 1);
    }
    anyhow::ensure!(
        samples != Some(0),
        "--samples is 0, which would evaluate nothing and overwrite the run's results (use at least 1)"
    );
    for (flag, value) in other {
        anyhow::ensure!(*value != Some(0), "{flag} is 0 (use at least 1)");
    }
    Ok(())
}

/// The resolved list of lengths must be non-empty and positive (a default such as half the
/// training length can be 0 for a 1-token run).
fn check_lengths(lengths: &[usize]) -> Result<()> {
    anyhow::ensure!(
        !lengths.is_empty() && !lengths.contains(&0),
        "no positive evaluation length (got {lengths:?}); give --lengths, e.g. --lengths 64,128"
    );
    Ok(())
}

fn eval_options(c: &EvalCommon) -> Result<EvalOptions> {
    Ok(EvalOptions {
        device: device::select(&c.device)?,
        batch_size: c.batch_size,
        seed: c.seed,
        progress: !c.quiet,
        base_dir: PathBuf::from("."),
    })
}

/// `--lengths` when given, else the lengths of `eval` for the run ([`zoo_eval::grids`]: the
/// config's list, else the default grid).
fn lengths_for(given: &[usize], run: &zoo_eval::LoadedRun, eval: Eval) -> Vec<usize> {
    if given.is_empty() {
        grids::lengths(&run.config, eval, run.task.min_seq_len())
    } else {
        given.to_vec()
    }
}

/// The first non-empty list (command line, then config), else `fallback()`.
fn first_given<T: Clone>(lists: &[&Vec<T>], fallback: impl FnOnce() -> Vec<T>) -> Vec<T> {
    lists
        .iter()
        .find(|l| !l.is_empty())
        .map_or_else(fallback, |l| l.to_vec())
}

fn cmd_eval(e: EvalCommand) -> Result<()> {
    match e {
        EvalCommand::Niah {
            common,
            lengths,
            depths,
            samples,
            variant,
        } => {
            check_eval_args(&common, &lengths, samples, &[])?;
            let opts = eval_options(&common)?;
            let run = load_run(&common.run, &opts, |_| {})?;
            let c = &run.config.eval.niah;
            let lengths = lengths_for(&lengths, &run, Eval::Niah);
            check_lengths(&lengths)?;
            let depths = first_given(&[&depths, &c.depths], Vec::new);
            anyhow::ensure!(
                !depths.is_empty(),
                "no depths to evaluate; give --depths, e.g. --depths 0,0.5,1"
            );
            if let Some(bad) = depths.iter().find(|d| !(0.0..=1.0).contains(*d)) {
                bail!(
                    "--depths: {bad} is outside [0, 1] (depth is the fraction of the haystack before the needle)"
                );
            }
            let variant = variant
                .unwrap_or_else(|| c.variant.clone())
                .parse()
                .map_err(|e| anyhow::anyhow!("--variant: {e}"))?;
            let r = zoo_eval::niah::run_niah(
                &run,
                &lengths,
                &depths,
                samples.unwrap_or(c.samples),
                variant,
                &opts,
            )?;
            print_niah(&r);
            println!(
                "wrote {}/eval/niah.{{csv,json,png,svg}}",
                common.run.display()
            );
        }
        EvalCommand::Mqar {
            common,
            lengths,
            pairs,
            samples,
            scaling,
        } => {
            if let Some(i) = pairs.iter().position(|&p| p == 0) {
                bail!("--pairs: entry {} is 0 (use at least 1 pair)", i + 1);
            }
            check_eval_args(&common, &lengths, samples, &[])?;
            let opts = eval_options(&common)?;
            let (run, label) = load_scaled_run(&common, &opts, &scaling)?;
            let c = &run.config.eval.mqar;
            let lengths = lengths_for(&lengths, &run, Eval::Mqar);
            let pairs = first_given(&[&pairs], || grids::mqar_pairs(&run.config));
            check_lengths(&lengths)?;
            anyhow::ensure!(
                !pairs.is_empty(),
                "no pair counts to evaluate; give --pairs, e.g. --pairs 4,8"
            );
            let r = zoo_eval::mqar::run_mqar_scaled(
                &run,
                &lengths,
                &pairs,
                samples.unwrap_or(c.samples),
                &label,
                &opts,
            )?;
            println!(
                "{:>8} {:>8} {:>9}   (scaling: {label})",
                "seq_len", "kv_pairs", "accuracy"
            );
            for row in &r.rows {
                println!(
                    "{:>8} {:>8} {:>8.1}%",
                    row.seq_len,
                    row.num_kv_pairs,
                    100.0 * row.accuracy
                );
            }
            println!(
                "wrote {}/eval/{}.{{csv,json,png,svg}}",
                common.run.display(),
                zoo_eval::mqar::file_stem(&label)
            );
        }
        EvalCommand::Ppl {
            common,
            lengths,
            max_windows,
            scaling,
        } => {
            check_eval_args(&common, &lengths, None, &[("--max-windows", max_windows)])?;
            let opts = eval_options(&common)?;
            let (run, scaling) = load_scaled_run(&common, &opts, &scaling)?;
            let lengths = lengths_for(&lengths, &run, Eval::Ppl);
            check_lengths(&lengths)?;
            let max_windows = max_windows.unwrap_or(run.config.eval.ppl.max_windows);
            let r = zoo_eval::ppl::run_ppl(&run, &lengths, max_windows, &scaling, &opts)?;
            println!(
                "{:>8} {:>9} {:>10}   (scaling: {})",
                "seq_len", "loss", "ppl", r.scaling
            );
            for row in &r.rows {
                println!("{:>8} {:>9.4} {:>10.3}", row.seq_len, row.loss, row.ppl);
            }
            println!(
                "wrote {}/eval/ppl.{{csv,json,png,svg}}",
                common.run.display()
            );
        }
        EvalCommand::Attention {
            common,
            lengths,
            samples,
        } => {
            check_eval_args(&common, &lengths, Some(samples), &[])?;
            let opts = eval_options(&common)?;
            let run = load_run(&common.run, &opts, |_| {})?;
            let lengths = lengths_for(&lengths, &run, Eval::Attention);
            check_lengths(&lengths)?;
            let r = zoo_eval::attention::run_attention(&run, &lengths, samples, &opts)?;
            let state = zoo_eval::attention::state_table(&run.name, &run.model, &lengths);
            let dir = run.eval_dir()?;
            state.write_json(&dir.join("state.json"))?;
            state.write_csv(&dir.join("state.csv"))?;
            println!(
                "{:>5} {:>4} {:>7} {:>8} {:>9} {:>11}",
                "layer", "head", "seq_len", "entropy", "sparsity", "needle_mass"
            );
            for row in &r.rows {
                let mass = row
                    .needle_mass
                    .map_or("-".to_string(), |m| format!("{m:.3}"));
                println!(
                    "{:>5} {:>4} {:>7} {:>8.3} {:>9.3} {:>11}",
                    row.layer, row.head, row.seq_len, row.entropy, row.sparsity, mass
                );
            }
            println!(
                "wrote {}/eval/attention.{{csv,json}}, attention_*.{{png,svg}}, state.{{csv,json}}",
                common.run.display()
            );
        }
    }
    Ok(())
}

/// The `top_k` largest (id, logit) pairs of one row, largest first (ties: lower id first).
/// Loads the run with the evaluation-time scalings of `args` applied to its model config, and
/// names them ("none", "rope_pi:4", "ntk:4+logn", …). Factors must be finite and ≥ 1, and RoPE
/// factors need a RoPE model.
fn load_scaled_run(
    common: &EvalCommon,
    opts: &EvalOptions,
    args: &ScalingArgs,
) -> Result<(zoo_eval::LoadedRun, String)> {
    for (flag, f) in [
        ("--rope-interpolation", args.rope_interpolation),
        ("--ntk", args.ntk),
    ] {
        if let Some(f) = f {
            anyhow::ensure!(
                f.is_finite() && f >= 1.0,
                "{flag} = {f} must be a finite factor ≥ 1 (1 = no scaling)"
            );
        }
    }
    let mut labels = Vec::new();
    let run = load_run(&common.run, opts, |m| {
        if let zoo_model::PositionConfig::Rope {
            interpolation,
            ntk_factor,
            ..
        } = &mut m.position
        {
            if let Some(f) = args.rope_interpolation {
                *interpolation = f;
                labels.push(format!("rope_pi:{f}"));
            }
            if let Some(f) = args.ntk {
                *ntk_factor = f;
                labels.push(format!("ntk:{f}"));
            }
        }
        if args.log_n {
            for mixer in std::iter::once(&mut m.mixer).chain(m.mixers.iter_mut()) {
                if let zoo_model::MixerConfig::Softmax(c) = mixer {
                    c.log_n_scaling = true;
                }
            }
            labels.push("logn".into());
        }
    })?;
    if (args.rope_interpolation.is_some() || args.ntk.is_some())
        && !matches!(
            run.config.model.position,
            zoo_model::PositionConfig::Rope { .. }
        )
    {
        bail!(
            "--rope-interpolation / --ntk need a RoPE model; run {} uses {} positions",
            run.name,
            run.config.model.position.kind()
        );
    }
    let label = if labels.is_empty() {
        "none".to_string()
    } else {
        labels.join("+")
    };
    Ok((run, label))
}

fn top_logits(row: &[f32], top_k: usize) -> Vec<(usize, f32)> {
    let mut order: Vec<usize> = (0..row.len()).collect();
    order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
    order.into_iter().take(top_k).map(|i| (i, row[i])).collect()
}

fn cmd_generate(
    run_dir: &Path,
    prompt: &str,
    max_tokens: usize,
    device: &str,
    ids_top_k: Option<usize>,
) -> Result<()> {
    use burn::prelude::*;
    if ids_top_k == Some(0) {
        bail!("--top-k is 0 (use at least 1)");
    }
    let dev = device::select(device)?;
    let opts = EvalOptions {
        device: dev.clone(),
        batch_size: 1,
        seed: 0,
        progress: false,
        base_dir: PathBuf::from("."),
    };
    // Only the model and the run's own tokenizer: generating needs no task files.
    let (config, model) = zoo_eval::load_model(run_dir, &opts, |_| {})?;
    let tokenizer = zoo_eval::run_tokenizer(run_dir, &config)?;
    let ids: Vec<u32> = match &tokenizer {
        Some(t) => t.try_encode(prompt)?,
        None => prompt
            .split_whitespace()
            .map(|s| {
                s.parse::<u32>().map_err(|_| {
                    anyhow::anyhow!(
                        "this run's task has no tokenizer: give --prompt as space-separated token ids, not `{}`",
                        zoo_data::input::clip_bare(s)
                    )
                })
            })
            .collect::<Result<_>>()?,
    };
    anyhow::ensure!(!ids.is_empty(), "--prompt is empty");
    // Before the length check, so a learned-position model's refusal names --max-tokens.
    zoo_train::resources::check_generate(
        model.config(),
        ids.len(),
        max_tokens,
        zoo_model::kernels::on_device(&dev),
    )?;
    let vocab = model.config().vocab()?;
    if let Some(bad) = ids.iter().find(|&&t| t as usize >= vocab) {
        bail!("token id {bad} is outside the model's vocabulary of {vocab}");
    }
    config.model.check_length(ids.len() + max_tokens)?;
    let tokens = Tensor::<2, Int>::from_data(
        TensorData::new(
            ids.iter().map(|&t| t as i64).collect::<Vec<_>>(),
            [1, ids.len()],
        ),
        &dev,
    );
    let (mut logits, mut state) = model.prefill(tokens, model.init_state(1, &dev)); // [1, vocab]
    let mut out = Vec::new();
    let mut tops = Vec::new();
    let eos = tokenizer.as_ref().and_then(|t| t.eos_id());
    for _ in 0..max_tokens {
        let row = logits.clone().into_data().try_into_vec_as::<f32>()?;
        let id = top_logits(&row, 1)[0].0 as u32;
        if let Some(k) = ids_top_k {
            tops.push(top_logits(&row, k));
        }
        if Some(id) == eos {
            break;
        }
        out.push(id);
        let next = Tensor::<1, Int>::from_data(TensorData::new(vec![id as i64], [1]), &dev);
        let (l, s) = model.step(next, state);
        logits = l;
        state = s;
    }
    match &tokenizer {
        Some(t) => println!("{}{}", prompt, t.try_decode(&out)?),
        None => println!(
            "{}",
            out.iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        ),
    }
    if ids_top_k.is_some() {
        let join = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>().join(" ");
        println!("prompt_ids: {}", join(&ids));
        println!("output_ids: {}", join(&out));
        for (i, top) in tops.iter().enumerate() {
            let cells: Vec<String> = top.iter().map(|(id, l)| format!("{id}:{l:.6}")).collect();
            println!("position {}: {}", ids.len() + i, cells.join(" "));
        }
    }
    Ok(())
}
