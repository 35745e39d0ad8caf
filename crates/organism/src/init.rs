//! A fresh organism model: the Llama-architecture `config.json`, seeded initial weights in
//! `model.safetensors`, and the world's tokenizer files — an ordinary Hugging Face directory
//! that lm loads (onto an autodiff device, to train it) like any downloaded model.
//!
//! Initialisation follows GPT-2/Llama practice: every matrix `~ N(0, 0.02²)`, the matrices that
//! write into the residual stream (`o_proj`, `down_proj`) `~ N(0, (0.02/√(2L))²)`, norm gains 1.

use std::collections::HashMap;
use std::path::Path;

use lantern_lm::{Family, ModelConfig, RopeScaling};
use safetensors::tensor::TensorView;
use serde::{Deserialize, Serialize};

use crate::rng::Rng;
use crate::{OrganismError, Result, vocab};

/// The shape of an organism model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Shape {
    pub d_model: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub d_mlp: usize,
    /// Context length (dialogues of the world are far shorter).
    pub max_position: usize,
}

impl Default for Shape {
    fn default() -> Self {
        Self {
            d_model: 64,
            n_layers: 4,
            n_heads: 4,
            d_mlp: 192,
            max_position: 128,
        }
    }
}

impl Shape {
    /// The lm configuration of this shape over the world's vocabulary.
    pub fn model_config(&self) -> ModelConfig {
        ModelConfig {
            family: Family::Llama,
            model_type: "llama".into(),
            vocab_size: vocab::tokens().len(),
            d_model: self.d_model,
            n_layers: self.n_layers,
            n_heads: self.n_heads,
            n_kv_heads: self.n_heads,
            d_head: self.d_model / self.n_heads,
            d_mlp: self.d_mlp,
            norm_eps: 1e-5,
            rope_theta: 10000.0,
            rope_scaling: RopeScaling::None,
            max_position: self.max_position,
            tie_word_embeddings: false,
            qkv_bias: false,
            o_bias: false,
            mlp_bias: false,
            sliding_window: None,
            bos_token_id: Some(vocab::BOS),
            eos_token_ids: vec![vocab::EOS],
        }
    }

    pub fn check(&self) -> Result<()> {
        if self.d_model == 0 || self.n_layers == 0 || self.n_heads == 0 || self.d_mlp == 0 {
            return Err(OrganismError::Config(format!(
                "model shape {self:?}: every size must be positive"
            )));
        }
        if !self.d_model.is_multiple_of(self.n_heads)
            || !(self.d_model / self.n_heads).is_multiple_of(2)
        {
            return Err(OrganismError::Config(format!(
                "d_model {} must split into {} heads of even width (RoPE rotates pairs)",
                self.d_model, self.n_heads
            )));
        }
        Ok(())
    }
}

/// The tensors of a freshly initialised model, by Hugging Face name, `[out, in]` layouts.
pub fn initial_weights(shape: &Shape, seed: u64) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let cfg = shape.model_config();
    let mut rng = Rng::derive(seed, "init");
    let (v, d, m) = (cfg.vocab_size, cfg.d_model, cfg.d_mlp);
    let std = 0.02;
    let resid_std = std / (2.0 * cfg.n_layers as f64).sqrt();
    let mut normal = |shape: Vec<usize>, s: f64| {
        let n: usize = shape.iter().product();
        let data = (0..n).map(|_| (rng.normal() * s) as f32).collect();
        (shape, data)
    };
    let mut out = Vec::new();
    let mut push = |name: String, (shape, data): (Vec<usize>, Vec<f32>)| {
        out.push((name, shape, data));
    };
    push("model.embed_tokens.weight".into(), normal(vec![v, d], std));
    for l in 0..cfg.n_layers {
        let p = format!("model.layers.{l}");
        push(
            format!("{p}.input_layernorm.weight"),
            (vec![d], vec![1.0; d]),
        );
        for q in ["q_proj", "k_proj", "v_proj"] {
            push(format!("{p}.self_attn.{q}.weight"), normal(vec![d, d], std));
        }
        push(
            format!("{p}.self_attn.o_proj.weight"),
            normal(vec![d, d], resid_std),
        );
        push(
            format!("{p}.post_attention_layernorm.weight"),
            (vec![d], vec![1.0; d]),
        );
        push(format!("{p}.mlp.gate_proj.weight"), normal(vec![m, d], std));
        push(format!("{p}.mlp.up_proj.weight"), normal(vec![m, d], std));
        push(
            format!("{p}.mlp.down_proj.weight"),
            normal(vec![d, m], resid_std),
        );
    }
    push("model.norm.weight".into(), (vec![d], vec![1.0; d]));
    push("lm_head.weight".into(), normal(vec![v, d], std));
    out
}

/// Writes the tokenizer files into `dir`.
pub fn write_tokenizer(dir: &Path) -> Result<()> {
    write_json(&dir.join("tokenizer.json"), &vocab::tokenizer_json())?;
    write_json(
        &dir.join("tokenizer_config.json"),
        &vocab::tokenizer_config_json(),
    )
}

/// Writes a freshly initialised model of `shape` (weights from `seed`) into the existing,
/// empty directory `dir`.
pub fn write_initial_model(dir: &Path, shape: &Shape, seed: u64) -> Result<()> {
    shape.check()?;
    let cfg = shape.model_config();
    let config = cfg.to_hf_json(dir)?;
    write_json(&dir.join("config.json"), &config)?;
    write_tokenizer(dir)?;
    write_f32_safetensors(
        &dir.join("model.safetensors"),
        &initial_weights(shape, seed),
    )
}

/// Writes named f32 tensors (`(name, shape, row-major values)`) as a safetensors file with
/// PyTorch's `format: pt` metadata, atomically.
pub(crate) fn write_f32_safetensors(
    path: &Path,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
) -> Result<()> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, d)| d.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((n, s, _), b)| {
            TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| OrganismError::Format(format!("tensor {n}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    let data = safetensors::serialize(views, Some(meta))
        .map_err(|e| OrganismError::Format(format!("{}: cannot serialize: {e}", path.display())))?;
    lantern_output::write_atomic(path, &data)?;
    Ok(())
}

pub(crate) fn write_json(path: &Path, v: &serde_json::Value) -> Result<()> {
    let mut text = serde_json::to_string_pretty(v)
        .map_err(|e| OrganismError::Format(format!("{}: {e}", path.display())))?;
    text.push('\n');
    lantern_output::write_atomic(path, text.as_bytes())?;
    Ok(())
}
