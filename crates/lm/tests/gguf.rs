//! GGUF reading and dequantization against references from gguf-py (llama.cpp's Python
//! package), made by `tests/fixtures/make_gguf_fixtures.py`.

mod text_support;

use lantern_lm::LmError;
use lantern_lm::gguf::{GgufFile, MetaArray, MetaValue};
use lantern_lm::quant::GgmlType;
use text_support::fixture;

fn tiny_bytes() -> Vec<u8> {
    std::fs::read(fixture("gguf_tiny.gguf")).unwrap()
}

/// Writes `bytes` to a temporary file and opens it.
fn open_bytes(bytes: &[u8]) -> (tempfile::TempDir, lantern_lm::Result<GgufFile>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corrupt.gguf");
    std::fs::write(&path, bytes).unwrap();
    let gguf = GgufFile::open(&path);
    (dir, gguf)
}

fn find(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("{:?} not in fixture", String::from_utf8_lossy(needle)))
}

/// Byte position of tensor `name`'s info record (its length-prefixed name).
fn tensor_info_at(bytes: &[u8], name: &str) -> usize {
    let mut record = (name.len() as u64).to_le_bytes().to_vec();
    record.extend(name.as_bytes());
    record.extend(2u32.to_le_bytes()); // every fixture tensor used here is 2-D
    find(bytes, &record)
}

#[test]
fn tiny_metadata_reads_back_every_value_type() {
    let g = GgufFile::open(fixture("gguf_tiny.gguf")).unwrap();
    assert_eq!(g.version(), 3);
    assert_eq!(g.alignment(), 64);
    assert_eq!(g.data_start() % 64, 0);
    assert_eq!(g.architecture(), Some("lantern-test"));
    assert_eq!(g.get_str("general.name"), Some("tiny fixture"));
    assert_eq!(g.get("test.u8"), Some(&MetaValue::U8(200)));
    assert_eq!(g.get("test.i8"), Some(&MetaValue::I8(-100)));
    assert_eq!(g.get("test.u16"), Some(&MetaValue::U16(60000)));
    assert_eq!(g.get("test.i16"), Some(&MetaValue::I16(-30000)));
    assert_eq!(g.get_u64("test.u32"), Some(4_000_000_000));
    assert_eq!(g.get_i64("test.i32"), Some(-2_000_000_000));
    assert_eq!(g.get_u64("test.i32"), None, "negative ints are not u64");
    assert_eq!(g.get_u64("test.u64"), Some((1 << 63) + 5));
    assert_eq!(g.get_i64("test.u64"), None, "too large for i64");
    assert_eq!(g.get_i64("test.i64"), Some(-(1 << 62)));
    assert_eq!(g.get_f32("test.f32"), Some(0.15625));
    assert_eq!(g.get_f64("test.f64"), Some(-1.0e-300));
    assert_eq!(g.get_f64("test.u16"), Some(60000.0));
    assert_eq!(g.get_bool("test.true"), Some(true));
    assert_eq!(g.get_bool("test.false"), Some(false));
    assert_eq!(g.get_str("test.unicode"), Some("héllo, wörld ✓"));
    assert_eq!(g.get_str("test.empty"), Some(""));
    assert_eq!(g.get_str("test.u8"), None);
    assert_eq!(g.get("no.such.key"), None);

    let tokens = g.get_str_array("tokenizer.ggml.tokens").unwrap();
    assert_eq!(tokens.len(), 300);
    assert_eq!(
        &tokens[..6],
        ["<|endoftext|>", "a", "Ġthe", "", "✓", "<0x0A>"]
    );
    assert_eq!(tokens[299], "tok293");
    let strings = g.get_string_array("tokenizer.ggml.tokens").unwrap();
    assert_eq!(strings.get(4), Some("✓"));
    assert_eq!(strings.get(300), None);
    assert_eq!(
        g.get_str_array("tokenizer.ggml.merges").unwrap(),
        ["Ġ t", "h e", "Ġt he"]
    );
    let types = g.get_i32_array("tokenizer.ggml.token_type").unwrap();
    assert_eq!((types.len(), &types[..6]), (300, &[1, 1, 1, 3, 1, 6][..]));
    let scores = g.get_f32_array("tokenizer.ggml.scores").unwrap();
    assert_eq!(
        (scores.len(), &scores[..5]),
        (300, &[0.0, -1.5, 2.25, 0.0, -1.0][..])
    );
    assert_eq!(scores[299], -296.0);
    assert_eq!(
        g.get_f32_array("tokenizer.ggml.token_type").unwrap()[5],
        6.0,
        "int arrays convert to f32"
    );
    assert_eq!(
        g.get_array("test.u8_array"),
        Some(&MetaArray::U8(vec![0, 7, 255]))
    );
    assert_eq!(g.get_i32_array("test.u8_array"), Some(vec![0, 7, 255]));
    assert_eq!(g.get_str_array("test.u8_array"), None);

    let MetaArray::Array(nested) = g.get_array("test.nested").unwrap() else {
        panic!("test.nested is not an array of arrays");
    };
    let nested: Vec<Vec<i64>> = nested.iter().map(|a| a.to_i64s().unwrap()).collect();
    assert_eq!(nested, [vec![1, 2], vec![3, 4, 5], vec![-6]]);
    let MetaArray::Array(nested) = g.get_array("test.nested_str").unwrap() else {
        panic!("test.nested_str is not an array of arrays");
    };
    let nested: Vec<Vec<&str>> = nested
        .iter()
        .map(|a| a.as_strings().unwrap().iter().collect())
        .collect();
    assert_eq!(nested, [vec!["x", "yz"], vec!["é"]]);
    assert!(g.metadata().any(|(k, _)| k == "general.alignment"));
}

