//! Histograms: e.g. log10 feature density of SAE latents, with dead/dense cut-off markers.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::canvas::{self, Chart, DrawResult, count_of};
use crate::scale::{finite_extent, linear_range, tick_label};
use crate::{PlotError, style};

/// Values binned into `bins` equal-width bins over their finite range.
#[derive(Clone, Copy, Debug)]
pub struct Histogram<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    /// Non-finite values are not binned: `-∞` (log10 of a density of 0, a latent that never
    /// fired) and NaN / `+∞` are each counted in a note under the title.
    pub values: &'a [f64],
    /// Number of bins, at least 1.
    pub bins: usize,
    /// Vertical marker lines with labels, e.g. dead/dense cut-offs at `x = -6` and `x = -1`.
    pub markers: &'a [(f64, &'a str)],
}

/// Histogram (e.g. log10 feature density of SAE latents; non-finite values such as
/// log10(0) = -inf are counted in a separate "never fired" note in the title/caption rather
/// than dropped silently). Written as PNG or SVG by `path`'s extension.
pub fn histogram(path: &Path, h: &Histogram) -> Result<(), PlotError> {
    canvas::render(path, h)
}

/// Bin counts over `[lo, hi]`; the last bin is closed so that `hi` lands in it.
#[derive(Debug, PartialEq)]
pub(crate) struct Binned {
    pub(crate) lo: f64,
    pub(crate) hi: f64,
    pub(crate) counts: Vec<usize>,
    pub(crate) never_fired: usize,
    pub(crate) other_non_finite: usize,
}

impl Binned {
    pub(crate) fn of(values: &[f64], bins: usize) -> Self {
        let extent = finite_extent(values.iter().copied());
        let range = linear_range(extent, 0.0);
        let (lo, hi) = (range.start, range.end);
        let bins = bins.max(1);
        let mut counts = vec![0; bins];
        let (mut never_fired, mut other_non_finite) = (0, 0);
        for &v in values {
            if v == f64::NEG_INFINITY {
                never_fired += 1;
            } else if !v.is_finite() {
                other_non_finite += 1;
            } else {
                let t = (v - lo) / (hi - lo) * bins as f64;
                counts[(t.max(0.0) as usize).min(bins - 1)] += 1;
            }
        }
        Binned {
            lo,
            hi,
            counts,
            never_fired,
            other_non_finite,
        }
    }

    fn bin_edges(&self, i: usize) -> (f64, f64) {
        let w = (self.hi - self.lo) / self.counts.len() as f64;
        (self.lo + w * i as f64, self.lo + w * (i + 1) as f64)
    }

    fn notes(&self, total: usize) -> Vec<String> {
        let mut notes = Vec::new();
        if self.never_fired > 0 {
            let n = self.never_fired;
            notes.push(format!(
                "{n} of {total} never fired (value −∞), not in the bars"
            ));
        }
        if self.other_non_finite > 0 {
            let n = count_of(self.other_non_finite, "value");
            notes.push(format!("{n} NaN or +∞, not in the bars"));
        }
        notes
    }
}

impl Chart for Histogram<'_> {
    fn validate(&self) -> Result<(), String> {
        if self.bins == 0 {
            return Err("a histogram needs at least 1 bin, got 0".to_string());
        }
        Ok(())
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<(), DB> {
        let binned = Binned::of(self.values, self.bins);
        let area = canvas::header(root, self.title, &binned.notes(self.values.len()))?;
        let has_data = binned.counts.iter().any(|&c| c > 0);

        let marker_xs = self.markers.iter().map(|m| m.0);
        let bar_xs = if has_data {
            vec![binned.lo, binned.hi]
        } else {
            Vec::new()
        };
        let x = linear_range(finite_extent(bar_xs.into_iter().chain(marker_xs)), 0.03);
        let top = binned.counts.iter().copied().max().unwrap_or(0).max(1) as f64 * 1.12;

        let mut ctx = ChartBuilder::on(&area)
            .margin(12)
            .margin_right(24)
            .x_label_area_size(56)
            .y_label_area_size(80)
            .build_cartesian_2d(x, 0.0..top)?;
        ctx.configure_mesh()
            .bold_line_style(style::GRID)
            .light_line_style(WHITE)
            .x_desc(self.x_label)
            .y_desc("count")
            .axis_desc_style(style::text(style::AXIS_LABEL_SIZE))
            .label_style(style::text(style::TICK_SIZE))
            .x_labels(10)
            .y_labels(8)
            .x_label_formatter(&|v| tick_label(*v))
            .y_label_formatter(&|v| tick_label(*v))
            .draw()?;

        let fill = style::series_color(0);
        let bars = binned.counts.iter().enumerate().filter(|(_, c)| **c > 0);
        ctx.draw_series(bars.map(|(i, &c)| {
            let (x0, x1) = binned.bin_edges(i);
            Rectangle::new([(x0, 0.0), (x1, c as f64)], fill.mix(0.85).filled())
        }))?;

        let (plot_x, _) = ctx.plotting_area().get_pixel_range();
        let font = style::text(style::TICK_SIZE);
        for (i, &(mx, label)) in self.markers.iter().enumerate() {
            if !mx.is_finite() {
                continue;
            }
            let color = style::marker_color(i);
            let line = [(mx, 0.0), (mx, top)];
            ctx.draw_series(DashedLineSeries::new(line, 8, 5, color.stroke_width(2)))?;

            // Label at the top of its line, staggered so neighbouring markers do not collide,
            // on whichever side of the line has room.
            let (tw, th) = area.estimate_text_size(label, &font)?;
            let (tw, th) = (tw as i32, th as i32);
            let (px, _) = ctx.backend_coord(&(mx, top));
            let right_side = px + 6 + tw + 4 < plot_x.end;
            let dx = if right_side { 6 } else { -6 - tw };
            let dy = 6 + i as i32 * (th + 8);
            let label_box = [(dx - 3, dy - 2), (dx + tw + 3, dy + th + 3)];
            let text =
                style::text_colored(style::TICK_SIZE, color).pos(Pos::new(HPos::Left, VPos::Top));
            ctx.plotting_area().draw(
                &(EmptyElement::at((mx, top))
                    + Rectangle::new(label_box, WHITE.mix(0.85).filled())
                    + Text::new(label.to_string(), (dx, dy), text)),
            )?;
        }

        if !has_data {
            canvas::centre_note(
                &ctx.plotting_area().strip_coord_spec(),
                "no finite values to plot",
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
