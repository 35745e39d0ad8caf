//! Batch streaming: order, shuffling, resume, filters, epochs, non-finite rows.

mod common;

use std::path::Path;

use common::{formula_store, ids, meta, poke_value, value};
use lantern_acts::{
    Batch, BatchReader, Cursor, Dtype, NonFinite, ReaderOptions, Role, ShuffleScope, Store,
    StoreWriter, WriterOptions,
};

fn reader(dir: &Path, opts: ReaderOptions) -> BatchReader {
    BatchReader::new(Store::open(dir).unwrap(), opts).unwrap()
}

fn all_batches(r: &mut BatchReader) -> Vec<Batch> {
    std::iter::from_fn(|| r.next_batch().unwrap()).collect()
}

/// Row numbers of a batch (token_id = 3r + 1), after checking each row's values and ids.
fn row_numbers(b: &Batch) -> Vec<u64> {
    (0..b.rows)
        .map(|i| {
            let r = u64::from(b.token_ids[i] - 1) / 3;
            let (_, s, p, _) = ids(r);
            assert_eq!((b.seq_ids[i], b.positions[i]), (s, p), "row {r} ids");
            let want: Vec<f32> = (0..b.d).map(|k| value(r, k)).collect();
            assert_eq!(&b.acts[i * b.d..(i + 1) * b.d], &want[..], "row {r} values");
            r
        })
        .collect()
}

fn shuffled(seed: u64, epochs: u64) -> ReaderOptions {
    scoped(seed, epochs, ShuffleScope::Window)
}

fn scoped(seed: u64, epochs: u64, scope: ShuffleScope) -> ReaderOptions {
    ReaderOptions {
        batch_rows: 9,
        shuffle_rows: 16,
        scope,
        seed,
        epochs: Some(epochs),
        ..Default::default()
    }
}

#[test]
fn sequential_reading_follows_manifest_order() {
    let dir = tempfile::tempdir().unwrap();
    formula_store(dir.path(), 3, 23, 5, false);
    let opts = ReaderOptions {
        batch_rows: 4,
        ..Default::default()
    };
    let batches = all_batches(&mut reader(dir.path(), opts));
    let sizes: Vec<usize> = batches.iter().map(|b| b.rows).collect();
    assert_eq!(sizes, [4, 4, 4, 4, 4, 3]);
    let rows: Vec<u64> = batches.iter().flat_map(row_numbers).collect();
    assert_eq!(rows, (0..23).collect::<Vec<_>>());
}

#[test]
fn batches_are_full_across_epoch_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    formula_store(dir.path(), 2, 10, 3, false);
    let opts = ReaderOptions {
        batch_rows: 4,
        epochs: Some(3),
        ..Default::default()
    };
    let mut r = reader(dir.path(), opts);
    let batches = all_batches(&mut r);
    let sizes: Vec<usize> = batches.iter().map(|b| b.rows).collect();
    assert_eq!(sizes, [4, 4, 4, 4, 4, 4, 4, 2]);
    let rows: Vec<u64> = batches.iter().flat_map(row_numbers).collect();
    assert_eq!(rows, (0..30).map(|i| i % 10).collect::<Vec<_>>());
    assert!(r.next_batch().unwrap().is_none(), "stays exhausted");
}

#[test]
fn endless_epochs_keep_going() {
    let dir = tempfile::tempdir().unwrap();
    formula_store(dir.path(), 2, 10, 3, false);
    let opts = ReaderOptions {
        batch_rows: 7,
        shuffle_rows: 4,
        epochs: None,
        ..Default::default()
    };
    let mut r = reader(dir.path(), opts);
    for _ in 0..20 {
        assert_eq!(r.next_batch().unwrap().unwrap().rows, 7);
    }
    assert_eq!(r.cursor(), Cursor { epoch: 14, row: 0 });
}

