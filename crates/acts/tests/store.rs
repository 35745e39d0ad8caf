//! Writing, reopening and validating stores.

mod common;

use std::fs;

use common::{formula_store, ids, meta, poke_value, push_rows, value};
use half::{bf16, f16};
use lantern_acts::{ActsError, Dtype, Store, StoreWriter, WriterOptions};

#[test]
fn f32_rows_read_back_exactly_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let d = 5;
    let mut w = StoreWriter::create(
        dir.path(),
        meta(d, Dtype::F32),
        WriterOptions {
            shard_rows: 7,
            ..Default::default()
        },
    )
    .unwrap();
    push_rows(&mut w, d, 0, 3, true);
    push_rows(&mut w, d, 3, 23, true);
    assert_eq!((w.rows(), w.committed_rows()), (23, 21));
    push_rows(&mut w, d, 23, 50, true);
    let m = w.finish().unwrap();
    assert_eq!(m.rows, 50);

    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.rows(), 50);
    assert_eq!(store.d_model(), 5);
    assert!(store.has_roles());
    let rows: Vec<u64> = store.manifest().shards.iter().map(|s| s.rows).collect();
    assert_eq!(rows, [7, 7, 7, 7, 7, 7, 7, 1]);
    store.verify().unwrap();
    let mut r = 0u64;
    let mut out = vec![0.0; d];
    for i in 0..store.manifest().shards.len() {
        let shard = store.shard(i).unwrap();
        for j in 0..shard.rows() {
            shard.row_f32(j, &mut out);
            let want: Vec<f32> = (0..d).map(|k| value(r, k)).collect();
            assert_eq!(out, want, "row {r}");
            let (t, s, p, ro) = ids(r);
            assert_eq!(
                (
                    shard.token_id(j),
                    shard.seq_id(j),
                    shard.position(j),
                    shard.role(j)
                ),
                (t, s, p, Some(ro))
            );
            r += 1;
        }
    }
    assert_eq!(r, 50);
}

#[test]
fn f16_and_bf16_round_trip_within_their_precision() {
    for dtype in [Dtype::F16, Dtype::Bf16] {
        let dir = tempfile::tempdir().unwrap();
        let d = 16;
        let vals: Vec<f32> = (0..40 * d)
            .map(|i| ((i as f32) * 0.7311).sin() * 3.0 + 1e-3)
            .collect();
        let n = 40;
        let zeros = vec![0u32; n];
        let mut w = StoreWriter::create(
            dir.path(),
            meta(d, dtype),
            WriterOptions {
                shard_rows: 16,
                ..Default::default()
            },
        )
        .unwrap();
        w.push(&vals, &zeros, &zeros, &zeros, None).unwrap();
        w.finish().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(!store.has_roles());
        let mut got = Vec::new();
        let mut out = vec![0.0; d];
        for i in 0..3 {
            let s = store.shard(i).unwrap();
            assert_eq!(s.role(0), None);
            for j in 0..s.rows() {
                s.row_f32(j, &mut out);
                got.extend_from_slice(&out);
            }
        }
        for (g, v) in got.iter().zip(&vals) {
            let (want, eps) = match dtype {
                Dtype::F16 => (f16::from_f32(*v).to_f32(), 1.0 / 1024.0),
                _ => (bf16::from_f32(*v).to_f32(), 1.0 / 128.0),
            };
            assert_eq!(*g, want, "{dtype}");
            assert!(
                (g - v).abs() <= eps * v.abs().max(1e-2),
                "{dtype}: {g} vs {v}"
            );
        }
    }
}

