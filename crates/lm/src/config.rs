//! The model configuration, read from a Hugging Face `config.json` or from GGUF metadata.
//!
//! One struct serves both families: the Llama family (Llama 2/3, Mistral, Qwen2/2.5,
//! SmolLM2) and GPT-2. Fields mirror `config.json`'s meaning; missing optional keys take
//! Hugging Face's defaults.

use std::path::Path;

use serde_json::Value;

use crate::gguf::GgufFile;
use crate::{LmError, Result};

/// Which implementation runs the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// Pre-norm decoder with RMSNorm, rotary embeddings, SwiGLU and grouped-query attention.
    Llama,
    /// GPT-2: LayerNorm, learned positions, fused `c_attn`, gelu_new.
    Gpt2,
}

/// How rotary frequencies are rescaled for long contexts.
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE: `inv_freq_i = θ^(−2i/d_head)`.
    None,
    /// Position interpolation: every `inv_freq` divided by `factor`.
    Linear { factor: f64 },
    /// Llama 3.1's frequency-dependent rescaling (wavelengths beyond
    /// `original_max_position_embeddings / low_freq_factor` are divided by `factor`, those below
    /// `… / high_freq_factor` kept, and a smooth blend in between).
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
    /// Per-frequency divisors as stored in GGUF files (`rope_freqs.weight`).
    Factors(Vec<f32>),
}

/// Everything the forward pass needs to know about the model's shape.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub family: Family,
    /// `model_type` of `config.json` or `general.architecture` of GGUF.
    pub model_type: String,
    pub vocab_size: usize,
    pub d_model: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub d_head: usize,
    /// Hidden width of the MLP.
    pub d_mlp: usize,
    /// RMSNorm / LayerNorm epsilon.
    pub norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    pub max_position: usize,
    /// Whether the unembedding is the token embedding (no separate `lm_head`).
    pub tie_word_embeddings: bool,
    /// Biases on q, k and v (Qwen2 always; Llama when `attention_bias`).
    pub qkv_bias: bool,
    /// Bias on the attention output projection (Llama `attention_bias`).
    pub o_bias: bool,
    /// Biases on the MLP projections (Llama `mlp_bias`).
    pub mlp_bias: bool,
    /// Mistral's sliding attention window, when set.
    pub sliding_window: Option<usize>,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
}

