//! Control vectors from other tools: a file written by gguf-py the way repeng exports
//! (`fixtures/cvec/make_cvec_fixture.py`: `layer_count` as u32, `direction.1`, `direction.2`)
//! reads as resid_post layers 1 and 2 with the values written; ours, exported and imported,
//! round-trip (gguf-py reading ours is checked by the same script, given our file).

mod support;

use lantern_steer::{LayerVectors, Site};
use support::fixtures;

#[test]
fn repeng_style_control_vector_reads_as_resid_post_layers() {
    let v = LayerVectors::read(&fixtures("cvec/repeng_style.gguf"), None).unwrap();
    assert_eq!(v.site, Site::ResidPost);
    assert_eq!(v.layers.keys().copied().collect::<Vec<_>>(), [1, 2]);
    for (&n, vec) in &v.layers {
        let want: Vec<f32> = (0..8).map(|i| i as f32 * 0.25 - n as f32).collect();
        assert_eq!(vec, &want, "direction.{n}");
    }
}

#[test]
fn exported_control_vectors_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let v = LayerVectors::read(&fixtures("cvec/repeng_style.gguf"), None).unwrap();
    let path = tmp.path().join("ours.gguf");
    let skipped = lantern_steer::cvec::export(&v, 0.5, 4, "llama", &path, false).unwrap();
    assert!(skipped.is_empty());
    let back = LayerVectors::read(&path, None).unwrap();
    for (l, x) in &v.layers {
        let half: Vec<f32> = x.iter().map(|a| a * 0.5).collect();
        assert_eq!(back.layers[l], half);
    }
}
