//! Small-multiples figures: a grid of panels that share both axes and one legend, each panel a
//! set of named series whose points carry a spread (whiskers) and, optionally, the individual
//! measurements behind them. This is the layout of Zoology's Fig. 2 (MQAR accuracy against model
//! width, one panel per sequence length, one line per mixer; Arora et al. 2023) and of Based's
//! recall / state-size trade-off (Arora et al. 2024), drawn for `zoo sweep`'s results.
//!
//! - x is linear, logarithmic (powers of two as ticks, for widths and lengths; 1-2-5 per decade
//!   with k/M/G labels, for state sizes) or categorical (one tick per named category, series
//!   nudged sideways so their whiskers do not cover each other).
//! - Each point is drawn as a filled marker at its centre value, a vertical whisker from `lo` to
//!   `hi` (e.g. min–max over seeds) and hollow dots at its `samples`; points of a series are
//!   joined by a line in the order given.
//! - Axes are shared by all panels, so panels compare at a glance; series keep one colour in
//!   every panel (by their order in the legend).
//!
//! Written as PNG + SVG through `plot`'s one drawing path (same styling, atomic files).

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::plot::{
    Axis, FONT, Figure, GRID, MARKER, PALETTE, TickAxis, linear_ticks, log_ticks, no_data_note,
    padded_range, save, tick_label,
};

/// One measured point: centre `y` at `x`, spread `lo..=hi`, and the raw values behind it.
#[derive(Clone, Debug, PartialEq)]
pub struct SpreadPoint {
    pub x: f64,
    pub y: f64,
    pub lo: f64,
    pub hi: f64,
    pub samples: Vec<f64>,
}

impl SpreadPoint {
    /// The mean of `values` with min–max whiskers; `None` when no value is finite.
    pub fn from_values(x: f64, values: &[f64]) -> Option<SpreadPoint> {
        let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        if finite.is_empty() {
            return None;
        }
        let mean = finite.iter().sum::<f64>() / finite.len() as f64;
        let lo = finite.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Some(SpreadPoint {
            x,
            y: mean,
            lo,
            hi,
            samples: finite,
        })
    }
}

/// A named line of points within a panel.
#[derive(Clone, Debug, PartialEq)]
pub struct SpreadSeries {
    pub name: String,
    pub points: Vec<SpreadPoint>,
}

/// One panel: a title and its series.
#[derive(Clone, Debug, PartialEq)]
pub struct Panel {
    pub title: String,
    pub series: Vec<SpreadSeries>,
}

/// How x values map to the axis.
#[derive(Clone, Debug, PartialEq)]
pub enum XScale {
    Linear,
    /// Logarithmic with power-of-two ticks (widths, lengths).
    Log2,
    /// Logarithmic with 1-2-5 ticks per decade labelled 1k, 2M, … (sizes in bits or bytes).
    Log10,
    /// x = 0, 1, … indexes these names.
    Categories(Vec<String>),
}

/// Axis settings of a panel figure.
#[derive(Clone, Debug, PartialEq)]
pub struct PanelOpts {
    pub x: XScale,
    pub log_y: bool,
    /// Fixed y range (e.g. 0–1 for accuracies); `None` fits the data.
    pub y_range: Option<(f64, f64)>,
}

/// Panel size in pixels, and the most panels per row.
const PANEL_SIZE: (u32, u32) = (400, 330);
const MAX_COLUMNS: usize = 3;
const LEGEND_WIDTH: u32 = 300;
const TITLE_HEIGHT: u32 = 50;

/// Pixel size of a figure with `panels` panels: up to three panels per row plus the legend.
pub fn panel_figure_size(panels: usize) -> (u32, u32) {
    let columns = panels.clamp(1, MAX_COLUMNS);
    let rows = panels.max(1).div_ceil(MAX_COLUMNS);
    (
        columns as u32 * PANEL_SIZE.0 + LEGEND_WIDTH,
        rows as u32 * PANEL_SIZE.1 + TITLE_HEIGHT,
    )
}

/// Writes `<stem>.png` and `<stem>.svg`: the panels in rows of up to three under `title`, with
/// shared axes and one legend naming every series that appears in any panel. Non-finite values
/// (and non-positive ones on a log axis) are skipped; panels without a drawable point say
/// "no data".
pub fn panel_chart(
    stem: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    panels: &[Panel],
    opts: &PanelOpts,
) -> anyhow::Result<()> {
    save(
        stem,
        &PanelFigure {
            title,
            x_label,
            y_label,
            panels,
            opts,
        },
    )
}

struct PanelFigure<'a> {
    title: &'a str,
    x_label: &'a str,
    y_label: &'a str,
    panels: &'a [Panel],
    opts: &'a PanelOpts,
}

