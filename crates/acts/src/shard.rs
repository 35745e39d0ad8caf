//! One shard file: a safetensors file with `acts [n, d]`, `token_ids [n]`, `seq_ids [n]`,
//! `positions [n]` (u32), optional `role [n]` (u8) and optional `label [n]` (u8, an index into
//! the manifest's `labels`). Writing streams the bytes through a
//! crc32 hasher; reading memory-maps the file and decodes rows on demand.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};
use memmap2::Mmap;
use safetensors::SafeTensors;

use crate::error::{Result, invalid, io_err};
use crate::manifest::Dtype;

/// Rows of one shard still in memory, acts already encoded in the store dtype (little-endian).
#[derive(Default)]
pub(crate) struct ShardBuf {
    pub acts: Vec<u8>,
    pub token_ids: Vec<u32>,
    pub seq_ids: Vec<u32>,
    pub positions: Vec<u32>,
    pub roles: Option<Vec<u8>>,
    pub labels: Option<Vec<u8>>,
}

impl ShardBuf {
    pub fn rows(&self) -> usize {
        self.token_ids.len()
    }
}

/// Byte counter and crc32 in front of a buffered file.
struct CrcWriter {
    inner: BufWriter<File>,
    hasher: crc32fast::Hasher,
    bytes: u64,
}

impl CrcWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.hasher.update(buf);
        self.bytes += buf.len() as u64;
        self.inner.write_all(buf)
    }

    fn write_u32s(&mut self, v: &[u32]) -> std::io::Result<()> {
        let mut tmp = vec![0u8; 4 * v.len().min(16 * 1024)];
        for chunk in v.chunks(16 * 1024) {
            let bytes = &mut tmp[..4 * chunk.len()];
            for (o, x) in bytes.chunks_exact_mut(4).zip(chunk) {
                o.copy_from_slice(&x.to_le_bytes());
            }
            self.write(bytes)?;
        }
        Ok(())
    }
}

/// Writes `buf` as a shard to `path` (the caller renames it into place) and fsyncs it.
/// Returns the file's size and crc32.
pub(crate) fn write_shard(
    path: &Path,
    dtype: Dtype,
    d: usize,
    buf: &ShardBuf,
) -> Result<(u64, u32)> {
    let n = buf.rows();
    let ids = 4 * n;
    let acts_len = buf.acts.len();
    // Data order: the three u32 tensors, then acts (4-byte aligned start), then role, label.
    let mut entries = vec![
        ("token_ids", "U32".to_string(), vec![n], 0, ids),
        ("seq_ids", "U32".to_string(), vec![n], ids, 2 * ids),
        ("positions", "U32".to_string(), vec![n], 2 * ids, 3 * ids),
        (
            "acts",
            format!("{:?}", dtype.safetensors()),
            vec![n, d],
            3 * ids,
            3 * ids + acts_len,
        ),
    ];
    let mut start = 3 * ids + acts_len;
    for (name, present) in [
        ("role", buf.roles.is_some()),
        ("label", buf.labels.is_some()),
    ] {
        if present {
            entries.push((name, "U8".to_string(), vec![n], start, start + n));
            start += n;
        }
    }
    let mut header = serde_json::Map::new();
    for (name, dt, shape, a, b) in entries {
        header.insert(
            name.to_string(),
            serde_json::json!({ "dtype": dt, "shape": shape, "data_offsets": [a, b] }),
        );
    }
    let mut header = serde_json::Value::Object(header).to_string().into_bytes();
    header.resize(header.len().next_multiple_of(8), b' ');

    let file = File::create(path).map_err(io_err(path))?;
    let mut w = CrcWriter {
        inner: BufWriter::with_capacity(1 << 20, file),
        hasher: crc32fast::Hasher::new(),
        bytes: 0,
    };
    let res = (|| -> std::io::Result<()> {
        w.write(&(header.len() as u64).to_le_bytes())?;
        w.write(&header)?;
        w.write_u32s(&buf.token_ids)?;
        w.write_u32s(&buf.seq_ids)?;
        w.write_u32s(&buf.positions)?;
        w.write(&buf.acts)?;
        for bytes in [&buf.roles, &buf.labels].into_iter().flatten() {
            w.write(bytes)?;
        }
        w.inner.flush()?;
        w.inner.get_ref().sync_all()
    })();
    res.map_err(io_err(path))?;
    Ok((w.bytes, w.hasher.finalize()))
}

