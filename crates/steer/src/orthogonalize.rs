//! Weight-space ablation.
//!
//! **Orthogonalization** (Arditi et al. 2024, `get_orthogonalized_matrix`): with `r̂ = r/‖r‖`,
//! every matrix that writes into the residual stream — the token (and position) embedding,
//! every attention output projection and MLP down projection, and their biases — becomes
//!
//!   `W ← W − r̂ r̂ᵀ W`   (along the `d_model` axis),
//!
//! so no component writes along `r̂` and the residual stream never holds one: the model equals
//! the original with `x ← x − (x·r̂)r̂` at every block input, attention output and MLP output
//! (tested to 1e-4 in logits). The unembedding is left as it was (lm writes a tied model
//! untied, so `W_U` keeps the original embedding).
//!
//! **LoRA B ablation** (Soligo et al. 2025, `load_lora_with_vec_ablated`): for an adapter on a
//! residual writer, `B′ = B − r̂ r̂ᵀ B`, rescaled to `‖B′‖_F = ‖B‖_F`.

use std::collections::HashMap;
use std::path::Path;

use burn::tensor::{Tensor, TensorData};
use lantern_lm::{LoraAdapter, Model};
use safetensors::tensor::TensorView;

use crate::Result;
use crate::error::{input, io_err, setting};
use crate::vector::norm;

/// Orthogonalizes every residual writer of `model` against `r` (see the module docs); returns
/// the Hugging Face names of the parameters changed.
pub fn orthogonalize(model: &mut Model, r: &[f32]) -> Result<Vec<String>> {
    let d = model.config().d_model;
    let n = norm(r);
    if r.len() != d || n == 0.0 || !n.is_finite() {
        return Err(setting(
            "direction",
            format!("{} values, norm {n}", r.len()),
            "a non-zero finite vector of d_model values",
        ));
    }
    let unit: Vec<f32> = r.iter().map(|x| x / n).collect();
    let mut names = Vec::new();
    for mut w in model.residual_writers_mut() {
        let rows = w.rows();
        let dev = rows.device();
        let u = Tensor::<1>::from_data(TensorData::new(unit.clone(), [d]), &dev);
        let along = rows.clone().matmul(u.clone().reshape([d, 1])); // [n, 1] = W r̂ per row
        let new = rows - along.matmul(u.reshape([1, d]));
        w.set_rows(new)?;
        names.push(w.name.clone());
    }
    Ok(names)
}

/// Whether a Hugging Face module name is one that writes into the residual stream.
fn writes_residual(module: &str) -> bool {
    ["o_proj", "down_proj", "c_proj"]
        .iter()
        .any(|s| module.ends_with(&format!(".{s}")))
}

/// Projects `r` out of the `B` of every adapted residual writer (`[d_model, rank]`), keeping
/// each `‖B‖_F`; returns the modules changed (an adapter with none is an error).
pub fn ablate_lora_b(adapter: &mut LoraAdapter, r: &[f32]) -> Result<Vec<String>> {
    let n = f64::from(norm(r));
    if n == 0.0 || !n.is_finite() {
        return Err(setting("direction", "zero", "a non-zero direction"));
    }
    let u: Vec<f64> = r.iter().map(|&x| f64::from(x) / n).collect();
    let d = r.len();
    let mut changed = Vec::new();
    for layer in &mut adapter.layers {
        if !writes_residual(&layer.module) || layer.b.shape[0] != d {
            continue;
        }
        let rank = layer.b.shape[1];
        let b = &mut layer.b.data;
        let before: f64 = b.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
        let mut new: Vec<f64> = b.iter().map(|&x| f64::from(x)).collect();
        for k in 0..rank {
            let dot: f64 = (0..d).map(|o| new[o * rank + k] * u[o]).sum();
            for o in 0..d {
                new[o * rank + k] -= dot * u[o];
            }
        }
        let after: f64 = new.iter().map(|x| x * x).sum::<f64>().sqrt();
        let s = if after > 0.0 { before / after } else { 0.0 };
        for (dst, v) in b.iter_mut().zip(new) {
            *dst = (v * s) as f32;
        }
        changed.push(layer.module.clone());
    }
    if changed.is_empty() {
        return Err(input(
            &adapter.dir,
            format!(
                "no adapted module writes into the residual stream with d_model {d} (expected \
                 o_proj, down_proj or c_proj)"
            ),
        ));
    }
    Ok(changed)
}

