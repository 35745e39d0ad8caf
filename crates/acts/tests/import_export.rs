//! Importing `.npy` / `.npz` / `.safetensors` arrays and exporting stores to `.npy`.

use std::fs;
use std::io::Write;
use std::path::Path;

use half::{bf16, f16};
use lantern_acts::{ActsError, Dtype, ImportOptions, Store, export_npy, import_file};
use npyz::WriterBuilder;

/// `.npy` bytes of a C-order f32 array, written by the npyz crate.
fn npy_f32(shape: &[u64], data: &[f32]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(shape)
        .writer(&mut out)
        .begin_nd()
        .unwrap();
    w.extend(data.iter().copied()).unwrap();
    w.finish().unwrap();
    out
}

fn npy_f64(shape: &[u64], data: &[f64]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(shape)
        .writer(&mut out)
        .begin_nd()
        .unwrap();
    w.extend(data.iter().copied()).unwrap();
    w.finish().unwrap();
    out
}

/// Hand-written `.npy` (format 1.0) with any descr, for dtypes npyz is not built to write here.
fn npy_raw(descr: &str, fortran: bool, shape: &str, data: &[u8]) -> Vec<u8> {
    let fo = if fortran { "True" } else { "False" };
    let mut h = format!("{{'descr': '{descr}', 'fortran_order': {fo}, 'shape': {shape}, }}");
    while (10 + h.len() + 1) % 64 != 0 {
        h.push(' ');
    }
    h.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((h.len() as u16).to_le_bytes());
    out.extend(h.as_bytes());
    out.extend(data);
    out
}

fn opts() -> ImportOptions {
    ImportOptions {
        hook: "blocks.1.hook_mlp_out".into(),
        model: "m".into(),
        shard_rows: Some(4),
        ..Default::default()
    }
}

/// All rows of a store, with (token_id, seq_id, position, role) of each.
/// (token_id, seq_id, position, role) of one row.
type RowIds = (u32, u32, u32, Option<u8>);

fn store_rows(dir: &Path) -> (Vec<f32>, Vec<RowIds>) {
    let store = Store::open(dir).unwrap();
    store.verify().unwrap();
    let d = store.d_model();
    let (mut vals, mut ids) = (Vec::new(), Vec::new());
    let mut row = vec![0.0; d];
    for i in 0..store.manifest().shards.len() {
        let s = store.shard(i).unwrap();
        for j in 0..s.rows() {
            s.row_f32(j, &mut row);
            vals.extend_from_slice(&row);
            ids.push((s.token_id(j), s.seq_id(j), s.position(j), s.role(j)));
        }
    }
    (vals, ids)
}

fn read_npy_f32(path: &Path) -> (Vec<u64>, Vec<f32>) {
    let npy = npyz::NpyFile::new(fs::File::open(path).unwrap()).unwrap();
    let shape = npy.shape().to_vec();
    (shape, npy.into_vec::<f32>().unwrap())
}

#[test]
fn npy_f32_imports_and_exports_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let data: Vec<f32> = (0..30).map(|i| (i as f32 * 0.37).cos() * 10.0).collect();
    let src = tmp.path().join("acts.npy");
    fs::write(&src, npy_f32(&[10, 3], &data)).unwrap();
    let out = tmp.path().join("store");
    // A .npy has one array: a key would be ignored, so it is refused before anything is written.
    let keyed = ImportOptions {
        key: Some("acts".into()),
        ..opts()
    };
    let err = import_file(&src, &out, &keyed).unwrap_err().to_string();
    assert!(err.contains("acts.npy") && err.contains("no keys"), "{err}");
    assert!(!out.join("manifest.json").exists());
    let report = import_file(&src, &out, &opts()).unwrap();
    assert_eq!(
        (
            report.rows,
            report.skipped_non_finite,
            report.d_model,
            report.dtype
        ),
        (10, 0, 3, Dtype::F32)
    );
    let (vals, ids) = store_rows(&out);
    assert_eq!(vals, data);
    let want: Vec<_> = (0..10).map(|r| (0, r, 0, None)).collect();
    assert_eq!(ids, want);
    let m = Store::open(&out).unwrap().manifest().clone();
    assert_eq!(
        (m.hook.as_str(), m.model.as_str(), m.shards.len()),
        ("blocks.1.hook_mlp_out", "m", 3)
    );

    let exported = tmp.path().join("back.npy");
    assert_eq!(
        export_npy(&Store::open(&out).unwrap(), &exported).unwrap(),
        10
    );
    let (shape, back) = read_npy_f32(&exported);
    assert_eq!(shape, [10, 3]);
    assert_eq!(back, data);
}

