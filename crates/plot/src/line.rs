//! Line charts: training curves (loss, FVU, L0, dead fraction against step).

use std::ops::Range;
use std::path::Path;

use plotters::coord::Shift;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::canvas::{self, Chart, DrawResult, count_of};
use crate::scale::{finite_extent, linear_range, log_range, log_ticks, tick_label_within};
use crate::{PlotError, style};

/// One named curve.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Series {
    pub name: String,
    /// `(x, y)` in drawing order; non-finite points break the line instead of joining across.
    pub points: Vec<(f64, f64)>,
}

/// Several series on shared axes; a legend to the right of the plot when there is more
/// than one series, so it never covers data.
#[derive(Clone, Copy, Debug)]
pub struct LineChart<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    /// Logarithmic y axis; points with `y ≤ 0` are left out and counted in a note.
    pub log_y: bool,
    pub series: &'a [Series],
}

/// Line chart (e.g. training curves: loss / FVU / L0 / dead fraction vs step). Several series
/// share axes; legend when >1 series. Written as PNG or SVG by `path`'s extension.
pub fn line_chart(path: &Path, chart: &LineChart) -> Result<(), PlotError> {
    canvas::render(path, chart)
}

/// Series above this many points are drawn as lines only; shorter ones also get dots, so a
/// one-point series is still visible.
const MAX_DOTTED: usize = 20;

/// The points that can be drawn, split into unbroken runs, and how many were left out.
struct Drawable {
    /// `runs[series][run]`
    runs: Vec<Vec<Vec<(f64, f64)>>>,
    non_finite: usize,
    non_positive: usize,
}

impl Drawable {
    fn of(chart: &LineChart) -> Self {
        let mut out = Drawable {
            runs: Vec::new(),
            non_finite: 0,
            non_positive: 0,
        };
        for series in chart.series {
            let mut runs: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
            for &(x, y) in &series.points {
                let dropped = if !(x.is_finite() && y.is_finite()) {
                    out.non_finite += 1;
                    true
                } else if chart.log_y && y <= 0.0 {
                    out.non_positive += 1;
                    true
                } else {
                    false
                };
                match runs.last_mut() {
                    Some(run) if !dropped => run.push((x, y)),
                    Some(run) if !run.is_empty() => runs.push(Vec::new()),
                    _ => {}
                }
            }
            runs.retain(|run| !run.is_empty());
            out.runs.push(runs);
        }
        out
    }

    fn points(&self) -> impl Iterator<Item = (f64, f64)> + '_ {
        self.runs.iter().flatten().flatten().copied()
    }

    fn notes(&self, log_y: bool) -> Vec<String> {
        let mut notes = Vec::new();
        if log_y && self.non_positive > 0 {
            let n = count_of(self.non_positive, "point");
            notes.push(format!("{n} with y ≤ 0 not shown on the log scale"));
        }
        if self.non_finite > 0 {
            let n = count_of(self.non_finite, "point");
            notes.push(format!("{n} with NaN or ±∞ not shown"));
        }
        notes
    }
}

impl Chart for LineChart<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<(), DB> {
        let data = Drawable::of(self);
        let area = canvas::header(root, self.title, &data.notes(self.log_y))?;
        let (w, _) = area.dim_in_pixel();
        let legend_w = if self.series.len() > 1 {
            legend_width(&area, self.series)?
        } else {
            0
        };
        let (plot_area, legend_area) = area.split_horizontally(w - legend_w);

        let x = linear_range(finite_extent(data.points().map(|p| p.0)), 0.02);
        let y_extent = finite_extent(data.points().map(|p| p.1));
        if self.log_y {
            let y = log_range(y_extent, 0.05);
            let ticks = log_ticks(&y);
            let y_span = y.end - y.start;
            plot(
                &plot_area,
                self,
                &data,
                x,
                // Labels are drawn at the light points of a mesh asked for a count of labels.
                y.log_scale()
                    .with_key_points(ticks.clone())
                    .with_light_points(ticks),
                y_span,
            )?;
        } else {
            let y = linear_range(y_extent, 0.05);
            let y_span = y.end - y.start;
            plot(&plot_area, self, &data, x, y, y_span)?;
        }
        if legend_w > 0 {
            legend(&legend_area, self.series)?;
        }
        Ok(())
    }
}

