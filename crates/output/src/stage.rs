//! Directories replaced as a unit.

use std::path::{Path, PathBuf};

use crate::atomic::{parent, sync_dir};
use crate::error::{Result, io};

/// A staging sibling of `target` (`.NAME.stage-PID`) into which a caller writes a new set of
/// files; [`DirStage::commit`] then carries over every other entry of `target` (by hard link,
/// so a lock file or a training checkpoint stays the same file), fsyncs, and swaps the two
/// directories with one `renameat2(RENAME_EXCHANGE)`. Before the swap `target` is entirely the
/// old directory, after it entirely the new one: a kill at any point never leaves a
/// `cfg.json` beside another save's weights. The old directory is then deleted. Dropped without
/// a commit, the staging directory is removed and `target` is untouched.
///
/// Where the exchange is not available (not Linux, or a filesystem without it) the swap is two
/// renames (target aside, staging in): a crash between them leaves the old directory under
/// `.NAME.old-PID` and none at `target`, still never a mix.
pub struct DirStage {
    target: PathBuf,
    staged: PathBuf,
    committed: bool,
}

impl DirStage {
    /// A fresh, empty staging directory beside `target` (a leftover of an earlier crash with
    /// the same name is removed first; the caller holds `target`'s [`crate::OutputLock`]).
    pub fn new(target: &Path) -> Result<Self> {
        let name = target
            .file_name()
            .map_or_else(|| "output".into(), |n| n.to_string_lossy().into_owned());
        let dir = parent(target);
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        remove_stale(dir, &name)?;
        let staged = dir.join(format!(".{name}.stage-{}", std::process::id()));
        if staged.exists() {
            std::fs::remove_dir_all(&staged).map_err(io(&staged))?;
        }
        std::fs::create_dir(&staged).map_err(io(&staged))?;
        Ok(Self {
            target: target.to_path_buf(),
            staged,
            committed: false,
        })
    }

    /// Where to write the new files.
    pub fn path(&self) -> &Path {
        &self.staged
    }

    /// Swaps the staged directory in. `replaced` names the entries of `target` that belong to
    /// the unit being written: they are not carried over even when the new unit lacks them
    /// (a stale `sparsity.safetensors` must not survive beside new weights).
    pub fn commit(mut self, replaced: &[&str]) -> Result<()> {
        if self.target.exists() {
            carry_over(&self.target, &self.staged, replaced)?;
        }
        sync_tree(&self.staged)?;
        let dir = parent(&self.target).to_path_buf();
        if !self.target.exists() {
            std::fs::rename(&self.staged, &self.target).map_err(io(&self.target))?;
        } else if exchange(&self.staged, &self.target).is_err() {
            let mut aside = self.staged.clone().into_os_string();
            aside.push(".old");
            let aside = PathBuf::from(aside);
            std::fs::rename(&self.target, &aside).map_err(io(&self.target))?;
            std::fs::rename(&self.staged, &self.target).map_err(io(&self.target))?;
            std::fs::remove_dir_all(&aside).map_err(io(&aside))?;
        }
        self.committed = true;
        sync_dir(&dir)?;
        // After the exchange the staging name holds the old directory.
        if self.staged.exists() {
            std::fs::remove_dir_all(&self.staged).map_err(io(&self.staged))?;
        }
        Ok(())
    }
}

impl Drop for DirStage {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.staged);
        }
    }
}