#[test]
fn npy_f64_becomes_f32_and_f16_and_big_endian_are_read() {
    let tmp = tempfile::tempdir().unwrap();
    let data: Vec<f64> = (0..12).map(|i| 1.0 / (i as f64 + 3.0)).collect();
    let src = tmp.path().join("a.npy");
    fs::write(&src, npy_f64(&[4, 3], &data)).unwrap();
    let r = import_file(&src, &tmp.path().join("s64"), &opts()).unwrap();
    assert_eq!(r.dtype, Dtype::F32);
    let want: Vec<f32> = data.iter().map(|&v| v as f32).collect();
    assert_eq!(store_rows(&tmp.path().join("s64")).0, want);

    let halfs: Vec<f16> = data.iter().map(|&v| f16::from_f64(v)).collect();
    let bytes: Vec<u8> = halfs.iter().flat_map(|h| h.to_le_bytes()).collect();
    let src = tmp.path().join("h.npy");
    fs::write(&src, npy_raw("<f2", false, "(4, 3)", &bytes)).unwrap();
    let r = import_file(&src, &tmp.path().join("s16"), &opts()).unwrap();
    assert_eq!(r.dtype, Dtype::F16);
    let want: Vec<f32> = halfs.iter().map(|h| h.to_f32()).collect();
    assert_eq!(store_rows(&tmp.path().join("s16")).0, want);

    let big: Vec<u8> = want.iter().flat_map(|v| v.to_be_bytes()).collect();
    let src = tmp.path().join("be.npy");
    fs::write(&src, npy_raw(">f4", false, "(4, 3)", &big)).unwrap();
    import_file(&src, &tmp.path().join("sbe"), &opts()).unwrap();
    assert_eq!(store_rows(&tmp.path().join("sbe")).0, want);
}

#[test]
fn npy_of_wrong_rank_order_or_dtype_is_rejected_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        ("one_d.npy", npy_f32(&[6], &[0.0; 6]), "2-D"),
        ("three_d.npy", npy_f32(&[1, 2, 3], &[0.0; 6]), "2-D"),
        (
            "fortran.npy",
            npy_raw("<f4", true, "(2, 3)", &[0; 24]),
            "Fortran",
        ),
        (
            "ints.npy",
            npy_raw("<i4", false, "(2, 3)", &[0; 24]),
            "not supported",
        ),
        (
            "short.npy",
            npy_raw("<f4", false, "(2, 3)", &[0; 20]),
            "ends early",
        ),
    ];
    for (name, bytes, what) in cases {
        let src = tmp.path().join(name);
        fs::write(&src, bytes).unwrap();
        let out = tmp.path().join(format!("out-{name}"));
        let err = import_file(&src, &out, &opts()).unwrap_err().to_string();
        assert!(err.contains(name) && err.contains(what), "{name}: {err}");
        assert_eq!(err.lines().count(), 1);
        assert!(
            !out.join("manifest.json").exists(),
            "{name}: a failed import left a store"
        );
    }
    let src = tmp.path().join("acts.csv");
    fs::write(&src, "1,2\n").unwrap();
    let err = import_file(&src, &tmp.path().join("csv"), &opts())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("acts.csv") && err.contains("extension"),
        "{err}"
    );
}

#[test]
fn non_finite_rows_fail_by_default_or_are_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let mut data: Vec<f32> = (0..20).map(|i| i as f32).collect();
    data[2 * 2 + 1] = f32::NAN;
    data[7 * 2] = f32::INFINITY;
    let src = tmp.path().join("nan.npy");
    fs::write(&src, npy_f32(&[10, 2], &data)).unwrap();
    let err = import_file(&src, &tmp.path().join("a"), &opts()).unwrap_err();
    assert!(matches!(err, ActsError::NonFinite { row: 2, .. }), "{err}");
    assert!(err.to_string().contains("nan.npy"));

    let o = ImportOptions {
        skip_non_finite: true,
        ..opts()
    };
    let r = import_file(&src, &tmp.path().join("b"), &o).unwrap();
    assert_eq!((r.rows, r.skipped_non_finite), (8, 2));
    let (vals, ids) = store_rows(&tmp.path().join("b"));
    let kept: Vec<u32> = ids.iter().map(|t| t.1).collect();
    assert_eq!(kept, [0, 1, 3, 4, 5, 6, 8, 9], "seq_id is the source row");
    let want: Vec<f32> = kept
        .iter()
        .flat_map(|&r| [2.0 * r as f32, 2.0 * r as f32 + 1.0])
        .collect();
    assert_eq!(vals, want);
}

fn view(
    dt: safetensors::Dtype,
    shape: Vec<usize>,
    b: &[u8],
) -> safetensors::tensor::TensorView<'_> {
    safetensors::tensor::TensorView::new(dt, shape, b).unwrap()
}

