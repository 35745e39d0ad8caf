//! Helpers shared by this crate's integration tests.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::Path;

use lantern_acts::{Dtype, StoreMeta, StoreWriter, WriterOptions};

pub fn meta(d: usize, dtype: Dtype) -> StoreMeta {
    StoreMeta::new(d, dtype, "blocks.3.hook_resid_post", "test-model")
}

/// Value `k` of row `r`: exactly representable in f32 (a multiple of 1/8 below 2^10), so every
/// stored copy can be compared with `==`.
pub fn value(r: u64, k: usize) -> f32 {
    ((r * 31 + k as u64 * 7) % 1000) as f32 / 8.0 - 60.0
}

/// Row `r`'s ids: token = 3r+1, seq = r/10, position = r%10, role = r%2.
pub fn ids(r: u64) -> (u32, u32, u32, u8) {
    (
        (3 * r + 1) as u32,
        (r / 10) as u32,
        (r % 10) as u32,
        (r % 2) as u8,
    )
}

/// Pushes rows `start..end` (formula rows) in one call.
pub fn push_rows(w: &mut StoreWriter, d: usize, start: u64, end: u64, roles: bool) {
    let mut acts = Vec::new();
    let (mut t, mut s, mut p, mut ro) = (vec![], vec![], vec![], vec![]);
    for r in start..end {
        acts.extend((0..d).map(|k| value(r, k)));
        let (a, b, c, e) = ids(r);
        t.push(a);
        s.push(b);
        p.push(c);
        ro.push(e);
    }
    w.push(&acts, &t, &s, &p, roles.then_some(&ro[..])).unwrap();
}

/// A finished f32 store of `rows` formula rows.
pub fn formula_store(dir: &Path, d: usize, rows: u64, shard_rows: usize, roles: bool) {
    let mut w = StoreWriter::create(
        dir,
        meta(d, Dtype::F32),
        WriterOptions {
            shard_rows,
            ..Default::default()
        },
    )
    .unwrap();
    push_rows(&mut w, d, 0, rows, roles);
    w.finish().unwrap();
}

/// Overwrites value `k` of row `row` (counted within shard `shard`) of an f32 store with `v`,
/// and records the shard's new crc32 in the manifest: a store holding what the writer would
/// refuse (written by an older writer, or edited), for the readers' tests.
pub fn poke_value(dir: &Path, shard: usize, row: usize, k: usize, v: f32) {
    let file = dir.join(format!("shard-{shard:05}.safetensors"));
    let mut bytes = std::fs::read(&file).unwrap();
    let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let head: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header]).unwrap();
    let d = head["acts"]["shape"][1].as_u64().unwrap() as usize;
    let start = head["acts"]["data_offsets"][0].as_u64().unwrap() as usize;
    let at = 8 + header + start + 4 * (row * d + k);
    bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
    std::fs::write(&file, &bytes).unwrap();
    let mpath = dir.join("manifest.json");
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&mpath).unwrap()).unwrap();
    m["shards"][shard]["crc32"] = crc32fast::hash(&bytes).into();
    std::fs::write(&mpath, m.to_string()).unwrap();
}
