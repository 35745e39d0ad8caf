//! A loaded model of either family behind one type, and loading from a path: a Hugging Face
//! directory (`config.json` + safetensors) or a `.gguf` file.

use std::path::Path;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Gradients, Tensor};

use crate::adapter::LoraAdapter;
use crate::config::{Family, ModelConfig, RopeScaling};
use crate::gguf::GgufFile;
use crate::hooks::Hooks;
use crate::models::gpt2::Gpt2;
use crate::models::llama::Llama;
use crate::models::nn::KvCache;
use crate::models::{Forward, LogitsAt, ResidualWriter};
use crate::weights::WeightSource;
use crate::{LmError, Result};

/// A transformer language model on a burn device: a burn [`Module`], so it can be moved
/// between devices, trained under autodiff (load it onto `device.autodiff()`) and edited.
// Both variants are handles to device tensors plus a config (a few hundred bytes); a program
// holds one or two models, so boxing would only add an indirection.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Model {
    Llama(Llama),
    Gpt2(Gpt2),
}

impl Model {
    /// Loads weights from a Hugging Face model directory or a GGUF file onto `dev`.
    pub fn load(path: &Path, dev: &Device) -> Result<Self> {
        Self::load_with_adapter(path, None, dev)
    }

    /// As [`Model::load`], with a PEFT LoRA adapter merged into the weights.
    pub fn load_with_adapter(
        path: &Path,
        adapter: Option<LoraAdapter>,
        dev: &Device,
    ) -> Result<Self> {
        let with = |src: WeightSource| match adapter {
            Some(a) => src.with_adapter(a),
            None => Ok(src),
        };
        if path.is_dir() {
            let cfg = ModelConfig::from_hf_json(&path.join("config.json"))?;
            let src = with(WeightSource::open_hf_dir(path)?)?;
            Self::from_source(cfg, &src, dev)
        } else if path.is_file() {
            let file = GgufFile::open(path)?;
            let mut cfg = ModelConfig::from_gguf(&file, path)?;
            let heads = (cfg.model_type == "llama").then_some((cfg.n_heads, cfg.n_kv_heads));
            let src = with(WeightSource::from_gguf(file, path, heads))?;
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
    /// cached ones, with `real[b][i]` false for padding. Hooks are checked against the model
    /// and the batch first. Returns logits (see [`LogitsAt`]; none if the hooks stopped early)
    /// and the captures.
    pub fn forward(
        &self,
        ids: &[u32],
        real: &[Vec<bool>],
        cache: Option<&mut KvCache>,
        hooks: &mut Hooks<'_>,
        logits: LogitsAt,
    ) -> Result<Forward> {
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
        hooks.check(cfg.n_layers, cfg.d_model, batch)?;
        match self {
            Self::Llama(m) => m.forward(ids, batch, real, cache, hooks, logits),
            Self::Gpt2(m) => m.forward(ids, batch, real, cache, hooks, logits),
        }
    }

    /// Logits `[seq, vocab]` of one unpadded sequence, no hooks: the plain use.
    pub fn logits(&self, ids: &[u32]) -> Result<Tensor<2>> {
        let real = vec![vec![true; ids.len()]];
        let out = self.forward(ids, &real, None, &mut Hooks::new(), LogitsAt::All)?;
        let t = out.logits.expect("no hooks, so no early stop");
        let [_, s, v] = t.dims();
        Ok(t.reshape([s, v]))
    }

    /// The logit lens of residual-stream vectors `v [n, d_model]`: `(v ⊙ γ) W_U`, `[n, vocab]`,
    /// with `γ` the final norm's weight and `W_U` the unembedding. The norm's centring and
    /// scaling are left out: a direction has no scale of its own, so only the per-dimension
    /// gain matters for which tokens it promotes (nostalgebraist's logit lens applied to a
    /// direction, as the activation-difference lens reads it).
    pub fn unembed(&self, v: Tensor<2>) -> Tensor<2> {
        let (gain, lm_head) = match self {
            Self::Llama(m) => (m.model.norm.weight.val(), &m.lm_head),
            Self::Gpt2(m) => (m.transformer.ln_f.weight.val(), &m.lm_head),
        };
        let x = v * gain.unsqueeze_dim::<2>(0);
        let mut out = x.matmul(lm_head.weight.val());
        if let Some(b) = &lm_head.bias {
            out = out + b.val().unsqueeze_dim(0);
        }
        out
    }

    /// The parameters that write into the residual stream (see [`ResidualWriter`]); which
    /// matrices those are is each family's knowledge.
    pub fn residual_writers_mut(&mut self) -> Vec<ResidualWriter<'_>> {
        match self {
            Self::Llama(m) => m.residual_writers_mut(),
            Self::Gpt2(m) => m.residual_writers_mut(),
        }
    }

    /// Every parameter under its Hugging Face name, in Hugging Face's layout (transposed back
    /// where the family stores the transpose), with its gradient when `grads` holds one.
    pub fn named_parameters(&self, grads: Option<&Gradients>) -> Vec<NamedParameter> {
        let mut c = Collect {
            path: Vec::new(),
            grads,
            out: Vec::new(),
        };
        let transposed: fn(&str) -> bool = match self {
            Self::Llama(m) => {
                m.visit(&mut c);
                Llama::stored_transposed
            }
            Self::Gpt2(m) => {
                m.visit(&mut c);
                Gpt2::stored_transposed
            }
        };
        for p in &mut c.out {
            if transposed(&p.name) && p.shape.len() == 2 {
                let [r, k] = [p.shape[0], p.shape[1]];
                p.value = transposed_flat(p.value.clone(), r, k);
                p.grad = p.grad.take().map(|g| transposed_flat(g, r, k));
                p.shape = vec![k, r];
            }
        }
        c.out
    }
}

/// A flattened `[r, k]` matrix as its flattened transpose `[k, r]`.
fn transposed_flat(t: Tensor<1>, r: usize, k: usize) -> Tensor<1> {
    t.reshape([r, k]).transpose().reshape([r * k])
}

/// A parameter under its Hugging Face name, flattened in Hugging Face's layout.
#[derive(Clone, Debug)]
pub struct NamedParameter {
    pub name: String,
    /// Hugging Face's shape (`[out, in]` for an `nn.Linear` weight).
    pub shape: Vec<usize>,
    /// Row-major values in that shape.
    pub value: Tensor<1>,
    /// The gradient, in the same layout, when one was asked for and exists.
    pub grad: Option<Tensor<1>>,
}

/// Collects parameters with their module paths (which the families make equal to Hugging
/// Face names).
struct Collect<'g> {
    path: Vec<String>,
    grads: Option<&'g Gradients>,
    out: Vec<NamedParameter>,
}

impl ModuleVisitor for Collect<'_> {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let t = param.val();
        let shape = t.dims().to_vec();
        let n: usize = shape.iter().product();
        let grad = self.grads.and_then(|g| t.grad(g)).map(|g| g.reshape([n]));
        self.out.push(NamedParameter {
            name: self.path.join("."),
            shape,
            value: t.reshape([n]),
            grad,
        });
    }
}
