//! Files that appear whole or not at all.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{Result, io};

/// A file written under a temporary sibling name (`.NAME.tmp-PID`) and renamed over `path` by
/// [`AtomicFile::commit`] after an fsync, followed by an fsync of the directory: after a crash
/// `path` holds the old content or the new, never a truncated or partial one. Dropped without
/// a commit (an error on the way), the temporary file is removed and `path` is untouched; the
/// temporary file of a process killed before it could clean up is removed by the next
/// `create` of the same path. Missing parent directories are created (as every command's
/// output directory is).
pub struct AtomicFile {
    path: PathBuf,
    tmp: PathBuf,
    w: Option<BufWriter<File>>,
}

impl AtomicFile {
    pub fn create(path: &Path) -> Result<Self> {
        let name = path
            .file_name()
            .map_or_else(|| "output".into(), |n| n.to_string_lossy().into_owned());
        let dir = parent(path);
        if !dir.as_os_str().is_empty() && !dir.exists() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        remove_stale_tmp(dir, &name);
        let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
        let file = File::create(&tmp).map_err(io(&tmp))?;
        Ok(Self {
            path: path.to_path_buf(),
            tmp,
            w: Some(BufWriter::with_capacity(1 << 20, file)),
        })
    }

    /// The final path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes, fsyncs, renames into place and fsyncs the directory.
    pub fn commit(mut self) -> Result<()> {
        let w = self.w.take().expect("committed once");
        let file = w.into_inner().map_err(|e| io(&self.tmp)(e.into_error()))?;
        file.sync_all().map_err(io(&self.tmp))?;
        drop(file);
        std::fs::rename(&self.tmp, &self.path).map_err(io(&self.path))?;
        sync_dir(parent(&self.path))
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.w.as_mut().expect("not committed").write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.w.as_mut().expect("not committed").flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.w.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Removes `.NAME.tmp-PID` siblings left by processes that are gone (best effort: a file that
/// cannot be removed stays, and the write goes on under its own name).
fn remove_stale_tmp(dir: &Path, name: &str) {
    let prefix = format!(".{name}.tmp-");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let pid = file
            .strip_prefix(&prefix)
            .and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(crate::stage::process_gone) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Writes `bytes` to `path` through an [`AtomicFile`].
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = AtomicFile::create(path)?;
    f.write_all(bytes).map_err(io(path))?;
    f.commit()
}

/// fsync of a directory, so the renames in it survive a power cut.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

pub(crate) fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_parent_directories_are_created() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("a/b/x.safetensors");
        write_atomic(&path, b"x").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"x");
    }

    #[test]
    fn an_uncommitted_file_leaves_the_old_content_and_no_temporary() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("x.json");
        write_atomic(&path, b"old").unwrap();
        {
            let mut f = AtomicFile::create(&path).unwrap();
            f.write_all(b"half of the new").unwrap();
            // dropped: an error on the way
        }
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
        write_atomic(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
    }

    #[test]
    fn a_killed_writers_temporary_is_removed_by_the_next_write_and_a_live_ones_is_not() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("x.npy");
        // A pid far above pid_max (2²² on Linux) is no running process.
        let dead = tmp.path().join(".x.npy.tmp-4999999");
        std::fs::write(&dead, b"half").unwrap();
        // pid 1 is always running: its temporary may be a write in progress.
        let live = tmp.path().join(".x.npy.tmp-1");
        std::fs::write(&live, b"in progress").unwrap();
        let other = tmp.path().join(".y.npy.tmp-4999999");
        std::fs::write(&other, b"another file's").unwrap();
        write_atomic(&path, b"whole").unwrap();
        assert!(!dead.exists(), "the dead writer's temporary stays");
        assert!(other.exists(), "another file's temporary was touched");
        assert!(live.exists(), "a live process's temporary was removed");
        assert_eq!(std::fs::read(&path).unwrap(), b"whole");
    }
}
