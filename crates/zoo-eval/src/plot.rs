//! Figures, drawn with plotters 0.3 and written twice: `<stem>.png` (bitmap backend, what the
//! HTML report embeds) and `<stem>.svg` (vector, for papers). Each figure is drawn by one generic
//! function over `DrawingBackend`, so both files come from the same code path and cannot drift.
//!
//! - `heatmap`: a grid of cells (e.g. NIAH accuracy, rows = needle depth, columns = context
//!   length) coloured with viridis (perceptually uniform, readable in grey scale and by
//!   colour-blind readers; van der Walt & Smith 2015), each cell labelled with its value, plus a
//!   colour bar with ticks 0, 0.2, …, 1. Row 0 is drawn at the top, as NIAH plots conventionally
//!   put depth 0 % (needle at the start) on top. NaN cells are grey and labelled "n/a".
//! - `line_chart`: several named series on linear or logarithmic axes, a legend beside the plot
//!   (outside it, so it never hides data), and dashed vertical markers (stage boundaries,
//!   training length). Non-finite points, and non-positive ones on a log axis, are skipped and
//!   break the line there; a chart without any drawable point still renders with "no data".
//!
//! Log axes are drawn as linear axes over log10 of the data with hand-placed ticks: powers of two
//! on a log x axis (sequence lengths are powers of two), 1-2-5 per decade on a log y axis. This
//! keeps one coordinate type for all four axis combinations and gives readable tick labels.
//!
//! Files are written atomically (temp file + rename), like the result files.

use std::ffi::OsString;
use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use plotters::coord::Shift;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use std::collections::BTreeMap;

use crate::results::{
    AttentionResult, MqarResult, NiahResult, PplResult, temp_sibling, write_file_atomic,
};

/// Pixel size (width, height) of heat maps, PNG and SVG.
pub const HEATMAP_SIZE: (u32, u32) = (960, 640);
/// Pixel size (width, height) of line charts, PNG and SVG.
pub const LINE_CHART_SIZE: (u32, u32) = (960, 560);

pub(crate) const FONT: &str = "sans-serif";
const NAN_CELL: RGBColor = RGBColor(200, 200, 200);
pub(crate) const GRID: RGBColor = RGBColor(225, 225, 225);
pub(crate) const MARKER: RGBColor = RGBColor(110, 110, 110);

/// Matplotlib's "tab10" palette: distinguishable categorical colours.
pub(crate) const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// One named line of a `line_chart`.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

impl Series {
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series {
            name: name.into(),
            points,
        }
    }
}

/// Axis scales and vertical markers of a `line_chart`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LineOpts {
    pub log_x: bool,
    pub log_y: bool,
    /// Dashed vertical lines at x with a label (stage boundaries, training length).
    pub vlines: Vec<(f64, String)>,
}

/// `<stem>.png` and `<stem>.svg` (the extensions are appended, so a stem may contain dots).
pub fn output_paths(stem: &Path) -> (PathBuf, PathBuf) {
    let with = |ext: &str| {
        let mut s: OsString = stem.as_os_str().to_owned();
        s.push(ext);
        PathBuf::from(s)
    };
    (with(".png"), with(".svg"))
}

/// Something that can draw itself on any plotters backend.
pub(crate) trait Figure {
    fn size(&self) -> (u32, u32);
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> anyhow::Result<()>
    where
        DB::ErrorType: 'static;
}

/// Draws `fig` into `<stem>.png` and `<stem>.svg`, each atomically.
pub(crate) fn save<F: Figure>(stem: &Path, fig: &F) -> anyhow::Result<()> {
    let (png, svg) = output_paths(stem);

    // The bitmap backend picks the image format from the file extension, so the temp file keeps
    // ".png" at its end.
    let tmp = temp_sibling(&png, ".png").with_context(|| format!("creating {}", png.display()))?;
    let result = (|| {
        {
            let root = BitMapBackend::new(&tmp, fig.size()).into_drawing_area();
            fig.draw(&root)?;
            root.present()?;
        }
        fs::rename(&tmp, &png)?;
        anyhow::Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| format!("drawing {}", png.display()))?;

    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, fig.size()).into_drawing_area();
        fig.draw(&root)
            .with_context(|| format!("drawing {}", svg.display()))?;
        root.present()?;
    }
    write_file_atomic(&svg, text.as_bytes()).with_context(|| format!("writing {}", svg.display()))
}

