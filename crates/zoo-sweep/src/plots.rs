//! The figures of a sweep, drawn from its results table into `SWEEP_DIR/plots/` (PNG + SVG):
//!
//! - `accuracy`: final accuracy against an axis (default `model.d_model`, log₂ x), one line per
//!   series (default: the mixer axis, else the grid), one panel per value of the panel axis
//!   (default: the first task / training-length axis) — Zoology's Fig. 2 layout.
//! - `state`: final accuracy against the decoding-state size in bits (log x), one line per
//!   series, each point one configuration — Based's recall / memory trade-off.
//! - `to_target`: training tokens to the target accuracy (log y) per value of x (default: the
//!   first length-schedule axis, `train.stages…` / `train.length_warmup…`), one series per
//!   remaining configuration.
//!
//! Only the best-of rows are plotted (each cell at its best learning rate, as Zoology reports);
//! seeds make a point's spread: the mean with min–max whiskers and every seed as a dot. The keys
//! zipped with x, series or panel go with them (a panel of the (length, pairs) axis is titled by
//! both). Axes that are neither x, series, panel nor best-of are folded into the series name, so
//! no two configurations are averaged into one point. A plot whose axis is absent, or that has nothing
//! to show, is skipped with a note (kept in results.json) instead of failing the sweep.

use std::path::Path;

use anyhow::{Context, Result};
use zoo_eval::panels::{Panel, PanelOpts, SpreadPoint, SpreadSeries, XScale, panel_chart};
use zoo_eval::plot::output_paths;

use crate::results::{PlotFile, Results, Row};
use crate::spec::{PlotKind, PlotSpec};

/// The folder of the figures inside the sweep folder.
pub const PLOTS_DIR: &str = "plots";
/// Longest panel title drawn with the zipped partners of the panel key.
const MAX_TITLE_CHARS: usize = 60;
/// Most panels per figure; further panel values are left out with a note.
pub const MAX_PANELS: usize = 12;

/// The series suffix of the runs drawn at the tokens they trained because they never reached
/// the target.
const UNREACHED: &str = "not reached";

/// Axis-key prefixes that describe a length schedule.
const SCHEDULE_PREFIXES: [&str; 5] = [
    "train.stages",
    "train.length_warmup",
    "train.mixed_lengths",
    "train.tokens_per_step",
    "train.schedule",
];

/// Draws `specs` (or the default plots when empty); returns the figures written and the notes
/// on those skipped.
pub fn draw(
    results: &Results,
    specs: &[PlotSpec],
    sweep_dir: &Path,
) -> Result<(Vec<PlotFile>, Vec<String>)> {
    let defaults: Vec<PlotSpec> = [PlotKind::Accuracy, PlotKind::State, PlotKind::ToTarget]
        .into_iter()
        .map(|kind| PlotSpec {
            kind,
            x: None,
            series: None,
            panel: None,
            title: None,
        })
        .collect();
    let specs = if specs.is_empty() { &defaults } else { specs };
    let dir = sweep_dir.join(PLOTS_DIR);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut files: Vec<PlotFile> = Vec::new();
    let mut notes = Vec::new();
    for spec in specs {
        let kind = kind_name(spec.kind);
        let mut stem_name = kind.to_string();
        let mut n = 1;
        while files
            .iter()
            .any(|f| f.png == format!("{PLOTS_DIR}/{stem_name}.png"))
        {
            n += 1;
            stem_name = format!("{kind}-{n}");
        }
        match figure(results, spec) {
            Err(note) => notes.push(format!("{kind} plot skipped: {note}")),
            Ok(fig) => {
                if let Some(note) = &fig.note {
                    notes.push(format!("{kind} plot: {note}"));
                }
                let stem = dir.join(&stem_name);
                panel_chart(
                    &stem,
                    &fig.title,
                    &fig.x_label,
                    &fig.y_label,
                    &fig.panels,
                    &fig.opts,
                )?;
                let (png, svg) = output_paths(&stem);
                let rel = |p: &Path| {
                    format!(
                        "{PLOTS_DIR}/{}",
                        p.file_name().unwrap_or_default().to_string_lossy()
                    )
                };
                files.push(PlotFile {
                    kind: kind.into(),
                    png: rel(&png),
                    svg: rel(&svg),
                    caption: fig.caption,
                });
            }
        }
    }
    Ok((files, notes))
}

fn kind_name(kind: PlotKind) -> &'static str {
    match kind {
        PlotKind::Accuracy => "accuracy",
        PlotKind::State => "state",
        PlotKind::ToTarget => "to_target",
    }
}

