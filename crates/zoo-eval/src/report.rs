//! `zoo report`: one self-contained HTML file comparing runs.
//!
//! For each run directory it reads `config.toml` (displayed only, parsed as a generic
//! `toml::Value` so the report never breaks when the config schema grows), `metrics.jsonl`
//! (training and eval lines), `model/summary.json` (parameter count, when present) and whatever
//! of `eval/{niah,mqar,ppl,attention,state}.json` exists. The page has, in order: a config table
//! (one column per run), training-loss curves of all runs on one chart with stage-boundary
//! markers, each run's NIAH heat map, MQAR tables (seq_len × num_kv_pairs), perplexity vs length
//! of all runs on one chart, attention diagnostics (entropy and sparsity vs length per layer,
//! needle mass vs length), and recurrent-state sizes. Missing evaluations say how to produce them.
//!
//! An argument that is a sweep folder (it holds `sweep.json`, written by `zoo sweep`) adds a
//! section of its own instead (see `report_sweep`): the sweep's results table with the best-of
//! rows highlighted, and its plots. The run sections appear when at least one run is given.
//!
//! Self-contained means no external resource: CSS is inline and every figure is a PNG drawn by
//! `plot` into a scratch directory and embedded as a base64 `data:` URI, inside a `<figure>` with a
//! `<figcaption>`. PNG rather than inline SVG so what the tests decode is exactly what a browser
//! shows, independent of its fonts. The output is written atomically, and only after everything
//! succeeded: a failed report never replaces a previous one.
//!
//! Errors are one line naming the path: a run directory that does not exist or lacks
//! `config.toml`/`metrics.jsonl`, or an eval file that does not parse. Unparseable lines of
//! `metrics.jsonl` (e.g. the half-written last line of a run still training) are skipped and
//! counted in the report instead.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use serde::Deserialize;
use zoo_data::input::{MAX_CONFIG_BYTES, MAX_TEXT_BYTES};

use crate::plot::{self, AttentionFigure, LineOpts, Series};
use crate::report_sweep::{SweepData, is_sweep_dir};
use crate::results::{
    AttentionResult, MqarResult, NiahResult, PplResult, StateResult, write_file_atomic,
};

/// What `write_report` produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReportSummary {
    /// Number of `<figure>` elements (embedded charts) in the page.
    pub figures: usize,
    /// Number of runs in the report.
    pub runs: usize,
    /// Number of sweep folders in the report.
    pub sweeps: usize,
}

/// Most points per loss curve: longer curves are averaged in equal-width step buckets, which
/// keeps the shape (and smooths noise) while bounding the figure's drawing cost.
const MAX_LOSS_POINTS: usize = 1500;

/// Writes the HTML report for `dirs` (run folders and sweep folders) to `out`.
pub fn write_report(dirs: &[PathBuf], out: &Path) -> anyhow::Result<ReportSummary> {
    if dirs.is_empty() {
        bail!("no run directories given");
    }
    let (sweep_dirs, run_dirs): (Vec<&PathBuf>, Vec<&PathBuf>) =
        dirs.iter().partition(|d| is_sweep_dir(d));
    // Check every directory before reading any, so the first error is about the path the user
    // most likely mistyped rather than a parse error further down.
    for dir in &run_dirs {
        check_run_dir(dir)?;
    }
    let mut runs = run_dirs
        .iter()
        .map(|d| RunData::load(d))
        .collect::<anyhow::Result<Vec<_>>>()?;
    disambiguate_names(&mut runs);
    let sweeps = sweep_dirs
        .iter()
        .map(|d| SweepData::load(d))
        .collect::<anyhow::Result<Vec<_>>>()?;

    let scratch = tempfile::tempdir().context("creating a scratch directory for figures")?;
    let mut page = Page {
        html: String::new(),
        figures: 0,
        scratch: scratch.path().to_path_buf(),
    };
    page.build(&runs, &sweeps)?;
    write_file_atomic(out, page.html.as_bytes())
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(ReportSummary {
        figures: page.figures,
        runs: runs.len(),
        sweeps: sweeps.len(),
    })
}

fn check_run_dir(dir: &Path) -> anyhow::Result<()> {
    if !dir.is_dir() {
        if dir.exists() {
            bail!("run directory {} is not a directory", dir.display());
        }
        bail!("run directory {} does not exist", dir.display());
    }
    let missing: Vec<&str> = ["config.toml", "metrics.jsonl"]
        .into_iter()
        .filter(|f| !dir.join(f).is_file())
        .collect();
    if !missing.is_empty() {
        bail!(
            "run directory {} lacks {} (not a `zoo train` run directory?)",
            dir.display(),
            missing.join(" and ")
        );
    }
    Ok(())
}

