//! Interval charts: one estimate per item with its confidence interval (a dot and a vertical
//! whisker), items left to right in the order given — e.g. the latents a finetune raises most,
//! each with its bootstrap interval, or a rate per steering strength.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::canvas::{self, Chart, DrawResult, count_of};
use crate::scale::{finite_extent, linear_range, tick_label};
use crate::{PlotError, style};

/// One estimate: `value` with interval `[lo, hi]` (NaN bounds: no whisker).
#[derive(Clone, Debug, PartialEq)]
pub struct Interval {
    pub label: String,
    pub value: f64,
    pub lo: f64,
    pub hi: f64,
}

/// Items on a categorical x axis.
#[derive(Clone, Copy, Debug)]
pub struct IntervalChart<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub items: &'a [Interval],
}

/// Draws the chart as PNG or SVG by `path`'s extension. Items whose value is not finite are
/// left out and counted in a note; a horizontal line marks y = 0 when the range spans it.
pub fn interval_chart(path: &Path, chart: &IntervalChart) -> Result<(), PlotError> {
    canvas::render(path, chart)
}

impl Chart for IntervalChart<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<(), DB> {
        let hidden = self.items.iter().filter(|i| !i.value.is_finite()).count();
        let notes = if hidden > 0 {
            vec![format!(
                "{} with NaN or ±∞ not shown",
                count_of(hidden, "item")
            )]
        } else {
            Vec::new()
        };
        let area = canvas::header(root, self.title, &notes)?;
        let ys = self
            .items
            .iter()
            .filter(|i| i.value.is_finite())
            .flat_map(|i| [i.value, i.lo, i.hi]);
        let y = linear_range(finite_extent(ys), 0.05);
        let n = self.items.len().max(1);
        let x = -0.5..(n as f64 - 0.5);
        let labels: Vec<String> = self.items.iter().map(|i| i.label.clone()).collect();
        // Labels that would collide side by side are drawn vertically, with room below.
        let longest = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0) as u32;
        let (width, _) = area.dim_in_pixel();
        let vertical = (n as u32) * (longest * 7 + 8) > width.saturating_sub(120);
        let label_area = if vertical { 40 + longest * 7 } else { 64 };
        let mut ctx = ChartBuilder::on(&area)
            .margin(12)
            .margin_right(24)
            .x_label_area_size(label_area)
            .y_label_area_size(80)
            .build_cartesian_2d(x, y.clone())?;
        ctx.configure_mesh()
            .bold_line_style(style::GRID)
            .light_line_style(WHITE)
            .disable_x_mesh()
            .x_desc(self.x_label)
            .y_desc(self.y_label)
            .axis_desc_style(style::text(style::AXIS_LABEL_SIZE))
            .label_style(style::text(style::TICK_SIZE))
            .x_labels(n.min(30))
            .y_labels(8)
            .x_label_formatter(&|v| {
                let i = v.round();
                if !vertical && (v - i).abs() < 1e-6 && i >= 0.0 {
                    labels.get(i as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .y_label_formatter(&|v| tick_label(*v))
            .draw()?;
        if vertical {
            // Top-to-bottom text hanging from each item's tick, drawn by hand: the mesh centres
            // rotated labels on the tick, over the plot.
            let label_style = style::text(style::TICK_SIZE)
                .transform(FontTransform::Rotate90)
                .pos(Pos::new(HPos::Left, VPos::Center));
            for (k, l) in labels.iter().enumerate() {
                let (px, py) = ctx.backend_coord(&(k as f64, y.start));
                let (ox, oy) = area.get_base_pixel();
                area.draw(&Text::new(
                    l.clone(),
                    (px - ox, py - oy + 8),
                    label_style.clone(),
                ))?;
            }
        }
        if y.start < 0.0 && y.end > 0.0 {
            ctx.draw_series(LineSeries::new(
                [(-0.5, 0.0), (n as f64 - 0.5, 0.0)],
                style::NOTE_INK.stroke_width(1),
            ))?;
        }
        let color = style::series_color(0);
        let shown = self
            .items
            .iter()
            .enumerate()
            .filter(|(_, i)| i.value.is_finite());
        ctx.draw_series(
            shown
                .clone()
                .filter(|(_, i)| i.lo.is_finite() && i.hi.is_finite())
                .map(|(k, i)| {
                    ErrorBar::new_vertical(k as f64, i.lo, i.value, i.hi, color.stroke_width(2), 10)
                }),
        )?;
        ctx.draw_series(shown.map(|(k, i)| Circle::new((k as f64, i.value), 4, color.filled())))?;
        if self.items.is_empty() {
            canvas::centre_note(&ctx.plotting_area().strip_coord_spec(), "no data to plot")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_png_and_svg_and_counts_hidden_items() {
        let dir = tempfile::tempdir().unwrap();
        let items = [
            Interval {
                label: "17".into(),
                value: 0.5,
                lo: 0.4,
                hi: 0.6,
            },
            Interval {
                label: "3".into(),
                value: 0.1,
                lo: f64::NAN,
                hi: f64::NAN,
            },
            Interval {
                label: "9".into(),
                value: f64::NAN,
                lo: 0.0,
                hi: 1.0,
            },
        ];
        let chart = IntervalChart {
            title: "Δ",
            x_label: "latent",
            y_label: "Δ mean",
            items: &items,
        };
        for name in ["a.png", "a.svg"] {
            interval_chart(&dir.path().join(name), &chart).unwrap();
        }
        let svg = std::fs::read_to_string(dir.path().join("a.svg")).unwrap();
        assert!(
            svg.contains("1 item with NaN or ±∞ not shown"),
            "note missing"
        );
        interval_chart(
            &dir.path().join("empty.png"),
            &IntervalChart {
                items: &[],
                ..chart
            },
        )
        .unwrap();
    }
}
