//! The crate's one error type.

use std::path::PathBuf;

/// Why a chart could not be written. Every message is one line and names the output file.
#[derive(thiserror::Error, Debug)]
pub enum PlotError {
    /// The output file name does not end in `.png` or `.svg`.
    #[error("{}: unsupported chart format, expected a .png or .svg file name", path.display())]
    UnsupportedFormat { path: PathBuf },

    /// The output file cannot be created (missing directory, no permission, ...).
    #[error("{}: cannot write chart: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The input data has the wrong shape (e.g. `values.len() != rows * cols`).
    #[error("{}: invalid chart input: {reason}", path.display())]
    InvalidInput { path: PathBuf, reason: String },

    /// The embedded font could not be registered with plotters.
    #[error("{}: cannot load the embedded font for chart text", path.display())]
    Font { path: PathBuf },

    /// plotters failed while drawing or encoding the image.
    #[error("{}: drawing the chart failed: {message}", path.display())]
    Draw { path: PathBuf, message: String },
}
