//! Writing GGUF files (version 3): metadata of every value type and f32 / f16 tensors, laid out
//! as gguf-py's `GGUFWriter` lays them out (so the bytes match it for the same content): the
//! key–value pairs in insertion order after `general.architecture`, tensor infos in insertion
//! order, the data section and every tensor padded to 32 bytes.
//!
//! ```
//! use lantern_lm::gguf::{GgufFile, GgufWriter, MetaValue};
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("cvec.gguf");
//! let mut w = GgufWriter::new("controlvector");
//! w.add("controlvector.layer_count", MetaValue::U32(1))?;
//! w.add_f32("direction.1", &[4], vec![0.5, -0.5, 0.0, 1.0])?;
//! w.write(&path)?;
//! let back = GgufFile::open(&path)?;
//! assert_eq!(back.get_u64("controlvector.layer_count"), Some(1));
//! assert_eq!(back.dequantize("direction.1")?.1, [0.5, -0.5, 0.0, 1.0]);
//! # Ok::<(), lantern_lm::LmError>(())
//! ```

use std::collections::HashSet;
use std::path::Path;

use half::f16;

use super::{DEFAULT_ALIGNMENT, MetaArray, MetaValue};
use crate::{LmError, Result};

/// Tensor payloads the writer stores unquantized.
#[derive(Clone, Debug, PartialEq)]
pub enum GgufTensorData {
    F32(Vec<f32>),
    F16(Vec<f16>),
}

impl GgufTensorData {
    fn len(&self) -> usize {
        match self {
            Self::F32(v) => v.len(),
            Self::F16(v) => v.len(),
        }
    }