/// Encodes f32 values in `dtype`, little-endian, appending to `out`.
pub(crate) fn encode_f32(dtype: Dtype, src: &[f32], out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(start + src.len() * dtype.size(), 0);
    let dst = &mut out[start..];
    // Indexed chunk loops (rather than flat_map) so the compiler vectorizes them.
    match dtype {
        Dtype::F32 => {
            for (o, x) in dst.chunks_exact_mut(4).zip(src) {
                o.copy_from_slice(&x.to_le_bytes());
            }
        }
        Dtype::F16 => {
            for (o, &x) in dst.chunks_exact_mut(2).zip(src) {
                o.copy_from_slice(&f16::from_f32(x).to_le_bytes());
            }
        }
        Dtype::Bf16 => {
            for (o, &x) in dst.chunks_exact_mut(2).zip(src) {
                o.copy_from_slice(&bf16::from_f32(x).to_le_bytes());
            }
        }
    }
}

/// Decodes little-endian `dtype` bytes into f32 (`out.len()` elements).
pub(crate) fn decode_f32(dtype: Dtype, src: &[u8], out: &mut [f32]) {
    match dtype {
        Dtype::F32 => {
            for (o, b) in out.iter_mut().zip(src.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        Dtype::F16 => {
            // In blocks, so that half's slice conversion (F16C when the CPU has it) does the
            // arithmetic: one `to_f32` per value costs a feature check each.
            const BLOCK: usize = 64;
            let mut bits = [f16::ZERO; BLOCK];
            for (o, b) in out.chunks_mut(BLOCK).zip(src.chunks(2 * BLOCK)) {
                let n = o.len();
                for (h, p) in bits[..n].iter_mut().zip(b.chunks_exact(2)) {
                    *h = f16::from_le_bytes([p[0], p[1]]);
                }
                bits[..n].convert_to_f32_slice(o);
            }
        }
        Dtype::Bf16 => {
            for (o, b) in out.iter_mut().zip(src.chunks_exact(2)) {
                *o = bf16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
    }
}

/// Absolute byte offsets of a shard's tensors, checked against the expected shape.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    pub rows: usize,
    pub acts: usize,
    pub token_ids: usize,
    pub seq_ids: usize,
    pub positions: usize,
    pub role: Option<usize>,
    pub label: Option<usize>,
}

/// Parses and checks a shard's header: `acts [rows, d]` of `dtype`, the id tensors U32 `[rows]`,
/// optional `role` and `label` U8 `[rows]`. `rows = None` accepts any row count.
pub(crate) fn parse_layout(
    path: &Path,
    bytes: &[u8],
    rows: Option<u64>,
    d: usize,
    dtype: Dtype,
) -> Result<Layout> {
    let (n, meta) = SafeTensors::read_metadata(bytes)
        .map_err(|e| invalid(path, format!("not a valid safetensors file: {e}")))?;
    let base = 8 + n;
    let acts = meta
        .info("acts")
        .ok_or_else(|| invalid(path, "missing tensor `acts`"))?;
    let r = match acts.shape.as_slice() {
        [r, c] if *c == d => *r,
        s => {
            return Err(invalid(
                path,
                format!("tensor `acts` has shape {s:?}, expected [rows, {d}]"),
            ));
        }
    };
    if let Some(want) = rows
        && want != r as u64
    {
        return Err(invalid(
            path,
            format!("tensor `acts` has {r} rows, the manifest says {want}"),
        ));
    }
    if acts.dtype != dtype.safetensors() {
        return Err(invalid(
            path,
            format!(
                "tensor `acts` is {:?}, the store dtype is {dtype}",
                acts.dtype
            ),
        ));
    }
    let vector = |name: &str, dt: safetensors::Dtype| -> Result<Option<usize>> {
        let Some(info) = meta.info(name) else {
            return Ok(None);
        };
        if info.dtype != dt || info.shape != [r] {
            return Err(invalid(
                path,
                format!(
                    "tensor `{name}` is {:?} {:?}, expected {dt:?} [{r}]",
                    info.dtype, info.shape
                ),
            ));
        }
        Ok(Some(base + info.data_offsets.0))
    };
    let required = |name: &str| -> Result<usize> {
        vector(name, safetensors::Dtype::U32)?
            .ok_or_else(|| invalid(path, format!("missing tensor `{name}`")))
    };
    Ok(Layout {
        rows: r,
        acts: base + acts.data_offsets.0,
        token_ids: required("token_ids")?,
        seq_ids: required("seq_ids")?,
        positions: required("positions")?,
        role: vector("role", safetensors::Dtype::U8)?,
        label: vector("label", safetensors::Dtype::U8)?,
    })
}

/// Memory-maps a file read-only.
pub(crate) fn map_file(path: &Path) -> Result<Mmap> {
    let file = File::open(path).map_err(io_err(path))?;
    // SAFETY: store files are written once (tmp + rename) and never modified in place; a
    // concurrent writer only creates new files, so the mapped bytes do not change under us.
    unsafe { Mmap::map(&file) }.map_err(io_err(path))
}

/// A memory-mapped shard. Row accessors take a row index `< rows()` and panic beyond it,
/// like slice indexing.
pub struct Shard {
    mmap: Mmap,
    path: PathBuf,
    layout: Layout,
    d: usize,
    dtype: Dtype,
}

impl Shard {
    pub(crate) fn new(mmap: Mmap, path: PathBuf, layout: Layout, d: usize, dtype: Dtype) -> Self {
        Shard {
            mmap,
            path,
            layout,
            d,
            dtype,
        }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.layout.rows
    }

    /// Path of the shard file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Decodes row `i` into `out` (length `d_model`), converting from the store dtype to f32.
    pub fn row_f32(&self, i: usize, out: &mut [f32]) {
        assert!(i < self.layout.rows, "row {i} out of range");
        assert_eq!(out.len(), self.d, "output length must equal d_model");
        let sz = self.dtype.size() * self.d;
        let start = self.layout.acts + i * sz;
        decode_f32(self.dtype, &self.mmap[start..start + sz], out);
    }

    fn u32_at(&self, base: usize, i: usize) -> u32 {
        assert!(i < self.layout.rows, "row {i} out of range");
        let p = base + 4 * i;
        let b = &self.mmap[p..p + 4];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    pub fn token_id(&self, i: usize) -> u32 {
        self.u32_at(self.layout.token_ids, i)
    }

    pub fn seq_id(&self, i: usize) -> u32 {
        self.u32_at(self.layout.seq_ids, i)
    }

    pub fn position(&self, i: usize) -> u32 {
        self.u32_at(self.layout.positions, i)
    }

    /// The row's role byte (0 = prompt, 1 = answer), or `None` when the store has no roles.
    pub fn role(&self, i: usize) -> Option<u8> {
        assert!(i < self.layout.rows, "row {i} out of range");
        self.layout.role.map(|base| self.mmap[base + i])
    }

    /// The row's label byte (an index into the manifest's `labels`), or `None` when the store
    /// has no labels.
    pub fn label(&self, i: usize) -> Option<u8> {
        assert!(i < self.layout.rows, "row {i} out of range");
        self.layout.label.map(|base| self.mmap[base + i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The blocked f16 decode against one `to_f32` per value, over every f16 bit pattern
    /// (NaNs compared as NaNs), in a length no block divides.
    #[test]
    fn f16_rows_decode_as_one_conversion_per_value() {
        let bits: Vec<u16> = (0..=u16::MAX).collect();
        for len in [1usize, 63, 64, 65, 150, bits.len()] {
            let src: Vec<u8> = bits[..len].iter().flat_map(|b| b.to_le_bytes()).collect();
            let mut out = vec![0f32; len];
            decode_f32(Dtype::F16, &src, &mut out);
            for (i, (&got, &b)) in out.iter().zip(&bits[..len]).enumerate() {
                let want = f16::from_bits(b).to_f32();
                assert!(
                    got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                    "len {len}, value {i} (bits {b:#06x}): {got} vs {want}"
                );
            }
        }
    }
}
