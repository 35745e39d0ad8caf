//! The identity of an input by its content, for resumes: a run continued with another model,
//! adapter or store under the same file name must be refused, not silently mixed.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use crate::error::{Result, io};

/// Bytes read from each sampled place of a file.
const CHUNK: u64 = 64 * 1024;
/// Sampled places besides the first and the last chunk.
const SAMPLES: u64 = 16;

/// A content fingerprint of a file or a directory: for a file, its size and the CRC32 of its
/// first and last 64 KiB and of 16 chunks spaced evenly between (the whole file when it is
/// small), so two copies of one model agree and a retrained model of the same name and size
/// does not; for a directory, the fingerprints of its files (recursively, by sorted name,
/// hidden files left out) combined. Renaming or moving an input keeps its fingerprint;
/// touching its mtime does too.
pub fn fingerprint(path: &Path) -> Result<String> {
    let meta = std::fs::metadata(path).map_err(io(path))?;
    if meta.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(path)
            .map_err(io(path))?
            .map(|e| e.map(|e| e.path()).map_err(io(path)))
            .collect::<Result<_>>()?;
        entries.sort();
        let mut h = crc32fast::Hasher::new();
        let mut n = 0u64;
        for e in entries {
            let name = e.file_name().map(|n| n.to_string_lossy().into_owned());
            if name.as_deref().is_none_or(|n| n.starts_with('.')) {
                continue;
            }
            h.update(name.unwrap_or_default().as_bytes());
            h.update(fingerprint(&e)?.as_bytes());
            n += 1;
        }
        return Ok(format!("dir:{n}:{:08x}", h.finalize()));
    }
    let size = meta.len();
    let mut f = std::fs::File::open(path).map_err(io(path))?;
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; CHUNK as usize];
    let mut read_at = |offset: u64, h: &mut crc32fast::Hasher| -> Result<()> {
        f.seek(SeekFrom::Start(offset)).map_err(io(path))?;
        let want = CHUNK.min(size - offset) as usize;
        f.read_exact(&mut buf[..want]).map_err(io(path))?;
        h.update(&buf[..want]);
        Ok(())
    };
    if size <= CHUNK * (SAMPLES + 2) {
        let mut offset = 0;
        while offset < size {
            read_at(offset, &mut h)?;
            offset += CHUNK;
        }
    } else {
        read_at(0, &mut h)?;
        for i in 1..=SAMPLES {
            read_at(i * (size - CHUNK) / (SAMPLES + 1), &mut h)?;
        }
        read_at(size - CHUNK, &mut h)?;
    }
    Ok(format!("{size}:{:08x}", h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_agree_and_a_changed_byte_or_file_does_not() {
        let tmp = tempfile::tempdir().unwrap();
        // Large enough to be sampled: a change inside the first chunk is always seen.
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let a = tmp.path().join("a/model.gguf");
        let b = tmp.path().join("b/model.gguf");
        std::fs::create_dir_all(a.parent().unwrap()).unwrap();
        std::fs::create_dir_all(b.parent().unwrap()).unwrap();
        std::fs::write(&a, &big).unwrap();
        std::fs::write(&b, &big).unwrap();
        assert_eq!(fingerprint(&a).unwrap(), fingerprint(&b).unwrap());
        let mut other = big.clone();
        other[100] ^= 1;
        std::fs::write(&b, &other).unwrap();
        assert_ne!(fingerprint(&a).unwrap(), fingerprint(&b).unwrap());
        // Directories: same files agree; one changed file (or an extra one) does not; the
        // output lock and other hidden files do not count.
        let (da, db) = (tmp.path().join("da"), tmp.path().join("db"));
        for d in [&da, &db] {
            std::fs::create_dir_all(d).unwrap();
            std::fs::write(d.join("config.json"), "{}").unwrap();
            std::fs::write(d.join("model.safetensors"), &big[..1000]).unwrap();
        }
        std::fs::write(db.join(".lantern.lock"), "123").unwrap();
        assert_eq!(fingerprint(&da).unwrap(), fingerprint(&db).unwrap());
        std::fs::write(db.join("config.json"), "{ }").unwrap();
        assert_ne!(fingerprint(&da).unwrap(), fingerprint(&db).unwrap());
        std::fs::write(db.join("config.json"), "{}").unwrap();
        std::fs::write(db.join("extra.json"), "{}").unwrap();
        assert_ne!(fingerprint(&da).unwrap(), fingerprint(&db).unwrap());
    }
}
