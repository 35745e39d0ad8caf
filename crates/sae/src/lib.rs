pub mod error;
pub mod formats;
pub mod weights;
pub use error::{Result, SaeError};
pub use formats::{SaeFormat, load_sae, save_saelens};
pub use weights::{Arch, SaeConfig, SaeWeights};

pub mod checkpoint;
pub mod device;
pub mod eval;
pub mod init;
pub mod optim;
pub mod params;
pub mod sparse;
pub mod step;
pub mod topk;
pub mod train;

pub use device::DeviceChoice;
pub use eval::{EvalOptions, EvalReport, evaluate};
pub use train::{MetricsRow, TrainConfig, TrainEvent, TrainReport, train};
