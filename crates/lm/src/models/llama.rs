//! The Llama family: Llama 2/3, Mistral, Qwen2/2.5 and SmolLM2 in one implementation.
//!
//! Block `L` (pre-norm, residual stream `x`):
//! ```text
//! h = RMSNorm(x);  a = Attn(RoPE(h W_q + b_q), RoPE(h W_k + b_k), h W_v + b_v) W_o
//! x = x + a;       h = RMSNorm(x);  x = x + (silu(h W_gate) ⊙ (h W_up)) W_down
//! ```
//! RoPE rotates halves (`[x₁, x₂] → [x₁cos − x₂sin, x₂cos + x₁sin]`), as Hugging Face and
//! TransformerLens index heads. Key/value heads are shared by `n_heads / n_kv_heads` query
//! heads (grouped-query attention). Biases on q/k/v exist for Qwen2.
//!
//! This file owns the family's `config.json` and GGUF metadata reading, its `config.json`
//! writing, and its weight names (Hugging Face, and llama.cpp's GGUF names).

use burn::module::Module;
use burn::tensor::Device;
use burn::tensor::activation::silu;

use super::nn::{
    Embedding, KvCache, Linear, RmsNorm, apply_rope, attend, extend_cache, param2, split_heads,
};
use std::path::Path;

use serde_json::{Value, json};

use super::{Forward, LogitsAt, Pass, ResidualWriter, hook};
use crate::config::{Family, Keys, ModelConfig, RopeScaling, eos_ids, parse_rope_scaling};
use crate::gguf::GgufFile;
use crate::hooks::{HookPoint, Hooks};
use crate::weights::WeightSource;
use crate::{LmError, Result};

/// The Llama-family `model_type`s of `config.json`.
pub(crate) const MODEL_TYPES: [&str; 3] = ["llama", "mistral", "qwen2"];

/// Reads a Llama-family `config.json` (`model_type` already read).
pub(crate) fn config_from_hf(c: &Keys, model_type: &str) -> Result<ModelConfig> {
    let (v, path) = (c.v, c.path);
    let model_type = model_type.to_string();
    let d_model = c.usize("hidden_size")?;
    let n_heads = c.usize("num_attention_heads")?;
    let n_kv_heads = c.opt_usize("num_key_value_heads")?.unwrap_or(n_heads);
    let d_head = c.opt_usize("head_dim")?.unwrap_or(d_model / n_heads.max(1));
    let qwen = model_type == "qwen2";
    let attention_bias = c.opt_bool("attention_bias")?.unwrap_or(false);
    let act = c.opt_str("hidden_act")?.unwrap_or_else(|| "silu".into());
    if act != "silu" {
        return Err(LmError::Unsupported {
            path: path.to_path_buf(),
            what: format!("hidden_act '{act}' (expected silu)"),
        });
    }
    // transformers ≥ 5 writes `rope_parameters`; older versions `rope_theta` and
    // `rope_scaling`.
    let rope = v.get("rope_parameters").filter(|r| r.is_object());
    let rope_theta = rope
        .and_then(|r| r.get("rope_theta"))
        .and_then(Value::as_f64)
        .or(c.opt_f64("rope_theta")?)
        .unwrap_or(10000.0);
    let scaling = rope.or(v.get("rope_scaling").filter(|r| r.is_object()));
    let rope_scaling = match scaling {
        Some(s) => parse_rope_scaling(s, path)?,
        None => RopeScaling::None,
    };
    let sliding_window = if model_type == "mistral" {
        c.opt_usize("sliding_window")?
    } else {
        None
    };
    ModelConfig {
        family: Family::Llama,
        model_type: model_type.clone(),
        vocab_size: c.usize("vocab_size")?,
        d_model,
        n_layers: c.usize("num_hidden_layers")?,
        n_heads,
        n_kv_heads,
        d_head,
        d_mlp: c.usize("intermediate_size")?,
        norm_eps: c.opt_f64("rms_norm_eps")?.unwrap_or(1e-6),
        rope_theta,
        rope_scaling,
        max_position: c.opt_usize("max_position_embeddings")?.unwrap_or(4096),
        tie_word_embeddings: c.opt_bool("tie_word_embeddings")?.unwrap_or(false),
        qkv_bias: qwen || attention_bias,
        o_bias: attention_bias,
        mlp_bias: c.opt_bool("mlp_bias")?.unwrap_or(false),
        sliding_window,
        bos_token_id: c.opt_usize("bos_token_id")?.map(|x| x as u32),
        eos_token_ids: eos_ids(v.get("eos_token_id")),
    }
    .validated(path)
}