/// A linear f64 axis whose ticks are exactly the given positions.
///
/// plotters' own f64 axis picks its ticks itself, and its key-point override (`WithKeyPoints`)
/// loses the custom-formatter support; owning the axis gives both: ticks at cell centres or at
/// powers of two, labelled by our formatters.
pub(crate) struct TickAxis {
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
}

impl TickAxis {
    pub(crate) fn new(lo: f64, hi: f64, ticks: Vec<f64>) -> Self {
        TickAxis { lo, hi, ticks }
    }
}

impl Ranged for TickAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let span = self.hi - self.lo;
        if span == 0.0 || !span.is_finite() {
            return (limit.0 + limit.1) / 2;
        }
        let t = (v - self.lo) / span;
        let px = limit.0 as f64 + t * (limit.1 - limit.0) as f64;
        // Clamp far-off values so the i32 conversion cannot saturate into garbage lines.
        px.clamp(-1e6, 1e6).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        // Bold points are our ticks; no light (minor) grid lines.
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> Range<f64> {
        self.lo..self.hi
    }
}

// --- heat map --------------------------------------------------------------------------------

struct Heatmap<'a> {
    title: &'a str,
    x_label: &'a str,
    y_label: &'a str,
    x_ticks: &'a [String],
    y_ticks: &'a [String],
    values: &'a [Vec<f64>],
}

/// Writes `<stem>.png` and `<stem>.svg`: `values[row][col]` (in [0, 1], clamped; NaN = not
/// measured) as coloured cells with printed values, `y_ticks[row]` down the left (row 0 on top),
/// `x_ticks[col]` along the bottom, and a 0–1 colour bar.
///
/// Errors if `values` is not `y_ticks.len()` rows of `x_ticks.len()` values; an empty grid
/// renders as an empty frame with "no data".
pub fn heatmap(
    stem: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    x_ticks: &[String],
    y_ticks: &[String],
    values: &[Vec<f64>],
) -> anyhow::Result<()> {
    anyhow::ensure!(
        values.len() == y_ticks.len(),
        "heat map {title:?}: {} rows of values for {} y ticks",
        values.len(),
        y_ticks.len()
    );
    for (i, row) in values.iter().enumerate() {
        anyhow::ensure!(
            row.len() == x_ticks.len(),
            "heat map {title:?}: row {i} has {} values for {} x ticks",
            row.len(),
            x_ticks.len()
        );
    }
    save(
        stem,
        &Heatmap {
            title,
            x_label,
            y_label,
            x_ticks,
            y_ticks,
            values,
        },
    )
}

fn viridis(v: f64) -> RGBColor {
    ViridisRGB::get_color(v.clamp(0.0, 1.0) as f32)
}

