//! The one error type of `lantern-search`. Every message is one line and names the file (or
//! the setting) it is about.

use std::path::{Path, PathBuf};

/// Errors of feature search.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// An activation store failed (its message names the file).
    #[error(transparent)]
    Acts(#[from] lantern_acts::ActsError),
    /// An SAE failed to load or run (its message names the file).
    #[error(transparent)]
    Sae(#[from] lantern_sae::SaeError),
    /// An output could not be written (its message names the file).
    #[error(transparent)]
    Output(#[from] lantern_output::OutputError),
    /// A model or tokenizer failed (its message names the file).
    #[error(transparent)]
    Lm(#[from] lantern_lm::LmError),
    /// The file system refused a read or write.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file (or store) exists but does not hold what this operation needs: a direction of
    /// another width, a store at another hook, no selected tokens, unpaired sequences, ...
    #[error("{}: {msg}", path.display())]
    Input { path: PathBuf, msg: String },
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

/// `Result` with [`SearchError`].
pub type Result<T> = std::result::Result<T, SearchError>;

/// A [`SearchError::Input`] about `path`.
pub(crate) fn input(path: &Path, msg: impl Into<String>) -> SearchError {
    SearchError::Input {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// Wraps an I/O error with the path it concerns.
pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SearchError + '_ {
    move |source| SearchError::Io {
        path: path.to_path_buf(),
        source,
    }
}