/// The B vector of every rank-1 adapted residual writer, by the layer it writes into
/// (Soligo et al. 2025 compare it with the misalignment direction; its sign is arbitrary, as
/// `B A = (−B)(−A)`). `module` keeps only module names ending in it (`down_proj`); a layer
/// with two rank-1 writers, or a residual writer of rank > 1, is an error naming the module.
pub fn lora_b_vectors(
    adapter: &LoraAdapter,
    module: Option<&str>,
) -> Result<std::collections::BTreeMap<usize, (String, Vec<f32>)>> {
    let mut out = std::collections::BTreeMap::new();
    for layer in &adapter.layers {
        if !writes_residual(&layer.module)
            || module.is_some_and(|m| !layer.module.ends_with(&format!(".{m}")))
        {
            continue;
        }
        if layer.b.shape[1] != 1 {
            return Err(input(
                &adapter.dir,
                format!(
                    "{} has rank {}: a B vector needs a rank-1 adapter",
                    layer.module, layer.b.shape[1]
                ),
            ));
        }
        let Some(l) = block_index(&layer.module) else {
            return Err(input(
                &adapter.dir,
                format!("{}: no block index in the module name", layer.module),
            ));
        };
        if let Some((other, _)) = out.get(&l) {
            return Err(input(
                &adapter.dir,
                format!(
                    "layer {l} has two adapted residual writers ({other}, {}): choose one by \
                     its name's ending",
                    layer.module
                ),
            ));
        }
        out.insert(l, (layer.module.clone(), layer.b.data.clone()));
    }
    if out.is_empty() {
        return Err(input(
            &adapter.dir,
            "no adapted module writes into the residual stream (expected o_proj, down_proj or \
             c_proj)",
        ));
    }
    Ok(out)
}

/// The block a Hugging Face module name belongs to: `model.layers.7.mlp.down_proj` → 7,
/// `transformer.h.3.attn.c_proj` → 3.
fn block_index(module: &str) -> Option<usize> {
    let parts: Vec<&str> = module.split('.').collect();
    parts
        .windows(2)
        .find(|w| w[0] == "layers" || w[0] == "h")
        .and_then(|w| w[1].parse().ok())
}