    /// ggml type id: 0 = F32, 1 = F16.
    fn ggml_type(&self) -> u32 {
        match self {
            Self::F32(_) => 0,
            Self::F16(_) => 1,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        match self {
            Self::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Self::F16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }
}

/// A GGUF file being assembled in memory; [`GgufWriter::write`] puts it on disk.
#[derive(Clone, Debug)]
pub struct GgufWriter {
    metadata: Vec<(String, MetaValue)>,
    /// Name, row-major shape, data.
    tensors: Vec<(String, Vec<usize>, GgufTensorData)>,
}

impl GgufWriter {
    /// A file whose first key is `general.architecture = arch`.
    pub fn new(arch: &str) -> Self {
        Self {
            metadata: vec![(
                "general.architecture".into(),
                MetaValue::String(arch.into()),
            )],
            tensors: Vec::new(),
        }
    }

    /// Adds a metadata key (each key once).
    pub fn add(&mut self, key: &str, value: MetaValue) -> Result<&mut Self> {
        if self.metadata.iter().any(|(k, _)| k == key) {
            return Err(LmError::Config(format!(
                "GGUF metadata key '{key}' added twice"
            )));
        }
        self.metadata.push((key.into(), value));
        Ok(self)
    }

    /// Adds an f32 tensor of row-major `shape` (rank 1 to 4).
    pub fn add_f32(&mut self, name: &str, shape: &[usize], data: Vec<f32>) -> Result<&mut Self> {
        self.add_tensor(name, shape, GgufTensorData::F32(data))
    }

    /// Adds an f16 tensor of row-major `shape` (rank 1 to 4).
    pub fn add_f16(&mut self, name: &str, shape: &[usize], data: Vec<f16>) -> Result<&mut Self> {
        self.add_tensor(name, shape, GgufTensorData::F16(data))
    }

    fn add_tensor(
        &mut self,
        name: &str,
        shape: &[usize],
        data: GgufTensorData,
    ) -> Result<&mut Self> {
        let n: usize = shape.iter().product();
        if shape.is_empty() || shape.len() > 4 || n != data.len() {
            return Err(LmError::Config(format!(
                "GGUF tensor '{name}': shape {shape:?} (rank 1 to 4) does not hold {} values",
                data.len()
            )));
        }
        if self.tensors.iter().any(|t| t.0 == name) {
            return Err(LmError::Config(format!("GGUF tensor '{name}' added twice")));
        }
        self.tensors.push((name.into(), shape.to_vec(), data));
        Ok(self)
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let align = DEFAULT_ALIGNMENT as usize;
        let mut b = Vec::new();
        b.extend_from_slice(b"GGUF");
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        b.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (k, v) in &self.metadata {
            put_str(&mut b, k);
            b.extend_from_slice(&value_type(v).to_le_bytes());
            put_value(&mut b, v);
        }
        let mut offset = 0usize;
        for (name, shape, data) in &self.tensors {
            put_str(&mut b, name);
            b.extend_from_slice(&(shape.len() as u32).to_le_bytes());
            for &dim in shape.iter().rev() {
                b.extend_from_slice(&(dim as u64).to_le_bytes());
            }
            b.extend_from_slice(&data.ggml_type().to_le_bytes());
            b.extend_from_slice(&(offset as u64).to_le_bytes());
            offset += data.bytes().len().next_multiple_of(align);
        }
        b.resize(b.len().next_multiple_of(align), 0);
        for (_, _, data) in &self.tensors {
            b.extend_from_slice(&data.bytes());
            b.resize(b.len().next_multiple_of(align), 0);
        }
        b
    }

    /// Writes the file atomically (a temporary sibling, fsync, rename).
    pub fn write(&self, path: &Path) -> Result<()> {
        let mut seen = HashSet::new();
        if let Some((k, _)) = self.metadata.iter().find(|(k, _)| !seen.insert(k.as_str())) {
            return Err(LmError::Config(format!(
                "GGUF metadata key '{k}' added twice"
            )));
        }
        lantern_output::write_atomic(path, &self.to_bytes()).map_err(|e| match e {
            lantern_output::OutputError::Io { path, source } => LmError::io(path, source),
            other => LmError::Config(other.to_string()),
        })
    }
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(&(s.len() as u64).to_le_bytes());
    b.extend_from_slice(s.as_bytes());
}

/// GGUF value type ids.
fn value_type(v: &MetaValue) -> u32 {
    match v {
        MetaValue::U8(_) => 0,
        MetaValue::I8(_) => 1,
        MetaValue::U16(_) => 2,
        MetaValue::I16(_) => 3,
        MetaValue::U32(_) => 4,
        MetaValue::I32(_) => 5,
        MetaValue::F32(_) => 6,
        MetaValue::Bool(_) => 7,
        MetaValue::String(_) => 8,
        MetaValue::Array(_) => 9,
        MetaValue::U64(_) => 10,
        MetaValue::I64(_) => 11,
        MetaValue::F64(_) => 12,
    }
}

fn array_type(a: &MetaArray) -> u32 {
    match a {
        MetaArray::U8(_) => 0,
        MetaArray::I8(_) => 1,
        MetaArray::U16(_) => 2,
        MetaArray::I16(_) => 3,
        MetaArray::U32(_) => 4,
        MetaArray::I32(_) => 5,
        MetaArray::F32(_) => 6,
        MetaArray::Bool(_) => 7,
        MetaArray::String(_) => 8,
        MetaArray::Array(_) => 9,
        MetaArray::U64(_) => 10,
        MetaArray::I64(_) => 11,
        MetaArray::F64(_) => 12,
    }
}

fn put_value(b: &mut Vec<u8>, v: &MetaValue) {
    match v {
        MetaValue::U8(x) => b.push(*x),
        MetaValue::I8(x) => b.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U16(x) => b.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I16(x) => b.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U32(x) => b.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I32(x) => b.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U64(x) => b.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I64(x) => b.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F32(x) => b.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F64(x) => b.extend_from_slice(&x.to_le_bytes()),
        MetaValue::Bool(x) => b.push(u8::from(*x)),
        MetaValue::String(s) => put_str(b, s),
        MetaValue::Array(a) => put_array(b, a),
    }
}

fn put_array(b: &mut Vec<u8>, a: &MetaArray) {
    b.extend_from_slice(&array_type(a).to_le_bytes());
    macro_rules! each {
        ($v:expr, $put:expr) => {{
            b.extend_from_slice(&($v.len() as u64).to_le_bytes());
            for x in $v {
                $put(&mut *b, x);
            }
        }};
    }
    match a {
        MetaArray::U8(v) => each!(v, |b: &mut Vec<u8>, x: &u8| b.push(*x)),
        MetaArray::I8(v) => each!(v, |b: &mut Vec<u8>, x: &i8| b
            .extend_from_slice(&x.to_le_bytes())),
        MetaArray::U16(v) => each!(v, |b: &mut Vec<u8>, x: &u16| b
            .extend_from_slice(&x.to_le_bytes())),
        MetaArray::I16(v) => each!(v, |b: &mut Vec<u8>, x: &i16| b
            .extend_from_slice(&x.to_le_bytes())),
        MetaArray::U32(v) => each!(v, |b: &mut Vec<u8>, x: &u32| b
            .extend_from_slice(&x.to_le_bytes())),
        MetaArray::I32(v) => each!(v, |b: &mut Vec<u8>, x: &i32| b
            .extend_from_slice(&x.to_le_bytes())),
        MetaArray::U64(v) => each!(v, |b: &mut Vec<u8>, x: &u64| b
            .extend_from_slice(&x.to_le_bytes())),
        MetaArray::I64(v) => each!(v, |b: &mut Vec<u8>, x: &i64| b
            .extend_from_slice(&x.to_le_bytes())),
        MetaArray::F32(v) => each!(v, |b: &mut Vec<u8>, x: &f32| b
            .extend_from_slice(&x.to_le_bytes())),
        MetaArray::F64(v) => each!(v, |b: &mut Vec<u8>, x: &f64| b
            .extend_from_slice(&x.to_le_bytes())),
        MetaArray::Bool(v) => each!(v, |b: &mut Vec<u8>, x: &bool| b.push(u8::from(*x))),
        MetaArray::String(v) => {
            b.extend_from_slice(&(v.len() as u64).to_le_bytes());
            for s in v.iter() {
                put_str(b, s);
            }
        }
        MetaArray::Array(v) => {
            b.extend_from_slice(&(v.len() as u64).to_le_bytes());
            for inner in v {
                put_array(b, inner);
            }
        }
    }
}
