//! llama.cpp control vectors: GGUF files with `general.architecture = controlvector`,
//! `controlvector.model_hint`, `controlvector.layer_count` and one f32 tensor `direction.N`
//! per layer, added unnormalised to the **output of block N** at every position
//! (`common_control_vector_load_one`, `llama-adapter.cpp`; notes in
//! `research/search-steer-anchors.md` §3).
//!
//! | Lantern site, layer | llama.cpp tensor |
//! |---|---|
//! | `resid_post` L (`blocks.L.hook_resid_post`, HF `hidden_states[L+1]`) | `direction.L` |
//! | `resid_pre` L (Arditi et al.) | `direction.(L−1)` |
//! | `resid_post` 0, `resid_pre` 0 and 1 | cannot be expressed (llama.cpp has no `direction.0`) |
//!
//! Import ([`lantern_search::directions::Directions::read`]) takes ours and those of
//! llama.cpp's cvector-generator and repeng (which read `layer_count` as i32 and u32).

use std::collections::BTreeMap;
use std::path::Path;

use lantern_lm::gguf::{GgufWriter, MetaValue};

use crate::Result;
use crate::error::input;
use crate::vector::{LayerVectors, Site};

/// The `direction.N` index of `layer` at `site`, or `None` where llama.cpp cannot apply it.
pub fn cvec_index(site: Site, layer: usize) -> Option<usize> {
    let n = match site {
        Site::ResidPost => layer,
        Site::ResidPre => layer.checked_sub(1)?,
        _ => return None,
    };
    (n >= 1).then_some(n)
}

/// A control vector of `vectors` scaled by `scale` (llama.cpp adds the stored values as they
/// are; `--control-vector-scaled F S` multiplies again). Layers that llama.cpp cannot express
/// are refused unless `skip_unrepresentable`; the layers skipped are returned.
pub fn export(
    vectors: &LayerVectors,
    scale: f32,
    n_layers: usize,
    model_hint: &str,
    path: &Path,
    skip_unrepresentable: bool,
) -> Result<Vec<usize>> {
    let mut tensors: BTreeMap<usize, Vec<f32>> = BTreeMap::new();
    let mut skipped = Vec::new();
    for (&l, v) in &vectors.layers {
        match cvec_index(vectors.site, l) {
            Some(n) => {
                tensors.insert(n, v.iter().map(|x| x * scale).collect());
            }
            None if skip_unrepresentable => skipped.push(l),
            None => {
                return Err(input(
                    &vectors.source,
                    format!(
                        "layer {l} at {} cannot be a llama.cpp control vector (it adds \
                         direction.N to block N's output, N ≥ 1: resid_post 1.. or resid_pre 2..)",
                        vectors.site
                    ),
                ));
            }
        }
    }
    if tensors.is_empty() {
        return Err(input(&vectors.source, "no layer left to export"));
    }
    let mut w = GgufWriter::new("controlvector");
    w.add(
        "controlvector.model_hint",
        MetaValue::String(model_hint.to_string()),
    )?;
    w.add(
        "controlvector.layer_count",
        MetaValue::I32(i32::try_from(n_layers).unwrap_or(i32::MAX)),
    )?;
    for (n, v) in tensors {
        let d = v.len();
        w.add_f32(&format!("direction.{n}"), &[d], v)?;
    }
    w.write(path)?;
    Ok(skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_mapping_follows_llama_cpp() {
        assert_eq!(cvec_index(Site::ResidPost, 5), Some(5));
        assert_eq!(cvec_index(Site::ResidPre, 5), Some(4));
        assert_eq!(cvec_index(Site::ResidPost, 0), None);
        assert_eq!(cvec_index(Site::ResidPre, 1), None);
        assert_eq!(cvec_index(Site::MlpOut, 3), None);
    }
}
