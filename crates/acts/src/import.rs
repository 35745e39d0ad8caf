//! Import a 2-D array from `.npy`, `.npz` or `.safetensors` into a new store, streaming.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use half::{bf16, f16};
use npyz::{DType, NpyHeader, Order, TypeChar};
use safetensors::SafeTensors;

use crate::error::{ActsError, Result, invalid, io_err};
use crate::manifest::{Dtype, StoreMeta};
use crate::shard::map_file;
use crate::writer::{StoreWriter, WriterOptions};

/// Rows read and pushed per step.
const CHUNK_ROWS: usize = 4096;
/// Bytes of source rows read at a time (fewer than `CHUNK_ROWS` rows when rows are wide).
const CHUNK_BYTES: usize = 32 << 20;
/// The widest row accepted: above any model's residual stream (the largest are ~2¹⁵), and
/// small enough that one row fits in memory many times over.
const MAX_D: u64 = 1 << 20;

/// How to import a file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportOptions {
    /// Array (`.npz`) or tensor (`.safetensors`) name; optional when the file holds exactly one.
    pub key: Option<String>,
    /// Drop rows with NaN/inf and count them, instead of failing.
    pub skip_non_finite: bool,
    /// Rows per shard; `None` = about 256 MiB per shard.
    pub shard_rows: Option<usize>,
    pub hook: String,
    pub model: String,
}

/// What an import wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportReport {
    pub rows: u64,
    pub skipped_non_finite: u64,
    pub d_model: usize,
    pub dtype: Dtype,
}

/// Element type of the source array.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SrcType {
    F16,
    Bf16,
    F32,
    F64,
}

impl SrcType {
    fn size(self) -> usize {
        match self {
            SrcType::F16 | SrcType::Bf16 => 2,
            SrcType::F32 => 4,
            SrcType::F64 => 8,
        }
    }

    /// Store dtype: the same precision, except f64 which becomes f32.
    fn store_dtype(self) -> Dtype {
        match self {
            SrcType::F16 => Dtype::F16,
            SrcType::Bf16 => Dtype::Bf16,
            SrcType::F32 | SrcType::F64 => Dtype::F32,
        }
    }
}

/// A 2-D source array positioned at its first data byte.
struct Source<'a> {
    rows: u64,
    d: usize,
    ty: SrcType,
    big_endian: bool,
    data: Box<dyn Read + 'a>,
}

/// FILE is `.npy` (2-D), `.npz` (array named by key; key optional if there is exactly one array) or
/// `.safetensors` (tensor named by key; optional if exactly one). f32/f16/bf16 kept as the store dtype, f64 → f32.
/// Non-finite rows: error by default naming file and row, or skipped and counted when skip_non_finite.
/// Imported rows get token_id 0, seq_id = row index in the source, position 0, no role.
pub fn import_file(file: &Path, out: &Path, opts: &ImportOptions) -> Result<ImportReport> {
    let ext = file
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("npy") => {
            if let Some(k) = &opts.key {
                return Err(invalid(
                    file,
                    format!("a .npy file holds one array and has no keys (got key {k:?})"),
                ));
            }
            let f = File::open(file).map_err(io_err(file))?;
            let src = npy_source(file, BufReader::with_capacity(1 << 20, f))?;
            ingest(file, src, out, opts)
        }
        Some("npz") => {
            let f = File::open(file).map_err(io_err(file))?;
            let mut zip = zip::ZipArchive::new(BufReader::new(f))
                .map_err(|e| invalid(file, format!("not a zip (.npz) archive: {e}")))?;
            let keys: Vec<String> = zip
                .file_names()
                .filter_map(|n| n.strip_suffix(".npy"))
                .map(str::to_string)
                .collect();
            let key = pick_key(file, opts.key.as_deref(), keys)?;
            let entry = zip
                .by_name(&format!("{key}.npy"))
                .map_err(|e| invalid(file, format!("cannot read array {key:?}: {e}")))?;
            let src = npy_source(file, BufReader::with_capacity(1 << 20, entry))?;
            ingest(file, src, out, opts)
        }
        Some("safetensors") => {
            let mmap = map_file(file)?;
            let st = SafeTensors::deserialize(&mmap)
                .map_err(|e| invalid(file, format!("not a valid safetensors file: {e}")))?;
            let mut keys: Vec<String> = st.names().into_iter().map(str::to_string).collect();
            keys.sort();
            let key = pick_key(file, opts.key.as_deref(), keys)?;
            let view = st
                .tensor(&key)
                .map_err(|e| invalid(file, format!("cannot read tensor {key:?}: {e}")))?;
            let ty = match view.dtype() {
                safetensors::Dtype::F16 => SrcType::F16,
                safetensors::Dtype::BF16 => SrcType::Bf16,
                safetensors::Dtype::F32 => SrcType::F32,
                safetensors::Dtype::F64 => SrcType::F64,
                other => {
                    return Err(invalid(
                        file,
                        format!("tensor {key:?} is {other:?}; expected F32, F16, BF16 or F64"),
                    ));
                }
            };
            let (rows, d) = rank2(file, view.shape().iter().map(|&s| s as u64))?;
            let src = Source {
                rows,
                d,
                ty,
                big_endian: false,
                data: Box::new(view.data()),
            };
            ingest(file, src, out, opts)
        }
        _ => Err(invalid(
            file,
            "unknown extension: expected .npy, .npz or .safetensors",
        )),
    }
}

