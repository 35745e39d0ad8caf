//! Export a store as one `.npy` file.

use std::io::Write;
use std::path::Path;

use lantern_output::AtomicFile;

use crate::error::{Result, io_err};
use crate::store::Store;

/// The `.npy` (format 1.0) header for a C-order little-endian f32 array of `shape`, padded so
/// the data starts at a multiple of 64 bytes.
pub(crate) fn npy_f32_header(shape: &[u64]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|s| s.to_string()).collect();
    let shape = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    // magic (6) + version (2) + header length (2) + dict + '\n'
    let unpadded = 10 + dict.len() + 1;
    dict.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    dict.push('\n');
    let mut out = Vec::with_capacity(10 + dict.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out
}

/// Writes all rows as a 2-D little-endian f32 `.npy` `[rows, d]`, streaming shard by shard
/// (each shard's checksum is checked on the way). Returns the number of rows written.
///
/// `out` inside the store is refused before anything is written, and the file is written
/// under a temporary name and renamed into place when complete, so an error or a kill leaves
/// any earlier `out` as it was.
pub fn export_npy(store: &Store, out: &Path) -> Result<u64> {
    let d = store.d_model();
    lantern_output::check_not_inside(out, &[("store", store.dir())])?;
    let mut w = AtomicFile::create(out)?;
    w.write_all(&npy_f32_header(&[store.rows(), d as u64]))
        .map_err(io_err(out))?;
    let mut row = vec![0.0f32; d];
    let mut bytes = Vec::with_capacity(4 * d);
    let mut written = 0u64;
    for i in 0..store.num_shards() {
        let shard = store.shard(i)?;
        for r in 0..shard.rows() {
            shard.row_f32(r, &mut row);
            bytes.clear();
            bytes.extend(row.iter().flat_map(|x| x.to_le_bytes()));
            w.write_all(&bytes).map_err(io_err(out))?;
        }
        written += shard.rows() as u64;
    }
    w.commit()?;
    Ok(written)
}
