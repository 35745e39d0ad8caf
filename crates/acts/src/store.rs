//! `Store`: an opened, validated activation store directory.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{ActsError, Result, invalid, io_err};
use crate::manifest::Manifest;
use crate::shard::{Layout, Shard, map_file, parse_layout};

/// A read-only view of a store. Cheap to clone (shared state behind an `Arc`); `Send + Sync`.
#[derive(Clone, Debug)]
pub struct Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    manifest: Manifest,
    layouts: Vec<Layout>,
    /// Row index (in manifest order) where each shard starts; one extra entry = total rows.
    starts: Vec<u64>,
    has_roles: bool,
}

impl Store {
    /// Reads and validates the manifest (known format_version, dtype, shard files exist with the
    /// manifest's byte size, each shard's safetensors header: acts shape [rows, d_model] and dtype,
    /// the id tensors of length rows). Checksums are checked by [`verify`](Store::verify) and
    /// [`shard`](Store::shard), not here.
    pub fn open(dir: &Path) -> Result<Self> {
        let manifest = Manifest::load(dir)?;
        let mut layouts = Vec::with_capacity(manifest.shards.len());
        let mut starts = Vec::with_capacity(manifest.shards.len() + 1);
        let mut total = 0u64;
        let mut has_roles = None;
        for entry in &manifest.shards {
            let path = dir.join(&entry.file);
            let len = fs::metadata(&path).map_err(io_err(&path))?.len();
            if len != entry.bytes {
                return Err(invalid(
                    &path,
                    format!(
                        "file has {len} bytes, the manifest expects {} (truncated or replaced?)",
                        entry.bytes
                    ),
                ));
            }
            // Mapping reads only the header pages here.
            let mmap = map_file(&path)?;
            let layout = parse_layout(
                &path,
                &mmap,
                Some(entry.rows),
                manifest.d_model,
                manifest.dtype,
            )?;
            let roles = layout.role.is_some();
            if *has_roles.get_or_insert(roles) != roles {
                return Err(invalid(
                    &path,
                    "some shards have a `role` tensor and others do not",
                ));
            }
            if layout.label.is_some() == manifest.labels.is_empty() {
                return Err(invalid(
                    &path,
                    format!(
                        "the manifest names {} labels but this shard {} a `label` tensor",
                        manifest.labels.len(),
                        if layout.label.is_some() {
                            "has"
                        } else {
                            "lacks"
                        }
                    ),
                ));
            }
            starts.push(total);
            total += entry.rows;
            layouts.push(layout);
        }
        starts.push(total);
        Ok(Store {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                manifest,
                layouts,
                starts,
                has_roles: has_roles.unwrap_or(false),
            }),
        })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.inner.manifest
    }

    /// Total rows over all shards.
    pub fn rows(&self) -> u64 {
        self.inner.manifest.rows
    }

    pub fn d_model(&self) -> usize {
        self.inner.manifest.d_model
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The label names (`label` byte `i` means `labels()[i]`); empty when rows carry no labels.
    pub fn labels(&self) -> &[String] {
        &self.inner.manifest.labels
    }

    /// The index of label `name`, or an error naming the labels the store has.
    pub fn label_index(&self, name: &str) -> Result<u8> {
        match self.labels().iter().position(|l| l == name) {
            Some(i) => Ok(i as u8),
            None => Err(invalid(
                &self.inner.dir.join(crate::manifest::MANIFEST_FILE),
                if self.labels().is_empty() {
                    format!("no label '{name}': the store has no labels")
                } else {
                    format!(
                        "no label '{name}': the store's labels are {}",
                        self.labels().join(", ")
                    )
                },
            )),
        }
    }

    /// Whether the shards carry the `role` tensor.
    pub fn has_roles(&self) -> bool {
        self.inner.has_roles
    }

    /// Number of shards.
    pub fn num_shards(&self) -> usize {
        self.inner.layouts.len()
    }

    /// Rows in shard `i` (from the manifest; no file access).
    pub fn shard_rows(&self, i: usize) -> u64 {
        self.inner.starts[i + 1] - self.inner.starts[i]
    }

    /// Checks every shard's crc32 against the manifest, and that every value is finite (a
    /// store written before the writer refused NaN rows, or edited by hand, may hold some).
    pub fn verify(&self) -> Result<()> {
        let mut row = vec![0.0f32; self.d_model()];
        for i in 0..self.num_shards() {
            let shard = self.shard(i)?;
            for r in 0..shard.rows() {
                shard.row_f32(r, &mut row);
                if row.iter().any(|x| !x.is_finite()) {
                    return Err(ActsError::NonFinite {
                        path: self.inner.dir.join(&self.inner.manifest.shards[i].file),
                        row: self.inner.starts[i] + r as u64,
                    });
                }
            }
        }
        Ok(())
    }

    /// Memory-maps shard i and checks its crc32 (ActsError naming the file on mismatch).
    pub fn shard(&self, i: usize) -> Result<Shard> {
        let (entry, layout) = match (self.inner.manifest.shards.get(i), self.inner.layouts.get(i)) {
            (Some(e), Some(l)) => (e, l),
            _ => {
                return Err(crate::error::usage(
                    &self.inner.dir,
                    format!("shard {i} requested, the store has {}", self.num_shards()),
                ));
            }
        };
        let path = self.inner.dir.join(&entry.file);
        let mmap = map_file(&path)?;
        if mmap.len() as u64 != entry.bytes {
            return Err(invalid(
                &path,
                format!(
                    "file has {} bytes, the manifest expects {}",
                    mmap.len(),
                    entry.bytes
                ),
            ));
        }
        let actual = crc32fast::hash(&mmap);
        if actual != entry.crc32 {
            return Err(ActsError::Checksum {
                path,
                expected: entry.crc32,
                actual,
            });
        }
        Ok(Shard::new(
            mmap,
            path,
            layout.clone(),
            self.d_model(),
            self.inner.manifest.dtype,
        ))
    }
}