#[test]
fn tiny_tensors_match_gguf_py_dequantization() {
    let g = GgufFile::open(fixture("gguf_tiny.gguf")).unwrap();
    let reference = std::fs::read(fixture("gguf_tiny_reference.safetensors")).unwrap();
    let reference = safetensors::SafeTensors::deserialize(&reference).unwrap();

    // ne is innermost-first; the shape is PyTorch order.
    let f32_info = g.tensor("f32").unwrap();
    assert_eq!(f32_info.dims, [5, 3]);
    assert_eq!(f32_info.shape(), [3, 5]);
    assert_eq!(g.tensor("f32_3d").unwrap().dims, [4, 3, 2]);
    assert_eq!(g.tensor("q6_k").unwrap().ggml_type, GgmlType::Q6_K);

    let mut checked = Vec::new();
    for (name, view) in reference.tensors() {
        let (shape, values) = g.dequantize(&name).unwrap();
        assert_eq!(shape, view.shape(), "{name}: shape");
        let expected: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(values.len(), expected.len(), "{name}: length");
        for (i, (&got, &want)) in values.iter().zip(&expected).enumerate() {
            let tol = 1e-6 * want.abs().max(1e-6);
            assert!(
                (got - want).abs() <= tol,
                "{name}[{i}]: got {got}, gguf-py says {want}"
            );
        }
        assert!(
            expected.iter().any(|&v| v != 0.0),
            "{name}: reference is all zero"
        );
        checked.push(name);
    }
    checked.sort();
    let mut dequantizable: Vec<String> = g
        .tensor_infos()
        .iter()
        .filter(|t| t.ggml_type.is_dequantizable())
        .map(|t| t.name.clone())
        .collect();
    dequantizable.sort();
    assert_eq!(
        checked, dequantizable,
        "every decodable tensor has a reference"
    );
    for ty in ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q6_K"] {
        assert!(
            g.tensor_infos()
                .iter()
                .any(|t| t.ggml_type.name() == Some(ty)),
            "fixture lacks a {ty} tensor"
        );
    }
}

#[test]
fn ggml_type_table_matches_gguf_py() {
    let g = GgufFile::open(fixture("gguf_tiny.gguf")).unwrap();
    let names = g.get_str_array("test.ggml_type_names").unwrap();
    let MetaArray::Array(sizes) = g.get_array("test.ggml_type_sizes").unwrap() else {
        panic!("test.ggml_type_sizes is not an array of arrays");
    };
    assert_eq!(names.len(), sizes.len());
    assert!(names.len() >= 30);
    for (name, size) in names.iter().zip(sizes) {
        let [id, block_len, block_bytes] = size.to_i64s().unwrap()[..] else {
            panic!("bad entry for {name}");
        };
        let ty = GgmlType(id as u32);
        assert_eq!(ty.name(), Some(*name), "id {id}");
        assert_eq!(ty.block_len(), Some(block_len as usize), "{name}");
        if ty != GgmlType::Q8_1 {
            // gguf-py still lists Q8_1's old f32 layout (40 bytes); ggml's block is 36.
            assert_eq!(ty.block_bytes(), Some(block_bytes as usize), "{name}");
        }
    }
}

