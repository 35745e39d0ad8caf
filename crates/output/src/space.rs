//! Room to write: free disk space under a path and available memory, so a command can refuse
//! an output that cannot fit before it writes half of it.

use std::ffi::CString;
use std::path::Path;

/// Bytes free to an unprivileged writer on the file system holding `path` (or its nearest
/// existing ancestor); `None` when it cannot be measured.
pub fn free_space(path: &Path) -> Option<u64> {
    let mut p = path;
    while !p.exists() {
        p = p
            .parent()
            .filter(|q| !q.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if p == Path::new(".") {
            break;
        }
    }
    let c = CString::new(p.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statvfs is plain old data; all-zero bytes are a valid value of it.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a properly sized out-parameter.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    (rc == 0).then(|| (st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// `MemAvailable` of `/proc/meminfo` in bytes; `None` where there is no such file.
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb.saturating_mul(1024))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_space_is_measured_for_a_path_that_does_not_exist_yet() {
        let tmp = tempfile::tempdir().unwrap();
        let here = free_space(tmp.path()).unwrap();
        assert!(here > 0);
        let deeper = free_space(&tmp.path().join("a/b/c")).unwrap();
        // Same file system; other writers may change it a little between the two calls.
        assert!(deeper.abs_diff(here) < here / 10 + (64 << 20));
        assert!(available_memory().unwrap() > 0);
    }
}
