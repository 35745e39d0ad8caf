//! Parsing and validation of a GGUF header: metadata, tensor infos and the data section's
//! position. Every read is bounds-checked and every count is checked against the bytes left
//! before anything is allocated for it, so a corrupt file gives an error, never a panic.

use super::{DEFAULT_ALIGNMENT, MetaArray, MetaValue, StringArray, TensorInfo};
use crate::error::{LmError, Result};
use crate::quant::GgmlType;
use std::collections::HashSet;
use std::path::Path;

/// ggml's maximum tensor rank.
const MAX_DIMS: u32 = 4;

/// Deepest nesting of metadata arrays accepted (guards the recursion against crafted files).
const MAX_ARRAY_DEPTH: usize = 16;

/// What [`parse`] extracts from the bytes before the data section.
pub(super) struct Header {
    pub(super) version: u32,
    pub(super) metadata: Vec<(String, MetaValue)>,
    pub(super) tensors: Vec<TensorInfo>,
    pub(super) alignment: u64,
    pub(super) data_start: usize,
}

pub(super) fn parse(path: &Path, buf: &[u8]) -> Result<Header> {
    let mut c = Cursor { buf, pos: 0, path };
    let magic = c.take(4, "the magic \"GGUF\"")?;
    if magic != b"GGUF" {
        return Err(c.err(format!(
            "bad magic {:?}, expected \"GGUF\" (not a GGUF file)",
            String::from_utf8_lossy(magic)
        )));
    }
    let version = c.u32("the version")?;
    match version {
        2 | 3 => {}
        1 => return Err(unsupported(path, "GGUF version 1 (expected 2 or 3)")),
        v if matches!(v.swap_bytes(), 2 | 3) => {
            return Err(unsupported(path, "big-endian GGUF"));
        }
        v => return Err(c.err(format!("GGUF version {v}, expected 2 or 3"))),
    }
    let n_tensors = c.u64("the tensor count")?;
    let n_kv = c.u64("the metadata count")?;
    // Smallest encodings: key (8) + type (4) + u8 value (1); name (8) + n_dims (4) +
    // type (4) + offset (8).
    c.check_count(n_kv, 13, "metadata entries")?;
    c.check_count(n_tensors, 24, "tensor infos")?;

    let mut metadata = Vec::with_capacity(n_kv as usize);
    let mut seen = HashSet::new();
    for _ in 0..n_kv {
        let key = c.string("a metadata key")?;
        let ctx = format!("metadata {}", quoted(&key));
        let ty = c.u32(&ctx)?;
        let value = c.value(ty, &ctx, 0)?;
        if !seen.insert(key.clone()) {
            return Err(c.err(format!("duplicate {ctx}")));
        }
        metadata.push((key, value));
    }
    let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some((_, v)) => match v.as_u64() {
            Some(a) if a.is_power_of_two() => a,
            _ => {
                return Err(c.err(format!(
                    "general.alignment = {v:?}, expected a power of two"
                )));
            }
        },
    };

    let mut tensors = Vec::with_capacity(n_tensors as usize);
    let mut names = HashSet::new();
    for _ in 0..n_tensors {
        let t = c.tensor_info(alignment)?;
        if !names.insert(t.name.clone()) {
            return Err(c.err(format!("duplicate tensor '{}'", t.name)));
        }
        tensors.push(t);
    }
    let data_start = (c.pos as u64).div_ceil(alignment) * alignment;
    let data_len = (buf.len() as u64).saturating_sub(data_start);
    for t in &tensors {
        let end = t.offset.checked_add(t.n_bytes);
        if end.is_none_or(|end| end > data_len) {
            return Err(LmError::Tensor {
                path: path.to_path_buf(),
                name: t.name.clone(),
                msg: format!(
                    "{} bytes at data offset {} run past the end of the file \
                     (data section holds {data_len} bytes; truncated file?)",
                    t.n_bytes, t.offset
                ),
            });
        }
    }
    Ok(Header {
        version,
        metadata,
        tensors,
        alignment,
        data_start: data_start as usize,
    })
}

fn unsupported(path: &Path, what: &str) -> LmError {
    LmError::Unsupported {
        path: path.to_path_buf(),
        what: what.to_string(),
    }
}