#[test]
fn manifest_and_shards_follow_the_documented_format() {
    let dir = tempfile::tempdir().unwrap();
    formula_store(dir.path(), 3, 10, 4, true);
    let text = fs::read_to_string(dir.path().join("manifest.json")).unwrap();
    let m: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(m["format_version"], 1);
    assert_eq!(m["d_model"], 3);
    assert_eq!(m["dtype"], "f32");
    assert_eq!(m["hook"], "blocks.3.hook_resid_post");
    assert_eq!(m["model"], "test-model");
    assert_eq!(m["rows"], 10);
    let shards = m["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 3);
    for (i, s) in shards.iter().enumerate() {
        let name = format!("shard-{i:05}.safetensors");
        assert_eq!(s["file"], name.as_str());
        let bytes = fs::read(dir.path().join(&name)).unwrap();
        assert_eq!(s["bytes"], bytes.len() as u64);
        assert_eq!(s["crc32"], u64::from(crc32fast::hash(&bytes)));
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let n = [4, 4, 2][i];
        let acts = st.tensor("acts").unwrap();
        assert_eq!(
            (acts.dtype(), acts.shape()),
            (safetensors::Dtype::F32, &[n, 3][..])
        );
        for name in ["token_ids", "seq_ids", "positions"] {
            let t = st.tensor(name).unwrap();
            assert_eq!((t.dtype(), t.shape()), (safetensors::Dtype::U32, &[n][..]));
        }
        let role = st.tensor("role").unwrap();
        assert_eq!(
            (role.dtype(), role.shape()),
            (safetensors::Dtype::U8, &[n][..])
        );
        let first_row = u32::from_le_bytes(
            st.tensor("token_ids").unwrap().data()[..4]
                .try_into()
                .unwrap(),
        );
        assert_eq!(first_row, ids(4 * i as u64).0);
    }
}

#[test]
fn empty_store_opens_with_zero_rows() {
    let dir = tempfile::tempdir().unwrap();
    let w =
        StoreWriter::create(dir.path(), meta(8, Dtype::Bf16), WriterOptions::default()).unwrap();
    assert_eq!(w.finish().unwrap().rows, 0);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!((store.rows(), store.manifest().shards.len()), (0, 0));
    store.verify().unwrap();
}

#[test]
fn default_shard_rows_target_about_256_mib() {
    let rows = WriterOptions::default().resolved_shard_rows(&meta(4096, Dtype::F32));
    let bytes = rows * (4096 * 4 + 13);
    assert!(
        (250 << 20..=256 << 20).contains(&bytes),
        "{rows} rows = {bytes} bytes"
    );
    let huge = WriterOptions::default().resolved_shard_rows(&meta(1 << 30, Dtype::F32));
    assert_eq!(huge, 1);
}

#[test]
fn corrupt_shard_fails_checksum_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    formula_store(dir.path(), 4, 20, 8, false);
    let path = dir.path().join("shard-00001.safetensors");
    let mut bytes = fs::read(&path).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x40;
    fs::write(&path, bytes).unwrap();

    let store = Store::open(dir.path()).unwrap(); // same size, valid header: open succeeds
    store.shard(0).unwrap();
    let err = store.shard(1).err().unwrap().to_string();
    assert!(
        err.contains("shard-00001.safetensors") && err.contains("checksum"),
        "{err}"
    );
    let err = store.verify().unwrap_err();
    assert!(matches!(err, ActsError::Checksum { .. }), "{err}");
    assert!(err.to_string().contains("shard-00001.safetensors"));
    assert_eq!(err.to_string().lines().count(), 1);
}

#[test]
fn truncated_shard_fails_open() {
    let dir = tempfile::tempdir().unwrap();
    formula_store(dir.path(), 4, 20, 8, false);
    let path = dir.path().join("shard-00002.safetensors");
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
    let err = Store::open(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("shard-00002.safetensors") && err.contains("bytes"),
        "{err}"
    );
}

#[test]
fn missing_shard_fails_open() {
    let dir = tempfile::tempdir().unwrap();
    formula_store(dir.path(), 4, 20, 8, false);
    fs::remove_file(dir.path().join("shard-00000.safetensors")).unwrap();
    let err = Store::open(dir.path()).unwrap_err().to_string();
    assert!(err.contains("shard-00000.safetensors"), "{err}");
}

#[test]
fn shards_with_different_widths_fail_open() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    formula_store(a.path(), 4, 8, 8, false);
    formula_store(b.path(), 6, 8, 8, false);
    // Graft b's shard into a as its second shard, with a manifest entry that is otherwise right.
    let foreign = fs::read(b.path().join("shard-00000.safetensors")).unwrap();
    fs::write(a.path().join("shard-00001.safetensors"), &foreign).unwrap();
    let mpath = a.path().join("manifest.json");
    let mut m: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&mpath).unwrap()).unwrap();
    m["rows"] = 16.into();
    m["shards"].as_array_mut().unwrap().push(serde_json::json!({
        "file": "shard-00001.safetensors", "rows": 8, "bytes": foreign.len(),
        "crc32": crc32fast::hash(&foreign),
    }));
    fs::write(&mpath, m.to_string()).unwrap();
    let err = Store::open(a.path()).unwrap_err().to_string();
    assert!(
        err.contains("shard-00001.safetensors") && err.contains("[8, 6]"),
        "{err}"
    );
}