/// Reads the model shape from GGUF metadata (`{arch}.block_count`, ...). Architectures
/// `llama` (also used for Mistral and SmolLM2) and `qwen2` are supported.
pub(crate) fn config_from_gguf(f: &GgufFile, path: &Path) -> Result<ModelConfig> {
    let arch = f
        .architecture()
        .ok_or_else(|| LmError::format(path, "GGUF metadata lacks general.architecture"))?
        .to_string();
    if arch != "llama" && arch != "qwen2" {
        return Err(LmError::Unsupported {
            path: path.to_path_buf(),
            what: format!("GGUF architecture '{arch}' (expected llama or qwen2)"),
        });
    }
    let key = |k: &str| format!("{arch}.{k}");
    let int = |k: &str| -> Result<usize> {
        f.get_u64(&key(k)).map(|v| v as usize).ok_or_else(|| {
            LmError::format(path, format!("GGUF metadata lacks integer '{}'", key(k)))
        })
    };
    let d_model = int("embedding_length")?;
    let n_heads = int("attention.head_count")?;
    let n_kv_heads = f
        .get_u64(&key("attention.head_count_kv"))
        .map_or(n_heads, |v| v as usize);
    let d_head = f
        .get_u64(&key("attention.key_length"))
        .map_or(d_model / n_heads.max(1), |v| v as usize);
    let vocab_size = match f.get_u64(&key("vocab_size")) {
        Some(v) => v as usize,
        None => f
            .tensor("token_embd.weight")
            .map(|t| t.dims.get(1).copied().unwrap_or(0))
            .ok_or_else(|| LmError::format(path, "GGUF file lacks token_embd.weight"))?,
    };
    let rope_scaling = match f.get_str(&key("rope.scaling.type")) {
        None | Some("none") => RopeScaling::None,
        Some("linear") => RopeScaling::Linear {
            factor: f.get_f64(&key("rope.scaling.factor")).unwrap_or(1.0),
        },
        Some(other) => {
            return Err(LmError::Unsupported {
                path: path.to_path_buf(),
                what: format!("GGUF rope scaling '{other}' (expected none or linear)"),
            });
        }
    };
    let eos: Vec<u32> = f
        .get_u64("tokenizer.ggml.eos_token_id")
        .map(|v| vec![v as u32])
        .unwrap_or_default();
    ModelConfig {
        family: Family::Llama,
        model_type: arch.clone(),
        vocab_size,
        d_model,
        n_layers: int("block_count")?,
        n_heads,
        n_kv_heads,
        d_head,
        d_mlp: int("feed_forward_length")?,
        norm_eps: f
            .get_f64(&key("attention.layer_norm_rms_epsilon"))
            .unwrap_or(1e-5),
        rope_theta: f.get_f64(&key("rope.freq_base")).unwrap_or(10000.0),
        rope_scaling,
        max_position: int("context_length").unwrap_or(4096),
        tie_word_embeddings: f.tensor("output.weight").is_none(),
        qkv_bias: f.tensor("blk.0.attn_q.bias").is_some(),
        o_bias: f.tensor("blk.0.attn_output.bias").is_some(),
        mlp_bias: f.tensor("blk.0.ffn_up.bias").is_some(),
        sliding_window: None,
        bos_token_id: f.get_u64("tokenizer.ggml.bos_token_id").map(|v| v as u32),
        eos_token_ids: eos,
    }
    .validated(path)
}

/// `config.json` keys of a Llama-family model (the shared ones are added by
/// [`ModelConfig::to_hf_json`]). GGUF per-frequency RoPE factors (`rope_freqs.weight`) have
/// no `config.json` spelling and are refused.
pub(crate) fn config_to_hf(cfg: &ModelConfig, path: &Path) -> Result<Value> {
    let arch = match cfg.model_type.as_str() {
        "mistral" => "MistralForCausalLM",
        "qwen2" => "Qwen2ForCausalLM",
        _ => "LlamaForCausalLM",
    };
    let mut v = json!({
        "model_type": cfg.model_type,
        "architectures": [arch],
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.d_mlp,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.d_head,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,
        "max_position_embeddings": cfg.max_position,
        "hidden_act": "silu",
    });
    if cfg.model_type != "qwen2" {
        v["attention_bias"] = json!(cfg.o_bias);
        v["mlp_bias"] = json!(cfg.mlp_bias);
    }
    if let Some(w) = cfg.sliding_window {
        v["sliding_window"] = json!(w);
    }
    v["rope_scaling"] = match &cfg.rope_scaling {
        RopeScaling::None => Value::Null,
        RopeScaling::Linear { factor } => {
            json!({"rope_type": "linear", "factor": factor})
        }
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        } => json!({
            "rope_type": "llama3",
            "factor": factor,
            "low_freq_factor": low_freq_factor,
            "high_freq_factor": high_freq_factor,
            "original_max_position_embeddings": original_max_position_embeddings,
        }),
        RopeScaling::Factors(_) => {
            return Err(LmError::Unsupported {
                path: path.to_path_buf(),
                what: "writing per-frequency RoPE factors (GGUF rope_freqs.weight) \
                           to config.json"
                    .into(),
            });
        }
    };
    Ok(v)
}