// --- loading ---------------------------------------------------------------------------------

struct TrainPoint {
    step: f64,
    stage: Option<u64>,
    seq_len: Option<u64>,
    loss: f64,
}

struct EvalPoint {
    step: f64,
    seq_len: Option<u64>,
    loss: Option<f64>,
    accuracy: Option<f64>,
}

/// A contiguous block of training lines with the same stage index (or, without stage indices,
/// the same sequence length).
struct Stage {
    seq_len: Option<u64>,
    first_step: f64,
    last_step: f64,
}

struct RunData {
    dir: PathBuf,
    name: String,
    config: toml::Value,
    config_text: String,
    train: Vec<TrainPoint>,
    evals: Vec<EvalPoint>,
    skipped_lines: usize,
    params: Option<f64>,
    niah: Option<NiahResult>,
    mqar: Option<MqarResult>,
    ppl: Vec<PplResult>,
    attention: Option<AttentionResult>,
    state: Option<StateResult>,
}

/// `eval/ppl.json` holds one `PplResult`, or an array of them (one per length scaling).
#[derive(Deserialize)]
#[serde(untagged)]
enum PplFile {
    One(PplResult),
    Many(Vec<PplResult>),
}

/// A text file of the run folder, refused when it is not a regular file or larger than `cap`.
fn read_capped(path: &Path, what: &str, cap: u64) -> anyhow::Result<String> {
    zoo_data::read_text_capped(path, what, cap).map_err(|e| match e {
        zoo_data::TaskError::Io { source, .. } => {
            anyhow::Error::new(source).context(format!("reading {}", path.display()))
        }
        other => other.into(),
    })
}

fn read_optional<T>(
    path: &Path,
    read: impl FnOnce(&Path) -> anyhow::Result<T>,
) -> anyhow::Result<Option<T>> {
    if path.is_file() {
        read(path).map(Some)
    } else {
        Ok(None)
    }
}

impl RunData {
    fn load(dir: &Path) -> anyhow::Result<Self> {
        let config_path = dir.join("config.toml");
        let config_text = read_capped(&config_path, "run config", MAX_CONFIG_BYTES)?;
        let config: toml::Value = toml::from_str(&config_text).map_err(|e| {
            // toml's Display spans several lines (it quotes the source); keep the error to one
            // line with the line number instead.
            let bytes = config_text.as_bytes();
            let line = e.span().map(|s| {
                let before = &bytes[..s.start.min(bytes.len())];
                before.iter().filter(|&&b| b == b'\n').count() + 1
            });
            let at = line.map(|l| format!(" at line {l}")).unwrap_or_default();
            let msg: Vec<&str> = e
                .message()
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            anyhow::anyhow!(
                "{}: invalid TOML{at}: {}",
                config_path.display(),
                msg.join("; ")
            )
        })?;

        let metrics_path = dir.join("metrics.jsonl");
        let metrics = read_capped(&metrics_path, "metrics file", MAX_TEXT_BYTES)?;
        let (train, evals, skipped_lines) = parse_metrics(&metrics);

        let eval = dir.join("eval");
        let ppl = read_optional(&eval.join("ppl.json"), |p| {
            let text = read_capped(p, "results file", MAX_TEXT_BYTES)?;
            let file: PplFile =
                serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))?;
            Ok(match file {
                PplFile::One(r) => vec![r],
                PplFile::Many(v) => v,
            })
        })?
        .unwrap_or_default();
        let niah = read_optional(&eval.join("niah.json"), NiahResult::read_json)?;
        if let Some(n) = &niah {
            n.check_shape()
                .with_context(|| format!("in {}", eval.join("niah.json").display()))?;
        }

        let name = config
            .get("run")
            .and_then(|r| r.get("name"))
            .and_then(toml::Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| dir_name(dir));

        Ok(RunData {
            dir: dir.to_path_buf(),
            name,
            config,
            config_text,
            train,
            evals,
            skipped_lines,
            params: read_params(&dir.join("model").join("summary.json"))?,
            niah,
            mqar: read_optional(&eval.join("mqar.json"), MqarResult::read_json)?,
            ppl,
            attention: read_optional(&eval.join("attention.json"), AttentionResult::read_json)?,
            state: read_optional(&eval.join("state.json"), StateResult::read_json)?,
        })
    }

    fn stages(&self) -> Vec<Stage> {
        let mut stages: Vec<(Option<u64>, Stage)> = Vec::new();
        for p in &self.train {
            let key = p.stage.or(p.seq_len);
            match stages.last_mut() {
                Some((k, s)) if *k == key => s.last_step = p.step,
                _ => stages.push((
                    key,
                    Stage {
                        seq_len: p.seq_len,
                        first_step: p.step,
                        last_step: p.step,
                    },
                )),
            }
        }
        stages.into_iter().map(|(_, s)| s).collect()
    }

    fn cfg(&self, path: &[&str]) -> Option<&toml::Value> {
        path.iter().try_fold(&self.config, |v, k| v.get(k))
    }
}