#[test]
fn unknown_format_version_fails_open() {
    let dir = tempfile::tempdir().unwrap();
    formula_store(dir.path(), 4, 8, 8, false);
    let mpath = dir.path().join("manifest.json");
    let text = fs::read_to_string(&mpath)
        .unwrap()
        .replace("\"format_version\": 1", "\"format_version\": 99");
    fs::write(&mpath, text).unwrap();
    let err = Store::open(dir.path()).unwrap_err().to_string();
    assert!(err.contains("manifest.json") && err.contains("99"), "{err}");
}

#[test]
fn unknown_dtype_and_wrong_row_total_fail_open() {
    let dir = tempfile::tempdir().unwrap();
    formula_store(dir.path(), 4, 8, 8, false);
    let mpath = dir.path().join("manifest.json");
    let good = fs::read_to_string(&mpath).unwrap();
    fs::write(&mpath, good.replace("\"f32\"", "\"f8\"")).unwrap();
    let err = Store::open(dir.path()).unwrap_err().to_string();
    assert!(err.contains("manifest.json") && err.contains("f8"), "{err}");
    fs::write(
        &mpath,
        good.replace("\"rows\": 8,\n  \"shards\"", "\"rows\": 9,\n  \"shards\""),
    )
    .unwrap();
    let err = Store::open(dir.path()).unwrap_err().to_string();
    assert!(err.contains("rows is 9"), "{err}");
}

#[test]
fn create_refuses_an_existing_store() {
    let dir = tempfile::tempdir().unwrap();
    formula_store(dir.path(), 4, 8, 8, false);
    let err = StoreWriter::create(dir.path(), meta(4, Dtype::F32), WriterOptions::default())
        .err()
        .unwrap();
    assert!(matches!(err, ActsError::AlreadyExists { .. }), "{err}");
}

#[test]
fn resume_with_different_meta_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    formula_store(dir.path(), 4, 8, 8, false);
    let mut other = meta(4, Dtype::F32);
    other.hook = "blocks.4.hook_resid_post".into();
    let err = StoreWriter::open_or_create(dir.path(), other, WriterOptions::default())
        .err()
        .unwrap();
    assert!(err.to_string().contains("hook"), "{err}");
    let err =
        StoreWriter::open_or_create(dir.path(), meta(4, Dtype::F16), WriterOptions::default())
            .err()
            .unwrap();
    assert!(err.to_string().contains("dtype"), "{err}");
    let err =
        StoreWriter::open_or_create(dir.path(), meta(5, Dtype::F32), WriterOptions::default())
            .err()
            .unwrap();
    assert!(err.to_string().contains("d_model"), "{err}");
}

#[test]
fn push_rejects_bad_lengths_and_mixed_roles() {
    let dir = tempfile::tempdir().unwrap();
    let mut w =
        StoreWriter::create(dir.path(), meta(2, Dtype::F32), WriterOptions::default()).unwrap();
    w.push(&[], &[], &[], &[], None).unwrap(); // empty: does not fix role presence
    assert!(w.push(&[1.0; 3], &[0, 0], &[0, 0], &[0, 0], None).is_err());
    assert!(w.push(&[1.0; 4], &[0, 0], &[0], &[0, 0], None).is_err());
    assert!(
        w.push(&[1.0; 4], &[0, 0], &[0, 0], &[0, 0], Some(&[0, 2]))
            .is_err()
    );
    w.push(&[1.0; 4], &[0, 0], &[0, 0], &[0, 0], Some(&[0, 1]))
        .unwrap();
    let err = w
        .push(&[1.0; 2], &[0], &[0], &[0], None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("roles"), "{err}");
    w.finish().unwrap();
    // The reopened writer learns role presence from the existing shard.
    let mut w =
        StoreWriter::open_or_create(dir.path(), meta(2, Dtype::F32), WriterOptions::default())
            .unwrap();
    assert!(w.push(&[1.0; 2], &[0], &[0], &[0], None).is_err());
    w.push(&[1.0; 2], &[0], &[0], &[0], Some(&[1])).unwrap();
    assert_eq!(w.finish().unwrap().rows, 3);
}

