//! `StoreWriter`: appends rows, cuts them into shards, and commits each shard crash-safely.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{ActsError, Result, io_err, usage};
use crate::manifest::{MANIFEST_FILE, Manifest, StoreMeta, shard_file_name, shard_index};
use crate::shard::{ShardBuf, encode_f32, map_file, parse_layout, write_shard};

/// Target size of one shard when `shard_rows` is left at 0.
const AUTO_SHARD_BYTES: usize = 256 << 20;

/// How a writer cuts rows into shards, and what it does with rows it cannot store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriterOptions {
    /// Rows per shard. 0 (the default) picks the count that makes a shard about 256 MiB for
    /// the store's `d_model` and dtype, at least 1.
    pub shard_rows: usize,
    /// Rows holding NaN, an infinity, or a value beyond the store dtype's range (an f16 store
    /// holds |x| ≤ 65504): an error naming the row (false, the default), or dropped and counted
    /// ([`StoreWriter::skipped_non_finite`]).
    pub skip_non_finite: bool,
}

impl WriterOptions {
    /// The rows per shard these options give for `meta`.
    pub fn resolved_shard_rows(&self, meta: &StoreMeta) -> usize {
        if self.shard_rows > 0 {
            return self.shard_rows;
        }
        // acts + three u32 ids + a role and a label byte per row
        let row_bytes = meta.d_model * meta.dtype.size() + 14;
        (AUTO_SHARD_BYTES / row_bytes.max(1)).max(1)
    }
}

/// Rows for [`StoreWriter::push_rows`]: `acts` row-major `[n, d_model]` f32 (converted to the
/// store dtype on write), the id slices of length `n`, and optional per-row roles (0 = prompt,
/// 1 = answer) and labels (indices into [`StoreMeta::labels`]).
#[derive(Clone, Copy, Debug)]
pub struct Rows<'a> {
    pub acts: &'a [f32],
    pub token_ids: &'a [u32],
    pub seq_ids: &'a [u32],
    pub positions: &'a [u32],
    pub roles: Option<&'a [u8]>,
    pub labels: Option<&'a [u8]>,
}

/// Appends rows to a store directory, cutting them into shards of `shard_rows` rows.
///
/// Commit protocol for every finished shard: write `shard-NNNNN.safetensors.tmp`, fsync, rename
/// to `shard-NNNNN.safetensors`, then write `manifest.json.tmp`, fsync, rename over
/// `manifest.json`, fsync the directory. Readers only trust `manifest.json`, so after a kill at
/// any moment the store opens with every finished shard, and [`StoreWriter::open_or_create`]
/// deletes the leftovers and continues after them. Rows still pending when the writer is
/// dropped without [`finish`](StoreWriter::finish) are lost, exactly as after a crash.
pub struct StoreWriter {
    dir: PathBuf,
    manifest: Manifest,
    shard_rows: usize,
    buf: ShardBuf,
    next_index: usize,
    /// Whether rows carry roles; `None` until the first push (or the first shard) decides.
    has_roles: Option<bool>,
    skip_non_finite: bool,
    skipped_non_finite: u64,
}

/// Fails when a push's optional per-row tensor is present where the store's is not, or the
/// other way round (`has` is `None` until the first push decides).
fn same_presence(dir: &Path, what: &str, has: &mut Option<bool>, given: bool) -> Result<()> {
    match *has {
        None => *has = Some(given),
        Some(h) if h != given => {
            return Err(usage(
                dir,
                format!(
                    "push: the store {} {what}, this push {}",
                    if h { "has" } else { "has no" },
                    if given { "has them" } else { "has none" }
                ),
            ));
        }
        Some(_) => {}
    }
    Ok(())
}

