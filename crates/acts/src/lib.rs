//! Activation store: model activations on disk as sharded safetensors files with a crash-safe
//! manifest, memory-mapped reading, shuffled streaming batches with exact resume, import/export
//! of `.npy`/`.npz`/`.safetensors`, and synthetic stores with known ground-truth features.
//!
//! A store is a directory holding `manifest.json` and `shard-NNNNN.safetensors` files, each with
//! `acts [n, d]` (f32, f16 or bf16), `token_ids`, `seq_ids`, `positions` (`[n]` u32) and an
//! optional `role [n]` u8 (0 = prompt, 1 = answer) and `label [n]` u8 (which contrasting set the
//! row's sequence belongs to; the manifest names the labels). [`StoreWriter`] appends rows and commits
//! each finished shard atomically, [`Store`] opens and validates a store, and [`BatchReader`]
//! streams batches from it.
//!
//! ```
//! use lantern_acts::{BatchReader, Dtype, ReaderOptions, Store, StoreMeta, StoreWriter, WriterOptions};
//! let dir = tempfile::tempdir()?;
//! let meta = StoreMeta::new(2, Dtype::F32, "blocks.0.hook_resid_post", "toy");
//! let mut w = StoreWriter::create(dir.path(), meta, WriterOptions { shard_rows: 2, ..Default::default() })?;
//! w.push(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[7, 8, 9], &[0, 0, 0], &[0, 1, 2], None)?;
//! w.finish()?;
//!
//! let store = Store::open(dir.path())?;
//! assert_eq!((store.rows(), store.manifest().shards.len()), (3, 2));
//! let opts = ReaderOptions { batch_rows: 3, shuffle_rows: 16, seed: 1, epochs: Some(1), ..Default::default() };
//! let batch = BatchReader::new(store, opts)?.next_batch()?.expect("one batch");
//! let mut ids = batch.token_ids.clone();
//! ids.sort();
//! assert_eq!(ids, [7, 8, 9]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod error;
mod export;
mod import;
mod manifest;
pub mod npy;
mod reader;
pub mod rng;
mod shard;
mod store;
mod synth;
mod writer;

pub use error::{ActsError, Result};
pub use export::export_npy;
pub use import::{ImportOptions, ImportReport, import_file};
pub use manifest::{
    Dtype, FORMAT_VERSION, MANIFEST_FILE, MAX_LABELS, Manifest, Role, ShardEntry, StoreMeta,
    shard_file_name,
};
pub use reader::{Batch, BatchReader, Cursor, NonFinite, ReaderOptions, ShuffleScope};
pub use rng::{Permutation, Rng};
pub use shard::Shard;
pub use store::Store;
pub use synth::{GROUND_TRUTH_FILE, GroundTruth, Hierarchy, LabelledRows, SynthConfig, synthesize};
pub use writer::{Rows, StoreWriter, WriterOptions};
