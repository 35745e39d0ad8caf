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
    let mut w =
        StoreWriter::create(dir, meta(d, Dtype::F32), WriterOptions { shard_rows }).unwrap();
    push_rows(&mut w, d, 0, rows, roles);
    w.finish().unwrap();
}
