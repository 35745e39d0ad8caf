//! The one error type of `lantern-sae`.
//!
//! Every variant renders as a single line that names the file involved (when there is one)
//! and says what was expected, so a CLI can print it as is. New variants are added here as
//! the crate grows (trainer, checkpoints, metrics); keep each message one line.

use std::path::PathBuf;

/// Errors of `lantern-sae`.
#[derive(thiserror::Error, Debug)]
pub enum SaeError {
    /// An output that cannot be written safely (locked, inside an input) or an I/O error of
    /// the output mechanism.
    #[error(transparent)]
    Output(#[from] lantern_output::OutputError),

    /// A training or evaluation setting is out of range or inconsistent.
    #[error("{0}")]
    Config(String),

    /// A setting (a field of a config struct) has a value outside its range.
    #[error("{field} = {value}: expected {expected}")]
    Setting {
        field: &'static str,
        value: String,
        expected: &'static str,
    },

    /// A checkpoint was written by a run with other settings than the one resuming it.
    #[error("{}: written with a different configuration ({difference})", path.display())]
    ConfigMismatch { path: PathBuf, difference: String },

    /// The activation store has no more rows to train on (every row filtered out, or the
    /// reader stopped).
    #[error("the activation store ran out of usable rows")]
    StoreExhausted,

    /// The compute device is missing or failed.
    #[error("{0}")]
    Device(String),

    /// The activation store failed (its message names the file).
    #[error(transparent)]
    Acts(#[from] lantern_acts::ActsError),

    /// The file system refused a read or write.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A file exists but its contents are not what the format requires
    /// (bad JSON, a bad safetensors header, a missing or ill-typed `cfg.json` key, ...).
    #[error("{}: {msg}", path.display())]
    Format { path: PathBuf, msg: String },

    /// A directory is missing a file that its format requires.
    #[error("{}: missing {file} ({what})", path.display())]
    MissingFile {
        /// The directory that was searched.
        path: PathBuf,
        /// The file name that should be there, e.g. `sae_weights.safetensors`.
        file: String,
        /// Why it is needed, e.g. "the SAELens weights next to cfg.json".
        what: String,
    },

    /// A path holds none of the SAE layouts this crate reads.
    #[error(
        "{}: not a recognised SAE (expected cfg.json + sae_weights.safetensors (SAELens), \
         cfg.json + sae.safetensors (sparsify), params.npz or params.safetensors (Gemma Scope))",
        path.display()
    )]
    UnknownFormat { path: PathBuf },

    /// A weights file lacks a tensor the format requires.
    #[error("{}: missing tensor `{name}`", path.display())]
    MissingTensor { path: PathBuf, name: String },

    /// A tensor has the wrong shape.
    #[error("{}: tensor `{name}` has shape {got:?}, expected {expected:?}", path.display())]
    Shape {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },

    /// A tensor has a dtype that cannot be converted to f32.
    #[error("{}: tensor `{name}` has dtype {dtype}, expected F32, F16, BF16 or F64", path.display())]
    Dtype {
        path: PathBuf,
        name: String,
        dtype: String,
    },

    /// `cfg.json` names an architecture this crate does not know.
    #[error(
        "{}: unknown SAE architecture \"{arch}\" (expected standard, topk, jumprelu or batchtopk)",
        path.display()
    )]
    UnknownArchitecture { path: PathBuf, arch: String },

    /// A known feature of a format that `SaeWeights` cannot represent (gated SAEs,
    /// transcoders, skip connections, run-time input normalisation, ...).
    #[error("{}: unsupported {what}", path.display())]
    Unsupported { path: PathBuf, what: String },

    /// In-memory SAE weights that are inconsistent (lengths, missing threshold, NaN).
    #[error("invalid SAE weights: {msg}")]
    Invalid { msg: String },

    /// The loss became NaN or infinite.
    #[error(
        "training diverged at step {step}: the reconstruction error is {value} (lower the learning rate, or keep gradient clipping on)"
    )]
    Diverged { step: u64, value: f64 },
}

/// `Result` with [`SaeError`].
pub type Result<T> = std::result::Result<T, SaeError>;

impl SaeError {
    /// An [`SaeError::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SaeError::Io {
            path: path.into(),
            source,
        }
    }

    /// An [`SaeError::Format`] for `path`.
    pub fn format(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        SaeError::Format {
            path: path.into(),
            msg: msg.into(),
        }
    }
}