/// The key to import: the one asked for (which must exist), or the only one.
fn pick_key(file: &Path, key: Option<&str>, available: Vec<String>) -> Result<String> {
    match key {
        Some(k) if available.iter().any(|a| a == k) => Ok(k.to_string()),
        Some(k) => Err(ActsError::MissingKey {
            path: file.to_path_buf(),
            key: k.to_string(),
            available,
        }),
        None => match available.as_slice() {
            [only] => Ok(only.clone()),
            [] => Err(invalid(file, "holds no arrays")),
            _ => Err(invalid(
                file,
                format!(
                    "holds {} arrays, pass a key: {}",
                    available.len(),
                    available.join(", ")
                ),
            )),
        },
    }
}

fn rank2(file: &Path, shape: impl Iterator<Item = u64>) -> Result<(u64, usize)> {
    let shape: Vec<u64> = shape.collect();
    match shape.as_slice() {
        &[_, d] if d > MAX_D => Err(invalid(
            file,
            format!("rows of width {d}; expected an activation width of at most {MAX_D}"),
        )),
        &[r, d] if d > 0 => Ok((r, d as usize)),
        s => Err(invalid(
            file,
            format!("array has shape {s:?}; expected 2-D [rows, d] with d >= 1"),
        )),
    }
}

/// Parses a `.npy` header from `reader`, leaving it at the data.
fn npy_source<'a>(file: &Path, mut reader: impl Read + 'a) -> Result<Source<'a>> {
    // The preamble and header (never longer than this), checked before npyz parses them (see
    // `crate::npy`); the bytes read are put back in front of the rest.
    let mut head = vec![0u8; 12 + crate::npy::MAX_HEADER + 1];
    let got = read_up_to(&mut reader, &mut head)
        .map_err(|e| invalid(file, format!("not a valid .npy array: {e}")))?;
    head.truncate(got);
    crate::npy::check_npy_header(&head)
        .map_err(|why| invalid(file, format!("not a valid .npy array: {why}")))?;
    let mut reader = std::io::Cursor::new(head).chain(reader);
    let header = NpyHeader::from_reader(&mut reader)
        .map_err(|e| invalid(file, format!("not a valid .npy array: {e}")))?;
    let bad_type = |t: &dyn std::fmt::Display| {
        invalid(
            file,
            format!("array dtype {t} is not supported; expected float16, float32 or float64"),
        )
    };
    let DType::Plain(ts) = header.dtype() else {
        return Err(bad_type(&header.dtype().descr()));
    };
    let ty = match (ts.type_char(), ts.size_field()) {
        (TypeChar::Float, 2) => SrcType::F16,
        (TypeChar::Float, 4) => SrcType::F32,
        (TypeChar::Float, 8) => SrcType::F64,
        _ => return Err(bad_type(&ts)),
    };
    if header.order() == Order::Fortran {
        return Err(invalid(
            file,
            "array is Fortran-ordered; save it C-ordered (numpy.ascontiguousarray)",
        ));
    }
    let (rows, d) = rank2(file, header.shape().iter().copied())?;
    Ok(Source {
        rows,
        d,
        ty,
        big_endian: ts.endianness() == npyz::Endianness::Big,
        data: Box::new(reader),
    })
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Decodes `bytes` (`out.len()` elements of `ty`) into f32.
fn decode(ty: SrcType, big_endian: bool, bytes: &[u8], out: &mut [f32]) {
    let n = ty.size();
    for (o, b) in out.iter_mut().zip(bytes.chunks_exact(n)) {
        let mut a = [0u8; 8];
        a[..n].copy_from_slice(b);
        if big_endian {
            a[..n].reverse();
        }
        *o = match ty {
            SrcType::F16 => f16::from_le_bytes([a[0], a[1]]).to_f32(),
            SrcType::Bf16 => bf16::from_le_bytes([a[0], a[1]]).to_f32(),
            SrcType::F32 => f32::from_le_bytes([a[0], a[1], a[2], a[3]]),
            SrcType::F64 => f64::from_le_bytes(a) as f32,
        };
    }
}