#[test]
fn shuffled_epochs_are_permutations_and_follow_the_seed() {
    let dir = tempfile::tempdir().unwrap();
    formula_store(dir.path(), 3, 100, 7, false);
    for scope in [ShuffleScope::Window, ShuffleScope::Store] {
        let read = |seed| -> Vec<u64> {
            all_batches(&mut reader(dir.path(), scoped(seed, 3, scope)))
                .iter()
                .flat_map(row_numbers)
                .collect()
        };
        let a = read(5);
        assert_eq!(a.len(), 300);
        let identity: Vec<u64> = (0..100).collect();
        for epoch in a.chunks(100) {
            assert_ne!(epoch, &identity[..], "epoch not shuffled");
            let mut sorted = epoch.to_vec();
            sorted.sort_unstable();
            assert_eq!(sorted, identity, "epoch is not a permutation");
        }
        assert_ne!(a[..100], a[100..200], "epochs should differ");
        assert_eq!(a, read(5), "same seed, same order");
        assert_ne!(a, read(6), "other seed, other order");
    }
}

#[test]
fn store_scope_mixes_the_whole_store_into_every_window() {
    // Window scope keeps each 16-row stretch within ≤ 4 of the 15 shards (test above); the
    // store scope draws every stretch from all of them: 16 uniform draws from 15 shards of ≤ 7
    // rows hit ≈ 10.5 distinct shards on average, and the first fifth of the epoch covers rows
    // from every part of the store.
    let dir = tempfile::tempdir().unwrap();
    formula_store(dir.path(), 3, 100, 7, false);
    let rows: Vec<u64> = all_batches(&mut reader(dir.path(), scoped(1, 1, ShuffleScope::Store)))
        .iter()
        .flat_map(row_numbers)
        .collect();
    let spans: Vec<usize> = rows
        .chunks(16)
        .map(|w| {
            let mut shards: Vec<u64> = w.iter().map(|r| r / 7).collect();
            shards.sort_unstable();
            shards.dedup();
            shards.len()
        })
        .collect();
    let mean = spans[..6].iter().sum::<usize>() as f64 / 6.0;
    assert!(mean > 8.0, "16-row stretches span {spans:?} shards");
    let mut quarters: Vec<u64> = rows[..20].iter().map(|r| r / 25).collect();
    quarters.sort_unstable();
    quarters.dedup();
    assert_eq!(quarters, [0, 1, 2, 3], "first 20 rows {:?}", &rows[..20]);
}

#[test]
fn shuffle_window_bounds_how_far_rows_move() {
    // Sequential shard order is permuted, but rows within one window stay together: every
    // window of 16 stream rows holds rows from at most 4 shards of 7 (16 = 7 + 7 + 2 worst case).
    let dir = tempfile::tempdir().unwrap();
    formula_store(dir.path(), 3, 100, 7, false);
    let rows: Vec<u64> = all_batches(&mut reader(dir.path(), shuffled(1, 1)))
        .iter()
        .flat_map(row_numbers)
        .collect();
    for window in rows.chunks(16) {
        let mut shards: Vec<u64> = window.iter().map(|r| r / 7).collect();
        shards.sort_unstable();
        shards.dedup();
        assert!(shards.len() <= 4, "window spans shards {shards:?}");
    }
}

#[test]
fn seek_to_a_saved_cursor_reproduces_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    formula_store(dir.path(), 4, 61, 6, true);
    for scope in [ShuffleScope::Window, ShuffleScope::Store] {
        let mut opts = scoped(9, 3, scope);
        opts.role = Some(Role::Answer); // filtering must not disturb resume either
        let mut full = reader(dir.path(), opts.clone());
        let mut batches = Vec::new();
        let mut cursors = vec![full.cursor()];
        while let Some(b) = full.next_batch().unwrap() {
            batches.push(b);
            cursors.push(full.cursor());
        }
        assert!(batches.len() > 8);
        for j in [0, 1, 3, 4, 7, batches.len() - 1] {
            let saved: Cursor =
                serde_json::from_str(&serde_json::to_string(&cursors[j]).unwrap()).unwrap();
            let mut resumed = reader(dir.path(), opts.clone());
            resumed.seek(saved).unwrap();
            let rest = all_batches(&mut resumed);
            assert_eq!(
                rest,
                batches[j..],
                "{scope:?}: resume from batch {j} at {saved:?}"
            );
        }
    }
}