impl StoreWriter {
    /// New store; error if `dir` already holds a manifest.json, or holds anything else but an
    /// output lock ([`lantern_output::LOCK_FILE`]): a directory that is not a store of ours is
    /// neither emptied (its shard files might be someone's data) nor adopted (a leftover
    /// `ground_truth.safetensors` would describe other rows). Creates `dir` if needed and writes
    /// an empty manifest at once, so the store opens before the first shard.
    pub fn create(dir: &Path, meta: StoreMeta, opts: WriterOptions) -> Result<Self> {
        if meta.d_model == 0 {
            return Err(usage(dir, "d_model must be at least 1"));
        }
        if meta.labels.len() > crate::manifest::MAX_LABELS {
            return Err(usage(
                dir,
                format!(
                    "{} label names (at most {})",
                    meta.labels.len(),
                    crate::manifest::MAX_LABELS
                ),
            ));
        }
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        check_fresh_dir(dir)?;
        let manifest = Manifest::new(&meta);
        manifest.save_atomic(dir)?;
        Ok(StoreWriter {
            dir: dir.to_path_buf(),
            manifest,
            shard_rows: opts.resolved_shard_rows(&meta),
            buf: ShardBuf::default(),
            next_index: 0,
            has_roles: None,
            skip_non_finite: opts.skip_non_finite,
            skipped_non_finite: 0,
        })
    }

    /// Resume after a crash/kill: keep every shard the manifest lists, delete stray shard/tmp
    /// files the manifest does not list, continue numbering. Errors if meta (d_model, dtype,
    /// hook, model) differs. Creates the store if `dir` holds no manifest.
    pub fn open_or_create(dir: &Path, meta: StoreMeta, opts: WriterOptions) -> Result<Self> {
        let manifest_path = dir.join(MANIFEST_FILE);
        if !manifest_path.exists() {
            return Self::create(dir, meta, opts);
        }
        let manifest = Manifest::load(dir)?;
        let stored = manifest.meta();
        let checks = [
            (
                "d_model",
                stored.d_model.to_string(),
                meta.d_model.to_string(),
            ),
            ("dtype", stored.dtype.to_string(), meta.dtype.to_string()),
            ("hook", stored.hook.clone(), meta.hook.clone()),
            ("model", stored.model.clone(), meta.model.clone()),
            ("labels", stored.labels.join(","), meta.labels.join(",")),
        ];
        for (field, s, r) in checks {
            if s != r {
                return Err(ActsError::MetaMismatch {
                    path: manifest_path,
                    field,
                    stored: s,
                    requested: r,
                });
            }
        }
        let mut listed = HashSet::new();
        let mut next_index = 0;
        for entry in &manifest.shards {
            let path = dir.join(&entry.file);
            let len = fs::metadata(&path).map_err(io_err(&path))?.len();
            if len != entry.bytes {
                return Err(crate::error::invalid(
                    &path,
                    format!("file has {len} bytes, the manifest says {}", entry.bytes),
                ));
            }
            next_index = next_index.max(shard_index(&entry.file).map_or(0, |i| i + 1));
            listed.insert(entry.file.clone());
        }
        let has_roles = match manifest.shards.first() {
            Some(first) => {
                let path = dir.join(&first.file);
                let mmap = map_file(&path)?;
                let layout = parse_layout(
                    &path,
                    &mmap,
                    Some(first.rows),
                    manifest.d_model,
                    manifest.dtype,
                )?;
                Some(layout.role.is_some())
            }
            None => None,
        };
        remove_strays(dir, &listed)?;
        Ok(StoreWriter {
            dir: dir.to_path_buf(),
            shard_rows: opts.resolved_shard_rows(&stored),
            manifest,
            buf: ShardBuf::default(),
            next_index,
            has_roles,
            skip_non_finite: opts.skip_non_finite,
            skipped_non_finite: 0,
        })
    }

    /// Append rows: acts is row-major [n, d_model] f32 (converted to the store dtype on write),
    /// the id slices have length n, roles is None or length n (0 = prompt, 1 = answer).
    /// Whether roles are given is fixed by the first push (or the store's existing shards).
    pub fn push(
        &mut self,
        acts: &[f32],
        token_ids: &[u32],
        seq_ids: &[u32],
        positions: &[u32],
        roles: Option<&[u8]>,
    ) -> Result<()> {
        self.push_rows(Rows {
            acts,
            token_ids,
            seq_ids,
            positions,
            roles,
            labels: None,
        })
    }