#[test]
fn resume_removes_strays_and_continues_numbering() {
    let dir = tempfile::tempdir().unwrap();
    let d = 3;
    formula_store(dir.path(), d, 10, 4, false);
    for stray in [
        "shard-00003.safetensors",
        "shard-00007.safetensors",
        "shard-00003.safetensors.tmp",
        "manifest.json.tmp",
    ] {
        fs::write(dir.path().join(stray), b"junk").unwrap();
    }
    fs::write(dir.path().join("notes.txt"), b"keep me").unwrap();
    let mut w = StoreWriter::open_or_create(
        dir.path(),
        meta(d, Dtype::F32),
        WriterOptions {
            shard_rows: 4,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(w.committed_rows(), 10);
    for stray in [
        "shard-00003.safetensors",
        "shard-00007.safetensors",
        "shard-00003.safetensors.tmp",
        "manifest.json.tmp",
    ] {
        assert!(!dir.path().join(stray).exists(), "{stray} survived");
    }
    assert!(dir.path().join("notes.txt").exists());
    push_rows(&mut w, d, 10, 15, false);
    let m = w.finish().unwrap();
    let files: Vec<&str> = m.shards.iter().map(|s| s.file.as_str()).collect();
    assert_eq!(
        files[3..],
        ["shard-00003.safetensors", "shard-00004.safetensors"]
    );
    let store = Store::open(dir.path()).unwrap();
    store.verify().unwrap();
    assert_eq!(store.rows(), 15);
    let s = store.shard(4).unwrap();
    let mut out = vec![0.0; d];
    s.row_f32(0, &mut out);
    assert_eq!(out, (0..d).map(|k| value(14, k)).collect::<Vec<_>>());
}

#[test]
fn store_and_shard_can_be_shared_across_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Store>();
    send_sync::<lantern_acts::Shard>();
    send::<lantern_acts::BatchReader>();
    send::<StoreWriter>();
}

#[test]
fn labels_are_stored_per_row_named_in_the_manifest_and_filtered_by_the_reader() {
    use lantern_acts::{BatchReader, ReaderOptions, Rows};
    let dir = tempfile::tempdir().unwrap();
    let d = 3;
    let mut m = meta(d, Dtype::F32);
    m.labels = vec!["aligned".into(), "misaligned".into()];
    let mut w = StoreWriter::create(
        dir.path(),
        m.clone(),
        WriterOptions {
            shard_rows: 4,
            ..Default::default()
        },
    )
    .unwrap();
    // Three sequences of 3 rows: labels 1, 0, 1.
    let n = 9;
    let acts: Vec<f32> = (0..n as u64)
        .flat_map(|r| (0..d).map(move |k| value(r, k)))
        .collect();
    let seq: Vec<u32> = (0..n as u32).map(|r| r / 3).collect();
    let labels: Vec<u8> = seq.iter().map(|&s| [1, 0, 1][s as usize]).collect();
    let rows = Rows {
        acts: &acts,
        token_ids: &vec![5; n],
        seq_ids: &seq,
        positions: &(0..n as u32).map(|r| r % 3).collect::<Vec<_>>(),
        roles: None,
        labels: Some(&labels),
    };
    // A store with label names takes labels with every push, each below the name count.
    let e = w
        .push_rows(Rows {
            labels: None,
            ..rows
        })
        .unwrap_err()
        .to_string();
    assert!(e.contains("2 label names"), "{e}");
    let e = w
        .push_rows(Rows {
            labels: Some(&[2; 9]),
            ..rows
        })
        .unwrap_err()
        .to_string();
    assert!(e.contains("below the 2 label names"), "{e}");
    w.push_rows(rows).unwrap();
    w.finish().unwrap();

    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.labels(), ["aligned", "misaligned"]);
    let mut got = Vec::new();
    for i in 0..store.num_shards() {
        let s = store.shard(i).unwrap();
        got.extend((0..s.rows()).map(|j| s.label(j).unwrap()));
    }
    assert_eq!(got, labels);
    let mis = store.label_index("misaligned").unwrap();
    let e = store.label_index("neutral").unwrap_err().to_string();
    assert!(e.contains("aligned, misaligned"), "{e}");
    let opts = ReaderOptions {
        batch_rows: 100,
        label: Some(mis),
        ..Default::default()
    };
    let b = BatchReader::new(store.clone(), opts)
        .unwrap()
        .next_batch()
        .unwrap()
        .unwrap();
    assert_eq!(b.seq_ids, [0, 0, 0, 2, 2, 2]);

    // Resuming with other label names is refused, naming the field.
    let mut other = m;
    other.labels = vec!["a".into(), "b".into()];
    let e = StoreWriter::open_or_create(dir.path(), other, WriterOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("labels"), "{e}");
}

