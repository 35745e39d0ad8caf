//! Direction files round-trip, and other tools' exports read with their layer conventions:
//! a llama.cpp control vector (written by lm's GGUF writer, whose bytes equal gguf-py's),
//! a persona-vectors style `[n_layers + 1, d]` `.npy` (hidden_states index), a 1-D `.npy`.

use std::collections::BTreeMap;

use lantern_lm::gguf::{GgufWriter, MetaValue};
use lantern_search::{DirectionMeta, Directions};
use npyz::WriterBuilder;

#[test]
fn direction_files_round_trip_with_their_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("d.safetensors");
    let d = Directions {
        layers: BTreeMap::from([(3, vec![1.0, -2.0, 0.5]), (7, vec![0.0, 1.0, 0.0])]),
        meta: DirectionMeta {
            hook: "resid_pre".into(),
            model: "m".into(),
            method: "mean-diff".into(),
            tokens: "answer".into(),
            n_pos: 5,
            n_neg: 6,
            normalized: false,
            extra: BTreeMap::from([("heldout_accuracy.3".to_string(), "0.9".to_string())]),
        },
    };
    d.write(&path).unwrap();
    assert_eq!(Directions::read(&path, None).unwrap(), d);
    assert!(!tmp.path().join("d.safetensors.tmp").exists());
}

#[test]
fn control_vectors_and_npy_exports_read_with_their_layer_conventions() {
    let tmp = tempfile::tempdir().unwrap();
    // llama.cpp: direction.N is added to block N's output → layer N at resid_post.
    let cvec = tmp.path().join("c.gguf");
    let mut w = GgufWriter::new("controlvector");
    w.add(
        "controlvector.model_hint",
        MetaValue::String("llama".into()),
    )
    .unwrap();
    w.add("controlvector.layer_count", MetaValue::U32(2))
        .unwrap();
    w.add_f32("direction.1", &[4], vec![1.0, 0.0, 0.0, 0.0])
        .unwrap();
    w.add_f32("direction.2", &[4], vec![0.0, 2.0, 0.0, 0.0])
        .unwrap();
    w.write(&cvec).unwrap();
    let c = Directions::read(&cvec, None).unwrap();
    assert_eq!(c.layers.keys().copied().collect::<Vec<_>>(), [1, 2]);
    assert_eq!(c.layers[&2], [0.0, 2.0, 0.0, 0.0]);
    assert_eq!(
        (c.meta.hook.as_str(), c.meta.model.as_str()),
        ("resid_post", "llama")
    );
    assert!(!c.meta.normalized);
    // A GGUF that is not a control vector is refused, naming the file.
    let other = tmp.path().join("m.gguf");
    GgufWriter::new("llama").write(&other).unwrap();
    let e = Directions::read(&other, None).unwrap_err().to_string();
    assert!(e.contains("m.gguf") && e.contains("controlvector"), "{e}");

    // Persona vectors: row k = hidden_states[k] = layer k − 1 (row 0, the embeddings, dropped).
    let npy = tmp.path().join("pv.npy");
    let rows: Vec<f32> = (0..3 * 2).map(|i| i as f32).collect();
    let mut out = npyz::WriteOptions::<f32>::new()
        .default_dtype()
        .shape(&[3, 2])
        .writer(std::fs::File::create(&npy).unwrap())
        .begin_nd()
        .unwrap();
    out.extend(rows.iter().copied()).unwrap();
    out.finish().unwrap();
    let p = Directions::read(&npy, None).unwrap();
    assert_eq!(
        p.layers,
        BTreeMap::from([(0, vec![2.0, 3.0]), (1, vec![4.0, 5.0])])
    );
    // A single vector needs its layer.
    let one = tmp.path().join("v.npy");
    let mut out = npyz::WriteOptions::<f32>::new()
        .default_dtype()
        .shape(&[2])
        .writer(std::fs::File::create(&one).unwrap())
        .begin_nd()
        .unwrap();
    out.extend([0.6f32, 0.8]).unwrap();
    out.finish().unwrap();
    assert!(
        Directions::read(&one, None)
            .unwrap_err()
            .to_string()
            .contains("which layer")
    );
    let v = Directions::read(&one, Some(12)).unwrap();
    assert!(v.meta.normalized && v.layers.contains_key(&12));
}