#[test]
fn role_filter_keeps_only_that_role() {
    let dir = tempfile::tempdir().unwrap();
    formula_store(dir.path(), 2, 41, 5, true); // role = row % 2
    for (role, parity) in [(Role::Answer, 1), (Role::Prompt, 0)] {
        let opts = ReaderOptions {
            batch_rows: 8,
            shuffle_rows: 10,
            role: Some(role),
            ..Default::default()
        };
        let mut rows: Vec<u64> = all_batches(&mut reader(dir.path(), opts))
            .iter()
            .flat_map(row_numbers)
            .collect();
        rows.sort_unstable();
        let want: Vec<u64> = (0..41).filter(|r| r % 2 == parity).collect();
        assert_eq!(rows, want, "{role}");
    }
    let plain = tempfile::tempdir().unwrap();
    formula_store(plain.path(), 2, 4, 5, false);
    let opts = ReaderOptions {
        role: Some(Role::Answer),
        ..Default::default()
    };
    let err = BatchReader::new(Store::open(plain.path()).unwrap(), opts)
        .err()
        .unwrap();
    assert!(err.to_string().contains("role"), "{err}");
}

#[test]
fn a_filter_that_rejects_everything_errors_instead_of_spinning() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = StoreWriter::create(
        dir.path(),
        meta(2, Dtype::F32),
        WriterOptions {
            shard_rows: 3,
            ..Default::default()
        },
    )
    .unwrap();
    w.push(&[1.0; 10], &[0; 5], &[0; 5], &[0; 5], Some(&[0; 5]))
        .unwrap();
    w.finish().unwrap();
    let opts = ReaderOptions {
        role: Some(Role::Answer),
        epochs: None,
        ..Default::default()
    };
    assert!(reader(dir.path(), opts).next_batch().is_err());
    // Every row non-finite and skipped, endless epochs: an error too.
    let bad = tempfile::tempdir().unwrap();
    formula_store(bad.path(), 2, 7, 3, false);
    for r in 0..7 {
        poke_value(bad.path(), r / 3, r % 3, 1, f32::NAN);
    }
    let opts = ReaderOptions {
        non_finite: NonFinite::Skip,
        epochs: None,
        ..Default::default()
    };
    let err = reader(bad.path(), opts).next_batch().unwrap_err();
    assert!(err.to_string().contains("no row passes"), "{err}");
}

/// 20 rows, d = 3, shards of 5; row 7 has a NaN and row 13 an infinity.
fn store_with_bad_rows(dir: &Path) {
    let mut w = StoreWriter::create(
        dir,
        meta(3, Dtype::F32),
        WriterOptions {
            shard_rows: 5,
            ..Default::default()
        },
    )
    .unwrap();
    let acts: Vec<f32> = (0..60).map(|i| i as f32).collect();
    let t: Vec<u32> = (0..20).collect();
    w.push(&acts, &t, &t, &t, None).unwrap();
    w.finish().unwrap();
    // The writer refuses such rows; a store can still hold them (an older writer, an edit).
    poke_value(dir, 1, 2, 1, f32::NAN);
    poke_value(dir, 2, 3, 2, f32::NEG_INFINITY);
}

#[test]
fn non_finite_rows_error_by_default() {
    let dir = tempfile::tempdir().unwrap();
    store_with_bad_rows(dir.path());
    let mut r = reader(
        dir.path(),
        ReaderOptions {
            batch_rows: 4,
            ..Default::default()
        },
    );
    assert_eq!(r.next_batch().unwrap().unwrap().rows, 4);
    let err = r.next_batch().unwrap_err().to_string();
    assert!(
        err.contains("shard-00001.safetensors") && err.contains("row 2"),
        "{err}"
    );
    assert_eq!(
        r.cursor(),
        Cursor { epoch: 0, row: 4 },
        "cursor stays at the failed batch"
    );
}