#[test]
fn stores_without_labels_have_none_and_refuse_a_label_filter() {
    use lantern_acts::{BatchReader, ReaderOptions};
    let dir = tempfile::tempdir().unwrap();
    formula_store(dir.path(), 4, 10, 4, true);
    let store = Store::open(dir.path()).unwrap();
    assert!(store.labels().is_empty());
    assert_eq!(store.shard(0).unwrap().label(0), None);
    let text = fs::read_to_string(dir.path().join("manifest.json")).unwrap();
    assert!(
        !text.contains("labels"),
        "no labels key in an unlabelled manifest"
    );
    let opts = ReaderOptions {
        label: Some(0),
        ..Default::default()
    };
    let e = BatchReader::new(store, opts).err().unwrap().to_string();
    assert!(e.contains("0 labels"), "{e}");
}

/// Issue 15: rows the store cannot hold are refused where they enter it, or dropped and
/// counted; `verify` finds non-finite values a store may hold from elsewhere.
#[test]
fn rows_that_cannot_be_stored_are_refused_or_dropped_and_counted() {
    let d = 2;
    let opts = |skip| WriterOptions {
        shard_rows: 4,
        skip_non_finite: skip,
    };
    let acts = [1.0, 2.0, f32::NAN, 0.5, 3.0, 4.0];
    let push = |w: &mut StoreWriter| w.push(&acts, &[7, 8, 9], &[0, 0, 0], &[0, 1, 2], None);

    let dir = tempfile::tempdir().unwrap();
    let mut w = StoreWriter::create(dir.path(), meta(d, Dtype::F32), opts(false)).unwrap();
    w.push(&[0.0, 0.0], &[1], &[0], &[0], None).unwrap();
    match push(&mut w) {
        Err(ActsError::NonFinite { row, .. }) => assert_eq!(row, 2, "the store's row number"),
        other => panic!("expected a non-finite error, got {other:?}"),
    }
    assert_eq!(w.rows(), 1, "nothing of the refused push was kept");

    // An f16 store cannot hold 70 000 (it would become an infinity).
    let dir = tempfile::tempdir().unwrap();
    let mut w = StoreWriter::create(dir.path(), meta(d, Dtype::F16), opts(false)).unwrap();
    let e = w
        .push(&[1.0, 70_000.0], &[1], &[0], &[0], None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("row 0: 70000 does not fit the store's f16"),
        "{e}"
    );

    // Skipping keeps the other rows with their own ids.
    let dir = tempfile::tempdir().unwrap();
    let mut w = StoreWriter::create(dir.path(), meta(d, Dtype::F32), opts(true)).unwrap();
    push(&mut w).unwrap();
    assert_eq!((w.rows(), w.skipped_non_finite()), (2, 1));
    w.finish().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let shard = s.shard(0).unwrap();
    let mut row = vec![0.0; d];
    shard.row_f32(1, &mut row);
    assert_eq!(row, [3.0, 4.0]);
    assert_eq!((shard.token_id(0), shard.token_id(1)), (7, 9));
    s.verify().unwrap();

    // A NaN written by something else (checksum made to match): verify names shard and row.
    poke_value(dir.path(), 0, 1, 0, f32::NAN);
    let e = Store::open(dir.path())
        .unwrap()
        .verify()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("shard-00000.safetensors") && e.contains("row 1"),
        "{e}"
    );
}