impl Figure for Heatmap<'_> {
    fn size(&self) -> (u32, u32) {
        HEATMAP_SIZE
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> anyhow::Result<()>
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE)?;
        let root = root.titled(self.title, (FONT, 24))?;
        let (w, _) = root.dim_in_pixel();
        let (main, bar) = root.split_horizontally(w.saturating_sub(120));

        let (nx, ny) = (self.x_ticks.len(), self.y_ticks.len());
        // Cells live in [0, nx) × [0, ny); ticks sit at cell centres. The y axis runs upwards,
        // so row r occupies [ny−1−r, ny−r) to put row 0 on top.
        let x_keys: Vec<f64> = (0..nx).map(|i| i as f64 + 0.5).collect();
        let y_keys: Vec<f64> = (0..ny).map(|i| i as f64 + 0.5).collect();
        let x_fmt = |v: &f64| label_at(self.x_ticks, v.floor() as isize);
        let y_fmt = |v: &f64| label_at(self.y_ticks, ny as isize - 1 - v.floor() as isize);

        let mut chart = ChartBuilder::on(&main)
            .margin(12)
            .x_label_area_size(60)
            .y_label_area_size(y_label_area(self.y_ticks))
            .build_cartesian_2d(
                TickAxis::new(0.0, nx.max(1) as f64, x_keys),
                TickAxis::new(0.0, ny.max(1) as f64, y_keys),
            )?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc(self.x_label)
            .y_desc(self.y_label)
            .axis_desc_style((FONT, 18))
            .label_style((FONT, 15))
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .draw()?;

        let area = chart.plotting_area();
        let (pw, ph) = area.dim_in_pixel();
        if nx == 0 || ny == 0 {
            no_data_note(area)?;
        } else {
            let cell_w = pw as f64 / nx as f64;
            let cell_h = ph as f64 / ny as f64;
            // Big enough to read, small enough that "0.00" fits the cell.
            let font_px = (cell_h * 0.4).min(cell_w * 0.28).clamp(7.0, 20.0);
            for (r, row) in self.values.iter().enumerate() {
                let y0 = (ny - 1 - r) as f64;
                for (c, &v) in row.iter().enumerate() {
                    let x0 = c as f64;
                    let fill = if v.is_nan() { NAN_CELL } else { viridis(v) };
                    area.draw(&Rectangle::new(
                        [(x0, y0), (x0 + 1.0, y0 + 1.0)],
                        fill.filled(),
                    ))?;
                    area.draw(&Rectangle::new(
                        [(x0, y0), (x0 + 1.0, y0 + 1.0)],
                        WHITE.stroke_width(1),
                    ))?;
                    // Viridis is dark below ~0.6: white text there, black above.
                    let ink = if v.is_nan() || v > 0.6 {
                        &BLACK
                    } else {
                        &WHITE
                    };
                    let label = if v.is_nan() {
                        "n/a".to_string()
                    } else {
                        format!("{:.2}", v)
                    };
                    let style = (FONT, font_px)
                        .into_font()
                        .color(ink)
                        .pos(Pos::new(HPos::Center, VPos::Center));
                    area.draw(&Text::new(label, (x0 + 0.5, y0 + 0.5), style))?;
                }
            }
        }

        draw_colour_bar(&bar)?;
        Ok(())
    }
}

fn label_at(ticks: &[String], i: isize) -> String {
    usize::try_from(i)
        .ok()
        .and_then(|i| ticks.get(i))
        .cloned()
        .unwrap_or_default()
}

/// Room for the longest y tick label plus the rotated axis title.
fn y_label_area(ticks: &[String]) -> u32 {
    let longest = ticks.iter().map(|t| t.chars().count()).max().unwrap_or(1) as u32;
    (longest * 9 + 45).clamp(60, 200)
}

fn draw_colour_bar<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let ticks: Vec<f64> = (0..=5).map(|i| i as f64 / 5.0).collect();
    let fmt = |v: &f64| format!("{v:.1}");
    let mut chart = ChartBuilder::on(area)
        .margin_top(12)
        .margin_bottom(72) // line the bar up with the heat map's plotting area
        .margin_left(10)
        .margin_right(8)
        .right_y_label_area_size(48)
        .build_cartesian_2d(
            TickAxis::new(0.0, 1.0, vec![]),
            TickAxis::new(0.0, 1.0, ticks),
        )?;
    chart
        .configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .label_style((FONT, 14))
        .y_label_formatter(&fmt)
        .draw()?;
    const STEPS: usize = 100;
    chart.draw_series((0..STEPS).map(|i| {
        let lo = i as f64 / STEPS as f64;
        let hi = (i + 1) as f64 / STEPS as f64;
        Rectangle::new([(0.0, lo), (1.0, hi)], viridis((lo + hi) / 2.0).filled())
    }))?;
    chart.plotting_area().draw(&Rectangle::new(
        [(0.0, 0.0), (1.0, 1.0)],
        BLACK.stroke_width(1),
    ))?;
    Ok(())
}

pub(crate) fn no_data_note<DB: DrawingBackend, CT: plotters::coord::CoordTranslate>(
    area: &DrawingArea<DB, CT>,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let (w, h) = area.dim_in_pixel();
    let style = (FONT, 28)
        .into_font()
        .color(&MARKER)
        .pos(Pos::new(HPos::Center, VPos::Center));
    let plain = area.strip_coord_spec();
    plain.draw(&Text::new("no data", (w as i32 / 2, h as i32 / 2), style))?;
    Ok(())
}