fn plot<DB, Y>(
    area: &DrawingArea<DB, Shift>,
    chart: &LineChart,
    data: &Drawable,
    x: Range<f64>,
    y: Y,
    y_span: f64,
) -> DrawResult<(), DB>
where
    DB: DrawingBackend,
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let x_span = x.end - x.start;
    let mut ctx = ChartBuilder::on(area)
        .margin(12)
        .margin_right(24)
        .x_label_area_size(56)
        .y_label_area_size(80)
        .build_cartesian_2d(x, y)?;
    ctx.configure_mesh()
        .bold_line_style(style::GRID)
        .light_line_style(WHITE)
        .x_desc(chart.x_label)
        .y_desc(chart.y_label)
        .axis_desc_style(style::text(style::AXIS_LABEL_SIZE))
        .label_style(style::text(style::TICK_SIZE))
        .x_labels(8)
        .y_labels(8)
        .x_label_formatter(&|v| tick_label_within(*v, x_span))
        .y_label_formatter(&|v| tick_label_within(*v, y_span))
        .draw()?;

    for (i, runs) in data.runs.iter().enumerate() {
        let color = style::series_color(i);
        for run in runs {
            ctx.draw_series(LineSeries::new(run.iter().copied(), color.stroke_width(2)))?;
        }
        if runs.iter().map(Vec::len).sum::<usize>() <= MAX_DOTTED {
            let dots = runs
                .iter()
                .flatten()
                .map(|&p| Circle::new(p, 3, color.filled()));
            ctx.draw_series(dots)?;
        }
    }

    if data.points().next().is_none() {
        canvas::centre_note(&ctx.plotting_area().strip_coord_spec(), "no data to plot")?;
    }
    Ok(())
}

const LEGEND_ROW: i32 = 24;
const LEGEND_SWATCH: i32 = 28;
const LEGEND_PAD: i32 = 10;

/// Width of the legend panel: the longest name plus swatch, at most a third of the page.
fn legend_width<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    series: &[Series],
) -> DrawResult<u32, DB> {
    let font = style::text(style::TICK_SIZE);
    let mut widest = 0;
    for s in series {
        widest = widest.max(area.estimate_text_size(&s.name, &font)?.0);
    }
    let w = widest + (LEGEND_SWATCH + 4 * LEGEND_PAD) as u32;
    Ok(w.clamp(80, area.dim_in_pixel().0 / 3))
}

/// One row per series (colour swatch and name), in a light box at the top of `area`.
fn legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    series: &[Series],
) -> DrawResult<(), DB> {
    let (w, h) = area.dim_in_pixel();
    let (w, h) = (w as i32, h as i32);
    let top = 12;
    let fits = ((h - top - 2 * LEGEND_PAD) / LEGEND_ROW).max(1) as usize;
    let shown = if series.len() > fits {
        fits - 1
    } else {
        series.len()
    };
    let rows = shown + usize::from(shown < series.len());
    let box_bottom = top + 2 * LEGEND_PAD + rows as i32 * LEGEND_ROW - 6;
    area.draw(&Rectangle::new(
        [(0, top), (w - 8, box_bottom)],
        style::GRID.stroke_width(1),
    ))?;

    let font = style::text(style::TICK_SIZE).pos(Pos::new(HPos::Left, VPos::Center));
    let text_x = LEGEND_PAD + LEGEND_SWATCH + 6;
    let max_text = (w - 8 - text_x - LEGEND_PAD).max(10) as u32;
    for (i, s) in series.iter().take(shown).enumerate() {
        let y = top + LEGEND_PAD + LEGEND_ROW / 2 + i as i32 * LEGEND_ROW - 3;
        let color = style::series_color(i);
        let swatch = [(LEGEND_PAD, y), (LEGEND_PAD + LEGEND_SWATCH, y)];
        area.draw(&PathElement::new(swatch, color.stroke_width(3)))?;
        let name = canvas::fit_text(area, &s.name, &font, max_text)?;
        area.draw_text(&name, &font, (text_x, y))?;
    }
    if shown < series.len() {
        let y = top + LEGEND_PAD + LEGEND_ROW / 2 + shown as i32 * LEGEND_ROW - 3;
        let more = format!("… and {} more", series.len() - shown);
        area.draw_text(&more, &font, (LEGEND_PAD, y))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