/// Bounds-checked little-endian reads from the header.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn err(&self, msg: String) -> LmError {
        LmError::format(self.path, msg)
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.err(format!(
                "truncated: expected {what} ({n} bytes) at byte {}, file has {}",
                self.pos,
                self.buf.len()
            )));
        }
        let bytes = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        Ok(self.take(N, what)?.try_into().expect("took N bytes"))
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// Rejects `n` items of at least `min_bytes` each that cannot fit in the rest of the file,
    /// before anything is allocated for them.
    fn check_count(&self, n: u64, min_bytes: u64, what: &str) -> Result<()> {
        if n.checked_mul(min_bytes)
            .is_none_or(|b| b > self.remaining() as u64)
        {
            return Err(self.err(format!(
                "{n} {what} at byte {} cannot fit in the {} bytes left (corrupt count?)",
                self.pos,
                self.remaining()
            )));
        }
        Ok(())
    }

    fn str_bytes(&mut self, what: &str) -> Result<&'a [u8]> {
        let n = self.u64(what)?;
        self.check_count(n, 1, &format!("bytes of {what}"))?;
        self.take(n as usize, what)
    }

    /// A string; invalid UTF-8 is replaced rather than rejected.
    fn string(&mut self, what: &str) -> Result<String> {
        Ok(String::from_utf8_lossy(self.str_bytes(what)?).into_owned())
    }

    fn value(&mut self, ty: u32, ctx: &str, depth: usize) -> Result<MetaValue> {
        Ok(match ty {
            0 => MetaValue::U8(self.array::<1>(ctx)?[0]),
            1 => MetaValue::I8(self.array::<1>(ctx)?[0] as i8),
            2 => MetaValue::U16(u16::from_le_bytes(self.array(ctx)?)),
            3 => MetaValue::I16(i16::from_le_bytes(self.array(ctx)?)),
            4 => MetaValue::U32(u32::from_le_bytes(self.array(ctx)?)),
            5 => MetaValue::I32(i32::from_le_bytes(self.array(ctx)?)),
            6 => MetaValue::F32(f32::from_le_bytes(self.array(ctx)?)),
            7 => MetaValue::Bool(self.array::<1>(ctx)?[0] != 0),
            8 => MetaValue::String(self.string(ctx)?),
            9 => MetaValue::Array(self.meta_array(ctx, depth)?),
            10 => MetaValue::U64(u64::from_le_bytes(self.array(ctx)?)),
            11 => MetaValue::I64(i64::from_le_bytes(self.array(ctx)?)),
            12 => MetaValue::F64(f64::from_le_bytes(self.array(ctx)?)),
            t => return Err(self.err(format!("{ctx}: unknown value type {t}, expected 0..=12"))),
        })
    }

    fn meta_array(&mut self, ctx: &str, depth: usize) -> Result<MetaArray> {
        if depth >= MAX_ARRAY_DEPTH {
            return Err(self.err(format!(
                "{ctx}: arrays nested deeper than {MAX_ARRAY_DEPTH} levels"
            )));
        }
        let elem = self.u32(ctx)?;
        let n = self.u64(ctx)?;
        // Bytes per element: fixed for scalars, at least the length prefix for strings and
        // the type + count header for nested arrays.
        let size: u64 = match elem {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            8 | 10..=12 => 8,
            9 => 12,
            t => {
                return Err(self.err(format!(
                    "{ctx}: unknown array element type {t}, expected 0..=12"
                )));
            }
        };
        self.check_count(n, size, &format!("elements of {ctx}"))?;
        let n = n as usize;
        if matches!(elem, 8 | 9) {
            return Ok(if elem == 8 {
                let mut strings = StringArray::with_capacity(n);
                for _ in 0..n {
                    strings.push(&String::from_utf8_lossy(self.str_bytes(ctx)?));
                }
                MetaArray::String(strings)
            } else {
                let inner = (0..n).map(|_| self.meta_array(ctx, depth + 1));
                MetaArray::Array(inner.collect::<Result<_>>()?)
            });
        }
        let bytes = self.take(n * size as usize, ctx)?;
        macro_rules! decode {
            ($variant:ident, $t:ty) => {
                MetaArray::$variant(
                    bytes
                        .chunks_exact(size_of::<$t>())
                        .map(|b| <$t>::from_le_bytes(b.try_into().expect("chunk size")))
                        .collect(),
                )
            };
        }
        Ok(match elem {
            0 => MetaArray::U8(bytes.to_vec()),
            1 => MetaArray::I8(bytes.iter().map(|&b| b as i8).collect()),
            2 => decode!(U16, u16),
            3 => decode!(I16, i16),
            4 => decode!(U32, u32),
            5 => decode!(I32, i32),
            6 => decode!(F32, f32),
            7 => MetaArray::Bool(bytes.iter().map(|&b| b != 0).collect()),
            10 => decode!(U64, u64),
            11 => decode!(I64, i64),
            _ => decode!(F64, f64),
        })
    }

    fn tensor_info(&mut self, alignment: u64) -> Result<TensorInfo> {
        let name = self.string("a tensor name")?;
        let ctx = format!("tensor {}", quoted(&name));
        let n_dims = self.u32(&ctx)?;
        if n_dims > MAX_DIMS {
            return Err(self.err(format!("{ctx}: {n_dims} dimensions, expected at most 4")));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        let mut n_elements: u64 = 1;
        for _ in 0..n_dims {
            let d = self.u64(&ctx)?;
            n_elements = n_elements
                .checked_mul(d)
                .filter(|&n| n <= i64::MAX as u64)
                .ok_or_else(|| self.err(format!("{ctx}: element count overflows")))?;
            dims.push(d as usize);
        }
        let ggml_type = GgmlType(self.u32(&ctx)?);
        let offset = self.u64(&ctx)?;
        let tensor_err = |msg: String| LmError::Tensor {
            path: self.path.to_path_buf(),
            name: name.clone(),
            msg,
        };
        let Some(block_len) = ggml_type.block_len() else {
            return Err(tensor_err(format!("unknown {ggml_type}")));
        };
        let row_len = dims.first().copied().unwrap_or(1) as u64;
        let n_bytes = ggml_type
            .bytes_for(n_elements)
            .filter(|_| row_len.is_multiple_of(block_len as u64))
            .ok_or_else(|| {
                tensor_err(format!(
                    "row length {row_len} is not a multiple of {ggml_type}'s block of {block_len}"
                ))
            })?;
        if !offset.is_multiple_of(alignment) {
            return Err(tensor_err(format!(
                "data offset {offset} is not a multiple of the alignment {alignment}"
            )));
        }
        Ok(TensorInfo {
            name,
            dims,
            ggml_type,
            offset,
            n_bytes,
        })
    }
}

/// A name read from the file, for an error message: quoted, control characters escaped (a
/// damaged file's "key" can hold newlines), at most 80 characters.
fn quoted(name: &str) -> String {
    let escaped: String = name.escape_debug().collect();
    match escaped.char_indices().nth(80) {
        Some((cut, _)) => format!("'{}…'", &escaped[..cut]),
        None => format!("'{escaped}'"),
    }
}