// --- line chart ------------------------------------------------------------------------------

struct LineChart<'a> {
    title: &'a str,
    x_label: &'a str,
    y_label: &'a str,
    series: &'a [Series],
    opts: &'a LineOpts,
}

/// Writes `<stem>.png` and `<stem>.svg`: every series as a coloured line (with point markers
/// when it has at most 60 points), a legend to the right, and `opts.vlines` as labelled dashed
/// markers. Never fails because of the data: NaN/infinite points (and non-positive ones on log
/// axes) are skipped, and a chart with nothing to draw says "no data".
pub fn line_chart(
    stem: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    opts: LineOpts,
) -> anyhow::Result<()> {
    save(
        stem,
        &LineChart {
            title,
            x_label,
            y_label,
            series,
            opts: &opts,
        },
    )
}

/// Axis transform: identity or log10.
#[derive(Clone, Copy)]
pub(crate) struct Axis {
    pub(crate) log: bool,
}

impl Axis {
    /// Plot coordinate of a data value, `None` if it cannot be drawn on this axis.
    pub(crate) fn to_plot(self, v: f64) -> Option<f64> {
        if !v.is_finite() || (self.log && v <= 0.0) {
            None
        } else if self.log {
            Some(v.log10())
        } else {
            Some(v)
        }
    }
}

impl Figure for LineChart<'_> {
    fn size(&self) -> (u32, u32) {
        LINE_CHART_SIZE
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> anyhow::Result<()>
    where
        DB::ErrorType: 'static,
    {
        let (ax, ay) = (
            Axis {
                log: self.opts.log_x,
            },
            Axis {
                log: self.opts.log_y,
            },
        );
        // Each series split into runs of drawable points; a skipped point breaks the line.
        let segments: Vec<Vec<Vec<(f64, f64)>>> = self
            .series
            .iter()
            .map(|s| {
                let mut runs = vec![Vec::new()];
                for &(x, y) in &s.points {
                    match (ax.to_plot(x), ay.to_plot(y)) {
                        (Some(px), Some(py)) => runs.last_mut().unwrap().push((px, py)),
                        _ => {
                            if !runs.last().unwrap().is_empty() {
                                runs.push(Vec::new());
                            }
                        }
                    }
                }
                runs.retain(|r| !r.is_empty());
                runs
            })
            .collect();
        let vlines: Vec<(f64, &str)> = self
            .opts
            .vlines
            .iter()
            .filter_map(|(x, l)| ax.to_plot(*x).map(|px| (px, l.as_str())))
            .collect();

        let all = segments.iter().flatten().flatten();
        let has_data = all.clone().next().is_some();
        let xs = all.clone().map(|p| p.0).chain(vlines.iter().map(|v| v.0));
        let (x_lo, x_hi) = padded_range(xs, ax.log);
        let (y_lo, y_hi) = padded_range(all.map(|p| p.1), ay.log);
        let x_ticks = if ax.log {
            log_ticks(x_lo, x_hi, true)
        } else {
            linear_ticks(x_lo, x_hi)
        };
        let y_ticks = if ay.log {
            log_ticks(y_lo, y_hi, false)
        } else {
            linear_ticks(y_lo, y_hi)
        };

        root.fill(&WHITE)?;
        let root = root.titled(self.title, (FONT, 24))?;
        let (w, _) = root.dim_in_pixel();
        let legend_w = legend_width(self.series, w);
        let (main, legend) = root.split_horizontally(w - legend_w);

        let x_fmt = |v: &f64| tick_label(*v, ax.log);
        let y_fmt = |v: &f64| tick_label(*v, ay.log);
        let mut chart = ChartBuilder::on(&main)
            .margin(12)
            .x_label_area_size(55)
            .y_label_area_size(80)
            .build_cartesian_2d(
                TickAxis::new(x_lo, x_hi, x_ticks),
                TickAxis::new(y_lo, y_hi, y_ticks),
            )?;
        chart
            .configure_mesh()
            .x_desc(self.x_label)
            .y_desc(self.y_label)
            .axis_desc_style((FONT, 18))
            .label_style((FONT, 14))
            .bold_line_style(GRID.stroke_width(1))
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .draw()?;

        for (i, (x, label)) in vlines.iter().enumerate() {
            chart.draw_series(DashedLineSeries::new(
                vec![(*x, y_lo), (*x, y_hi)],
                6,
                4,
                MARKER.stroke_width(1),
            ))?;
            // Stagger labels vertically so neighbouring markers do not print over each other.
            let offset = 4 + 15 * (i % 4) as i32;
            let style = (FONT, 13).into_font().color(&MARKER);
            chart.plotting_area().draw(
                &(EmptyElement::at((*x, y_hi)) + Text::new(label.to_string(), (3, offset), style)),
            )?;
        }

        for (si, runs) in segments.iter().enumerate() {
            let colour = PALETTE[si % PALETTE.len()];
            let points = runs.iter().map(Vec::len).sum::<usize>();
            for run in runs {
                chart.draw_series(LineSeries::new(run.iter().copied(), colour.stroke_width(2)))?;
                if points <= 60 {
                    chart.draw_series(run.iter().map(|&p| Circle::new(p, 3, colour.filled())))?;
                }
            }
        }

        if !has_data {
            no_data_note(chart.plotting_area())?;
        }
        draw_legend(&legend, self.series, &segments)?;
        Ok(())
    }
}

