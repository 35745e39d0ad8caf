use std::path::PathBuf;

pub type Result<T, E = OrganismError> = std::result::Result<T, E>;

/// What can go wrong building, training or judging the organism.
#[derive(Debug, thiserror::Error)]
pub enum OrganismError {
    #[error(transparent)]
    Lm(#[from] lantern_lm::LmError),
    #[error(transparent)]
    Output(#[from] lantern_output::OutputError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A setting out of range (names the setting and the value).
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Format(String),
    /// Reading a tensor back from the device failed.
    #[error("reading {what} from the device: {msg}")]
    DeviceRead { what: String, msg: String },
    /// Training diverged (non-finite loss).
    #[error("training diverged at step {step}: loss {loss}")]
    Diverged { step: usize, loss: f32 },
}

impl OrganismError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