    /// Append rows with optional labels. A store whose metadata names labels takes labels with
    /// every push, each below the number of names; a store without label names takes none.
    pub fn push_rows(&mut self, rows: Rows<'_>) -> Result<()> {
        let Rows {
            acts,
            token_ids,
            seq_ids,
            positions,
            roles,
            labels,
        } = rows;
        let n = token_ids.len();
        let d = self.manifest.d_model;
        if acts.len() != n * d {
            return Err(usage(
                &self.dir,
                format!(
                    "push: acts has {} values, expected {n} rows x {d}",
                    acts.len()
                ),
            ));
        }
        if seq_ids.len() != n
            || positions.len() != n
            || roles.is_some_and(|r| r.len() != n)
            || labels.is_some_and(|r| r.len() != n)
        {
            return Err(usage(
                &self.dir,
                format!("push: token_ids has {n} rows but seq_ids/positions/roles/labels differ"),
            ));
        }
        let names = self.manifest.labels.len();
        match labels {
            None if names > 0 => {
                return Err(usage(
                    &self.dir,
                    format!("push: the store has {names} label names, this push no labels"),
                ));
            }
            Some(_) if names == 0 => {
                return Err(usage(
                    &self.dir,
                    "push: labels given, but the store has no label names",
                ));
            }
            Some(l) if l.iter().any(|&v| usize::from(v) >= names) => {
                return Err(usage(
                    &self.dir,
                    format!("push: label values must be below the {names} label names"),
                ));
            }
            _ => {}
        }
        if roles.is_some_and(|r| r.iter().any(|&v| v > 1)) {
            return Err(usage(
                &self.dir,
                "push: role values must be 0 (prompt) or 1 (answer)",
            ));
        }
        if n == 0 {
            return Ok(()); // an empty push decides nothing, not even role presence
        }
        same_presence(&self.dir, "roles", &mut self.has_roles, roles.is_some())?;
        // Checked here, where rows enter the store: a NaN activation or an f16 overflow is
        // never written as if it were data.
        let max = self.manifest.dtype.max_finite();
        let unstorable = |x: &f32| !x.is_finite() || x.abs() > max;
        let bad = |i: &usize| acts[i * d..(i + 1) * d].iter().any(unstorable);
        if let Some(first) = (0..n).find(bad) {
            if !self.skip_non_finite {
                let row = self.rows() + first as u64;
                let x = acts[first * d..(first + 1) * d]
                    .iter()
                    .find(|x| unstorable(x))
                    .copied()
                    .unwrap_or(f32::NAN);
                return Err(if x.is_finite() {
                    usage(
                        &self.dir,
                        format!(
                            "row {row}: {x} does not fit the store's {} (|x| ≤ {max}); use f32 or bf16, or skip such rows",
                            self.manifest.dtype
                        ),
                    )
                } else {
                    ActsError::NonFinite {
                        path: self.dir.clone(),
                        row,
                    }
                });
            }
            let keep: Vec<usize> = (0..n).filter(|i| !bad(i)).collect();
            self.skipped_non_finite += (n - keep.len()) as u64;
            let pick = |v: &[u32]| keep.iter().map(|&i| v[i]).collect::<Vec<_>>();
            let pick8 = |v: &[u8]| keep.iter().map(|&i| v[i]).collect::<Vec<_>>();
            let kept_acts: Vec<f32> = keep
                .iter()
                .flat_map(|&i| acts[i * d..(i + 1) * d].iter().copied())
                .collect();
            let (t, s, p) = (pick(token_ids), pick(seq_ids), pick(positions));
            let (r, l) = (roles.map(pick8), labels.map(pick8));
            return self.push_rows(Rows {
                acts: &kept_acts,
                token_ids: &t,
                seq_ids: &s,
                positions: &p,
                roles: r.as_deref(),
                labels: l.as_deref(),
            });
        }
        let mut start = 0;
        while start < n {
            let take = (self.shard_rows - self.buf.rows()).min(n - start);
            let end = start + take;
            encode_f32(
                self.manifest.dtype,
                &acts[start * d..end * d],
                &mut self.buf.acts,
            );
            self.buf.token_ids.extend_from_slice(&token_ids[start..end]);
            self.buf.seq_ids.extend_from_slice(&seq_ids[start..end]);
            self.buf.positions.extend_from_slice(&positions[start..end]);
            if let Some(r) = roles {
                self.buf
                    .roles
                    .get_or_insert_with(Vec::new)
                    .extend_from_slice(&r[start..end]);
            }
            if let Some(l) = labels {
                self.buf
                    .labels
                    .get_or_insert_with(Vec::new)
                    .extend_from_slice(&l[start..end]);
            }
            start = end;
            if self.buf.rows() == self.shard_rows {
                self.commit_shard()?;
            }
        }
        Ok(())
    }

