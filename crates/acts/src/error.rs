//! The crate's one error type. Every message is one line and names the file it is about.

use std::path::{Path, PathBuf};

/// Errors from reading, writing, importing or exporting an activation store.
#[derive(Debug, thiserror::Error)]
pub enum ActsError {
    /// An operating-system error while touching `path`.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file exists but does not hold what was expected.
    #[error("{}: {msg}", path.display())]
    Invalid { path: PathBuf, msg: String },
    /// A shard's bytes do not match the crc32 recorded in the manifest.
    #[error(
        "{}: checksum mismatch: manifest expects crc32 {expected:08x}, file has {actual:08x}",
        path.display()
    )]
    Checksum {
        path: PathBuf,
        expected: u32,
        actual: u32,
    },
    /// `create` found a store already in place.
    #[error("{}: a store already exists here; write to a new or empty directory", path.display())]
    AlreadyExists { path: PathBuf },
    /// A resumed store was written with different metadata.
    #[error("{}: {field} differs: store has {stored}, writer asked for {requested}", path.display())]
    MetaMismatch {
        path: PathBuf,
        field: &'static str,
        stored: String,
        requested: String,
    },
    /// A row holds NaN or an infinity.
    #[error("{}: row {row} has a non-finite value", path.display())]
    NonFinite { path: PathBuf, row: u64 },
    /// A named array or tensor is not in the file.
    #[error("{}: no array named {key:?}; available: {}", path.display(), available.join(", "))]
    MissingKey {
        path: PathBuf,
        key: String,
        available: Vec<String>,
    },
    /// An output that cannot be written safely: locked by another process, or inside an input.
    #[error(transparent)]
    Output(#[from] lantern_output::OutputError),
    /// The caller passed arguments that cannot be used (wrong lengths, bad options).
    #[error("{}: {msg}", path.display())]
    Usage { path: PathBuf, msg: String },
}

/// `Result` with [`ActsError`].
pub type Result<T> = std::result::Result<T, ActsError>;

/// Wraps an I/O error with the path it concerns.
pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ActsError + '_ {
    move |source| ActsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// An [`ActsError::Invalid`] for `path`.
pub(crate) fn invalid(path: &Path, msg: impl Into<String>) -> ActsError {
    ActsError::Invalid {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// An [`ActsError::Usage`] for `path`.
pub(crate) fn usage(path: &Path, msg: impl Into<String>) -> ActsError {
    ActsError::Usage {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}