#[test]
fn non_finite_rows_are_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    store_with_bad_rows(dir.path());
    let opts = ReaderOptions {
        batch_rows: 6,
        non_finite: NonFinite::Skip,
        shuffle_rows: 8,
        seed: 3,
        ..Default::default()
    };
    let mut r = reader(dir.path(), opts);
    let batches = all_batches(&mut r);
    let sizes: Vec<usize> = batches.iter().map(|b| b.rows).collect();
    assert_eq!(sizes, [6, 6, 6]);
    let mut seen: Vec<u32> = batches.iter().flat_map(|b| b.token_ids.clone()).collect();
    seen.sort_unstable();
    assert_eq!(
        seen,
        (0..20).filter(|&r| r != 7 && r != 13).collect::<Vec<_>>()
    );
    assert_eq!(r.skipped_non_finite(), 2);
    for b in &batches {
        for (i, &t) in b.token_ids.iter().enumerate() {
            let want: Vec<f32> = (0..3).map(|k| (t * 3 + k) as f32).collect();
            assert_eq!(&b.acts[i * 3..i * 3 + 3], &want[..]);
        }
    }
}

#[test]
fn seek_past_the_end_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    formula_store(dir.path(), 2, 10, 3, false);
    let mut r = reader(dir.path(), ReaderOptions::default());
    assert!(r.seek(Cursor { epoch: 0, row: 11 }).is_err());
    r.seek(Cursor { epoch: 0, row: 10 }).unwrap();
    assert!(
        r.next_batch().unwrap().is_none(),
        "row 10 of 10 = end of the only epoch"
    );
}

/// Shard files of `dir` currently memory-mapped by this process (Linux only).
#[cfg(target_os = "linux")]
fn mapped_shards(dir: &Path) -> usize {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let dir = dir.to_string_lossy();
    let mut files: Vec<&str> = maps
        .lines()
        .filter(|l| l.contains(&*dir))
        .map(|l| l.rsplit('/').next().unwrap())
        .collect();
    files.sort_unstable();
    files.dedup();
    files.len()
}

#[cfg(target_os = "linux")]
#[test]
fn reader_maps_only_the_shards_of_the_current_window() {
    let dir = tempfile::tempdir().unwrap();
    formula_store(dir.path(), 4, 200, 5, false); // 40 shards
    let opts = ReaderOptions {
        batch_rows: 3,
        shuffle_rows: 8,
        epochs: Some(2),
        ..Default::default()
    };
    let mut r = reader(dir.path(), opts);
    let mut max = 0;
    while r.next_batch().unwrap().is_some() {
        max = max.max(mapped_shards(dir.path()));
    }
    assert!((1..=3).contains(&max), "up to {max} shards mapped at once");
    drop(r);
    assert_eq!(mapped_shards(dir.path()), 0);
}

/// Store rows poked non-finite by [`bad_big_store`]: runs of neighbours, both roles, shard
/// edges and the store's first and last rows.
const BAD_ROWS: [u64; 14] = [
    0, 1, 2, 2999, 3000, 3001, 7777, 7778, 7779, 7780, 12_345, 15_000, 15_001, 19_999,
];

/// 20 000 rows, d 8, shards of 3 000, roles (row % 2), `BAD_ROWS` poked: NaN or ±∞.
fn bad_big_store(dir: &Path) {
    formula_store(dir, 8, 20_000, 3000, true);
    for (i, &r) in BAD_ROWS.iter().enumerate() {
        let v = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY][i % 3];
        poke_value(dir, (r / 3000) as usize, (r % 3000) as usize, i % 8, v);
    }
}