impl ModelConfig {
    /// Reads a Hugging Face `config.json`.
    pub fn from_hf_json(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| LmError::io(path, e))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| LmError::format(path, format!("not valid JSON: {e}")))?;
        Self::from_hf_value(&v, path)
    }

    /// Reads an already parsed `config.json` (`path` names it in errors); the family that
    /// owns the `model_type` (see [`crate::models`]) reads the rest.
    pub fn from_hf_value(v: &Value, path: &Path) -> Result<Self> {
        let c = Keys { v, path };
        let model_type = c.str("model_type")?;
        match crate::models::family_of(&model_type) {
            Some(Family::Llama) => crate::models::llama::config_from_hf(&c, &model_type),
            Some(Family::Gpt2) => crate::models::gpt2::config_from_hf(&c),
            None => Err(LmError::Unsupported {
                path: path.to_path_buf(),
                what: format!(
                    "model_type '{model_type}' (expected {})",
                    crate::models::MODEL_TYPES.join(", ")
                ),
            }),
        }
    }

    /// Reads the model shape from GGUF metadata (`{arch}.block_count`, ...); GGUF models are
    /// of the Llama family (architectures `llama`, also used for Mistral and SmolLM2, and
    /// `qwen2`).
    pub fn from_gguf(f: &GgufFile, path: &Path) -> Result<Self> {
        crate::models::llama::config_from_gguf(f, path)
    }

    /// This configuration as a Hugging Face `config.json` that transformers and
    /// [`ModelConfig::from_hf_value`] read back to the same model (written by the family).
    /// The unembedding is always written as its own `lm_head.weight`
    /// (`tie_word_embeddings: false`), so an edited embedding never changes `W_U`.
    pub fn to_hf_json(&self, path: &Path) -> Result<Value> {
        use serde_json::json;
        let mut v = match self.family {
            Family::Llama => crate::models::llama::config_to_hf(self, path)?,
            Family::Gpt2 => crate::models::gpt2::config_to_hf(self),
        };
        v["tie_word_embeddings"] = json!(false);
        v["torch_dtype"] = json!("float32");
        if let Some(b) = self.bos_token_id {
            v["bos_token_id"] = json!(b);
        }
        match self.eos_token_ids.as_slice() {
            [] => {}
            [one] => v["eos_token_id"] = json!(one),
            many => v["eos_token_id"] = json!(many),
        }
        Ok(v)
    }

    /// Checks the shape relations the forward pass relies on.
    pub fn validated(self, path: &Path) -> Result<Self> {
        let bad = |msg: String| Err(LmError::format(path, msg));
        if self.d_model == 0 || self.n_layers == 0 || self.n_heads == 0 || self.vocab_size == 0 {
            return bad(format!(
                "d_model, layers, heads and vocab must be positive (got {}, {}, {}, {})",
                self.d_model, self.n_layers, self.n_heads, self.vocab_size
            ));
        }
        if self.n_kv_heads == 0 || !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return bad(format!(
                "{} attention heads are not a multiple of {} key/value heads",
                self.n_heads, self.n_kv_heads
            ));
        }
        // Numbers a forward pass divides by or exponentiates: a NaN or zero here made every
        // logit NaN and generate print empty text (issue 15).
        if !(self.norm_eps.is_finite() && self.norm_eps > 0.0) {
            return bad(format!(
                "norm eps {} must be a positive number",
                self.norm_eps
            ));
        }
        if self.family == Family::Llama && !(self.rope_theta.is_finite() && self.rope_theta > 1.0) {
            return bad(format!(
                "rope_theta {} must be a number above 1",
                self.rope_theta
            ));
        }
        if self.family == Family::Llama && !self.d_head.is_multiple_of(2) {
            return bad(format!("head_dim {} must be even for RoPE", self.d_head));
        }
        if self.family == Family::Gpt2 && !self.d_model.is_multiple_of(self.n_heads) {
            return bad(format!(
                "n_embd {} is not a multiple of n_head {}",
                self.d_model, self.n_heads
            ));
        }
        Ok(self)
    }

    /// Rotary inverse frequencies `inv_freq_i`, `i < d_head/2`, after scaling.
    pub fn inv_freq(&self) -> Vec<f64> {
        let half = self.d_head / 2;
        let base: Vec<f64> = (0..half)
            .map(|i| 1.0 / self.rope_theta.powf(2.0 * i as f64 / self.d_head as f64))
            .collect();
        match &self.rope_scaling {
            RopeScaling::None => base,
            RopeScaling::Linear { factor } => base.iter().map(|f| f / factor).collect(),
            RopeScaling::Factors(div) => base
                .iter()
                .zip(div.iter().chain(std::iter::repeat(&1.0)))
                .map(|(f, d)| f / f64::from(*d))
                .collect(),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: old,
            } => {
                let low_wavelen = old / low_freq_factor;
                let high_wavelen = old / high_freq_factor;
                base.iter()
                    .map(|&f| {
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        if wavelen < high_wavelen {
                            f
                        } else if wavelen > low_wavelen {
                            f / factor
                        } else {
                            let smooth = (old / wavelen - low_freq_factor)
                                / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect()
            }
        }
    }
}

pub(crate) fn parse_rope_scaling(s: &Value, path: &Path) -> Result<RopeScaling> {
    let kind = s
        .get("rope_type")
        .or_else(|| s.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let num = |k: &str| -> Result<f64> {
        s.get(k).and_then(Value::as_f64).ok_or_else(|| {
            LmError::format(path, format!("rope scaling '{kind}' needs a number '{k}'"))
        })
    };
    Ok(match kind {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear {
            factor: num("factor")?,
        },
        "llama3" => RopeScaling::Llama3 {
            factor: num("factor")?,
            low_freq_factor: num("low_freq_factor")?,
            high_freq_factor: num("high_freq_factor")?,
            original_max_position_embeddings: num("original_max_position_embeddings")?,
        },
        other => {
            return Err(LmError::Unsupported {
                path: path.to_path_buf(),
                what: format!("RoPE scaling '{other}' (expected default, linear or llama3)"),
            });
        }
    })
}

pub(crate) fn eos_ids(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_u64)
            .map(|x| x as u32)
            .collect(),
        _ => Vec::new(),
    }
}

