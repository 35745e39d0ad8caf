//! How Lantern writes results, so that a crash, a kill, a full disk or a second process never
//! leaves a researcher with a destroyed input or a directory that mixes two runs.
//!
//! - [`OutputLock`]: an exclusive advisory lock on an output directory for the length of a
//!   run; a second process fails at once with an error naming the holder's pid.
//! - [`AtomicFile`] / [`write_atomic`]: a file appears whole or not at all (a temporary
//!   sibling, fsync, rename, fsync of the directory).
//! - [`DirStage`]: a directory whose files form one unit (an SAE: `cfg.json` with its weights)
//!   is written into a staging sibling and swapped in by one atomic exchange, so a reader finds
//!   the old unit or the new one, never a mix. Other files already there are carried over.
//! - [`check_not_inside`]: an output that is, or lies inside, an input is refused before
//!   anything is written.
//! - [`fingerprint`]: the identity of an input by its content, so a resumed run can tell that
//!   its model, adapter or store is the one it started with.
//! - [`free_space`] / [`available_memory`]: room to write, so an output that cannot fit is
//!   refused before it is half written.
//!
//! ```
//! use lantern_output::{DirStage, OutputLock, check_not_inside, write_atomic};
//! # let tmp = tempfile::tempdir().unwrap();
//! let out = tmp.path().join("sae");
//! let store = tmp.path().join("store");
//! check_not_inside(&out, &[("--acts", store.as_path())]).unwrap();
//! let _lock = OutputLock::acquire(&out).unwrap(); // held until dropped
//! assert!(OutputLock::acquire(&out).is_err()); // a second holder is refused
//!
//! let stage = DirStage::new(&out).unwrap();
//! write_atomic(&stage.path().join("cfg.json"), b"{}").unwrap();
//! stage.commit(&["cfg.json"]).unwrap();
//! assert_eq!(std::fs::read(out.join("cfg.json")).unwrap(), b"{}");
//! ```

mod atomic;
mod error;
mod identity;
mod lock;
mod paths;
mod space;
mod stage;

pub use atomic::{AtomicFile, sync_dir, write_atomic};
pub use error::{OutputError, Result};
pub use identity::fingerprint;
pub use lock::{LOCK_FILE, OutputLock};
pub use paths::check_not_inside;
pub use space::{available_memory, free_space};
pub use stage::DirStage;