/// Rows of every batch of a reader, in order, after the formula check of each row's values.
fn stream(dir: &Path, opts: ReaderOptions) -> (Vec<u64>, Vec<usize>, u64) {
    let mut r = reader(dir, opts);
    let batches = all_batches(&mut r);
    let rows = batches.iter().flat_map(row_numbers).collect();
    (
        rows,
        batches.iter().map(|b| b.rows).collect(),
        r.skipped_non_finite(),
    )
}

#[test]
fn batches_gathered_in_parallel_equal_rows_read_one_at_a_time() {
    // Batches of 4 096 rows are gathered in parallel in rounds that end at each window edge
    // (windows of 1 500 rows here, so several rounds per batch); skipped rows are closed up.
    // The reference reads batches of one row: one row per round, nothing to close up.
    let dir = tempfile::tempdir().unwrap();
    bad_big_store(dir.path());
    let bad_answers = BAD_ROWS.iter().filter(|&&r| r % 2 == 1).count() as u64;
    for (scope, role, epochs) in [
        (ShuffleScope::Window, Some(Role::Answer), 1),
        (ShuffleScope::Window, None, 2),
        (ShuffleScope::Store, Some(Role::Answer), 2),
        (ShuffleScope::Store, None, 1),
    ] {
        let opts = |batch_rows| ReaderOptions {
            batch_rows,
            shuffle_rows: 1500,
            scope,
            seed: 11,
            role,
            epochs: Some(epochs),
            non_finite: NonFinite::Skip,
            ..Default::default()
        };
        let what = format!("{scope} role {role:?} epochs {epochs}");
        let (rows, sizes, skipped) = stream(dir.path(), opts(4096));
        let (want, _, want_skipped) = stream(dir.path(), opts(1));
        assert_eq!(rows, want, "{what}: rows and order");
        assert_eq!(skipped, want_skipped, "{what}: skip count");
        // Independently of the reference: the rows kept, and the skips (a prompt row is
        // dropped by the role filter before its values are read, so it is not counted).
        let bad = match role {
            Some(_) => bad_answers,
            None => BAD_ROWS.len() as u64,
        };
        assert_eq!(skipped, bad * epochs, "{what}: skipped");
        let mut kept = rows.clone();
        kept.sort_unstable();
        let mut expected: Vec<u64> = (0..20_000)
            .filter(|r| role.is_none() || r % 2 == 1)
            .filter(|r| !BAD_ROWS.contains(r))
            .flat_map(|r| std::iter::repeat_n(r, epochs as usize))
            .collect();
        expected.sort_unstable();
        assert_eq!(kept, expected, "{what}: kept rows");
        let full = sizes.len() - 1;
        assert!(
            sizes[..full].iter().all(|&s| s == 4096),
            "{what}: {sizes:?}"
        );
    }
}

#[test]
fn a_parallel_batch_fails_at_the_first_bad_row_of_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    bad_big_store(dir.path());
    for scope in [ShuffleScope::Window, ShuffleScope::Store] {
        let opts = |batch_rows| ReaderOptions {
            batch_rows,
            shuffle_rows: 1500,
            scope,
            seed: 5,
            ..Default::default()
        };
        // One row at a time: the rows before the first bad one, then its error.
        let mut one = reader(dir.path(), opts(1));
        let mut before = 0;
        let want = loop {
            match one.next_batch() {
                Ok(Some(_)) => before += 1,
                Ok(None) => panic!("{scope}: no bad row met"),
                Err(e) => break e.to_string(),
            }
        };
        let mut big = reader(dir.path(), opts(4096));
        let mut read = 0;
        let got = loop {
            let at = big.cursor();
            match big.next_batch() {
                Ok(Some(b)) => read += b.rows,
                Ok(None) => panic!("{scope}: no bad row met"),
                Err(e) => {
                    assert_eq!(
                        big.cursor(),
                        at,
                        "{scope}: cursor stays at the failed batch"
                    );
                    break e.to_string();
                }
            }
        };
        assert_eq!(got, want, "{scope}: the error names the same row");
        assert_eq!(
            read,
            before / 4096 * 4096,
            "{scope}: full batches before it"
        );
    }
}