fn legend_width(series: &[Series], total: u32) -> u32 {
    if series.is_empty() {
        return 10;
    }
    let longest = series
        .iter()
        .map(|s| legend_text(s, true).chars().count())
        .max()
        .unwrap_or(0) as u32;
    (longest * 8 + 50).clamp(120, total / 3)
}

fn legend_text(s: &Series, has_points: bool) -> String {
    let mut name: String = s.name.chars().take(40).collect();
    if s.name.chars().count() > 40 {
        name.push('…');
    }
    if !has_points {
        name.push_str(" (no data)");
    }
    name
}

fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    series: &[Series],
    segments: &[Vec<Vec<(f64, f64)>>],
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let (_, h) = area.dim_in_pixel();
    let row_h = 20;
    let max_rows = ((h as i32 - 24) / row_h).max(1) as usize;
    for (i, (s, runs)) in series.iter().zip(segments).enumerate() {
        let y = 24 + row_h * i as i32;
        if i + 1 == max_rows && series.len() > max_rows {
            let more = format!("… {} more", series.len() - i);
            area.draw(&Text::new(more, (6, y - 7), (FONT, 13).into_font()))?;
            break;
        }
        let colour = PALETTE[i % PALETTE.len()];
        area.draw(&PathElement::new(
            vec![(4, y), (30, y)],
            colour.stroke_width(3),
        ))?;
        let text = legend_text(s, !runs.is_empty());
        area.draw(&Text::new(text, (36, y - 7), (FONT, 13).into_font()))?;
    }
    Ok(())
}

/// Range of the plotted values with 3 % padding; a degenerate or empty range gets a sensible
/// width so the axis still has ticks.
pub(crate) fn padded_range(values: impl Iterator<Item = f64>, log: bool) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo <= f64::EPSILON * lo.abs().max(1.0) {
        // One distinct value: ±half a decade on log axes, ±10 % (or ±1) on linear ones.
        let half = if log {
            0.5
        } else if lo == 0.0 {
            1.0
        } else {
            lo.abs() * 0.1
        };
        return (lo - half, hi + half);
    }
    let pad = (hi - lo) * 0.03;
    (lo - pad, hi + pad)
}

/// Round to 10 significant digits so accumulated float error does not print as 0.30000000004.
fn clean(v: f64) -> f64 {
    if v == 0.0 || !v.is_finite() {
        return v;
    }
    format!("{v:.9e}").parse().unwrap_or(v)
}