/// The GGUF (llama.cpp) name of a Hugging Face Llama-family tensor name.
pub(crate) fn gguf_name(hf: &str) -> Option<String> {
    let fixed = match hf {
        "model.embed_tokens.weight" => Some("token_embd.weight"),
        "model.norm.weight" => Some("output_norm.weight"),
        "lm_head.weight" => Some("output.weight"),
        "rope_freqs.weight" => Some("rope_freqs.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.into());
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, tail) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, kind) = tail.rsplit_once('.')?;
    let g = match module {
        "input_layernorm" => "attn_norm",
        "post_attention_layernorm" => "ffn_norm",
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        _ => return None,
    };
    Some(format!("blk.{layer}.{g}.{kind}"))
}

/// `self_attn` of one block.
#[derive(Module, Debug)]
pub struct Attention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
}

/// `mlp` of one block: `down(silu(gate(h)) ⊙ up(h))`.
#[derive(Module, Debug)]
pub struct Mlp {
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
}

/// `model.layers.{L}`.
#[derive(Module, Debug)]
pub struct Block {
    pub input_layernorm: RmsNorm,
    pub self_attn: Attention,
    pub post_attention_layernorm: RmsNorm,
    pub mlp: Mlp,
}

/// `model`: everything but the unembedding.
#[derive(Module, Debug)]
pub struct Body {
    pub embed_tokens: Embedding,
    pub layers: Vec<Block>,
    pub norm: RmsNorm,
}

/// A Llama-family model on a device.
///
/// The fields mirror the Hugging Face module tree, so a parameter's burn module path
/// (`model.layers.3.self_attn.o_proj.weight`) is its Hugging Face name; every [`Linear`]
/// weight is stored `[in, out]`, the transpose of Hugging Face's.
///
/// `lm_head` is always a separate copy, also for tied models (`tie_word_embeddings`): editing
/// the embedding (orthogonalizing it against a direction, a finetune) must not change the
/// unembedding `W_U`, as in TransformerLens-based pipelines. Training a tied model therefore
/// trains two copies; sum their gradients (`lm_head.weightᵀ` + `embed_tokens.weight`) to tie them.
#[derive(Module, Debug)]
pub struct Llama {
    #[module(skip)]
    pub cfg: ModelConfig,
    pub model: Body,
    /// `[d_model, vocab]`.
    pub lm_head: Linear,
    inv_freq: Vec<f64>,
}

impl Llama {
    /// Loads every weight under its Hugging Face name, checking shapes.
    pub fn load(cfg: ModelConfig, src: &WeightSource, dev: &Device) -> Result<Self> {
        let (d, h, kv, dh) = (cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.d_head);
        let embed_h = src.load("model.embed_tokens.weight", &[cfg.vocab_size, d])?;
        let rms = |name: &str| RmsNorm::load(src, name, d, cfg.norm_eps, dev);
        src.refuse_extra_layer(
            &format!("model.layers.{}.input_layernorm.weight", cfg.n_layers),
            cfg.n_layers,
        )?;
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for l in 0..cfg.n_layers {
            let p = format!("model.layers.{l}");
            let lin = |name: &str, i: usize, o: usize, bias: bool| {
                Linear::load_hf(src, &format!("{p}.{name}"), i, o, bias, dev)
            };
            layers.push(Block {
                input_layernorm: rms(&format!("{p}.input_layernorm.weight"))?,
                self_attn: Attention {
                    q_proj: lin("self_attn.q_proj", d, h * dh, cfg.qkv_bias)?,
                    k_proj: lin("self_attn.k_proj", d, kv * dh, cfg.qkv_bias)?,
                    v_proj: lin("self_attn.v_proj", d, kv * dh, cfg.qkv_bias)?,
                    o_proj: lin("self_attn.o_proj", h * dh, d, cfg.o_bias)?,
                },
                post_attention_layernorm: rms(&format!("{p}.post_attention_layernorm.weight"))?,
                mlp: Mlp {
                    gate_proj: lin("mlp.gate_proj", d, cfg.d_mlp, cfg.mlp_bias)?,
                    up_proj: lin("mlp.up_proj", d, cfg.d_mlp, cfg.mlp_bias)?,
                    down_proj: lin("mlp.down_proj", cfg.d_mlp, d, cfg.mlp_bias)?,
                },
            });
        }
        let tied = cfg.tie_word_embeddings || !src.contains("lm_head.weight");
        let lm_head = if tied {
            Linear {
                weight: param2(&embed_h.transposed(), dev),
                bias: None,
            }
        } else {
            Linear::load_hf(src, "lm_head", d, cfg.vocab_size, false, dev)?
        };
        Ok(Self {
            model: Body {
                embed_tokens: Embedding {
                    weight: param2(&embed_h, dev),
                },
                layers,
                norm: rms("model.norm.weight")?,
            },
            lm_head,
            inv_freq: cfg.inv_freq(),
            cfg,
        })
    }

