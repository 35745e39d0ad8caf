//! `manifest.json`: what a store holds (shape, dtype, provenance) and the list of finished shards
//! with their row counts, byte sizes and crc32 checksums.

use std::fmt;
use std::fs::{self, File};
use std::io::Write;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{ActsError, Result, invalid, io_err};

/// The only manifest `format_version` this crate reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// File name of the manifest inside a store directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// Element type of the stored activations.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    F32,
    F16,
    Bf16,
}

impl Dtype {
    /// The largest magnitude the dtype holds (f32 values beyond it become infinities).
    pub fn max_finite(self) -> f32 {
        match self {
            Dtype::F32 => f32::MAX,
            Dtype::F16 => f32::from(half::f16::MAX),
            Dtype::Bf16 => f32::from(half::bf16::MAX),
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::Bf16 => 2,
        }
    }

    /// The safetensors dtype with the same encoding.
    pub(crate) fn safetensors(self) -> safetensors::Dtype {
        match self {
            Dtype::F32 => safetensors::Dtype::F32,
            Dtype::F16 => safetensors::Dtype::F16,
            Dtype::Bf16 => safetensors::Dtype::BF16,
        }
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dtype::F32 => "f32",
            Dtype::F16 => "f16",
            Dtype::Bf16 => "bf16",
        })
    }
}

impl FromStr for Dtype {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" => Ok(Dtype::F32),
            "f16" | "float16" => Ok(Dtype::F16),
            "bf16" | "bfloat16" => Ok(Dtype::Bf16),
            _ => Err(format!("unknown dtype {s:?}: expected f32, f16 or bf16")),
        }
    }
}

/// Which part of a chat record a token belongs to (the optional `role` tensor).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum Role {
    Prompt = 0,
    Answer = 1,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Prompt => "prompt",
            Role::Answer => "answer",
        })
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "prompt" => Ok(Role::Prompt),
            "answer" => Ok(Role::Answer),
            _ => Err(format!("unknown role {s:?}: expected prompt or answer")),
        }
    }
}

/// What a writer is asked to store: shape, dtype and provenance.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct StoreMeta {
    pub d_model: usize,
    pub dtype: Dtype,
    /// Hook point name, TransformerLens spelling (`blocks.6.hook_resid_post`).
    pub hook: String,
    pub model: String,
    /// Names of the per-sequence labels (`label` byte `i` means `labels[i]`); empty when the
    /// rows carry no labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
}

impl StoreMeta {
    /// Metadata without labels.
    pub fn new(
        d_model: usize,
        dtype: Dtype,
        hook: impl Into<String>,
        model: impl Into<String>,
    ) -> Self {
        Self {
            d_model,
            dtype,
            hook: hook.into(),
            model: model.into(),
            labels: Vec::new(),
        }
    }
}

/// The most label names a store holds (labels are stored as one byte).
pub const MAX_LABELS: usize = 256;

/// The contents of `manifest.json`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub format_version: u32,
    pub d_model: usize,
    pub dtype: Dtype,
    pub hook: String,
    pub model: String,
    /// Names of the per-sequence labels; absent in stores without labels (and in stores
    /// written before labels existed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// Sum of the shards' rows.
    pub rows: u64,
    pub shards: Vec<ShardEntry>,
}

/// One finished shard.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ShardEntry {
    /// File name relative to the store directory, `shard-NNNNN.safetensors`.
    pub file: String,
    pub rows: u64,
    /// Size of the whole file in bytes.
    pub bytes: u64,
    /// crc32 (IEEE) of the whole file.
    pub crc32: u32,
}

impl Manifest {
    /// An empty manifest for `meta`.
    pub fn new(meta: &StoreMeta) -> Self {
        Manifest {
            format_version: FORMAT_VERSION,
            d_model: meta.d_model,
            dtype: meta.dtype,
            hook: meta.hook.clone(),
            model: meta.model.clone(),
            labels: meta.labels.clone(),
            rows: 0,
            shards: Vec::new(),
        }
    }

    /// The store metadata this manifest records.
    pub fn meta(&self) -> StoreMeta {
        StoreMeta {
            d_model: self.d_model,
            dtype: self.dtype,
            hook: self.hook.clone(),
            model: self.model.clone(),
            labels: self.labels.clone(),
        }
    }

