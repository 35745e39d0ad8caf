//! Heatmaps of a matrix with a colour bar, e.g. cosine similarity between SAE decoder rows.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::PlotError;
use crate::canvas::{self, Chart, DrawResult, count_of};
use crate::scale::{finite_extent, linear_range, nice_ticks, tick_label};
use crate::style::{self, ColorMap};

/// Heatmap of a matrix (row-major `[rows, cols]`) with a colour bar, e.g. cosine-similarity
/// matrices. Signed data gets a blue–white–red scale symmetric about 0, one-signed data a
/// viridis-like scale over its range; NaN cells are grey. Label slices are either empty
/// (rows/columns are numbered) or one label per row/column.
/// Written as PNG or SVG by `path`'s extension.
pub fn heatmap(
    path: &Path,
    title: &str,
    values: &[f64],
    rows: usize,
    cols: usize,
    row_labels: &[String],
    col_labels: &[String],
) -> Result<(), PlotError> {
    let map = Heatmap {
        title,
        values,
        rows,
        cols,
        row_labels,
        col_labels,
    };
    canvas::render(path, &map)
}

pub(crate) struct Heatmap<'a> {
    pub(crate) title: &'a str,
    pub(crate) values: &'a [f64],
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) row_labels: &'a [String],
    pub(crate) col_labels: &'a [String],
}

/// How values map to colours: `t = (v - lo) / (hi - lo)` into `map`.
#[derive(Debug, PartialEq)]
pub(crate) struct ColorScale {
    pub(crate) lo: f64,
    pub(crate) hi: f64,
    pub(crate) map: ColorMap,
}

impl ColorScale {
    pub(crate) fn of(values: &[f64]) -> Self {
        match finite_extent(values.iter().copied()) {
            Some((lo, hi)) if lo < 0.0 && hi > 0.0 => {
                let m = lo.abs().max(hi);
                ColorScale {
                    lo: -m,
                    hi: m,
                    map: ColorMap::Diverging,
                }
            }
            extent => {
                let r = linear_range(extent, 0.0);
                ColorScale {
                    lo: r.start,
                    hi: r.end,
                    map: ColorMap::Sequential,
                }
            }
        }
    }

    pub(crate) fn color(&self, v: f64) -> RGBColor {
        if v.is_nan() {
            return style::NAN_CELL;
        }
        self.map.at((v - self.lo) / (self.hi - self.lo))
    }
}

/// Width of the colour bar panel: gap, bar, tick labels.
const BAR_PANEL: u32 = 120;
const MAX_LABEL_W: u32 = 160;