/// Writes `adapter` as a PEFT directory at `out` (its `adapter_config.json` copied, the
/// factors in f32).
pub fn write_adapter(adapter: &LoraAdapter, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).map_err(io_err(out))?;
    let cfg = adapter.dir.join("adapter_config.json");
    std::fs::copy(&cfg, out.join("adapter_config.json")).map_err(io_err(&cfg))?;
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let bytes = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    for l in &adapter.layers {
        let p = format!("base_model.model.{}", l.module);
        tensors.push((
            format!("{p}.lora_A.weight"),
            l.a.shape.clone(),
            bytes(&l.a.data),
        ));
        tensors.push((
            format!("{p}.lora_B.weight"),
            l.b.shape.clone(),
            bytes(&l.b.data),
        ));
    }
    for (name, t) in &adapter.replaced {
        tensors.push((
            format!("base_model.model.{name}"),
            t.shape.clone(),
            bytes(&t.data),
        ));
    }
    let st = out.join("adapter_model.safetensors");
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, s, b)| {
            TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| input(&st, format!("tensor {n}: {e}")))
        })
        .collect::<Result<_>>()?;
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    let data = safetensors::serialize(views, Some(meta))
        .map_err(|e| input(&st, format!("cannot serialize: {e}")))?;
    std::fs::write(&st, data).map_err(io_err(&st))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lantern_lm::LoraLayer;
    use lantern_lm::adapter::LoraConfig;
    use lantern_lm::weights::HostTensor;

    /// An adapter of rank `r` (α = r) holding `layers`.
    fn adapter_of(r: usize, layers: Vec<LoraLayer>) -> LoraAdapter {
        LoraAdapter {
            dir: "adapter".into(),
            config: LoraConfig {
                r,
                lora_alpha: r as f64,
                use_rslora: false,
                fan_in_fan_out: false,
                target_modules: vec![],
                layers_to_transform: None,
                modules_to_save: vec![],
                alpha_pattern: Default::default(),
            },
            layers,
            replaced: Default::default(),
        }
    }

    #[test]
    fn lora_b_loses_its_component_along_r_and_keeps_its_norm() {
        // B [3, 2]; r = e0 + e1.
        let b = vec![1.0, 2.0, 3.0, -1.0, 0.5, 0.0];
        let layer = |module: &str| LoraLayer {
            module: module.into(),
            a: HostTensor {
                shape: vec![2, 4],
                data: vec![0.1; 8],
            },
            b: HostTensor {
                shape: vec![3, 2],
                data: b.clone(),
            },
            scale: 1.0,
        };
        let mut a = adapter_of(
            2,
            vec![
                layer("model.layers.0.mlp.down_proj"),
                layer("model.layers.0.self_attn.q_proj"),
            ],
        );
        let changed = ablate_lora_b(&mut a, &[1.0, 1.0, 0.0]).unwrap();
        assert_eq!(changed, ["model.layers.0.mlp.down_proj"]);
        // By hand, r̂ = (1, 1, 0)/√2: column 0 = (1, 3, 0.5) − 2·(1, 1, 0) = (−1, 1, 0.5);
        // column 1 = (2, −1, 0) − ½·(1, 1, 0) = (1.5, −1.5, 0); then both scaled by
        // ‖B‖_F/‖B′‖_F = √15.25 / √6.75.
        let s = (15.25f64 / 6.75).sqrt();
        let want = [-1.0, 1.5, 1.0, -1.5, 0.5, 0.0].map(|x| x * s);
        for (g, w) in a.layers[0].b.data.iter().zip(want) {
            assert!((f64::from(*g) - w).abs() < 1e-6, "{g} vs {w}");
        }
        assert_eq!(
            a.layers[1].b.data, b,
            "q_proj does not write into the residual stream"
        );
    }

    #[test]
    fn lora_b_vectors_are_the_rank_one_residual_writers_by_block() {
        let layer = |module: &str, rank: usize, b: Vec<f32>| LoraLayer {
            module: module.into(),
            a: HostTensor {
                shape: vec![rank, 2],
                data: vec![0.1; 2 * rank],
            },
            b: HostTensor {
                shape: vec![b.len() / rank, rank],
                data: b,
            },
            scale: 1.0,
        };
        let adapter = |layers| adapter_of(1, layers);
        let a = adapter(vec![
            layer("model.layers.1.mlp.down_proj", 1, vec![1.0, 2.0, 3.0]),
            layer("model.layers.1.self_attn.q_proj", 1, vec![9.0, 9.0, 9.0]),
            layer("transformer.h.12.attn.c_proj", 1, vec![0.5, 0.0, -1.0]),
        ]);
        let v = lora_b_vectors(&a, None).unwrap();
        assert_eq!(v.keys().copied().collect::<Vec<_>>(), [1, 12]);
        assert_eq!(v[&1].1, [1.0, 2.0, 3.0]);
        assert_eq!(v[&12].0, "transformer.h.12.attn.c_proj");
        // Two writers in one block need a choice; rank 2 has no single B vector.
        let two = adapter(vec![
            layer("model.layers.1.mlp.down_proj", 1, vec![1.0, 2.0, 3.0]),
            layer("model.layers.1.self_attn.o_proj", 1, vec![1.0, 0.0, 0.0]),
        ]);
        let e = lora_b_vectors(&two, None).unwrap_err().to_string();
        assert!(e.contains("two adapted residual writers"), "{e}");
        assert_eq!(
            lora_b_vectors(&two, Some("o_proj")).unwrap()[&1].1,
            [1.0, 0.0, 0.0]
        );
        let wide = adapter(vec![layer("model.layers.0.mlp.down_proj", 2, vec![0.0; 6])]);
        let e = lora_b_vectors(&wide, None).unwrap_err().to_string();
        assert!(e.contains("rank 2"), "{e}");
    }
}