    /// Reads `dir/manifest.json` and checks what can be checked without opening shards:
    /// format version, `rows` equal to the sum of the shards' rows, shard names.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(MANIFEST_FILE);
        let text = fs::read_to_string(&path).map_err(io_err(&path))?;
        // Check the version first so a future format gives a clear message.
        let version: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| invalid(&path, format!("not JSON: {e}")))?;
        match version.get("format_version").and_then(|v| v.as_u64()) {
            Some(v) if v == u64::from(FORMAT_VERSION) => {}
            Some(v) => {
                return Err(invalid(
                    &path,
                    format!("format_version {v} is not supported (expected {FORMAT_VERSION})"),
                ));
            }
            None => return Err(invalid(&path, "missing integer field format_version")),
        }
        let m: Manifest = serde_json::from_value(version)
            .map_err(|e| invalid(&path, format!("not a store manifest: {e}")))?;
        if m.d_model == 0 {
            return Err(invalid(&path, "d_model must be at least 1"));
        }
        if m.labels.len() > MAX_LABELS {
            return Err(invalid(
                &path,
                format!("{} label names (at most {MAX_LABELS})", m.labels.len()),
            ));
        }
        let sum: u64 = m.shards.iter().map(|s| s.rows).sum();
        if sum != m.rows {
            return Err(invalid(
                &path,
                format!("rows is {} but the shards hold {sum}", m.rows),
            ));
        }
        for s in &m.shards {
            if shard_index(&s.file).is_none() {
                return Err(invalid(
                    &path,
                    format!(
                        "shard file name {:?} is not shard-NNNNN.safetensors",
                        s.file
                    ),
                ));
            }
        }
        Ok(m)
    }

    /// Atomically replaces `dir/manifest.json`: write a temporary file, fsync, rename, fsync
    /// the directory.
    pub(crate) fn save_atomic(&self, dir: &Path) -> Result<()> {
        let path = dir.join(MANIFEST_FILE);
        let tmp = dir.join(format!("{MANIFEST_FILE}.tmp"));
        let mut json = serde_json::to_vec_pretty(self)
            .map_err(|e| invalid(&path, format!("cannot serialize manifest: {e}")))?;
        json.push(b'\n');
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(&json).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        drop(f);
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        sync_dir(dir)
    }
}

/// fsyncs a directory so a rename inside it survives a power loss.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    let d = File::open(dir).map_err(io_err(dir))?;
    match d.sync_all() {
        Ok(()) => Ok(()),
        // Some platforms/filesystems refuse fsync on directories; the rename is still atomic.
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => Ok(()),
        Err(e) => Err(ActsError::Io {
            path: dir.to_path_buf(),
            source: e,
        }),
    }
}

/// `shard-00042.safetensors` for index 42.
pub fn shard_file_name(index: usize) -> String {
    format!("shard-{index:05}.safetensors")
}

/// The index in a `shard-NNNNN.safetensors` name (five or more digits), or `None`.
pub(crate) fn shard_index(name: &str) -> Option<usize> {
    let digits = name.strip_prefix("shard-")?.strip_suffix(".safetensors")?;
    if digits.len() < 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtype_and_role_spellings() {
        assert_eq!(serde_json::to_string(&Dtype::Bf16).unwrap(), "\"bf16\"");
        assert_eq!("F16".parse::<Dtype>().unwrap(), Dtype::F16);
        assert_eq!(Dtype::F32.to_string(), "f32");
        assert!("f64".parse::<Dtype>().is_err());
        assert_eq!("answer".parse::<Role>().unwrap() as u8, 1);
        assert_eq!("prompt".parse::<Role>().unwrap() as u8, 0);
    }

    #[test]
    fn shard_names_round_trip() {
        assert_eq!(shard_file_name(7), "shard-00007.safetensors");
        assert_eq!(shard_index("shard-00007.safetensors"), Some(7));
        assert_eq!(shard_index("shard-123456.safetensors"), Some(123456));
        assert_eq!(shard_index("shard-7.safetensors"), None);
        assert_eq!(shard_index("shard-00007.safetensors.tmp"), None);
    }
}
