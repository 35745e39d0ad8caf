//! Shared by the steer tests: lm's tiny parity checkpoints, the references of
//! `fixtures/make_steer_fixtures.py`, and the error measure.

#![allow(dead_code)] // each test binary uses a different part

use std::path::{Path, PathBuf};

use std::sync::Arc;

use lantern_lm::HookPoint;
use lantern_steer::intervene::{Intervention, Op, Where};
use lantern_steer::vector::orthonormal;
use safetensors::SafeTensors;

/// lm's tiny checkpoint `case` (`crates/lm/tests/fixtures/parity/<case>`).
pub fn parity_dir(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../lm/tests/fixtures/parity")
        .join(case)
}

/// `crates/steer/tests/fixtures/<rel>`.
pub fn fixtures(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// Every tensor of a safetensors file as f32 (i64 ids converted).
pub fn read(path: &Path) -> Vec<(String, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, v)| {
            let data = match v.dtype() {
                safetensors::Dtype::F32 => v
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
                safetensors::Dtype::I64 => v
                    .data()
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f32)
                    .collect(),
                other => panic!("{name}: unexpected dtype {other:?}"),
            };
            (name, data)
        })
        .collect()
}

pub fn get<'a>(t: &'a [(String, Vec<f32>)], name: &str) -> &'a [f32] {
    &t.iter()
        .find(|x| x.0 == name)
        .unwrap_or_else(|| panic!("no tensor {name}"))
        .1
}

/// Largest |a − b|.
pub fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The fixture script's `logits_subspace` intervention: span{r, r2} of the references `t`
/// projected out with β = 0.5 at every decoder layer's output, all positions.
pub fn fixture_subspace_ablation(t: &[(String, Vec<f32>)], n_layers: usize) -> Intervention {
    let basis = Arc::new(orthonormal(&[get(t, "r").to_vec(), get(t, "r2").to_vec()]));
    assert_eq!(basis.len(), 2);
    Intervention {
        ops: (0..n_layers)
            .map(|l| Op::Ablate {
                point: HookPoint::ResidPost(l),
                basis: basis.clone(),
                beta: 0.5,
                at: Where::All,
            })
            .collect(),
    }
}