fn dir_name(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string())
}

/// Two runs with the same `run.name` get their directory appended, so legends stay unambiguous.
fn disambiguate_names(runs: &mut [RunData]) {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for r in runs.iter() {
        *counts.entry(r.name.clone()).or_default() += 1;
    }
    for r in runs.iter_mut() {
        if counts[&r.name] > 1 {
            r.name = format!("{} ({})", r.name, r.dir.display());
        }
    }
}

fn parse_metrics(text: &str) -> (Vec<TrainPoint>, Vec<EvalPoint>, usize) {
    let mut train = Vec::new();
    let mut evals = Vec::new();
    let mut skipped = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            skipped += 1;
            continue;
        };
        let num = |k: &str| v.get(k).and_then(serde_json::Value::as_f64);
        let int = |k: &str| v.get(k).and_then(serde_json::Value::as_u64);
        let Some(step) = num("step") else {
            skipped += 1;
            continue;
        };
        match v.get("kind").and_then(serde_json::Value::as_str) {
            Some("eval") => evals.push(EvalPoint {
                step,
                seq_len: int("seq_len"),
                loss: num("loss"),
                accuracy: num("accuracy"),
            }),
            None | Some("train") => match num("loss") {
                Some(loss) => train.push(TrainPoint {
                    step,
                    stage: int("stage"),
                    seq_len: int("seq_len"),
                    loss,
                }),
                None => skipped += 1,
            },
            // Other kinds (future additions) are not this report's business.
            Some(_) => {}
        }
    }
    (train, evals, skipped)
}

/// Parameter count from `model/summary.json`, under any of the usual key names.
fn read_params(path: &Path) -> anyhow::Result<Option<f64>> {
    read_optional(path, |p| {
        let text = read_capped(p, "summary file", MAX_CONFIG_BYTES)?;
        let v: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))?;
        Ok([
            "params",
            "parameters",
            "n_params",
            "num_params",
            "total_params",
            "param_count",
        ]
        .iter()
        .find_map(|k| v.get(k).and_then(serde_json::Value::as_f64)))
    })
    .map(Option::flatten)
}

// --- page ------------------------------------------------------------------------------------

pub(crate) struct Page {
    pub(crate) html: String,
    pub(crate) figures: usize,
    scratch: PathBuf,
}

const CSS: &str = "
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2rem auto;
       max-width: 1100px; padding: 0 1rem; color: #222; line-height: 1.4; }