/// Tick label: integers without a decimal point, otherwise the shortest exact form of the
/// cleaned value. On a log axis `v` is log10 of the value.
pub(crate) fn tick_label(v: f64, log: bool) -> String {
    let v = clean(if log { 10f64.powf(v) } else { v });
    if v == 0.0 {
        "0".into() // also turns −0 into 0
    } else {
        format!("{v}")
    }
}

/// Ticks at multiples of a 1-2-2.5-5 step, about six of them.
pub(crate) fn linear_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = hi - lo;
    if span.is_nan() || span <= 0.0 || span.is_infinite() {
        return vec![lo];
    }
    let raw = span / 6.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|k| clean(k as f64 * step)).collect()
}

/// Ticks for a log axis spanning log10 values [lo, hi]: powers of two (when `pow2` and the
/// range is ≥ 1), else 1-2-5 per decade, thinned to at most ~10; returned as log10 positions.
pub(crate) fn log_ticks(lo: f64, hi: f64, pow2: bool) -> Vec<f64> {
    let (vlo, vhi) = (10f64.powf(lo), 10f64.powf(hi));
    let mut ticks: Vec<f64> = Vec::new();
    if pow2 && vlo >= 0.5 {
        let (a, b) = (vlo.log2().ceil() as i32, vhi.log2().floor() as i32);
        ticks = (a..=b).map(|k| 2f64.powi(k)).collect();
    }
    if ticks.len() < 2 {
        ticks.clear();
        let (a, b) = (lo.floor() as i32, hi.ceil() as i32);
        for k in a..=b {
            for m in [1.0, 2.0, 5.0] {
                let v = clean(m * 10f64.powi(k));
                if v >= vlo && v <= vhi {
                    ticks.push(v);
                }
            }
        }
        if ticks.len() > 10 {
            ticks.retain(|v| {
                let m = v / 10f64.powf(v.log10().floor());
                (m - 1.0).abs() < 1e-9
            });
        }
    }
    if ticks.len() < 2 {
        // Less than a factor of two: evenly spaced ticks in data space.
        ticks = linear_ticks(vlo, vhi)
            .into_iter()
            .filter(|v| *v > 0.0)
            .collect();
    }
    let stride = ticks.len().div_ceil(10).max(1);
    ticks.into_iter().step_by(stride).map(f64::log10).collect()
}

// --- figures of result files ----------------------------------------------------------------
//
// One function per result type, used both for `runs/<name>/eval/*.png|svg` and by the report,
// so the two always show the same picture.

/// NIAH heat map: columns = context length, rows = needle depth (as percentages), titled
/// "NIAH accuracy — <run> (<variant>)".
pub fn niah_figure(r: &NiahResult, stem: &Path) -> anyhow::Result<()> {
    r.check_shape()?;
    let x_ticks: Vec<String> = r.lengths.iter().map(|l| l.to_string()).collect();
    let y_ticks: Vec<String> = r.depths.iter().map(|&d| percent(d)).collect();
    heatmap(
        stem,
        &format!("NIAH accuracy — {} ({})", r.run, r.variant),
        "context length",
        "needle depth",
        &x_ticks,
        &y_ticks,
        &r.accuracy,
    )
}

/// MQAR heat map: columns = sequence length, rows = number of key-value pairs; combinations
/// that were not measured are NaN ("n/a" cells). Duplicate rows: the last one wins.
pub fn mqar_figure(r: &MqarResult, stem: &Path) -> anyhow::Result<()> {
    let lens: Vec<usize> = sorted_unique(r.rows.iter().map(|x| x.seq_len));
    let kvs: Vec<usize> = sorted_unique(r.rows.iter().map(|x| x.num_kv_pairs));
    let mut grid = vec![vec![f64::NAN; lens.len()]; kvs.len()];
    for x in &r.rows {
        let c = lens.binary_search(&x.seq_len).expect("collected above");
        let row = kvs.binary_search(&x.num_kv_pairs).expect("collected above");
        grid[row][c] = x.accuracy;
    }
    heatmap(
        stem,
        &format!("MQAR accuracy — {}", r.run),
        "sequence length",
        "key-value pairs",
        &lens.iter().map(|l| l.to_string()).collect::<Vec<_>>(),
        &kvs.iter().map(|k| k.to_string()).collect::<Vec<_>>(),
        &grid,
    )
}