    /// Rows dropped because they could not be stored (with
    /// [`WriterOptions::skip_non_finite`]).
    pub fn skipped_non_finite(&self) -> u64 {
        self.skipped_non_finite
    }

    /// Rows committed in finished shards plus rows pending.
    pub fn rows(&self) -> u64 {
        self.manifest.rows + self.buf.rows() as u64
    }

    /// Rows in finished shards (what a reopened store will hold).
    pub fn committed_rows(&self) -> u64 {
        self.manifest.rows
    }

    /// Rows per shard this writer uses.
    pub fn shard_rows(&self) -> usize {
        self.shard_rows
    }

    /// Writes the partial last shard and returns the final manifest.
    pub fn finish(mut self) -> Result<Manifest> {
        self.commit_shard()?;
        Ok(self.manifest)
    }

    /// Writes the pending rows as the next shard and publishes it in the manifest.
    fn commit_shard(&mut self) -> Result<()> {
        let rows = self.buf.rows();
        if rows == 0 {
            return Ok(());
        }
        let name = shard_file_name(self.next_index);
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!("{name}.tmp"));
        let (bytes, crc32) =
            write_shard(&tmp, self.manifest.dtype, self.manifest.d_model, &self.buf)?;
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        self.manifest.shards.push(crate::manifest::ShardEntry {
            file: name,
            rows: rows as u64,
            bytes,
            crc32,
        });
        self.manifest.rows += rows as u64;
        if let Err(e) = self.manifest.save_atomic(&self.dir) {
            // Keep the in-memory manifest equal to the one on disk.
            self.manifest.rows -= rows as u64;
            self.manifest.shards.pop();
            return Err(e);
        }
        self.next_index += 1;
        self.buf.acts.clear();
        self.buf.token_ids.clear();
        self.buf.seq_ids.clear();
        self.buf.positions.clear();
        for v in [&mut self.buf.roles, &mut self.buf.labels]
            .into_iter()
            .flatten()
        {
            v.clear();
        }
        Ok(())
    }
}

/// Deletes `shard-NNNNN.safetensors` files not in `listed`, and `shard-*.tmp` /
/// `manifest.json.tmp` leftovers. Other files are left alone.
fn remove_strays(dir: &Path, listed: &HashSet<String>) -> Result<()> {
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let stray_shard = shard_index(&name).is_some() && !listed.contains(&name);
        let stray_tmp = name.ends_with(".tmp")
            && (name.starts_with("shard-") || name == format!("{MANIFEST_FILE}.tmp"));
        if stray_shard || stray_tmp {
            let path = entry.path();
            fs::remove_file(&path).map_err(io_err(&path))?;
        }
    }
    Ok(())
}

/// Refuses a directory that already holds a store ([`ActsError::AlreadyExists`]) or anything
/// but the output lock: a new store never adopts or deletes files it did not write. A missing
/// directory is fine.
pub(crate) fn check_fresh_dir(dir: &Path) -> Result<()> {
    let manifest_path = dir.join(MANIFEST_FILE);
    if manifest_path.exists() {
        return Err(ActsError::AlreadyExists {
            path: manifest_path,
        });
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    let mut foreign = Vec::new();
    for entry in entries {
        let name = entry.map_err(io_err(dir))?.file_name();
        if name != lantern_output::LOCK_FILE {
            foreign.push(name.to_string_lossy().into_owned());
        }
    }
    if !foreign.is_empty() {
        foreign.sort();
        let more = if foreign.len() > 3 { ", ..." } else { "" };
        foreign.truncate(3);
        return Err(usage(
            dir,
            format!(
                "not empty ({}{more}) and not a store (no manifest.json); choose an empty or new directory",
                foreign.join(", ")
            ),
        ));
    }
    Ok(())
}
