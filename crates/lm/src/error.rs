//! The one error type of `lantern-lm`.
//!
//! Every variant renders as a single line naming the file, tensor, hook or argument involved
//! and what was expected, so the CLI can print it as is.

use std::path::PathBuf;

/// Errors of `lantern-lm`.
#[derive(thiserror::Error, Debug)]
pub enum LmError {
    /// The file system refused a read.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A file exists but its contents are not what its format requires (bad JSON, a bad
    /// GGUF header, a truncated tensor, ...).
    #[error("{}: {msg}", path.display())]
    Format { path: PathBuf, msg: String },

    /// A weight is missing or has the wrong shape.
    #[error("{}: tensor '{name}': {msg}", path.display())]
    Tensor {
        path: PathBuf,
        name: String,
        msg: String,
    },

    /// The model or file uses something this crate does not implement (an architecture, a
    /// quantization type, a RoPE scaling kind).
    #[error("{}: unsupported {what}", path.display())]
    Unsupported { path: PathBuf, what: String },

    /// The tokenizer or chat template failed.
    #[error("{0}")]
    Tokenizer(String),
    /// Writing an output (staging, atomic files) failed.
    #[error(transparent)]
    Output(#[from] lantern_output::OutputError),

    /// A hook name, layer or position range is invalid for this model.
    #[error("{0}")]
    Hook(String),

    /// A generation or capture setting is out of range.
    #[error("{0}")]
    Config(String),

    /// A setting (a field of an options struct) has a value outside its range.
    #[error("{field} = {value}: expected {expected}")]
    Setting {
        field: &'static str,
        value: String,
        expected: &'static str,
    },

    /// A `tokenizer_config.json` (or the files beside it) holds no chat template.
    #[error(
        "{}: expected a \"chat_template\" entry (or a chat_template.jinja beside it)",
        path.display()
    )]
    NoChatTemplate { path: PathBuf },

    /// Copying a tensor from the device to the host failed.
    /// The model computed NaN or infinities (a NaN weight, a broken config value).
    #[error("{0}")]
    NonFinite(String),

    #[error("reading {what} back from the device: {msg}")]
    DeviceRead { what: String, msg: String },
}

/// `Result` with [`LmError`].
pub type Result<T> = std::result::Result<T, LmError>;

impl LmError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn format(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Self::Format {
            path: path.into(),
            msg: msg.into(),
        }
    }
}