/// Streams `src` into a new store at `out`.
fn ingest(
    file: &Path,
    mut src: Source<'_>,
    out: &Path,
    opts: &ImportOptions,
) -> Result<ImportReport> {
    if src.rows > u64::from(u32::MAX) + 1 {
        return Err(invalid(
            file,
            "more than 2^32 rows: seq_id (the source row index) would overflow u32",
        ));
    }
    let dtype = src.ty.store_dtype();
    let meta = StoreMeta::new(src.d, dtype, opts.hook.clone(), opts.model.clone());
    let wopts = WriterOptions {
        shard_rows: opts.shard_rows.unwrap_or(0),
        ..Default::default()
    };
    // The store is written beside `out` and swapped in whole, so a killed import leaves `out`
    // as it was (the next run clears the stage and starts over) and a reader never sees a
    // partial store. `out` itself is checked first: no store there, nothing foreign.
    crate::writer::check_fresh_dir(out)?;
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    let stage = lantern_output::DirStage::new(out)?;
    let mut writer = StoreWriter::create(stage.path(), meta, wopts)?;
    let skipped = copy_rows(file, &mut src, &mut writer, opts.skip_non_finite)?;
    let manifest = writer.finish()?;
    stage.commit(&[])?;
    Ok(ImportReport {
        rows: manifest.rows,
        skipped_non_finite: skipped,
        d_model: src.d,
        dtype,
    })
}

/// Pushes every row of `src` into `writer`; returns the number of non-finite rows skipped.
fn copy_rows(
    file: &Path,
    src: &mut Source<'_>,
    writer: &mut StoreWriter,
    skip_non_finite: bool,
) -> Result<u64> {
    let d = src.d;
    let chunk_rows = (CHUNK_BYTES / (d * src.ty.size())).clamp(1, CHUNK_ROWS);
    let mut bytes = vec![0u8; chunk_rows * d * src.ty.size()];
    let mut vals = vec![0.0f32; chunk_rows * d];
    let (mut kept, mut seq_ids) = (
        Vec::with_capacity(chunk_rows * d),
        Vec::with_capacity(chunk_rows),
    );
    let mut skipped = 0u64;
    let mut row = 0u64;
    while row < src.rows {
        let n = (src.rows - row).min(chunk_rows as u64) as usize;
        let chunk = &mut bytes[..n * d * src.ty.size()];
        src.data.read_exact(chunk).map_err(|e| {
            invalid(
                file,
                format!("data ends early (expected {} x {d} values): {e}", src.rows),
            )
        })?;
        decode(src.ty, src.big_endian, chunk, &mut vals[..n * d]);
        kept.clear();
        seq_ids.clear();
        for (i, v) in vals[..n * d].chunks_exact(d).enumerate() {
            let r = row + i as u64;
            if v.iter().all(|x| x.is_finite()) {
                kept.extend_from_slice(v);
                seq_ids.push(r as u32);
            } else if skip_non_finite {
                skipped += 1;
            } else {
                return Err(ActsError::NonFinite {
                    path: file.to_path_buf(),
                    row: r,
                });
            }
        }
        let zeros = vec![0u32; seq_ids.len()];
        writer.push(&kept, &zeros, &seq_ids, &zeros, None)?;
        row += n as u64;
    }
    Ok(skipped)
}
