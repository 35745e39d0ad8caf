//! Reader for GGUF files (versions 2 and 3), llama.cpp's single-file model format, and a
//! writer ([`GgufWriter`], version 3, f32/f16 tensors) beside it.
//!
//! The file is memory-mapped; [`GgufFile::open`] parses and validates the header, the
//! metadata key–value pairs and the tensor infos, and checks that every tensor's byte range
//! lies inside the file, so nothing later can read out of bounds. Tensors are decoded on
//! demand with [`GgufFile::dequantize`] (see [`crate::quant`] for the block formats).
//!
//! Layout (all little-endian; a *string* is a `u64` byte length then UTF-8 bytes):
//!
//! ```text
//! "GGUF"  version: u32  n_tensors: u64  n_kv: u64
//! n_kv × { key: string, value_type: u32, value }
//!         value = scalar | string | array { elem_type: u32, n: u64, n × value }
//! n_tensors × { name: string, n_dims: u32, ne: [u64; n_dims], ggml_type: u32, offset: u64 }
//! padding to `general.alignment` (default 32), then the data section;
//! each tensor's `offset` is relative to the data section's start.
//! ```
//!
//! `ne[0]` is the contiguous (innermost) dimension, so the row-major shape that PyTorch
//! would print is `ne` reversed; [`TensorInfo::shape`] returns that order.
//!
//! ```no_run
//! use lantern_lm::gguf::GgufFile;
//! let gguf = GgufFile::open("SmolLM2-135M-Instruct.Q4_1.gguf")?;
//! assert_eq!(gguf.architecture(), Some("llama"));
//! let n_layers = gguf.get_u64("llama.block_count");
//! let tokens = gguf.get_str_array("tokenizer.ggml.tokens").unwrap_or_default();
//! let (shape, values) = gguf.dequantize("token_embd.weight")?; // shape = [n_vocab, d_model]
//! # Ok::<(), lantern_lm::LmError>(())
//! ```

mod meta;
mod parse;
mod write;

pub use meta::{MetaArray, MetaValue, StringArray};
pub use write::{GgufTensorData, GgufWriter};

use crate::error::{LmError, Result};
use crate::quant::{self, GgmlType};
use memmap2::Mmap;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

/// Alignment of the data section and of tensor offsets when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// Where one tensor lives in the file and how it is encoded.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml's `ne`: `dims[0]` is the contiguous dimension (the row length).
    pub dims: Vec<usize>,
    pub ggml_type: GgmlType,
    /// Byte offset from the start of the data section (a multiple of the alignment).
    pub offset: u64,
    /// Bytes the tensor occupies.
    pub n_bytes: u64,
}

impl TensorInfo {
    /// Row-major (PyTorch) shape: `dims` reversed.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().copied().collect()
    }

    pub fn n_elements(&self) -> usize {
        self.dims.iter().product()
    }

    /// Elements per row, `dims[0]` (1 for a rank-0 tensor).
    pub fn row_len(&self) -> usize {
        self.dims.first().copied().unwrap_or(1)
    }
}

/// An open, validated GGUF file.
#[derive(Debug)]
pub struct GgufFile {
    path: PathBuf,
    mmap: Mmap,
    version: u32,
    metadata: Vec<(String, MetaValue)>,
    meta_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    alignment: u64,
    data_start: usize,
}