/// Removes `.NAME.stage-PID` (and `.NAME.stage-PID.old`) siblings whose process is gone: the
/// new directory of a save killed before its swap, or the old one of a save killed after it.
/// A live process's stage is left alone. (Liveness is read from /proc; elsewhere nothing is
/// removed.)
fn remove_stale(dir: &Path, name: &str) -> Result<()> {
    let prefix = format!(".{name}.stage-");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = file
            .strip_prefix(&prefix)
            .map(|p| p.trim_end_matches(".old"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if process_gone(pid) {
            let path = entry.path();
            std::fs::remove_dir_all(&path).map_err(io(&path))?;
        }
    }
    Ok(())
}

/// Whether process `pid` has certainly ended (read from /proc; where there is no /proc, or for
/// this process, it is taken to be alive, so nothing of a live run is ever removed).
pub(crate) fn process_gone(pid: u32) -> bool {
    pid != std::process::id()
        && Path::new("/proc/self").exists()
        && !Path::new("/proc").join(pid.to_string()).exists()
}

/// Hard-links (files) or recreates (directories) every entry of `from` that `to` lacks and
/// `replaced` does not name.
fn carry_over(from: &Path, to: &Path, replaced: &[&str]) -> Result<()> {
    for entry in std::fs::read_dir(from).map_err(io(from))? {
        let entry = entry.map_err(io(from))?;
        let name = entry.file_name();
        if replaced.iter().any(|r| name == *r) {
            continue;
        }
        let dst = to.join(&name);
        if dst.symlink_metadata().is_ok() {
            continue;
        }
        let src = entry.path();
        let kind = entry.file_type().map_err(io(&src))?;
        if kind.is_dir() {
            std::fs::create_dir(&dst).map_err(io(&dst))?;
            carry_over(&src, &dst, &[])?;
        } else if kind.is_symlink() {
            let target = std::fs::read_link(&src).map_err(io(&src))?;
            std::os::unix::fs::symlink(target, &dst).map_err(io(&dst))?;
        } else {
            std::fs::hard_link(&src, &dst)
                .or_else(|_| std::fs::copy(&src, &dst).map(|_| ()))
                .map_err(io(&dst))?;
        }
    }
    Ok(())
}

/// fsync of every regular file and directory under `dir` (the files written into the stage
/// may have come from writers that did not sync).
fn sync_tree(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(io(&path))?;
        if kind.is_dir() {
            sync_tree(&path)?;
        } else if kind.is_file() {
            std::fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(io(&path))?;
        }
    }
    sync_dir(dir)
}

#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let ca = CString::new(a.as_os_str().as_bytes())?;
    let cb = CString::new(b.as_os_str().as_bytes())?;
    // SAFETY: both arguments are valid NUL-terminated paths that live across the call;
    // renameat2 reads them and touches no other memory of ours.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn exchange(_a: &Path, _b: &Path) -> std::io::Result<()> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(p: &Path) -> String {
        std::fs::read_to_string(p).unwrap()
    }

    #[test]
    fn a_commit_replaces_the_unit_and_carries_the_rest_over_as_the_same_files() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("sae");
        std::fs::create_dir_all(out.join("notes")).unwrap();
        for (f, s) in [
            ("cfg.json", "old cfg"),
            ("sae_weights.safetensors", "old w"),
            ("sparsity.safetensors", "old sparsity"),
            ("checkpoint.safetensors", "ckpt"),
            ("notes/a.txt", "mine"),
        ] {
            std::fs::write(out.join(f), s).unwrap();
        }
        let lock = crate::OutputLock::acquire(&out).unwrap();
        let stage = DirStage::new(&out).unwrap();
        std::fs::write(stage.path().join("cfg.json"), "new cfg").unwrap();
        std::fs::write(stage.path().join("sae_weights.safetensors"), "new w").unwrap();
        stage
            .commit(&[
                "cfg.json",
                "sae_weights.safetensors",
                "sparsity.safetensors",
            ])
            .unwrap();
        assert_eq!(read(&out.join("cfg.json")), "new cfg");
        assert_eq!(read(&out.join("sae_weights.safetensors")), "new w");
        assert!(
            !out.join("sparsity.safetensors").exists(),
            "stale unit file kept"
        );
        assert_eq!(read(&out.join("checkpoint.safetensors")), "ckpt");
        assert_eq!(read(&out.join("notes/a.txt")), "mine");
        // The lock file is the same file: still held.
        assert!(crate::OutputLock::acquire(&out).is_err());
        drop(lock);
        // Nothing left beside the output.
        let names: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["sae"]);
    }

    #[test]
    fn an_uncommitted_stage_leaves_the_target_untouched() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("sae");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("cfg.json"), "old").unwrap();
        {
            let stage = DirStage::new(&out).unwrap();
            std::fs::write(stage.path().join("cfg.json"), "new").unwrap();
        }
        assert_eq!(read(&out.join("cfg.json")), "old");
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
        // A target that does not exist yet is created by the commit.
        let fresh = tmp.path().join("fresh");
        let stage = DirStage::new(&fresh).unwrap();
        std::fs::write(stage.path().join("cfg.json"), "x").unwrap();
        stage.commit(&[]).unwrap();
        assert_eq!(read(&fresh.join("cfg.json")), "x");
    }
}