#[test]
fn unsupported_type_is_an_error_naming_tensor_and_type() {
    let g = GgufFile::open(fixture("gguf_tiny.gguf")).unwrap();
    let err = g.dequantize("tq2_0").unwrap_err();
    assert!(matches!(err, LmError::Unsupported { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("TQ2_0") && msg.contains("'tq2_0'"), "{msg}");
    let err = g.dequantize("no_such_tensor").unwrap_err();
    assert!(matches!(err, LmError::Tensor { .. }), "{err:?}");
    // Raw bytes remain available for types we cannot decode.
    let info = g.tensor("tq2_0").unwrap();
    assert_eq!(g.tensor_data(info).len(), 66);
}

#[test]
fn truncated_files_are_errors_not_panics() {
    let bytes = tiny_bytes();
    let g = GgufFile::open(fixture("gguf_tiny.gguf")).unwrap();
    let tensor_ends: Vec<usize> = g
        .tensor_infos()
        .iter()
        .map(|t| g.data_start() + (t.offset + t.n_bytes) as usize)
        .collect();
    let data_end = *tensor_ends.iter().max().unwrap();
    // Every cut inside the fixed header and the first metadata, then a stride through the
    // rest, plus each tensor's last byte.
    let lengths = (0..600)
        .chain((600..bytes.len()).step_by(11))
        .chain(tensor_ends.iter().flat_map(|&e| [e - 1, e]));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("truncated.gguf");
    for len in lengths {
        std::fs::write(&path, &bytes[..len]).unwrap();
        match GgufFile::open(&path) {
            Err(e) => {
                assert!(len < data_end, "len {len} past all tensor data failed: {e}");
                let msg = e.to_string();
                assert!(
                    !msg.contains('\n') && msg.contains("truncated.gguf"),
                    "{msg}"
                );
            }
            Ok(_) => assert!(len >= data_end, "truncated to {len} bytes but opened"),
        }
    }
}

#[test]
fn bad_magic_and_versions_are_rejected() {
    let bytes = tiny_bytes();
    let mut bad = bytes.clone();
    bad[..4].copy_from_slice(b"GGML");
    let err = open_bytes(&bad).1.unwrap_err().to_string();
    assert!(err.contains("magic"), "{err}");

    for (version, unsupported) in [(1u32, true), (0x0300_0000, true), (4, false), (0, false)] {
        let mut bad = bytes.clone();
        bad[4..8].copy_from_slice(&version.to_le_bytes());
        let err = open_bytes(&bad).1.unwrap_err();
        assert_eq!(
            matches!(err, LmError::Unsupported { .. }),
            unsupported,
            "version {version:#x}: {err}"
        );
    }
    let mut v2 = bytes.clone();
    v2[4..8].copy_from_slice(&2u32.to_le_bytes());
    assert_eq!(open_bytes(&v2).1.unwrap().version(), 2);
}

#[test]
fn absurd_counts_offsets_and_types_are_errors() {
    let bytes = tiny_bytes();
    let patched = |at: usize, value: &[u8]| {
        let mut b = bytes.clone();
        b[at..at + value.len()].copy_from_slice(value);
        open_bytes(&b).1.map(|_| ()).unwrap_err().to_string()
    };
    let huge = u64::MAX.to_le_bytes();
    assert!(patched(8, &huge).contains("tensor infos"), "n_tensors");
    assert!(patched(16, &huge).contains("metadata entries"), "n_kv");
    assert!(patched(16, &(1u64 << 40).to_le_bytes()).contains("cannot fit"));
    assert!(
        patched(24, &huge).contains("cannot fit"),
        "first key length"
    );

    // tokenizer.ggml.tokens: key, value type 9, element type 8, count.
    let key = b"tokenizer.ggml.tokens";
    let count_at = find(&bytes, key) + key.len() + 8;
    assert_eq!(bytes[count_at..count_at + 8], 300u64.to_le_bytes());
    let err = patched(count_at, &(1u64 << 60).to_le_bytes());
    assert!(err.contains("tokenizer.ggml.tokens"), "{err}");
    let err = patched(count_at - 4, &13u32.to_le_bytes());
    assert!(err.contains("unknown array element type 13"), "{err}");
    let err = patched(count_at - 8, &99u32.to_le_bytes());
    assert!(err.contains("unknown value type 99"), "{err}");
    // A string inside the array whose length runs past the end of the file.
    let err = patched(count_at + 8, &(1u64 << 50).to_le_bytes());
    assert!(err.contains("cannot fit"), "{err}");

    // Tensor "f32": n_dims 2, ne [5, 3], type 0, offset.
    let info = tensor_info_at(&bytes, "f32") + 8 + 3 + 4;
    let err = patched(info, &(1u64 << 62).to_le_bytes());
    assert!(err.contains("overflows"), "dims: {err}");
    let err = patched(info + 16, &99u32.to_le_bytes());
    assert!(err.contains("'f32'") && err.contains("99"), "type: {err}");
    let err = patched(info + 20, &(1u64 << 62).to_le_bytes());
    assert!(err.contains("past the end"), "offset: {err}");
    let err = patched(info + 20, &u64::MAX.to_le_bytes());
    assert!(err.contains("alignment"), "offset: {err}");
    let err = patched(info - 4, &9u32.to_le_bytes());
    assert!(err.contains("at most 4"), "n_dims: {err}");
    // Q8_0 tensor whose row length (ne[0]) is not a multiple of 32.
    let q8 = tensor_info_at(&bytes, "q8_0") + 8 + 4 + 4;
    let err = patched(q8, &48u64.to_le_bytes());
    assert!(err.contains("block of 32"), "{err}");
}

#[test]
fn corrupted_headers_never_panic() {
    let bytes = tiny_bytes();
    let g = GgufFile::open(fixture("gguf_tiny.gguf")).unwrap();
    let header_len = g.data_start();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fuzz.gguf");
    for _ in 0..500 {
        let mut b = bytes.clone();
        for _ in 0..1 + next() % 4 {
            let at = (next() % header_len as u64) as usize;
            b[at] = next() as u8;
        }
        std::fs::write(&path, &b).unwrap();
        if let Ok(g) = GgufFile::open(&path) {
            for t in g.tensor_infos() {
                let _ = g.dequantize(&t.name);
            }
        }
    }
}

#[test]
fn smollm2_q4_1_matches_gguf_py() {
    let Some(path) = text_support::smollm2_gguf() else {
        return;
    };
    let reference = text_support::json_fixture("gguf_smollm2_tensors.json");
    let g = GgufFile::open(&path).unwrap();
    assert_eq!(g.architecture(), Some("llama"));
    assert_eq!(g.get_u64("llama.block_count"), Some(30));
    assert_eq!(g.get_u64("llama.embedding_length"), Some(576));
    let tokens = g.get_str_array("tokenizer.ggml.tokens").unwrap();
    assert_eq!(tokens.len(), 49152);
    assert_eq!(tokens.len() as u64, reference["n_tokens"].as_u64().unwrap());
    assert_eq!(tokens[1000], reference["token_1000"].as_str().unwrap());
    let head: Vec<&str> = reference["tokens_head"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(tokens[..8], head[..]);
    let merges = g.get_str_array("tokenizer.ggml.merges").unwrap();
    assert_eq!(merges.len() as u64, reference["n_merges"].as_u64().unwrap());
    assert_eq!(
        g.get_i32_array("tokenizer.ggml.token_type").unwrap().len(),
        49152
    );

    for (name, r) in reference["tensors"].as_object().unwrap() {
        let info = g.tensor(name).unwrap();
        assert_eq!(Some(r["type"].as_str().unwrap()), info.ggml_type.name());
        let (shape, x) = g.dequantize(name).unwrap();
        let want_shape: Vec<usize> = r["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(shape, want_shape, "{name}");
        let close = |got: f64, want: f64, what: &str| {
            assert!(
                (got - want).abs() <= 1e-6 * want.abs().max(1e-3),
                "{name} {what}: got {got}, gguf-py says {want}"
            );
        };
        close(
            x.iter().map(|&v| v as f64).sum(),
            r["sum"].as_f64().unwrap(),
            "sum",
        );
        let sum_sq = x.iter().map(|&v| (v as f64) * (v as f64)).sum();
        close(sum_sq, r["sum_sq"].as_f64().unwrap(), "sum of squares");
        let row = x.len() / shape[0];
        let slices = [
            ("first16", 0),
            ("row1_first16", row),
            ("last16", x.len() - 16),
        ];
        for (key, start) in slices {
            for (i, want) in r[key].as_array().unwrap().iter().enumerate() {
                assert_eq!(
                    x[start + i],
                    want.as_f64().unwrap() as f32,
                    "{name} {key}[{i}]"
                );
            }
        }
    }
}

#[test]
fn the_writer_produces_gguf_py_bytes_for_the_same_content() {
    use lantern_lm::gguf::{GgufWriter, MetaArray, MetaValue, StringArray};
    // The content of fixtures/make_gguf_writer_fixture.py, in the same order.
    let mut w = GgufWriter::new("controlvector");
    let arr = |a: MetaArray| MetaValue::Array(a);
    for (k, v) in [
        ("t.u8", MetaValue::U8(200)),
        ("t.i8", MetaValue::I8(-100)),
        ("t.u16", MetaValue::U16(60000)),
        ("t.i16", MetaValue::I16(-30000)),
        ("t.u32", MetaValue::U32(4_000_000_000)),
        ("t.i32", MetaValue::I32(-2_000_000_000)),
        ("t.u64", MetaValue::U64((1 << 63) + 5)),
        ("t.i64", MetaValue::I64(-(1 << 62))),
        ("t.f32", MetaValue::F32(0.15625)),
        ("t.f64", MetaValue::F64(-1.0 / 3.0)),
        ("t.bool", MetaValue::Bool(true)),
        ("t.str", MetaValue::String("héllo, ünïcode".into())),
        ("t.arr_i32", arr(MetaArray::I32(vec![1, -2, 3]))),
        ("t.arr_f32", arr(MetaArray::F32(vec![0.5, -1.25]))),
        (
            "t.arr_str",
            arr(MetaArray::String(StringArray::from_iter(["a", "", "ccc"]))),
        ),
        ("t.arr_u8", arr(MetaArray::U8(vec![1, 2, 255]))),
        (
            "t.nested",
            arr(MetaArray::Array(vec![
                MetaArray::I32(vec![1, 2]),
                MetaArray::I32(vec![3]),
            ])),
        ),
        (
            "controlvector.model_hint",
            MetaValue::String("llama".into()),
        ),
        ("controlvector.layer_count", MetaValue::U32(2)),
    ] {
        w.add(k, v).unwrap();
    }
    w.add_f32(
        "direction.1",
        &[8],
        (0..8).map(|i| i as f32 / 8.0).collect(),
    )
    .unwrap();
    w.add_f32(
        "direction.2",
        &[2, 3],
        (0..6).map(|i| i as f32 - 3.0).collect(),
    )
    .unwrap();
    let half: Vec<half::f16> = (0..30)
        .map(|i| half::f16::from_f32(i as f32 / 7.0))
        .collect();
    w.add_f16("half", &[2, 3, 5], half.clone()).unwrap();
    let want = std::fs::read(text_support::fixture("gguf_writer/reference.gguf")).unwrap();
    let got = w.to_bytes();
    let first = got.iter().zip(&want).position(|(a, b)| a != b);
    assert!(
        got.len() == want.len() && first.is_none(),
        "{} bytes against gguf-py's {}; first difference at {first:?}",
        got.len(),
        want.len()
    );
    // And our reader reads it back.
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("w.gguf");
    w.write(&path).unwrap();
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.get_u64("t.u64"), Some((1 << 63) + 5));
    assert_eq!(f.get_str("t.str"), Some("héllo, ünïcode"));
    let (shape, v) = f.dequantize("half").unwrap();
    assert_eq!(shape, [2, 3, 5]);
    assert!(v.iter().zip(&half).all(|(a, b)| *a == b.to_f32()));
    assert!(w.add("t.u8", MetaValue::U8(1)).is_err(), "a key twice");
}