    /// Whether the parameter of this Hugging Face name is stored as the transpose of
    /// Hugging Face's layout (every `nn.Linear` weight, `lm_head` included).
    pub fn stored_transposed(name: &str) -> bool {
        name.ends_with("_proj.weight") || name == "lm_head.weight"
    }

    /// The parameters that write into the residual stream, each with the residual stream as
    /// its last axis: the token embedding, and every block's `o_proj` and `down_proj` (weights
    /// and biases). The unembedding reads the stream and is not among them.
    pub fn residual_writers_mut(&mut self) -> Vec<ResidualWriter<'_>> {
        let mut out = vec![ResidualWriter::matrix(
            "model.embed_tokens.weight",
            &mut self.model.embed_tokens.weight,
        )];
        for (l, blk) in self.model.layers.iter_mut().enumerate() {
            let p = format!("model.layers.{l}");
            out.extend(ResidualWriter::linear(
                &format!("{p}.self_attn.o_proj"),
                &mut blk.self_attn.o_proj,
            ));
            out.extend(ResidualWriter::linear(
                &format!("{p}.mlp.down_proj"),
                &mut blk.mlp.down_proj,
            ));
        }
        out
    }

    /// Runs `new` tokens per row (`ids` is `[batch·new]`, row-major) after what `cache`
    /// holds. `real` marks real tokens among the new ones (left padding is not). Returns
    /// logits `[batch, new or 1, vocab]` (none when `hooks` stopped the pass early) and the
    /// captures.
    pub fn forward(
        &self,
        ids: &[u32],
        batch: usize,
        real: &[Vec<bool>],
        mut cache: Option<&mut KvCache>,
        hooks: &mut Hooks<'_>,
        logits: LogitsAt,
    ) -> Result<Forward> {
        let cfg = &self.cfg;
        let dev = self.lm_head.weight.device();
        let new = ids.len() / batch.max(1);
        let n = cfg.n_layers;
        let mut pass = Pass::begin(
            cache.as_deref_mut(),
            hooks,
            real,
            batch,
            new,
            n,
            cfg.sliding_window,
            None,
            &dev,
        )?;
        pass.ctx = pass.ctx.with_rope(&self.inv_freq, &dev);
        let (cos, sin) = pass.ctx.rope.clone().expect("with_rope sets rope");
        let past = pass.ctx.past;

        let mut x = self.model.embed_tokens.forward(ids, batch, &dev);
        x = hook!(pass, hooks, HookPoint::Embed, x);
        for (l, blk) in self.model.layers.iter().enumerate() {
            x = hook!(pass, hooks, HookPoint::ResidPre(l), x);
            let att = &blk.self_attn;
            let h = blk.input_layernorm.forward(x.clone());
            let q = apply_rope(
                split_heads(att.q_proj.forward(h.clone()), cfg.n_heads),
                &cos,
                &sin,
            );
            let k = apply_rope(
                split_heads(att.k_proj.forward(h.clone()), cfg.n_kv_heads),
                &cos,
                &sin,
            );
            let v = split_heads(att.v_proj.forward(h), cfg.n_kv_heads);
            let (k, v) = match cache.as_deref_mut() {
                Some(c) => extend_cache(&mut c.layers[l], k, v, past, c.capacity),
                None => (k, v),
            };
            let a = att.o_proj.forward(attend(q, k, v, &pass.ctx.bias));
            let a = hook!(pass, hooks, HookPoint::AttnOut(l), a);
            x = hook!(pass, hooks, HookPoint::ResidMid(l), x + a);
            let h = blk.post_attention_layernorm.forward(x.clone());
            let mlp = &blk.mlp;
            let m = mlp
                .down_proj
                .forward(silu(mlp.gate_proj.forward(h.clone())) * mlp.up_proj.forward(h));
            let m = hook!(pass, hooks, HookPoint::MlpOut(l), m);
            x = hook!(pass, hooks, HookPoint::ResidPost(l), x + m);
        }
        x = hook!(pass, hooks, HookPoint::LnFinal, self.model.norm.forward(x));
        Ok(pass.finish(super::unembed(x, &self.lm_head, logits)))
    }
}
