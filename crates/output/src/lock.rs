//! Exclusive output locks.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{OutputError, Result, io};

/// The lock file inside a locked directory.
pub const LOCK_FILE: &str = ".lantern.lock";

/// An exclusive advisory lock (`flock`) on `DIR/.lantern.lock`, held until the value is dropped
/// or the process ends (the kernel releases it on a crash or `kill -9`, so a stale lock file
/// never blocks a rerun). The file holds the holder's pid for the error message of the next
/// comer. The file itself stays: deleting it would let two processes lock two different files.
#[derive(Debug)]
pub struct OutputLock {
    _file: File,
    dir: PathBuf,
}

impl OutputLock {
    /// Creates `dir` (and its parents) when missing and locks it; fails at once, naming the
    /// holder's pid, when another process holds the lock.
    pub fn acquire(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io(&path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = match pid.trim() {
                    "" => "unknown".to_string(),
                    p => p.to_string(),
                };
                return Err(OutputError::Locked {
                    dir: dir.to_path_buf(),
                    pid,
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(&path)(e)),
        }
        file.set_len(0).map_err(io(&path))?;
        file.seek(SeekFrom::Start(0)).map_err(io(&path))?;
        writeln!(file, "{}", std::process::id()).map_err(io(&path))?;
        Ok(Self {
            _file: file,
            dir: dir.to_path_buf(),
        })
    }

    /// The locked directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_holders_pid_until_it_lets_go() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        let first = OutputLock::acquire(&dir).unwrap();
        let e = OutputLock::acquire(&dir).unwrap_err().to_string();
        assert!(
            e.contains(&format!("pid {}", std::process::id())) && e.contains("in use"),
            "{e}"
        );
        drop(first);
        OutputLock::acquire(&dir).unwrap();
    }
}
