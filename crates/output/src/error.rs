use std::path::{Path, PathBuf};

pub type Result<T, E = OutputError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{}: in use by another lantern process (pid {pid}); wait for it to finish or choose another output",
        dir.display()
    )]
    Locked { dir: PathBuf, pid: String },
    #[error("{}: writing there would overwrite the input {what} {}", output.display(), input.display())]
    OutputInsideInput {
        /// What the input is: a flag (`--acts`) or a noun (`store`).
        what: String,
        output: PathBuf,
        input: PathBuf,
    },
}

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> OutputError + '_ {
    move |source| OutputError::Io {
        path: path.to_path_buf(),
        source,
    }
}