impl GgufFile {
    /// Maps and parses `path`. Fails on a bad magic, a version other than 2 or 3, truncated
    /// or inconsistent headers, unknown value or tensor types, and tensors that lie outside
    /// the file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| LmError::io(path, e))?;
        let len = file.metadata().map_err(|e| LmError::io(path, e))?.len();
        if len == 0 {
            return Err(LmError::format(path, "empty file, expected a GGUF header"));
        }
        // SAFETY: model files are read-only inputs; like llama.cpp we assume nobody truncates
        // or rewrites them while they are mapped.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| LmError::io(path, e))?;
        let header = parse::parse(path, &mmap)?;
        Ok(Self {
            path: path.to_path_buf(),
            mmap,
            version: header.version,
            meta_index: index_of(header.metadata.iter().map(|(k, _)| k)),
            metadata: header.metadata,
            tensor_index: index_of(header.tensors.iter().map(|t| &t.name)),
            tensors: header.tensors,
            alignment: header.alignment,
            data_start: header.data_start,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// `general.alignment`, or [`DEFAULT_ALIGNMENT`].
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Byte offset of the data section in the file.
    pub fn data_start(&self) -> usize {
        self.data_start
    }

    /// All metadata pairs in file order.
    pub fn metadata(&self) -> impl Iterator<Item = (&str, &MetaValue)> {
        self.metadata.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.meta_index.get(key).map(|&i| &self.metadata[i].1)
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key)?.as_str()
    }

    /// Any non-negative integer value.
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key)?.as_u64()
    }

    /// Any integer value that fits in an `i64`.
    pub fn get_i64(&self, key: &str) -> Option<i64> {
        self.get(key)?.as_i64()
    }

    /// Any float or integer value, rounded to `f32`.
    pub fn get_f32(&self, key: &str) -> Option<f32> {
        self.get_f64(key).map(|v| v as f32)
    }

    /// Any float or integer value.
    pub fn get_f64(&self, key: &str) -> Option<f64> {
        self.get(key)?.as_f64()
    }

    pub fn get_bool(&self, key: &str) -> Option<bool> {
        self.get(key)?.as_bool()
    }

    pub fn get_array(&self, key: &str) -> Option<&MetaArray> {
        self.get(key)?.as_array()
    }

    /// A string array without copying (e.g. `tokenizer.ggml.tokens`).
    pub fn get_string_array(&self, key: &str) -> Option<&StringArray> {
        self.get_array(key)?.as_strings()
    }

    /// A string array as borrowed slices (e.g. `tokenizer.ggml.merges`).
    pub fn get_str_array(&self, key: &str) -> Option<Vec<&str>> {
        Some(self.get_string_array(key)?.iter().collect())
    }

    /// An integer array whose elements all fit in `i32` (e.g. `tokenizer.ggml.token_type`).
    pub fn get_i32_array(&self, key: &str) -> Option<Vec<i32>> {
        match self.get_array(key)? {
            MetaArray::I32(v) => Some(v.clone()),
            a => a
                .to_i64s()?
                .into_iter()
                .map(|x| i32::try_from(x).ok())
                .collect(),
        }
    }

    /// A float or integer array as `f32` (e.g. `tokenizer.ggml.scores`).
    pub fn get_f32_array(&self, key: &str) -> Option<Vec<f32>> {
        match self.get_array(key)? {
            MetaArray::F32(v) => Some(v.clone()),
            a => Some(a.to_f64s()?.into_iter().map(|x| x as f32).collect()),
        }
    }

    /// `general.architecture` (`"llama"`, `"gpt2"`, ...).
    pub fn architecture(&self) -> Option<&str> {
        self.get_str("general.architecture")
    }

    /// Tensor infos in file order.
    pub fn tensor_infos(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The raw (still quantized) bytes of a tensor.
    pub fn tensor_data(&self, info: &TensorInfo) -> &[u8] {
        // Both bounds were checked against the file length in `open`.
        let start = self.data_start + info.offset as usize;
        &self.mmap[start..start + info.n_bytes as usize]
    }

    /// Decodes tensor `name` to `f32`, returning its row-major shape (`ne` reversed) and
    /// values. Fails with [`LmError::Tensor`] if there is no such tensor and with
    /// [`LmError::Unsupported`] for a ggml type [`crate::quant`] does not decode.
    pub fn dequantize(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let info = self.tensor(name).ok_or_else(|| LmError::Tensor {
            path: self.path.clone(),
            name: name.to_string(),
            msg: "not in this GGUF file".into(),
        })?;
        let ty = info.ggml_type;
        if !ty.is_dequantizable() {
            return Err(LmError::Unsupported {
                path: self.path.clone(),
                what: format!("ggml type {ty} of tensor '{name}'"),
            });
        }
        if info.n_elements() == 0 {
            return Ok((info.shape(), Vec::new()));
        }
        let values =
            quant::dequantize(ty, self.tensor_data(info), info.row_len()).map_err(|msg| {
                LmError::Tensor {
                    path: self.path.clone(),
                    name: name.to_string(),
                    msg,
                }
            })?;
        Ok((info.shape(), values))
    }
}

fn index_of<'a>(names: impl Iterator<Item = &'a String>) -> HashMap<String, usize> {
    names.enumerate().map(|(i, n)| (n.clone(), i)).collect()
}