struct Figure {
    title: String,
    caption: String,
    x_label: String,
    y_label: String,
    panels: Vec<Panel>,
    opts: PanelOpts,
    note: Option<String>,
}

/// The columns a row can be grouped by: axis keys, and "grid" when the sweep has grids.
fn dimensions(results: &Results) -> Vec<String> {
    let mut d = results.columns.clone();
    if results.has_grids {
        d.push("grid".into());
    }
    d
}

fn label_of(results: &Results, row: &Row, dim: &str) -> String {
    if dim == "grid" {
        return row.grid.clone().unwrap_or_default();
    }
    row.label(&results.columns, dim).unwrap_or("—").to_string()
}

fn numeric_of(results: &Results, row: &Row, dim: &str) -> Option<f64> {
    let i = results.columns.iter().position(|c| c == dim)?;
    match row.values[i].as_ref()? {
        toml::Value::Integer(v) => Some(*v as f64),
        toml::Value::Float(v) => Some(*v),
        _ => None,
    }
}

/// Positions of `key` in `list`, appending it when new (order of first appearance).
fn slot(list: &mut Vec<String>, key: &str) -> usize {
    match list.iter().position(|k| k == key) {
        Some(i) => i,
        None => {
            list.push(key.to_string());
            list.len() - 1
        }
    }
}

/// x, series, panel and the remaining (folded) dimensions of a plot.
struct Layout {
    x: Option<String>,
    series: Option<String>,
    panel: Option<String>,
    rest: Vec<String>,
}

/// The keys that vary together with `dim` (itself included).
fn partners<'a>(results: &'a Results, dim: &'a str) -> Vec<&'a str> {
    results
        .axis_groups
        .iter()
        .find(|g| g.iter().any(|k| k == dim))
        .map_or(vec![dim], |g| g.iter().map(String::as_str).collect())
}

fn layout(results: &Results, spec: &PlotSpec) -> Result<Layout, String> {
    let dims = dimensions(results);
    let has = |d: &str| dims.iter().any(|x| x == d);
    let x = match (spec.kind, &spec.x) {
        (PlotKind::State, _) => None,
        (_, Some(x)) => Some(x.clone()),
        (PlotKind::Accuracy, None) => {
            if !has("model.d_model") {
                return Err(
                    "the sweep has no model.d_model axis (add [[plots]] with kind = \"accuracy\" and x = <an axis key>)".into(),
                );
            }
            Some("model.d_model".into())
        }
        (PlotKind::ToTarget, None) => Some(
            dims.iter()
                .find(|d| SCHEDULE_PREFIXES.iter().any(|p| d.starts_with(p)))
                .cloned()
                .ok_or("the sweep has no length-schedule axis (train.stages…, train.length_warmup…); name one with [[plots]] kind = \"to_target\", x = …")?,
        ),
    };
    // A dimension is taken when chosen, zipped with a chosen one, or a best-of axis.
    let taken = |d: &str, chosen: &[&Option<String>]| {
        chosen
            .iter()
            .filter_map(|c| c.as_deref())
            .any(|c| partners(results, c).contains(&d))
            || results.best_of.iter().any(|b| b == d)
    };
    let series = spec.series.clone().or_else(|| {
        dims.iter()
            .find(|d| d.starts_with("model.mixer") && !taken(d, &[&x]))
            .or_else(|| dims.iter().find(|d| *d == "grid"))
            .cloned()
    });
    let panel = spec.panel.clone().or_else(|| {
        dims.iter()
            .find(|d| {
                (d.starts_with("task.") || d.starts_with("train.stages") || d.contains("seq_len"))
                    && !taken(d, &[&x, &series])
            })
            .cloned()
    });
    let rest = dims
        .iter()
        .filter(|d| !taken(d, &[&x, &series, &panel]))
        .cloned()
        .collect();
    Ok(Layout {
        x,
        series,
        panel,
        rest,
    })
}

/// Points grouped by panel, then series, then point, each in order of first appearance.
#[derive(Default)]
struct Grouped {
    panels: Vec<PanelGroup>,
}

struct PanelGroup {
    title: String,
    series: Vec<SeriesGroup>,
}

struct SeriesGroup {
    name: String,
    points: Vec<PointGroup>,
}

/// The values measured at one point (one per seed).
struct PointGroup {
    key: String,
    x: f64,
    values: Vec<f64>,
}