fn write_npz(path: &Path, arrays: &[(&str, Vec<u8>)]) {
    let mut zip = zip::ZipWriter::new(fs::File::create(path).unwrap());
    for (i, (name, bytes)) in arrays.iter().enumerate() {
        let method = if i % 2 == 0 {
            zip::CompressionMethod::Stored
        } else {
            zip::CompressionMethod::Deflated
        };
        let o = zip::write::SimpleFileOptions::default().compression_method(method);
        zip.start_file(format!("{name}.npy"), o).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap();
}

#[test]
fn npz_arrays_are_chosen_by_key() {
    let tmp = tempfile::tempdir().unwrap();
    let a: Vec<f32> = (0..8).map(|i| i as f32).collect();
    let b: Vec<f32> = (0..15).map(|i| -(i as f32) / 4.0).collect();
    let src = tmp.path().join("pair.npz");
    write_npz(
        &src,
        &[
            ("acts_a", npy_f32(&[4, 2], &a)),
            ("acts_b", npy_f32(&[5, 3], &b)),
        ],
    );

    let o = ImportOptions {
        key: Some("acts_b".into()),
        ..opts()
    };
    let r = import_file(&src, &tmp.path().join("b"), &o).unwrap();
    assert_eq!((r.rows, r.d_model), (5, 3));
    assert_eq!(store_rows(&tmp.path().join("b")).0, b);

    let err = import_file(&src, &tmp.path().join("none"), &opts())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("pair.npz") && err.contains("acts_a, acts_b"),
        "{err}"
    );
    let o = ImportOptions {
        key: Some("acts_c".into()),
        ..opts()
    };
    let err = import_file(&src, &tmp.path().join("c"), &o).unwrap_err();
    assert!(matches!(err, ActsError::MissingKey { .. }));
    let err = err.to_string();
    assert!(
        err.contains("pair.npz") && err.contains("acts_c") && err.contains("acts_a, acts_b"),
        "{err}"
    );

    let single = tmp.path().join("single.npz");
    write_npz(&single, &[("x", npy_f32(&[4, 2], &a))]);
    import_file(&single, &tmp.path().join("s"), &opts()).unwrap();
    assert_eq!(store_rows(&tmp.path().join("s")).0, a);
}

#[test]
fn safetensors_tensors_keep_bf16_and_are_chosen_by_key() {
    let tmp = tempfile::tempdir().unwrap();
    let vals: Vec<bf16> = (0..20)
        .map(|i| bf16::from_f32(i as f32 * 1.5 - 7.0))
        .collect();
    let xb: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
    let yb: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    let zb = vec![0u8; 16];
    let src = tmp.path().join("t.safetensors");
    safetensors::serialize_to_file(
        [
            ("x", view(safetensors::Dtype::BF16, vec![5, 4], &xb)),
            ("y", view(safetensors::Dtype::F32, vec![2], &yb)),
            ("z", view(safetensors::Dtype::I64, vec![1, 2], &zb)),
        ],
        None,
        &src,
    )
    .unwrap();
    let o = ImportOptions {
        key: Some("x".into()),
        ..opts()
    };
    let r = import_file(&src, &tmp.path().join("x"), &o).unwrap();
    assert_eq!((r.rows, r.d_model, r.dtype), (5, 4, Dtype::Bf16));
    let want: Vec<f32> = vals.iter().map(|v| v.to_f32()).collect();
    assert_eq!(store_rows(&tmp.path().join("x")).0, want);
    let exported = tmp.path().join("x.npy");
    export_npy(&Store::open(&tmp.path().join("x")).unwrap(), &exported).unwrap();
    assert_eq!(read_npy_f32(&exported), (vec![5, 4], want));

    let err = import_file(&src, &tmp.path().join("n"), &opts())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("t.safetensors") && err.contains("x, y, z"),
        "{err}"
    );
    let o = ImportOptions {
        key: Some("y".into()),
        ..opts()
    };
    let err = import_file(&src, &tmp.path().join("y"), &o)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("t.safetensors") && err.contains("2-D"),
        "{err}"
    );
    let o = ImportOptions {
        key: Some("z".into()),
        ..opts()
    };
    let err = import_file(&src, &tmp.path().join("z"), &o)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("t.safetensors") && err.contains("I64"),
        "{err}"
    );
}

#[test]
fn import_refuses_to_overwrite_a_store() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("a.npy");
    fs::write(&src, npy_f32(&[2, 2], &[1.0; 4])).unwrap();
    let out = tmp.path().join("s");
    import_file(&src, &out, &opts()).unwrap();
    let err = import_file(&src, &out, &opts()).unwrap_err();
    assert!(matches!(err, ActsError::AlreadyExists { .. }), "{err}");
    assert_eq!(
        Store::open(&out).unwrap().rows(),
        2,
        "the existing store is untouched"
    );
}