/// Typed access to `config.json` keys with one-line errors.
pub(crate) struct Keys<'a> {
    pub v: &'a Value,
    pub path: &'a Path,
}

impl Keys<'_> {
    fn missing(&self, key: &str, what: &str) -> LmError {
        LmError::format(self.path, format!("config key '{key}' must be {what}"))
    }
    pub(crate) fn str(&self, key: &str) -> Result<String> {
        self.opt_str(key)?
            .ok_or_else(|| self.missing(key, "a string"))
    }
    pub(crate) fn opt_str(&self, key: &str) -> Result<Option<String>> {
        match self.v.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(self.missing(key, "a string")),
        }
    }
    pub(crate) fn usize(&self, key: &str) -> Result<usize> {
        self.opt_usize(key)?
            .ok_or_else(|| self.missing(key, "a non-negative integer"))
    }
    pub(crate) fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        self.opt(key, "a non-negative integer", |x| {
            x.as_u64().map(|n| n as usize)
        })
    }
    pub(crate) fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        self.opt(key, "a number", Value::as_f64)
    }
    pub(crate) fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        self.opt(key, "true or false", Value::as_bool)
    }
    /// `key` read by `get`: `None` when absent or null, an error naming `what` was expected
    /// when present with another type.
    fn opt<T>(
        &self,
        key: &str,
        what: &str,
        get: impl Fn(&Value) -> Option<T>,
    ) -> Result<Option<T>> {
        match self.v.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(x) => get(x).map(Some).ok_or_else(|| self.missing(key, what)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama3_rope_scaling_matches_the_reference_formula() {
        // Llama 3.1 8B (θ = 500000, d_head 128, factor 8, low 1, high 4, original 8192),
        // indices 0, 20, 40, 63, computed in Python float64; transformers'
        // `_compute_llama3_parameters` gives the same to f32 precision.
        let v: Value = serde_json::json!({
            "model_type": "llama", "hidden_size": 4096, "num_attention_heads": 32,
            "num_key_value_heads": 8, "num_hidden_layers": 32, "intermediate_size": 14336,
            "vocab_size": 128256, "rope_theta": 500000.0,
            "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                             "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
        });
        let c = ModelConfig::from_hf_value(&v, Path::new("config.json")).unwrap();
        assert_eq!((c.d_head, c.n_kv_heads), (128, 8));
        let f = c.inv_freq();
        let want = [
            (0, 1.0),
            (20, 0.016560440080994446),
            (40, 3.428102195952591e-05),
            (63, 3.068925988914511e-07),
        ];
        for (i, w) in want {
            assert!((f[i] - w).abs() <= 1e-12 * w, "{i}: {} vs {w}", f[i]);
        }
    }

    #[test]
    fn bad_configs_give_one_line_errors() {
        let p = Path::new("m/config.json");
        let e = ModelConfig::from_hf_value(&serde_json::json!({"model_type": "bert"}), p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("m/config.json") && e.contains("bert"), "{e}");
        let e = ModelConfig::from_hf_value(
            &serde_json::json!({"model_type": "llama", "hidden_size": "big"}),
            p,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("hidden_size"), "{e}");
    }
}
