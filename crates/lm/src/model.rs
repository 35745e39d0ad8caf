//! A loaded model of either family behind one type, and loading from a path: a Hugging Face
//! directory (`config.json` + safetensors) or a `.gguf` file.

use std::path::Path;

use burn::tensor::{Device, Tensor};

use crate::config::{Family, ModelConfig, RopeScaling};
use crate::gguf::GgufFile;
use crate::hooks::Hooks;
use crate::models::LogitsAt;
use crate::models::gpt2::Gpt2;
use crate::models::llama::Llama;
use crate::models::nn::KvCache;
use crate::weights::WeightSource;
use crate::{LmError, Result};

/// A transformer language model on a burn device.
// Both variants are handles to device tensors plus a config (a few hundred bytes); a program
// holds one or two models, so boxing would only add an indirection.
#[allow(clippy::large_enum_variant)]
pub enum Model {
    Llama(Llama),
    Gpt2(Gpt2),
}

impl Model {
    /// Loads weights from a Hugging Face model directory or a GGUF file onto `dev`.
    pub fn load(path: &Path, dev: &Device) -> Result<Self> {
        if path.is_dir() {
            let cfg = ModelConfig::from_hf_json(&path.join("config.json"))?;
            let src = WeightSource::open_hf_dir(path)?;
            Self::from_source(cfg, &src, dev)
        } else if path.is_file() {
            let file = GgufFile::open(path)?;
            let mut cfg = ModelConfig::from_gguf(&file, path)?;
            let heads = (cfg.model_type == "llama").then_some((cfg.n_heads, cfg.n_kv_heads));
            let src = WeightSource::from_gguf(file, path, heads);
            if src.contains("rope_freqs.weight") {
                let f = src.load("rope_freqs.weight", &[cfg.d_head / 2])?;
                cfg.rope_scaling = RopeScaling::Factors(f.data);
            }
            Self::from_source(cfg, &src, dev)
        } else {
            Err(LmError::format(
                path,
                "no such model: expected a Hugging Face directory (config.json + \
                 model.safetensors) or a .gguf file",
            ))
        }
    }

    /// Builds the family's implementation from weights already opened.
    pub fn from_source(cfg: ModelConfig, src: &WeightSource, dev: &Device) -> Result<Self> {
        Ok(match cfg.family {
            Family::Llama => Self::Llama(Llama::load(cfg, src, dev)?),
            Family::Gpt2 => Self::Gpt2(Gpt2::load(cfg, src, dev)?),
        })
    }

    /// The configuration the model was built from.
    pub fn config(&self) -> &ModelConfig {
        match self {
            Self::Llama(m) => &m.cfg,
            Self::Gpt2(m) => &m.cfg,
        }
    }

    /// One forward pass over `new` tokens per row (`ids` row-major `[batch·new]`) after the
    /// cached ones, with `real[b][i]` false for left padding. Hooks are checked against the
    /// model first. Returns logits (see [`LogitsAt`]) or `None` if the hooks stopped early.
    pub fn forward(
        &self,
        ids: &[u32],
        real: &[Vec<bool>],
        cache: Option<&mut KvCache>,
        hooks: &mut Hooks,
        logits: LogitsAt,
    ) -> Result<Option<Tensor<3>>> {
        let cfg = self.config();
        let batch = real.len();
        if batch == 0 || ids.is_empty() || !ids.len().is_multiple_of(batch) {
            return Err(LmError::Config(format!(
                "{} token ids do not fill {batch} rows",
                ids.len()
            )));
        }
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= cfg.vocab_size) {
            return Err(LmError::Config(format!(
                "token id {bad} is outside the vocabulary (size {})",
                cfg.vocab_size
            )));
        }
        hooks.check(cfg.n_layers, cfg.d_model)?;
        match self {
            Self::Llama(m) => m.forward(ids, batch, real, cache, hooks, logits),
            Self::Gpt2(m) => m.forward(ids, batch, real, cache, hooks, logits),
        }
    }

    /// Logits `[seq, vocab]` of one unpadded sequence, no hooks: the plain use.
    pub fn logits(&self, ids: &[u32]) -> Result<Tensor<2>> {
        let real = vec![vec![true; ids.len()]];
        let out = self.forward(ids, &real, None, &mut Hooks::new(), LogitsAt::All)?;
        let t = out.expect("no hooks, so no early stop");
        let [_, s, v] = t.dims();
        Ok(t.reshape([s, v]))
    }
}
