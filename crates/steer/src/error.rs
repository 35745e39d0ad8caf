//! The one error type of `lantern-steer`. Every message is one line and names the file (or
//! the setting) it is about.

use std::path::{Path, PathBuf};

/// Errors of steering and ablation.
#[derive(Debug, thiserror::Error)]
pub enum SteerError {
    /// A model, tokenizer or adapter failed (its message names the file).
    #[error(transparent)]
    Lm(#[from] lantern_lm::LmError),
    /// An SAE failed to load or run (its message names the file).
    #[error(transparent)]
    Sae(#[from] lantern_sae::SaeError),
    /// A direction file failed to read or write (its message names the file).
    #[error(transparent)]
    Search(#[from] lantern_search::SearchError),
    /// The file system refused a read or write.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file exists but does not hold what this operation needs: a direction of another
    /// width, a layer the model lacks, an SAE from another hook, ...
    #[error("{}: {msg}", path.display())]
    Input { path: PathBuf, msg: String },
    /// A judge failed (an external command that crashed or answered out of format).
    #[error("judge {judge}: {msg}")]
    Judge { judge: String, msg: String },
    /// The compute device failed (e.g. a tensor could not be read back).
    #[error("{0}")]
    Device(String),
    /// A setting (a field of an options struct) has a value outside its range.
    #[error("{field} = {value}: expected {expected}")]
    Setting {
        field: &'static str,
        value: String,
        expected: &'static str,
    },
}

/// `Result` with [`SteerError`].
pub type Result<T> = std::result::Result<T, SteerError>;

/// A [`SteerError::Input`] about `path`.
pub(crate) fn input(path: &Path, msg: impl Into<String>) -> SteerError {
    SteerError::Input {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// Wraps an I/O error with the path it concerns.
pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SteerError + '_ {
    move |source| SteerError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A [`SteerError::Setting`].
pub(crate) fn setting(
    field: &'static str,
    value: impl ToString,
    expected: &'static str,
) -> SteerError {
    SteerError::Setting {
        field,
        value: value.to_string(),
        expected,
    }
}

/// Reads a device tensor back to the host as f32.
pub(crate) fn host<const D: usize>(t: burn::tensor::Tensor<D>, what: &str) -> Result<Vec<f32>> {
    t.try_into_vec_as::<f32>()
        .map_err(|e| SteerError::Device(format!("reading {what} from the device: {e}")))
}