impl Grouped {
    fn add(&mut self, panel: String, series: String, key: String, x: f64, y: f64) {
        let p = match self.panels.iter().position(|g| g.title == panel) {
            Some(i) => i,
            None => {
                self.panels.push(PanelGroup {
                    title: panel,
                    series: Vec::new(),
                });
                self.panels.len() - 1
            }
        };
        let all = &mut self.panels[p].series;
        let s = match all.iter().position(|g| g.name == series) {
            Some(i) => i,
            None => {
                all.push(SeriesGroup {
                    name: series,
                    points: Vec::new(),
                });
                all.len() - 1
            }
        };
        let points = &mut all[s].points;
        match points.iter_mut().find(|g| g.key == key) {
            Some(g) => g.values.push(y),
            None => points.push(PointGroup {
                key,
                x,
                values: vec![y],
            }),
        }
    }

    /// Keeps the first `MAX_PANELS` panels; returns a note when some were dropped.
    fn cap(&mut self) -> Option<String> {
        let n = self.panels.len();
        (n > MAX_PANELS).then(|| {
            self.panels.truncate(MAX_PANELS);
            format!("showing the first {MAX_PANELS} of {n} panels")
        })
    }

    fn x_values(&self) -> Vec<f64> {
        self.panels
            .iter()
            .flat_map(|p| p.series.iter().flat_map(|s| s.points.iter().map(|g| g.x)))
            .collect()
    }

    /// The panels to draw: each point the mean and spread of its values, points sorted by x.
    fn into_panels(self) -> Vec<Panel> {
        self.panels
            .into_iter()
            .map(|p| Panel {
                title: p.title,
                series: p
                    .series
                    .into_iter()
                    .map(|s| {
                        let mut points: Vec<SpreadPoint> = s
                            .points
                            .iter()
                            .filter_map(|g| SpreadPoint::from_values(g.x, &g.values))
                            .collect();
                        points.sort_by(|a, b| a.x.total_cmp(&b.x));
                        SpreadSeries {
                            name: s.name,
                            points,
                        }
                    })
                    .collect(),
            })
            .collect()
    }
}