/// Compact label for a value on a log10 axis: 1k, 2.5M, 1G (powers of 1000).
fn si_label(v: f64) -> String {
    let v = 10f64.powf(v);
    let (scaled, unit) = [(1e9, "G"), (1e6, "M"), (1e3, "k")]
        .iter()
        .find(|(f, _)| v >= *f)
        .map_or((v, ""), |(f, u)| (v / f, *u));
    let text = tick_label(scaled, false);
    format!("{text}{unit}")
}

impl PanelFigure<'_> {
    /// The legend: every series name in order of first appearance.
    fn legend(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for s in self.panels.iter().flat_map(|p| &p.series) {
            if !names.contains(&s.name.as_str()) {
                names.push(&s.name);
            }
        }
        names
    }

    fn x_scale(&self) -> Axis {
        Axis {
            log: matches!(self.opts.x, XScale::Log2 | XScale::Log10),
        }
    }

    /// Plot-space x of a point of series `si` of `ns` (categories are nudged apart).
    fn plot_x(&self, x: f64, si: usize, ns: usize) -> Option<f64> {
        match &self.opts.x {
            XScale::Categories(_) => {
                let nudge = if ns > 1 {
                    (si as f64 - (ns - 1) as f64 / 2.0) * (0.5 / ns as f64)
                } else {
                    0.0
                };
                x.is_finite().then_some(x + nudge)
            }
            _ => self.x_scale().to_plot(x),
        }
    }
}