h1 { margin-bottom: 0.2rem; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2rem; margin-top: 2.5rem; }
table { border-collapse: collapse; margin: 0.8rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: left; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.best td { background: #e8f5e9; font-weight: 600; }
figure { margin: 1.2rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.9rem; color: #555; margin-top: 0.3rem; }
.missing { color: #996; font-style: italic; }
.note { color: #666; font-size: 0.9rem; }
pre { background: #f7f7f7; padding: 0.6rem; overflow-x: auto; font-size: 0.8rem; }
code { background: #f3f3f3; padding: 0 0.2rem; }
";

impl Page {
    fn build(&mut self, runs: &[RunData], sweeps: &[SweepData]) -> anyhow::Result<()> {
        let title = match (runs.len(), sweeps.len()) {
            (1, 0) => format!("attention-zoo report: {}", runs[0].name),
            (0, 1) => format!("attention-zoo report: sweep {}", sweeps[0].name),
            (n, 0) => format!("attention-zoo report: {n} runs"),
            (0, m) => format!("attention-zoo report: {m} sweeps"),
            (n, m) => format!("attention-zoo report: {n} runs, {m} sweeps"),
        };
        let _ = write!(
            self.html,
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <title>{}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<h1>{}</h1>\n",
            esc(&title),
            esc(&title)
        );
        for (i, sweep) in sweeps.iter().enumerate() {
            self.sweep_section(i, sweep)?;
        }
        if runs.is_empty() {
            self.html.push_str("</body>\n</html>\n");
            return Ok(());
        }
        self.html.push_str("<p class=\"note\">Runs: ");
        let list: Vec<String> = runs
            .iter()
            .map(|r| {
                format!(
                    "<strong>{}</strong> (<code>{}</code>)",
                    esc(&r.name),
                    esc(&r.dir.display().to_string())
                )
            })
            .collect();
        self.html.push_str(&list.join(", "));
        self.html.push_str("</p>\n");

        self.config_section(runs);
        self.loss_section(runs)?;
        self.niah_section(runs)?;
        self.mqar_section(runs);
        self.ppl_section(runs)?;
        self.attention_section(runs)?;
        self.state_section(runs);
        self.html.push_str("</body>\n</html>\n");
        Ok(())
    }

    pub(crate) fn h2(&mut self, id: &str, title: &str) {
        let _ = writeln!(self.html, "<h2 id=\"{id}\">{}</h2>", esc(title));
    }

    fn missing(&mut self, what: &str, run: Option<&RunData>, command: &str) {
        let dir = run
            .map(|r| r.dir.display().to_string())
            .unwrap_or_else(|| "DIR".into());
        let who = run
            .map(|r| format!("{}: ", esc(&r.name)))
            .unwrap_or_default();
        let _ = writeln!(
            self.html,
            "<p class=\"missing\">{who}{} not evaluated (run <code>zoo eval {command} --run {}</code>)</p>",
            esc(what),
            esc(&dir)
        );
    }

    /// Embeds `<stem>.png` (drawn by the caller) as a figure.
    fn figure(&mut self, stem: &Path, alt: &str, caption: &str) -> anyhow::Result<()> {
        let (png, _) = plot::output_paths(stem);
        self.figure_png(&png, alt, caption)
    }

    /// Embeds the PNG file `png` as a figure; `caption` is HTML.
    pub(crate) fn figure_png(
        &mut self,
        png: &Path,
        alt: &str,
        caption: &str,
    ) -> anyhow::Result<()> {
        let bytes = fs::read(png).with_context(|| format!("reading {}", png.display()))?;
        let (w, h) = png_size(&bytes).unwrap_or((0, 0));
        let data = base64::engine::general_purpose::STANDARD.encode(&bytes);
        let _ = writeln!(
            self.html,
            "<figure>\n<img src=\"data:image/png;base64,{data}\" width=\"{w}\" height=\"{h}\" \
             alt=\"{}\">\n<figcaption>{}</figcaption>\n</figure>",
            esc(alt),
            caption
        );
        self.figures += 1;
        Ok(())
    }

    fn stem(&self, name: &str) -> PathBuf {
        self.scratch.join(format!("fig{:03}-{name}", self.figures))
    }

    // --- config ------------------------------------------------------------------------------

    fn config_section(&mut self, runs: &[RunData]) {
        self.h2("config", "Configuration");
        let mut rows: Vec<(&str, Vec<String>)> = Vec::new();
        let col = |f: &dyn Fn(&RunData) -> Option<String>| -> Vec<String> {
            runs.iter()
                .map(|r| f(r).unwrap_or_else(|| "—".into()))
                .collect()
        };
        rows.push(("directory", col(&|r| Some(r.dir.display().to_string()))));
        rows.push(("seed", col(&|r| r.cfg(&["run", "seed"]).map(show))));
        rows.push(("device", col(&|r| r.cfg(&["run", "device"]).map(show))));
        rows.push(("mixer", col(&mixer_summary)));
        rows.push((
            "position",
            col(&|r| r.cfg(&["model", "position", "kind"]).map(show)),
        ));
        for key in ["d_model", "n_layers", "n_heads", "vocab_size"] {
            rows.push((key, col(&|r| r.cfg(&["model", key]).map(show))));
        }
        rows.push(("parameters", col(&|r| r.params.map(human_count))));
        rows.push(("task", col(&|r| r.cfg(&["task", "kind"]).map(show))));
        rows.push(("training stages", col(&stages_summary)));
        rows.push((
            "steps logged",
            col(&|r| r.train.last().map(|p| fmt_num(p.step))),
        ));
        rows.push((
            "final train loss",
            col(&|r| r.train.last().map(|p| format!("{:.4}", p.loss))),
        ));
        rows.push(("last eval", col(&last_eval_summary)));

        self.html.push_str("<table>\n<tr><th></th>");
        for r in runs {
            let _ = write!(self.html, "<th>{}</th>", esc(&r.name));
        }
        self.html.push_str("</tr>\n");
        for (label, cells) in rows {
            let _ = write!(self.html, "<tr><th>{}</th>", esc(label));
            for c in cells {
                let _ = write!(self.html, "<td>{}</td>", esc(&c));
            }
            self.html.push_str("</tr>\n");
        }
        self.html.push_str("</table>\n");

        for r in runs {
            if r.skipped_lines > 0 {
                let _ = writeln!(
                    self.html,
                    "<p class=\"note\">{}: skipped {} unparseable line(s) of metrics.jsonl.</p>",
                    esc(&r.name),
                    r.skipped_lines
                );
            }
            let _ = writeln!(
                self.html,
                "<details><summary>config.toml of {}</summary>\n<pre>{}</pre>\n</details>",
                esc(&r.name),
                esc(&r.config_text)
            );
        }
    }

    // --- training loss -----------------------------------------------------------------------

    fn loss_section(&mut self, runs: &[RunData]) -> anyhow::Result<()> {
        self.h2("loss", "Training loss");
        if runs
            .iter()
            .all(|r| r.train.is_empty() && r.evals.is_empty())
        {
            self.html
                .push_str("<p class=\"missing\">No loss lines in metrics.jsonl yet.</p>\n");
            return Ok(());
        }
        // Training curves first, in run order, so each run gets the same colour here as in the
        // perplexity chart; eval curves follow.
        let mut series: Vec<Series> = runs
            .iter()
            .map(|r| {
                let points: Vec<(f64, f64)> = r.train.iter().map(|p| (p.step, p.loss)).collect();
                Series::new(r.name.clone(), downsample(&points, MAX_LOSS_POINTS))
            })
            .collect();
        for r in runs {
            let mut by_len: BTreeMap<Option<u64>, Vec<(f64, f64)>> = BTreeMap::new();
            for e in &r.evals {
                if let Some(loss) = e.loss {
                    by_len.entry(e.seq_len).or_default().push((e.step, loss));
                }
            }
            for (len, points) in by_len {
                let name = match len {
                    Some(l) => format!("{} eval L={l}", r.name),
                    None => format!("{} eval", r.name),
                };
                series.push(Series::new(name, points));
            }
        }

        // Stage boundaries: one marker per (step, length), naming the runs only when they differ.
        let mut boundaries: BTreeMap<(u64, Option<u64>), Vec<&str>> = BTreeMap::new();
        for r in runs {
            for s in r.stages().iter().skip(1) {
                boundaries
                    .entry((s.first_step.to_bits(), s.seq_len))
                    .or_default()
                    .push(&r.name);
            }
        }
        let mut vlines: Vec<(f64, String)> = boundaries
            .into_iter()
            .map(|((bits, len), names)| {
                let len = len
                    .map(|l| format!("L={l}"))
                    .unwrap_or_else(|| "stage".into());
                let label = if names.len() == runs.len() {
                    len
                } else {
                    format!("{}: {len}", names.join(", "))
                };
                (f64::from_bits(bits), label)
            })
            .collect();
        vlines.sort_by(|a, b| a.0.total_cmp(&b.0));

        let stem = self.stem("loss");
        plot::line_chart(
            &stem,
            "Training loss",
            "step",
            "loss (nats/token)",
            &series,
            LineOpts {
                log_x: false,
                log_y: false,
                vlines,
            },
        )?;
        let caption = format!(
            "Training loss by step{}; dashed lines mark the start of each sequence-length stage. \
             Curves longer than {MAX_LOSS_POINTS} points are averaged in equal step buckets; \
             eval-loss lines come from <code>\"kind\":\"eval\"</code> lines of metrics.jsonl.",
            if runs.len() > 1 { " for all runs" } else { "" }
        );
        self.figure(&stem, "training loss curves", &caption)
    }

    // --- NIAH --------------------------------------------------------------------------------

    fn niah_section(&mut self, runs: &[RunData]) -> anyhow::Result<()> {
        self.h2("niah", "Needle in a haystack");
        for r in runs {
            let Some(n) = &r.niah else {
                self.missing("NIAH", Some(r), "niah");
                continue;
            };
            let stem = self.stem("niah");
            plot::niah_figure(&relabelled(n, &r.name), &stem)?;
            let mean = mean_finite(n.accuracy.iter().flatten().copied());
            let caption = format!(
                "{}: NIAH ({}) retrieval accuracy by context length and needle depth, {} samples \
                 per cell; mean {}.{}",
                esc(&r.name),
                esc(&n.variant),
                n.samples,
                mean.map(|m| format!("{m:.3}"))
                    .unwrap_or_else(|| "n/a".into()),
                train_len_note(n.train_len)
            );
            self.figure(&stem, &format!("NIAH heat map of {}", r.name), &caption)?;
        }
        Ok(())
    }

    // --- MQAR --------------------------------------------------------------------------------

    fn mqar_section(&mut self, runs: &[RunData]) {
        self.h2("mqar", "Multi-query associative recall");
        for r in runs {
            let Some(m) = &r.mqar else {
                self.missing("MQAR", Some(r), "mqar");
                continue;
            };
            let lens: BTreeSet<usize> = m.rows.iter().map(|x| x.seq_len).collect();
            let kvs: BTreeSet<usize> = m.rows.iter().map(|x| x.num_kv_pairs).collect();
            let cells: BTreeMap<(usize, usize), &crate::results::MqarRow> = m
                .rows
                .iter()
                .map(|x| ((x.seq_len, x.num_kv_pairs), x))
                .collect();
            let _ = writeln!(
                self.html,
                "<h3>{}</h3>\n<p class=\"note\">Accuracy by sequence length (rows) and number of \
                 key-value pairs (columns).{}</p>",
                esc(&r.name),
                train_len_note(m.train_len)
            );
            self.html
                .push_str("<table>\n<tr><th>seq_len \\ kv pairs</th>");
            for kv in &kvs {
                let _ = write!(self.html, "<th>{kv}</th>");
            }
            self.html.push_str("</tr>\n");
            for len in &lens {
                let mark = match m.train_len {
                    Some(t) if *len > t => " (beyond training)",
                    _ => "",
                };
                let _ = write!(self.html, "<tr><th>{len}{mark}</th>");
                for kv in &kvs {
                    match cells.get(&(*len, *kv)) {
                        Some(c) => {
                            let _ = write!(
                                self.html,
                                "<td class=\"num\" style=\"background:{}\" title=\"{} samples\">{}</td>",
                                cell_colour(c.accuracy),
                                c.samples,
                                fmt_acc(c.accuracy)
                            );
                        }
                        None => self.html.push_str("<td class=\"num\">—</td>"),
                    }
                }
                self.html.push_str("</tr>\n");
            }
            self.html.push_str("</table>\n");
        }
    }

    // --- perplexity vs length ----------------------------------------------------------------

    fn ppl_section(&mut self, runs: &[RunData]) -> anyhow::Result<()> {
        self.h2("ppl", "Perplexity vs length");
        let with: Vec<&RunData> = runs.iter().filter(|r| !r.ppl.is_empty()).collect();
        for r in runs.iter().filter(|r| r.ppl.is_empty()) {
            self.missing("perplexity vs length", Some(r), "ppl");
        }
        if with.is_empty() {
            return Ok(());
        }
        let results: Vec<PplResult> = with
            .iter()
            .flat_map(|r| r.ppl.iter().map(|p| relabelled(p, &r.name)))
            .collect();
        let stem = self.stem("ppl");
        plot::ppl_figure(&results, &stem)?;
        self.figure(
            &stem,
            "perplexity vs length",
            "Perplexity (exp of mean next-token loss) by evaluation length, both axes \
             logarithmic; the dashed line marks the training length. A flat curve past it means \
             the model extrapolates.",
        )
    }

    // --- attention diagnostics ---------------------------------------------------------------

    fn attention_section(&mut self, runs: &[RunData]) -> anyhow::Result<()> {
        self.h2("attention", "Attention diagnostics");
        for r in runs {
            let Some(a) = &r.attention else {
                self.missing("attention diagnostics", Some(r), "attention");
                continue;
            };
            let _ = writeln!(
                self.html,
                "<h3>{} <span class=\"note\">({})</span></h3>",
                esc(&r.name),
                esc(&a.mixer)
            );
            if a.rows.is_empty() {
                self.html
                    .push_str("<p class=\"missing\">attention.json has no rows.</p>\n");
                continue;
            }
            let prefix = self.stem("attention");
            let drawn = plot::attention_figures(&relabelled(a, &r.name), &prefix)?;
            let name = esc(&r.name);
            for (kind, stem) in &drawn {
                let (alt, caption) = match kind {
                    AttentionFigure::Entropy => (
                        "attention entropy",
                        format!(
                            "{name}: mean attention-row entropy −Σ a ln a per layer (mean over \
                             heads) vs length. The uniform reference is what attention spread \
                             evenly over the keys would give; entropy rising with it means \
                             attention dilutes."
                        ),
                    ),
                    AttentionFigure::Sparsity => (
                        "attention sparsity",
                        format!(
                            "{name}: mean sparsity S of attention rows per layer (mean over \
                             heads) vs length; S = 1 for uniform rows, 1/√n for one-hot rows."
                        ),
                    ),
                    AttentionFigure::NeedleMass => (
                        "needle mass",
                        format!(
                            "{name}: attention mass on the needle tokens vs length, per layer, \
                             for the head that attends to the needle most (max over heads of \
                             the mean over queries)."
                        ),
                    ),
                };
                self.figure(stem, &format!("{alt} of {}", r.name), &caption)?;
            }
            if !drawn.iter().any(|(k, _)| *k == AttentionFigure::NeedleMass) {
                self.html.push_str(
                    "<p class=\"note\">No needle mass measured (inputs had no needle).</p>\n",
                );
            }
        }
        Ok(())
    }

    // --- state size --------------------------------------------------------------------------

    fn state_section(&mut self, runs: &[RunData]) {
        self.h2("state", "State size");
        for r in runs {
            let Some(s) = &r.state else {
                self.missing("state size", Some(r), "state");
                continue;
            };
            let _ = writeln!(
                self.html,
                "<h3>{}</h3>\n<table>\n<tr><th>layer</th><th>mixer</th><th>seq_len</th>\
                 <th>state</th><th>bytes</th><th>capacity ratio</th></tr>",
                esc(&r.name)
            );
            for x in &s.rows {
                let _ = writeln!(
                    self.html,
                    "<tr><td class=\"num\">{}</td><td>{}</td><td class=\"num\">{}</td>\
                     <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                    x.layer,
                    esc(&x.mixer),
                    x.seq_len,
                    human_bytes(x.state_bytes),
                    x.state_bytes,
                    fmt_sig(x.capacity_ratio)
                );
            }
            self.html.push_str(
                "</table>\n<p class=\"note\">Capacity ratio = state bits / (n·log2 n): below 1 the \
                 state cannot even store which of n positions held what.</p>\n",
            );
        }
    }
}

// --- helpers ---------------------------------------------------------------------------------

/// Results carry the run name they were evaluated under; the report labels figures with its own
/// (possibly disambiguated) run name so legends match the config table.
trait Relabel: Clone {
    fn set_run(&mut self, name: &str);
}

macro_rules! relabel {
    ($($t:ty),*) => {$(
        impl Relabel for $t {
            fn set_run(&mut self, name: &str) {
                self.run = name.to_string();
            }
        }
    )*};
}
relabel!(NiahResult, PplResult, AttentionResult);

fn relabelled<T: Relabel>(r: &T, name: &str) -> T {
    let mut r = r.clone();
    r.set_run(name);
    r
}

/// Escapes text for HTML element content and attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A TOML value for a table cell: strings unquoted, arrays comma-separated, tables inline.
fn show(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Array(a) => a.iter().map(show).collect::<Vec<_>>().join(", "),
        toml::Value::Table(t) => {
            let parts: Vec<String> = t.iter().map(|(k, v)| format!("{k}={}", show(v))).collect();
            format!("{{{}}}", parts.join(", "))
        }
        other => other.to_string(),
    }
}

/// `model.mixer.kind`, or the per-layer `model.mixers` pattern when given.
fn mixer_summary(r: &RunData) -> Option<String> {
    if let Some(list) = r.cfg(&["model", "mixers"]).and_then(toml::Value::as_array)
        && !list.is_empty()
    {
        let kinds: Vec<String> = list
            .iter()
            .map(|m| m.get("kind").map(show).unwrap_or_else(|| "?".into()))
            .collect();
        return Some(format!("per layer: {}", kinds.join(", ")));
    }
    r.cfg(&["model", "mixer", "kind"]).map(show)
}

fn stages_summary(r: &RunData) -> Option<String> {
    let stages = r.stages();
    if stages.is_empty() {
        return None;
    }
    let parts: Vec<String> = stages
        .iter()
        .map(|s| {
            let len = s
                .seq_len
                .map(|l| format!("L={l}"))
                .unwrap_or_else(|| "L=?".into());
            format!(
                "{len} (steps {}–{})",
                fmt_num(s.first_step),
                fmt_num(s.last_step)
            )
        })
        .collect();
    Some(parts.join(" → "))
}

fn last_eval_summary(r: &RunData) -> Option<String> {
    let e = r.evals.last()?;
    let mut parts = vec![format!("step {}", fmt_num(e.step))];
    if let Some(l) = e.seq_len {
        parts.push(format!("L={l}"));
    }
    if let Some(l) = e.loss {
        parts.push(format!("loss {l:.4}"));
    }
    if let Some(a) = e.accuracy {
        parts.push(format!("acc {a:.3}"));
    }
    Some(parts.join(", "))
}

fn train_len_note(train_len: Option<usize>) -> String {
    train_len
        .map(|t| format!(" Trained up to length {t}."))
        .unwrap_or_default()
}

/// Averages consecutive points in equal-width x buckets when there are more than `max`.
fn downsample(points: &[(f64, f64)], max: usize) -> Vec<(f64, f64)> {
    let finite: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    if finite.len() <= max {
        return points.to_vec();
    }
    let (lo, hi) = finite
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
            (lo.min(p.0), hi.max(p.0))
        });
    let width = (hi - lo) / max as f64;
    let mut sums = vec![(0.0, 0.0, 0usize); max];
    for (x, y) in finite {
        let b = (((x - lo) / width) as usize).min(max - 1);
        sums[b].0 += x;
        sums[b].1 += y;
        sums[b].2 += 1;
    }
    sums.into_iter()
        .filter(|s| s.2 > 0)
        .map(|(sx, sy, n)| (sx / n as f64, sy / n as f64))
        .collect()
}

fn mean_finite(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values
        .filter(|v| v.is_finite())
        .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

fn fmt_num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

pub(crate) fn fmt_acc(a: f64) -> String {
    if a.is_finite() {
        format!("{a:.3}")
    } else {
        "n/a".into()
    }
}

/// Three significant digits.
pub(crate) fn fmt_sig(x: f64) -> String {
    if !x.is_finite() {
        return "n/a".into();
    }
    if x == 0.0 {
        return "0".into();
    }
    let digits = (2 - x.abs().log10().floor() as i32).max(0) as usize;
    format!("{x:.digits$}")
}

fn human_count(n: f64) -> String {
    if n >= 1e9 {
        format!("{:.2} B", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.2} M", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.1} k", n / 1e3)
    } else {
        fmt_num(n)
    }
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Background of an MQAR cell: light red (0) → light green (1), pale enough for black text.
pub(crate) fn cell_colour(a: f64) -> String {
    if !a.is_finite() {
        return "#eeeeee".into();
    }
    let a = a.clamp(0.0, 1.0);
    let r = (248.0 - 80.0 * a) as u8;
    let g = (190.0 + 50.0 * a) as u8;
    let b = (190.0 - 10.0 * a) as u8;
    format!("#{r:02x}{g:02x}{b:02x}")
}

/// Width and height from a PNG's IHDR chunk (bytes 16..24, big-endian).
pub fn png_size(bytes: &[u8]) -> Option<(u32, u32)> {
    const SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];
    if bytes.len() < 24 || bytes[..8] != SIGNATURE || &bytes[12..16] != b"IHDR" {
        return None;
    }
    let w = u32::from_be_bytes(bytes[16..20].try_into().ok()?);
    let h = u32::from_be_bytes(bytes[20..24].try_into().ok()?);
    Some((w, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downsample_keeps_short_curves_and_averages_long_ones() {
        let short: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 1.0)).collect();
        assert_eq!(downsample(&short, 100), short);
        let long: Vec<(f64, f64)> = (0..10_000).map(|i| (i as f64, (i % 2) as f64)).collect();
        let d = downsample(&long, 100);
        assert!(d.len() <= 100 && d.len() >= 95, "{}", d.len());
        // Alternating 0/1 averages to 0.5 in every bucket.
        assert!(d.iter().all(|p| (p.1 - 0.5).abs() < 0.02), "{d:?}");
    }

    #[test]
    fn metrics_lines_are_classified() {
        let text = "{\"step\":0,\"stage\":0,\"seq_len\":64,\"loss\":5.0,\"lr\":0.001,\"grad_norm\":1.0,\"tokens_per_s\":10.0}\n\
                    {\"kind\":\"eval\",\"step\":0,\"seq_len\":64,\"loss\":5.1,\"accuracy\":0.1}\n\
                    {\"step\":1,\"stage\":1,\"seq_len\":128,\"loss\":4.0,\"lr\":0.001,\"grad_norm\":1.0,\"tokens_per_s\":10.0}\n\
                    {\"step\":2,\"sta";
        let (train, evals, skipped) = parse_metrics(text);
        assert_eq!((train.len(), evals.len(), skipped), (2, 1, 1));
        assert_eq!(evals[0].accuracy, Some(0.1));
    }

    #[test]
    fn helpers_format() {
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(fmt_sig(0.012345), "0.0123");
        assert_eq!(esc("<a href=\"x\">&"), "&lt;a href=&quot;x&quot;&gt;&amp;");
    }
}