fn figure(results: &Results, spec: &PlotSpec) -> Result<Figure, String> {
    let rows: Vec<&Row> = results.rows.iter().filter(|r| r.best).collect();
    if rows.is_empty() {
        return Err("no finished runs".into());
    }
    let lay = layout(results, spec)?;
    let series_name = |row: &Row| {
        let mut parts: Vec<String> = lay
            .series
            .iter()
            .map(|s| label_of(results, row, s))
            .collect();
        // State plots keep the remaining axes apart as points of one line instead.
        if spec.kind != PlotKind::State {
            parts.extend(
                lay.rest
                    .iter()
                    .map(|d| format!("{}={}", last_segment(d), label_of(results, row, d))),
            );
        }
        if parts.is_empty() {
            "all runs".to_string()
        } else {
            parts.join(" · ")
        }
    };
    let panel_name = |row: &Row| {
        lay.panel.as_ref().map_or(String::new(), |p| {
            let named = |k: &str| format!("{} = {}", short_key(k), label_of(results, row, k));
            let all = partners(results, p)
                .iter()
                .map(|k| named(k))
                .collect::<Vec<_>>()
                .join(" · ");
            // A long partner (a whole stage list) would run into the next panel's title; the
            // panel's own key still tells the panels apart.
            if all.chars().count() <= MAX_TITLE_CHARS {
                all
            } else {
                named(p)
            }
        })
    };
    let best_note = if results.best_of.is_empty() {
        String::new()
    } else {
        format!(", best {} per point", results.best_of.join(", "))
    };

    let mut groups = Grouped::default();
    if spec.kind == PlotKind::State {
        for row in &rows {
            let config: Vec<String> = lay.rest.iter().map(|d| label_of(results, row, d)).collect();
            groups.add(
                panel_name(row),
                series_name(row),
                config.join("\n"),
                row.summary.state_bits as f64,
                row.accuracy,
            );
        }
        let note = groups.cap();
        return Ok(Figure {
            title: spec
                .title
                .clone()
                .unwrap_or_else(|| format!("{}: accuracy vs decoding state", results.name)),
            caption: format!(
                "Final held-out accuracy against the decoding-state size in bits (at the final training length){best_note}; each point one configuration, dot = mean over seeds, bar = min–max."
            ),
            x_label: "decoding state (bits)".into(),
            y_label: "accuracy".into(),
            panels: groups.into_panels(),
            opts: PanelOpts {
                x: XScale::Log10,
                log_y: false,
                y_range: Some((0.0, 1.0)),
            },
            note,
        });
    }

    let x = lay
        .x
        .clone()
        .expect("accuracy and to_target plots have an x");
    let to_target = spec.kind == PlotKind::ToTarget;
    // Schedules are names; other numeric axes are drawn to scale.
    let numeric = !to_target && rows.iter().all(|r| numeric_of(results, r, &x).is_some());
    let mut categories: Vec<String> = Vec::new();
    let mut unreached = 0usize;
    let mut reached = 0usize;
    for row in &rows {
        // A run that never reached the target is drawn at the tokens it trained, in a series of
        // its own: leaving it out would hide the schedules that fail.
        let mut series = series_name(row);
        let y = if to_target {
            match row.summary.to_target.as_ref() {
                Some(t) => {
                    reached += 1;
                    t.tokens as f64
                }
                None => {
                    unreached += 1;
                    series = format!("{series} — {UNREACHED}");
                    row.summary.tokens as f64
                }
            }
        } else {
            row.accuracy
        };
        let x_label = label_of(results, row, &x);
        let x_value = if numeric {
            numeric_of(results, row, &x).unwrap_or(f64::NAN)
        } else {
            slot(&mut categories, &x_label) as f64
        };
        groups.add(panel_name(row), series, x_label, x_value, y);
    }
    if to_target && reached == 0 {
        return Err(
            "no run reached its target accuracy (set train.stop_at_accuracy in the sweep's set)"
                .into(),
        );
    }
    let mut note = (unreached > 0).then(|| {
        format!("{unreached} best-of runs never reached their target (drawn at the tokens they trained, as \"… — {UNREACHED}\")")
    });
    if let Some(capped) = groups.cap() {
        note = Some(capped);
    }
    let scale = if !numeric {
        XScale::Categories(categories)
    } else if log2_fits(&groups.x_values()) {
        XScale::Log2
    } else {
        XScale::Linear
    };
    let (title, caption, y_label, log_y, y_range) = if to_target {
        (
            format!("{}: tokens to target", results.name),
            format!(
                "Training tokens until the held-out accuracy reached the target, by {x}{best_note}; runs that never reached it are a series of their own at the tokens they trained (\"… — {UNREACHED}\"); dot = mean over seeds, bar = min–max, circles = seeds."
            ),
            "tokens to target",
            true,
            None,
        )
    } else {
        (
            format!("{}: accuracy vs {}", results.name, short_key(&x)),
            format!(
                "Final held-out accuracy against {x}{best_note}; dot = mean over seeds, bar = min–max, circles = seeds."
            ),
            "accuracy",
            false,
            Some((0.0, 1.0)),
        )
    };
    Ok(Figure {
        title: spec.title.clone().unwrap_or(title),
        caption,
        x_label: x,
        y_label: y_label.into(),
        panels: groups.into_panels(),
        opts: PanelOpts {
            x: scale,
            log_y,
            y_range,
        },
        note,
    })
}

/// The last segment of a dotted key (`train.mixed_lengths` → `mixed_lengths`), for legends.
fn last_segment(key: &str) -> &str {
    key.rsplit('.').next().unwrap_or(key)
}

/// Positive values spanning at least a factor of four read best on a log₂ axis.
fn log2_fits(values: &[f64]) -> bool {
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    let lo = finite.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    lo > 0.0 && hi / lo >= 4.0
}

/// The last two segments of a dotted key (`model.mixer.feature_dim` → `mixer.feature_dim`;
/// an array index keeps its table: `train.stages.0.seq_len` → `stages.0.seq_len`), enough to
/// recognise it in a legend.
fn short_key(key: &str) -> String {
    let parts: Vec<&str> = key.split('.').collect();
    let mut keep = 2;
    if parts.len() > 2 && parts[parts.len() - 2].parse::<usize>().is_ok() {
        keep = 3;
    }
    if parts.len() <= keep {
        key.to_string()
    } else {
        parts[parts.len() - keep..].join(".")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_keys_and_scales() {
        assert_eq!(short_key("model.mixer.feature_dim"), "mixer.feature_dim");
        assert_eq!(short_key("model.d_model"), "model.d_model");
        assert_eq!(short_key("train.stages.0.seq_len"), "stages.0.seq_len");
        assert!(log2_fits(&[32.0, 64.0, 128.0]));
        assert!(!log2_fits(&[32.0, 64.0]));
        assert!(!log2_fits(&[0.0, 64.0]));
    }
}