impl Figure for PanelFigure<'_> {
    fn size(&self) -> (u32, u32) {
        panel_figure_size(self.panels.len())
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> anyhow::Result<()>
    where
        DB::ErrorType: 'static,
    {
        let sy = Axis {
            log: self.opts.log_y,
        };
        let legend = self.legend();
        let colour_of = |name: &str| {
            let i = legend.iter().position(|n| *n == name).unwrap_or(0);
            PALETTE[i % PALETTE.len()]
        };

        // Shared ranges over every drawable value of every panel.
        let mut xs = Vec::new();
        let mut ys = Vec::new();
        for panel in self.panels {
            let ns = panel.series.len();
            for (si, s) in panel.series.iter().enumerate() {
                for p in &s.points {
                    if let Some(x) = self.plot_x(p.x, si, ns) {
                        xs.push(x);
                        ys.extend(
                            [p.y, p.lo, p.hi]
                                .iter()
                                .chain(&p.samples)
                                .filter_map(|&v| sy.to_plot(v)),
                        );
                    }
                }
            }
        }
        let (x_lo, x_hi, x_ticks) = match &self.opts.x {
            XScale::Categories(names) => {
                let n = names.len().max(1) as f64;
                (-0.5, n - 0.5, (0..names.len()).map(|i| i as f64).collect())
            }
            XScale::Log2 | XScale::Log10 => {
                let (lo, hi) = padded_range(xs.iter().copied(), true);
                (lo, hi, log_ticks(lo, hi, self.opts.x == XScale::Log2))
            }
            XScale::Linear => {
                let (lo, hi) = padded_range(xs.iter().copied(), false);
                (lo, hi, linear_ticks(lo, hi))
            }
        };
        let (y_lo, y_hi) = match self.opts.y_range {
            Some((lo, hi)) => {
                let (lo, hi) = (sy.to_plot(lo).unwrap_or(0.0), sy.to_plot(hi).unwrap_or(1.0));
                let pad = (hi - lo).abs() * 0.03;
                (lo - pad, hi + pad)
            }
            None => padded_range(ys.iter().copied(), sy.log),
        };
        let y_ticks = if sy.log {
            log_ticks(y_lo, y_hi, false)
        } else {
            linear_ticks(y_lo, y_hi)
        };
        let x_fmt = |v: &f64| match &self.opts.x {
            XScale::Categories(names) => {
                let i = v.round();
                if i >= 0.0 && (i as usize) < names.len() {
                    names[i as usize].chars().take(24).collect()
                } else {
                    String::new()
                }
            }
            XScale::Log10 => si_label(*v),
            XScale::Log2 => tick_label(*v, true),
            XScale::Linear => tick_label(*v, false),
        };
        let y_fmt = |v: &f64| {
            if sy.log {
                si_label(*v)
            } else {
                tick_label(*v, false)
            }
        };

        root.fill(&WHITE)?;
        let root = root.titled(self.title, (FONT, 22))?;
        let (w, _) = root.dim_in_pixel();
        let (grid_area, legend_area) = root.split_horizontally(w.saturating_sub(LEGEND_WIDTH));
        let columns = self.panels.len().clamp(1, MAX_COLUMNS);
        let rows = self.panels.len().max(1).div_ceil(MAX_COLUMNS);
        let cells = grid_area.split_evenly((rows, columns));

        if self.panels.is_empty() {
            no_data_note(&grid_area)?;
        }
        for (panel, cell) in self.panels.iter().zip(&cells) {
            let mut chart = ChartBuilder::on(cell)
                .caption(&panel.title, (FONT, 16))
                .margin(8)
                .x_label_area_size(48)
                .y_label_area_size(62)
                .build_cartesian_2d(
                    TickAxis::new(x_lo, x_hi, x_ticks.clone()),
                    TickAxis::new(y_lo, y_hi, y_ticks.clone()),
                )?;
            chart
                .configure_mesh()
                .x_desc(self.x_label)
                .y_desc(self.y_label)
                .axis_desc_style((FONT, 14))
                .label_style((FONT, 12))
                .bold_line_style(GRID.stroke_width(1))
                .x_label_formatter(&x_fmt)
                .y_label_formatter(&y_fmt)
                .draw()?;

            let ns = panel.series.len();
            let mut drawn = false;
            for (si, s) in panel.series.iter().enumerate() {
                let colour = colour_of(&s.name);
                let mut line = Vec::new();
                for p in &s.points {
                    let Some(x) = self.plot_x(p.x, si, ns) else {
                        continue;
                    };
                    if let (Some(lo), Some(hi)) = (sy.to_plot(p.lo), sy.to_plot(p.hi))
                        && hi > lo
                    {
                        chart.draw_series(std::iter::once(PathElement::new(
                            vec![(x, lo), (x, hi)],
                            colour.stroke_width(1),
                        )))?;
                    }
                    for v in p.samples.iter().filter_map(|&v| sy.to_plot(v)) {
                        chart.draw_series(std::iter::once(Circle::new(
                            (x, v),
                            3,
                            colour.stroke_width(1),
                        )))?;
                    }
                    if let Some(y) = sy.to_plot(p.y) {
                        line.push((x, y));
                        chart.draw_series(std::iter::once(Circle::new(
                            (x, y),
                            4,
                            colour.filled(),
                        )))?;
                        drawn = true;
                    }
                }
                // Categories are not ordered, so only numeric axes join their points.
                if line.len() > 1 && !matches!(self.opts.x, XScale::Categories(_)) {
                    chart.draw_series(LineSeries::new(line, colour.stroke_width(2)))?;
                }
            }
            if !drawn {
                no_data_note(chart.plotting_area())?;
            }
        }

        let row_h = 20;
        for (i, name) in legend.iter().enumerate() {
            let y = 30 + row_h * i as i32;
            if y > legend_area.dim_in_pixel().1 as i32 - 10 {
                let more = format!("… {} more", legend.len() - i);
                legend_area.draw(&Text::new(more, (8, y - 7), (FONT, 13).into_font()))?;
                break;
            }
            let colour = colour_of(name);
            legend_area.draw(&PathElement::new(
                vec![(6, y), (30, y)],
                colour.stroke_width(3),
            ))?;
            legend_area.draw(&Circle::new((18, y), 4, colour.filled()))?;
            let mut text: String = name.chars().take(36).collect();
            if name.chars().count() > 36 {
                text.push('…');
            }
            legend_area.draw(&Text::new(
                text,
                (36, y),
                (FONT, 13)
                    .into_font()
                    .color(&BLACK)
                    .pos(Pos::new(HPos::Left, VPos::Center)),
            ))?;
        }
        if !legend.is_empty() {
            let note = "dot: mean · bar: min–max · ○: each seed";
            legend_area.draw(&Text::new(
                note,
                (6, 30 + row_h * legend.len().min(40) as i32 + 6),
                (FONT, 11).into_font().color(&MARKER),
            ))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_of_values() {
        let p = SpreadPoint::from_values(2.0, &[0.5, f64::NAN, 1.0, 0.0]).unwrap();
        assert_eq!((p.y, p.lo, p.hi), (0.5, 0.0, 1.0));
        assert_eq!(p.samples, vec![0.5, 1.0, 0.0]);
        assert!(SpreadPoint::from_values(1.0, &[f64::NAN]).is_none());
    }

    #[test]
    fn si_labels() {
        assert_eq!(si_label(3.0), "1k");
        assert_eq!(si_label(2e6f64.log10()), "2M");
        assert_eq!(si_label(500f64.log10()), "500");
    }

    #[test]
    fn sizes_grow_with_rows() {
        assert_eq!(panel_figure_size(1).1, panel_figure_size(3).1);
        assert!(panel_figure_size(4).1 > panel_figure_size(3).1);
        assert_eq!(
            panel_figure_size(2).0,
            panel_figure_size(5).0 - PANEL_SIZE.0
        );
    }
}