fn sorted_unique(values: impl Iterator<Item = usize>) -> Vec<usize> {
    let mut v: Vec<usize> = values.collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// Perplexity vs length on log–log axes, one series per result named "<run>" (or
/// "<run> (<scaling>)" unless the scaling is "none"), with a dashed marker per distinct training
/// length (naming the runs when not all share it).
pub fn ppl_figure(results: &[PplResult], stem: &Path) -> anyhow::Result<()> {
    let mut series = Vec::new();
    let mut train_lens: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
    let mut runs: Vec<&str> = Vec::new();
    for p in results {
        let name = if p.scaling == "none" || p.scaling.is_empty() {
            p.run.clone()
        } else {
            format!("{} ({})", p.run, p.scaling)
        };
        let mut points: Vec<(f64, f64)> =
            p.rows.iter().map(|x| (x.seq_len as f64, x.ppl)).collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        series.push(Series::new(name, points));
        if !runs.contains(&p.run.as_str()) {
            runs.push(&p.run);
        }
        if let Some(t) = p.train_len {
            let names = train_lens.entry(t).or_default();
            if !names.contains(&p.run.as_str()) {
                names.push(&p.run);
            }
        }
    }
    let vlines = train_lens
        .into_iter()
        .map(|(t, names)| {
            let label = if names.len() == runs.len() {
                format!("train L={t}")
            } else {
                format!("{}: train L={t}", names.join(", "))
            };
            (t as f64, label)
        })
        .collect();
    line_chart(
        stem,
        "Perplexity vs evaluation length",
        "sequence length",
        "perplexity",
        &series,
        LineOpts {
            log_x: true,
            log_y: true,
            vlines,
        },
    )
}

/// Which attention-diagnostic chart a file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionFigure {
    /// Mean row entropy per layer (mean over heads) vs length, plus the uniform reference
    /// ln(mean row length).
    Entropy,
    /// Mean sparsity S per layer (mean over heads) vs length.
    Sparsity,
    /// Needle mass per layer vs length for the best head of the layer (max over heads); only
    /// drawn when some row has a needle mass.
    NeedleMass,
}

impl AttentionFigure {
    /// Suffix appended to the stem prefix: `attention` → `attention_entropy.png`.
    pub fn suffix(self) -> &'static str {
        match self {
            AttentionFigure::Entropy => "_entropy",
            AttentionFigure::Sparsity => "_sparsity",
            AttentionFigure::NeedleMass => "_needle",
        }
    }
}

