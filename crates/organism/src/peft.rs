//! Writing trained LoRA factors as a PEFT adapter directory (`adapter_config.json` +
//! `adapter_model.safetensors`), the format lm merges at load and `peft.PeftModel` reads:
//! tensors `base_model.model.{module}.lora_A.weight [r, in]` and `.lora_B.weight [out, r]`,
//! `W' = W + (lora_alpha / r) · B A`.

use std::path::Path;

use serde_json::json;

use crate::finetune::AdapterFactors;
use crate::init::{write_f32_safetensors, write_json};
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
    let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = factors
        .iter()
        .flat_map(|f| {
            [
                (
                    format!("base_model.model.{}.lora_A.weight", f.module),
                    vec![f.rank, f.d_in],
                    f.a.clone(),
                ),
                (
                    format!("base_model.model.{}.lora_B.weight", f.module),
                    vec![f.d_out, f.rank],
                    f.b.clone(),
                ),
            ]
        })
        .collect();
    write_f32_safetensors(&dir.join("adapter_model.safetensors"), &tensors)
}
