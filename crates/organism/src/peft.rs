//! Writing trained LoRA factors as a PEFT adapter directory (`adapter_config.json` +
//! `adapter_model.safetensors`), the format lm merges at load and `peft.PeftModel` reads:
//! tensors `base_model.model.{module}.lora_A.weight [r, in]` and `.lora_B.weight [out, r]`,
//! `W' = W + (lora_alpha / r) · B A`.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::TensorView;
use serde_json::json;

use crate::finetune::AdapterFactors;
use crate::init::write_json;
use crate::{OrganismError, Result};

/// Writes `factors` (all of one rank) into the existing directory `dir`; `base` names the base
/// model in the config (`base_model_name_or_path`).
pub fn write_adapter(dir: &Path, factors: &[AdapterFactors], alpha: f64, base: &str) -> Result<()> {
    let Some(first) = factors.first() else {
        return Err(OrganismError::Config(
            "an adapter with no LoRA modules".into(),
        ));
    };
    let r = first.rank;
    if factors.iter().any(|f| f.rank != r) {
        return Err(OrganismError::Config(
            "adapter modules of different ranks".into(),
        ));
    }
    let mut targets: Vec<String> = factors
        .iter()
        .map(|f| f.module.rsplit('.').next().unwrap_or(&f.module).to_string())
        .collect();
    targets.sort();
    targets.dedup();
    let mut layers: Vec<usize> = factors
        .iter()
        .filter_map(|f| f.module.split('.').nth(2)?.parse().ok())
        .collect();
    layers.sort_unstable();
    layers.dedup();
    let config = json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base,
        "r": r,
        "lora_alpha": alpha,
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": false,
        "use_rslora": false,
        "target_modules": targets,
        "layers_to_transform": layers,
        "modules_to_save": null,
        "inference_mode": true,
    });
    write_json(&dir.join("adapter_config.json"), &config)?;
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = factors
        .iter()
        .flat_map(|f| {
            let le = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
            [
                (
                    format!("base_model.model.{}.lora_A.weight", f.module),
                    vec![f.rank, f.d_in],
                    le(&f.a),
                ),
                (
                    format!("base_model.model.{}.lora_B.weight", f.module),
                    vec![f.d_out, f.rank],
                    le(&f.b),
                ),
            ]
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(n, s, b)| {
            TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| OrganismError::Format(format!("tensor {n}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    let data = safetensors::serialize(views, Some(meta))
        .map_err(|e| OrganismError::Format(format!("cannot serialize the adapter: {e}")))?;
    lantern_output::write_atomic(&dir.join("adapter_model.safetensors"), &data)?;
    Ok(())
}
