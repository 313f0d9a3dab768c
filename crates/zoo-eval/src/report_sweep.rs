//! The sweep sections of `zoo report`: for a sweep folder (one holding `sweep.json`), its
//! results table (`results.json`, written by `zoo sweep`) with the best-of rows highlighted and
//! accuracies shaded, the runs still missing, and its plots (`plots/*.png`) embedded.
//!
//! The files are read as generic JSON (`columns`, `rows`, `missing`, `plots`, `notes`), so this
//! crate does not depend on the sweep crate (which sits above it) and a report never breaks when
//! the table gains columns.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::Value;
use zoo_data::input::MAX_TEXT_BYTES;

use crate::report::{Page, cell_colour, esc, fmt_acc, fmt_sig};

/// Rows shown per sweep table; longer tables say how many were left out.
const MAX_ROWS: usize = 1000;

/// Whether `dir` is a sweep folder.
pub(crate) fn is_sweep_dir(dir: &Path) -> bool {
    dir.join("sweep.json").is_file()
}

pub(crate) struct SweepData {
    dir: PathBuf,
    pub(crate) name: String,
    best_of: Vec<String>,
    /// `results.json`, when the sweep has been tabulated.
    results: Option<Value>,
}

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let text = zoo_data::read_text_capped(path, "sweep file", MAX_TEXT_BYTES)
        .with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

impl SweepData {
    pub(crate) fn load(dir: &Path) -> anyhow::Result<Self> {
        let record = read_json(&dir.join("sweep.json"))?;
        let results_path = dir.join("results.json");
        let results = if results_path.is_file() {
            Some(read_json(&results_path)?)
        } else {
            None
        };
        let name = record
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| dir.display().to_string());
        Ok(SweepData {
            dir: dir.to_path_buf(),
            name,
            best_of: strings(record.get("best_of")),
            results,
        })
    }
}

/// Accuracy-like columns get three decimals and a red-to-green shade.
fn is_accuracy(column: &str) -> bool {
    column == "accuracy"
        || column.starts_with("acc@")
        || column.starts_with("best_acc@")
        || column.starts_with("mqar@")
}

/// One table cell; `axis`: the column is an axis of the sweep (its values shown as written).
fn cell(column: &str, axis: bool, v: &Value) -> String {
    match v {
        Value::Number(n) if axis => format!("<td class=\"num\">{n}</td>"),
        Value::Null => "<td class=\"num\">—</td>".into(),
        Value::Bool(b) if column == "best" => {
            format!("<td>{}</td>", if *b { "✓ best" } else { "" })
        }
        Value::Bool(b) => format!("<td>{b}</td>"),
        Value::Number(n) if is_accuracy(column) => {
            let a = n.as_f64().unwrap_or(f64::NAN);
            format!(
                "<td class=\"num\" style=\"background:{}\">{}</td>",
                cell_colour(a),
                fmt_acc(a)
            )
        }
        Value::Number(n) if n.is_f64() => {
            format!(
                "<td class=\"num\">{}</td>",
                fmt_sig(n.as_f64().unwrap_or(f64::NAN))
            )
        }
        Value::Number(n) => format!("<td class=\"num\">{n}</td>"),
        Value::String(s) => format!("<td>{}</td>", esc(s)),
        other => format!("<td>{}</td>", esc(&other.to_string())),
    }
}

impl Page {
    pub(crate) fn sweep_section(&mut self, i: usize, s: &SweepData) -> anyhow::Result<()> {
        self.h2(&format!("sweep-{i}"), &format!("Sweep {}", s.name));
        let Some(results) = &s.results else {
            let _ = writeln!(
                self.html,
                "<p class=\"missing\">{}: no results table yet (run <code>zoo sweep SWEEP.toml --out {} --collect</code>)</p>",
                esc(&s.name),
                esc(&s.dir.display().to_string())
            );
            return Ok(());
        };
        let columns = strings(results.get("columns"));
        let axes = strings(results.get("axes"));
        let rows: &[Value] = results
            .get("rows")
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice);
        let missing: Vec<String> = results
            .get("missing")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|m| m.get("id").and_then(Value::as_str).map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let best_note = if s.best_of.is_empty() {
            String::new()
        } else {
            format!(
                " Highlighted rows: the best {} of each cell (highest mean final accuracy over seeds).",
                esc(&s.best_of.join(", "))
            )
        };
        let missing_note = if missing.is_empty() {
            String::new()
        } else {
            format!(
                " Not finished: {} run{} ({}).",
                missing.len(),
                if missing.len() == 1 { "" } else { "s" },
                esc(&missing.join(", "))
            )
        };
        let _ = writeln!(
            self.html,
            "<p class=\"note\">Folder <code>{}</code>: {} finished run{}.{missing_note}{best_note}</p>",
            esc(&s.dir.display().to_string()),
            rows.len(),
            if rows.len() == 1 { "" } else { "s" }
        );
        self.html.push_str("<table>\n<tr>");
        for c in &columns {
            let _ = write!(self.html, "<th>{}</th>", esc(c));
        }
        self.html.push_str("</tr>\n");
        for row in rows.iter().take(MAX_ROWS) {
            let best = row.get("best").and_then(Value::as_bool) == Some(true);
            self.html
                .push_str(if best { "<tr class=\"best\">" } else { "<tr>" });
            for c in &columns {
                let value = row.get(c.as_str()).unwrap_or(&Value::Null);
                self.html.push_str(&cell(c, axes.contains(c), value));
            }
            self.html.push_str("</tr>\n");
        }
        self.html.push_str("</table>\n");
        if rows.len() > MAX_ROWS {
            let _ = writeln!(
                self.html,
                "<p class=\"note\">{} more rows in <code>{}</code>.</p>",
                rows.len() - MAX_ROWS,
                esc(&s.dir.join("results.csv").display().to_string())
            );
        }
        let plots = results
            .get("plots")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for p in &plots {
            let (Some(png), Some(kind)) = (
                p.get("png").and_then(Value::as_str),
                p.get("kind").and_then(Value::as_str),
            ) else {
                continue;
            };
            let caption = p.get("caption").and_then(Value::as_str).unwrap_or("");
            let path = s.dir.join(png);
            if path.is_file() {
                self.figure_png(&path, &format!("{} {kind} plot", s.name), &esc(caption))?;
            } else {
                let _ = writeln!(
                    self.html,
                    "<p class=\"missing\">{} is missing (run <code>zoo sweep SWEEP.toml --out {} --collect</code> to draw it again)</p>",
                    esc(&path.display().to_string()),
                    esc(&s.dir.display().to_string())
                );
            }
        }
        for note in strings(results.get("notes")) {
            let _ = writeln!(self.html, "<p class=\"note\">{}</p>", esc(&note));
        }
        Ok(())
    }
}
