//! Sparse autoencoders: the four architectures (ReLU + L1, TopK + AuxK, BatchTopK, JumpReLU),
//! a trainer that streams an activation store on any burn device with a hand-written backward
//! ([`step`], no autodiff), evaluation, crash-safe checkpoints, and the file formats of
//! SAELens, sparsify and Gemma Scope.
//!
//! Weights live on the host as [`SaeWeights`] (the exact f64 reference forward) and on a device
//! as [`Sae`] (what evaluation, feature search and steering encode with). [`load_sae`] reads any
//! supported format; [`save_saelens`] writes SAELens v6, so Python tools read our SAEs as is.
//!
//! ```no_run
//! use burn::tensor::{Device, Tensor, TensorData};
//! use lantern_sae::{Sae, load_sae};
//!
//! let (weights, format) = load_sae("sae/".as_ref())?; // SAELens, sparsify or Gemma Scope
//! let dev = Device::flex();
//! let sae = Sae::from_weights(&weights, &dev)?;
//! let d = weights.cfg.d_in;
//! let x = Tensor::<2>::from_data(TensorData::new(vec![0.5f32; 4 * d], [4, d]), &dev);
//! let f = sae.encode(&x); // [4, d_sae] latent activations
//! let err = sae.error(&x); // x − x̂
//! println!("{format:?}: latent 7 points along {:?}", sae.decoder_row(7).dims());
//! # Ok::<(), lantern_sae::SaeError>(())
//! ```
//!
//! Modules: [`weights`] (host weights and config), [`sae`] (device inference),
//! [`train`](mod@train) (the loop, lockstep sweeps and the short-run learning-rate probe) with
//! [`step`] (losses and gradients) and [`cpu`] (the TopK and BatchTopK step on the CPU without
//! burn, its loops compiled per instruction set by [`isa`]), [`optim`], [`init`], [`sparse`] and [`topk`]; [`rows`] (which rows are trained and
//! evaluated on), [`eval`], [`checkpoint`], [`formats`], [`device`] (choosing cpu / wgpu /
//! vulkan).

pub mod error;
pub mod formats;
pub mod weights;
pub use error::{Result, SaeError};
pub use formats::{SAELENS_FILES, SaeFormat, load_sae, save_saelens, write_saelens_files};
pub use weights::{Arch, SaeConfig, SaeWeights};

pub mod checkpoint;
pub mod cpu;
pub mod device;
pub mod eval;
pub mod init;
pub mod isa;
pub mod optim;
pub mod params;
pub mod rows;
pub mod sae;
pub mod sparse;
pub mod step;
pub mod topk;
pub mod train;

pub use device::DeviceChoice;
pub use eval::{EvalOptions, EvalReport, evaluate};
pub use rows::{Dropped, RowCut, RowFilter};
pub use sae::{Reconstruction, Sae};
pub use train::{MetricsRow, TrainConfig, TrainEvent, TrainReport, train};
