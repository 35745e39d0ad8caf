//! Shared by the parity, hooks-and-gradients and adapter tests: the tiny checkpoints, reading
//! the references the fixture scripts wrote, and the error measure.

#![allow(dead_code)] // each test binary uses a different part

use std::path::{Path, PathBuf};

use safetensors::SafeTensors;

/// The tiny checkpoints of `make_parity_fixtures.py`: GQA (sharded), tied + Llama-3 RoPE,
/// Qwen2 biases in bf16, Mistral's window, GPT-2.
pub const PARITY_CASES: [&str; 5] = [
    "llama_gqa",
    "llama_tied_rope3",
    "qwen2_bias_bf16",
    "mistral_window",
    "gpt2",
];

/// `tests/fixtures/<rel>`.
pub fn fixtures(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// The tiny checkpoint `case` under `fixtures/parity/`.
pub fn parity_dir(case: &str) -> PathBuf {
    fixtures("parity").join(case)
}

/// A tensor of a reference file: name, shape, values (f32, or i64 ids converted).
pub type Named = (String, Vec<usize>, Vec<f32>);

/// Every tensor of a safetensors file as f32 (i64 ids converted exactly for small ids).
pub fn read(path: &Path) -> Vec<Named> {
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
            (name, v.shape().to_vec(), data)
        })
        .collect()
}

/// The values of tensor `name`.
pub fn get<'a>(t: &'a [Named], name: &str) -> &'a [f32] {
    &t.iter()
        .find(|x| x.0 == name)
        .unwrap_or_else(|| panic!("no tensor {name}"))
        .2
}

/// The `input_ids` tensor as ids.
pub fn ids(t: &[Named]) -> Vec<u32> {
    get(t, "input_ids").iter().map(|&x| x as u32).collect()
}

/// Largest |a − b| / (1 + |b|).
pub fn max_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / (1.0 + y.abs()))
        .fold(0.0, f32::max)
}
