//! Charts Lantern writes after SAE training: training curves, histograms of log10 feature
//! density, and heatmaps such as cosine-similarity matrices, drawn with plotters as PNG or
//! SVG (chosen by the output file's extension) at 900×600 pixels. Text is set in an embedded
//! DejaVu Sans, so PNGs look the same on machines without system fonts. Awkward data never
//! panics: empty or all-NaN series give empty axes, zero-width ranges are widened, and values
//! that cannot be drawn (non-finite, or `y ≤ 0` on a log axis) are counted in a note under
//! the title instead of disappearing silently.
//!
//! ```
//! use lantern_plot::{LineChart, Series, line_chart};
//!
//! let dir = tempfile::tempdir()?;
//! let loss = Series {
//!     name: "mse".into(),
//!     points: (1..=100).map(|step| (step as f64, 1.0 / step as f64)).collect(),
//! };
//! let chart = LineChart {
//!     title: "SAE training",
//!     x_label: "step",
//!     y_label: "loss",
//!     log_y: true,
//!     series: &[loss],
//! };
//! line_chart(&dir.path().join("loss.png"), &chart)?;
//! line_chart(&dir.path().join("loss.svg"), &chart)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod canvas;
mod error;
mod heatmap;
mod histogram;
mod interval;
mod line;
mod scale;
mod style;

pub use canvas::DEFAULT_SIZE;
pub use error::PlotError;
pub use heatmap::heatmap;
pub use histogram::{Histogram, histogram};
pub use interval::{Interval, IntervalChart, interval_chart};
pub use line::{LineChart, Series, line_chart};