impl Chart for Heatmap<'_> {
    fn validate(&self) -> Result<(), String> {
        let (rows, cols) = (self.rows, self.cols);
        if rows == 0 || cols == 0 {
            return Err(format!(
                "a heatmap needs at least one cell, got {rows}x{cols}"
            ));
        }
        match rows.checked_mul(cols) {
            Some(n) if n == self.values.len() => {}
            _ => {
                let n = self.values.len();
                return Err(format!(
                    "{rows}x{cols} matrix needs {rows}*{cols} values, got {n}"
                ));
            }
        }
        for (what, labels, n) in [
            ("row", self.row_labels, rows),
            ("column", self.col_labels, cols),
        ] {
            if !labels.is_empty() && labels.len() != n {
                let got = labels.len();
                return Err(format!(
                    "{n} {what}s need {n} {what} labels (or none), got {got}"
                ));
            }
        }
        Ok(())
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<(), DB> {
        let scale = ColorScale::of(self.values);
        let nan = self.values.iter().filter(|v| v.is_nan()).count();
        let notes = if nan > 0 {
            vec![format!("{} NaN, drawn grey", count_of(nan, "cell"))]
        } else {
            vec![]
        };
        let area = canvas::header(root, self.title, &notes)?;
        let (w, _) = area.dim_in_pixel();
        let (main, bar) = area.split_horizontally(w.saturating_sub(BAR_PANEL));

        let font = style::text(style::TICK_SIZE);
        let row_labels = labels(self.row_labels, self.rows);
        let col_labels = labels(self.col_labels, self.cols);
        let mut row_w = 0;
        for l in &row_labels {
            row_w = row_w.max(main.estimate_text_size(l, &font)?.0);
        }
        let row_w = row_w.min(MAX_LABEL_W);
        let x_area = style::TICK_SIZE + 18;

        let (rows, cols) = (self.rows as f64, self.cols as f64);
        let mut ctx = ChartBuilder::on(&main)
            .margin(12)
            .set_label_area_size(LabelAreaPosition::Left, row_w + 14)
            .set_label_area_size(LabelAreaPosition::Bottom, x_area)
            .build_cartesian_2d(0.0..cols, 0.0..rows)?;

        // Row r is drawn top-down: it spans y ∈ [rows - r - 1, rows - r].
        let cells = self.values.iter().enumerate().map(|(i, &v)| {
            let (r, c) = ((i / self.cols) as f64, (i % self.cols) as f64);
            Rectangle::new(
                [(c, rows - r), (c + 1.0, rows - r - 1.0)],
                scale.color(v).filled(),
            )
        });
        ctx.draw_series(cells)?;
        ctx.draw_series([Rectangle::new(
            [(0.0, 0.0), (cols, rows)],
            style::INK.stroke_width(1),
        )])?;

        // Axis labels, thinned out so neighbours never overlap.
        let (px, py) = ctx.plotting_area().get_pixel_range();
        let cell_w = (px.end - px.start) as f64 / cols;
        let cell_h = (py.end - py.start) as f64 / rows;
        let mut col_w = 0;
        for l in &col_labels {
            col_w = col_w.max(main.estimate_text_size(l, &font)?.0.min(MAX_LABEL_W));
        }
        let col_step = ((col_w as f64 + 10.0) / cell_w).ceil().max(1.0) as usize;
        let row_step = ((style::TICK_SIZE as f64 + 4.0) / cell_h).ceil().max(1.0) as usize;

        let right = font.pos(Pos::new(HPos::Right, VPos::Center));
        for (r, l) in row_labels.iter().enumerate().step_by(row_step) {
            let (_, y) = ctx.backend_coord(&(0.0, rows - r as f64 - 0.5));
            let l = canvas::fit_text(root, l, &font, MAX_LABEL_W)?;
            root.draw_text(&l, &right, (px.start - 6, y))?;
        }
        let below = font.pos(Pos::new(HPos::Center, VPos::Top));
        for (c, l) in col_labels.iter().enumerate().step_by(col_step) {
            let (x, _) = ctx.backend_coord(&(c as f64 + 0.5, 0.0));
            let l = canvas::fit_text(root, l, &font, MAX_LABEL_W)?;
            root.draw_text(&l, &below, (x, py.end + 6))?;
        }

        color_bar(&bar, &scale, x_area)
    }
}

/// The given labels, or `0, 1, …` when none were given.
fn labels(given: &[String], n: usize) -> Vec<String> {
    if given.is_empty() {
        (0..n).map(|i| i.to_string()).collect()
    } else {
        given.to_vec()
    }
}

/// A vertical bar of the colour scale with value ticks on its right, aligned with the cells.
fn color_bar<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    scale: &ColorScale,
    bottom_gap: u32,
) -> DrawResult<(), DB> {
    const STEPS: usize = 256;
    let ctx = ChartBuilder::on(area)
        .margin(12)
        .margin_left(16)
        .margin_right(72)
        .margin_bottom(12 + bottom_gap)
        .build_cartesian_2d(0.0..1.0, scale.lo..scale.hi)?;
    let bar = ctx.plotting_area();
    let dv = (scale.hi - scale.lo) / STEPS as f64;
    for k in 0..STEPS {
        let v0 = scale.lo + dv * k as f64;
        let color = scale.color(v0 + dv / 2.0);
        bar.draw(&Rectangle::new([(0.0, v0), (1.0, v0 + dv)], color.filled()))?;
    }
    bar.draw(&Rectangle::new(
        [(0.0, scale.lo), (1.0, scale.hi)],
        style::INK.stroke_width(1),
    ))?;
    let font = style::text(style::TICK_SIZE).pos(Pos::new(HPos::Left, VPos::Center));
    for v in nice_ticks(scale.lo, scale.hi, 6) {
        bar.draw(
            &(EmptyElement::at((1.0, v))
                + PathElement::new([(0, 0), (5, 0)], style::INK.stroke_width(1))
                + Text::new(tick_label(v), (9, 0), font.clone())),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