/// Draws the attention-diagnostic charts of `r` to `<prefix>_entropy`, `<prefix>_sparsity` and
/// (when measured) `<prefix>_needle` (.png and .svg); returns which were drawn and their stems.
/// Nothing is drawn for a result without rows.
pub fn attention_figures(
    r: &AttentionResult,
    prefix: &Path,
) -> anyhow::Result<Vec<(AttentionFigure, PathBuf)>> {
    if r.rows.is_empty() {
        return Ok(Vec::new());
    }
    // layer → seq_len → per-head values.
    type ByLayer = BTreeMap<usize, BTreeMap<usize, Vec<f64>>>;
    let (mut ent, mut spa, mut needle): (ByLayer, ByLayer, ByLayer) = Default::default();
    let mut uniform: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
    for x in &r.rows {
        let at = |m: &mut ByLayer, v: f64| {
            m.entry(x.layer)
                .or_default()
                .entry(x.seq_len)
                .or_default()
                .push(v)
        };
        at(&mut ent, x.entropy);
        at(&mut spa, x.sparsity);
        if let Some(nm) = x.needle_mass {
            at(&mut needle, nm);
        }
        uniform
            .entry(x.seq_len)
            .or_default()
            .push(x.uniform_entropy);
    }
    let per_layer = |m: &ByLayer, reduce: fn(&[f64]) -> f64| -> Vec<Series> {
        m.iter()
            .map(|(layer, by_len)| {
                let points = by_len
                    .iter()
                    .map(|(len, v)| (*len as f64, reduce(v)))
                    .collect();
                Series::new(format!("layer {layer}"), points)
            })
            .collect()
    };
    let stem_of = |f: AttentionFigure| {
        let mut s: OsString = prefix.as_os_str().to_owned();
        s.push(f.suffix());
        PathBuf::from(s)
    };
    let log_x = LineOpts {
        log_x: true,
        ..LineOpts::default()
    };
    let mut drawn = Vec::new();

    let mut series = per_layer(&ent, mean_finite);
    series.push(Series::new(
        "uniform: ln(mean row length)",
        uniform
            .iter()
            .map(|(len, v)| (*len as f64, mean_finite(v)))
            .collect(),
    ));
    let stem = stem_of(AttentionFigure::Entropy);
    line_chart(
        &stem,
        &format!("Attention entropy — {} ({})", r.run, r.mixer),
        "sequence length",
        "mean row entropy (nats)",
        &series,
        log_x.clone(),
    )?;
    drawn.push((AttentionFigure::Entropy, stem));

    let stem = stem_of(AttentionFigure::Sparsity);
    line_chart(
        &stem,
        &format!("Attention sparsity — {} ({})", r.run, r.mixer),
        "sequence length",
        "mean S = mean|a| / √mean(a²)",
        &per_layer(&spa, mean_finite),
        log_x.clone(),
    )?;
    drawn.push((AttentionFigure::Sparsity, stem));

    if !needle.is_empty() {
        let stem = stem_of(AttentionFigure::NeedleMass);
        line_chart(
            &stem,
            &format!("Attention on the needle — {} ({})", r.run, r.mixer),
            "sequence length",
            "needle mass (best head)",
            &per_layer(&needle, max_finite),
            log_x,
        )?;
        drawn.push((AttentionFigure::NeedleMass, stem));
    }
    Ok(drawn)
}

/// Mean of the finite values, NaN if there are none.
fn mean_finite(v: &[f64]) -> f64 {
    let (sum, n) = v
        .iter()
        .filter(|x| x.is_finite())
        .fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 { f64::NAN } else { sum / n as f64 }
}

/// Max of the finite values, NaN if there are none.
fn max_finite(v: &[f64]) -> f64 {
    v.iter()
        .copied()
        .filter(|x| x.is_finite())
        .fold(f64::NAN, f64::max)
}

/// Depth fraction as a percentage label: 0.5 → "50%", 0.125 → "12.5%".
pub fn percent(d: f64) -> String {
    if !d.is_finite() {
        return "?".into();
    }
    let p = (d * 1000.0).round() / 10.0;
    format!("{p}%")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_ticks_are_round_and_inside() {
        let t = linear_ticks(0.03, 0.97);
        assert_eq!(t, vec![0.2, 0.4, 0.6, 0.8]);
        let t = linear_ticks(-3.0, 1003.0);
        assert!(t.contains(&0.0) && t.contains(&1000.0), "{t:?}");
        assert!(t.iter().all(|v| (-3.0..=1003.0).contains(v)));
    }

    #[test]
    fn log_ticks_use_powers_of_two_for_lengths() {
        let (lo, hi) = (128f64.log10() - 0.01, 8192f64.log10() + 0.01);
        let labels: Vec<String> = log_ticks(lo, hi, true)
            .into_iter()
            .map(|v| tick_label(v, true))
            .collect();
        assert_eq!(
            labels,
            ["128", "256", "512", "1024", "2048", "4096", "8192"]
        );
        let labels: Vec<String> = log_ticks(3f64.log10(), 700f64.log10(), false)
            .into_iter()
            .map(|v| tick_label(v, true))
            .collect();
        assert_eq!(labels, ["5", "10", "20", "50", "100", "200", "500"]);
    }

    #[test]
    fn percent_labels() {
        assert_eq!(percent(0.125), "12.5%");
        assert_eq!(percent(1.0), "100%");
        assert_eq!(percent(0.0), "0%");
    }

    #[test]
    fn degenerate_ranges_get_width() {
        let (lo, hi) = padded_range([5.0, 5.0].into_iter(), false);
        assert!(lo < 5.0 && hi > 5.0);
        assert_eq!(padded_range(std::iter::empty(), true), (0.0, 1.0));
    }
}
