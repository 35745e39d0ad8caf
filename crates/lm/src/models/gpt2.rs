//! GPT-2: learned position embeddings, LayerNorm, fused `c_attn`, gelu_new.
//!
//! Block `L`:
//! ```text
//! h = LN₁(x);  [q k v] = h W_attn + b_attn;  x = x + Attn(q, k, v) W_proj + b_proj
//! h = LN₂(x);  x = x + gelu_new(h W_fc + b_fc) W_proj2 + b_proj2
//! gelu_new(u) = ½u(1 + tanh(√(2/π)(u + 0.044715u³)))
//! ```
//! Hugging Face stores GPT-2's projections as `Conv1D`, already `[in, out]`; the
//! unembedding is the token embedding unless `tie_word_embeddings` is false. This file owns
//! GPT-2's `config.json` reading and writing and its weight names.

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use serde_json::{Value, json};

use super::nn::{Embedding, KvCache, LayerNorm, Linear, attend, extend_cache, param2, split_heads};
use super::{Forward, LogitsAt, Pass, ResidualWriter, hook};
use crate::config::{Family, Keys, ModelConfig, RopeScaling, eos_ids};
use crate::hooks::{HookPoint, Hooks};
use crate::weights::WeightSource;
use crate::{LmError, Result};

/// Reads a GPT-2 `config.json`.
pub(crate) fn config_from_hf(c: &Keys) -> Result<ModelConfig> {
    let d_model = c.usize("n_embd")?;
    let n_heads = c.usize("n_head")?;
    let act = c
        .opt_str("activation_function")?
        .unwrap_or_else(|| "gelu_new".into());
    if act != "gelu_new" {
        return Err(LmError::Unsupported {
            path: c.path.to_path_buf(),
            what: format!("activation_function '{act}' (expected gelu_new)"),
        });
    }
    ModelConfig {
        family: Family::Gpt2,
        model_type: "gpt2".into(),
        vocab_size: c.usize("vocab_size")?,
        d_model,
        n_layers: c.usize("n_layer")?,
        n_heads,
        n_kv_heads: n_heads,
        d_head: d_model / n_heads.max(1),
        d_mlp: c.opt_usize("n_inner")?.unwrap_or(4 * d_model),
        norm_eps: c.opt_f64("layer_norm_epsilon")?.unwrap_or(1e-5),
        rope_theta: 0.0,
        rope_scaling: RopeScaling::None,
        max_position: c.opt_usize("n_positions")?.unwrap_or(1024),
        tie_word_embeddings: c.opt_bool("tie_word_embeddings")?.unwrap_or(true),
        qkv_bias: true,
        o_bias: true,
        mlp_bias: true,
        sliding_window: None,
        bos_token_id: c.opt_usize("bos_token_id")?.map(|x| x as u32),
        eos_token_ids: eos_ids(c.v.get("eos_token_id")),
    }
    .validated(c.path)
}

/// `config.json` keys of a GPT-2 model (the shared ones are added by
/// [`ModelConfig::to_hf_json`]).
pub(crate) fn config_to_hf(cfg: &ModelConfig) -> Value {
    json!({
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "vocab_size": cfg.vocab_size,
        "n_embd": cfg.d_model,
        "n_layer": cfg.n_layers,
        "n_head": cfg.n_heads,
        "n_inner": cfg.d_mlp,
        "n_positions": cfg.max_position,
        "layer_norm_epsilon": cfg.norm_eps,
        "activation_function": "gelu_new",
    })
}

/// `attn` of one block: fused `c_attn` (`[d, 3d]`) and `c_proj`.
#[derive(Module, Debug)]
pub struct Attention {
    pub c_attn: Linear,
    pub c_proj: Linear,
}

/// `mlp` of one block: `c_proj(gelu_new(c_fc(h)))`.
#[derive(Module, Debug)]
pub struct Mlp {
    pub c_fc: Linear,
    pub c_proj: Linear,
}

/// `transformer.h.{L}`.
#[derive(Module, Debug)]
pub struct Block {
    pub ln_1: LayerNorm,
    pub attn: Attention,
    pub ln_2: LayerNorm,
    pub mlp: Mlp,
}

/// `transformer`: everything but the unembedding.
#[derive(Module, Debug)]
pub struct Body {
    pub wte: Embedding,
    pub wpe: Embedding,
    pub h: Vec<Block>,
    pub ln_f: LayerNorm,
}

/// A GPT-2 model on a device.
///
/// The fields mirror the Hugging Face module tree (`transformer.h.0.attn.c_attn.weight`);
/// `Conv1D` weights are `[in, out]` in both. `lm_head` (`[d_model, vocab]` = `wteᵀ` when
/// loaded) is a separate copy so that editing `wte` leaves the unembedding as it was (see
/// [`Llama`](super::llama::Llama)).
#[derive(Module, Debug)]
pub struct Gpt2 {
    #[module(skip)]
    pub cfg: ModelConfig,
    pub transformer: Body,
    pub lm_head: Linear,
}

fn gelu_new(u: Tensor<3>) -> Tensor<3> {
    let c = (2.0 / std::f64::consts::PI).sqrt();
    let inner = (u.clone() + u.clone().powf_scalar(3.0) * 0.044715) * c;
    u * (inner.tanh() + 1.0) * 0.5
}

impl Gpt2 {
    /// Loads a Hugging Face GPT-2 (names with or without the `transformer.` prefix).
    pub fn load(cfg: ModelConfig, src: &WeightSource, dev: &Device) -> Result<Self> {
        let d = cfg.d_model;
        let pre = if src.contains("transformer.wte.weight") {
            "transformer."
        } else {
            ""
        };
        let ln = |name: &str| LayerNorm::load(src, &format!("{pre}{name}"), d, cfg.norm_eps, dev);
        let conv = |name: &str, i: usize, o: usize| {
            Linear::load_conv1d(src, &format!("{pre}{name}"), i, o, dev)
        };
        src.refuse_extra_layer(
            &format!("{pre}h.{}.ln_1.weight", cfg.n_layers),
            cfg.n_layers,
        )?;
        let mut h = Vec::with_capacity(cfg.n_layers);
        for l in 0..cfg.n_layers {
            let p = format!("h.{l}");
            h.push(Block {
                ln_1: ln(&format!("{p}.ln_1"))?,
                attn: Attention {
                    c_attn: conv(&format!("{p}.attn.c_attn"), d, 3 * d)?,
                    c_proj: conv(&format!("{p}.attn.c_proj"), d, d)?,
                },
                ln_2: ln(&format!("{p}.ln_2"))?,
                mlp: Mlp {
                    c_fc: conv(&format!("{p}.mlp.c_fc"), d, cfg.d_mlp)?,
                    c_proj: conv(&format!("{p}.mlp.c_proj"), cfg.d_mlp, d)?,
                },
            });
        }
        let wte = src.load(&format!("{pre}wte.weight"), &[cfg.vocab_size, d])?;
        // Hugging Face ties GPT-2's unembedding to `wte` unless the config unties it (as an
        // edited model written by Lantern does).
        let lm_head = if !cfg.tie_word_embeddings && src.contains("lm_head.weight") {
            Linear::load_hf(src, "lm_head", d, cfg.vocab_size, false, dev)?
        } else {
            Linear {
                weight: param2(&wte.transposed(), dev),
                bias: None,
            }
        };
        Ok(Self {
            lm_head,
            transformer: Body {
                wte: Embedding {
                    weight: param2(&wte, dev),
                },
                wpe: Embedding::load(src, &format!("{pre}wpe.weight"), cfg.max_position, d, dev)?,
                h,
                ln_f: ln("ln_f")?,
            },
            cfg,
        })
    }

    /// Whether the parameter of this Hugging Face name is stored as the transpose of
    /// Hugging Face's layout: only `lm_head` (`Conv1D` is `[in, out]` in both).
    pub fn stored_transposed(name: &str) -> bool {
        name == "lm_head.weight"
    }

    /// The parameters that write into the residual stream, each with the residual stream as
    /// its last axis: token and position embeddings, and every block's `attn.c_proj` and
    /// `mlp.c_proj` (weights and biases).
    pub fn residual_writers_mut(&mut self) -> Vec<ResidualWriter<'_>> {
        let t = &mut self.transformer;
        let mut out = vec![
            ResidualWriter::matrix("transformer.wte.weight", &mut t.wte.weight),
            ResidualWriter::matrix("transformer.wpe.weight", &mut t.wpe.weight),
        ];
        for (l, blk) in t.h.iter_mut().enumerate() {
            let p = format!("transformer.h.{l}");
            out.extend(ResidualWriter::linear(
                &format!("{p}.attn.c_proj"),
                &mut blk.attn.c_proj,
            ));
            out.extend(ResidualWriter::linear(
                &format!("{p}.mlp.c_proj"),
                &mut blk.mlp.c_proj,
            ));
        }
        out
    }

    /// As [`Llama::forward`](super::llama::Llama::forward).
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
        let (n, d) = (cfg.n_layers, cfg.d_model);
        let mut pass = Pass::begin(
            cache.as_deref_mut(),
            hooks,
            real,
            batch,
            new,
            n,
            None,
            Some(cfg.max_position),
            &dev,
        )?;
        let past = pass.ctx.past;
        let t = &self.transformer;

        let tok = t.wte.forward(ids, batch, &dev);
        let tok = hook!(pass, hooks, HookPoint::Embed, tok);
        let pos_ids: Vec<u32> = pass
            .ctx
            .positions
            .iter()
            .flatten()
            .map(|&p| p as u32)
            .collect();
        let mut x = tok + t.wpe.forward(&pos_ids, batch, &dev);
        for (l, blk) in t.h.iter().enumerate() {
            x = hook!(pass, hooks, HookPoint::ResidPre(l), x);
            let qkv = blk.attn.c_attn.forward(blk.ln_1.forward(x.clone()));
            let q = split_heads(qkv.clone().narrow(2, 0, d), cfg.n_heads);
            let k = split_heads(qkv.clone().narrow(2, d, d), cfg.n_heads);
            let v = split_heads(qkv.narrow(2, 2 * d, d), cfg.n_heads);
            let (k, v) = match cache.as_deref_mut() {
                Some(c) => extend_cache(&mut c.layers[l], k, v, past, c.capacity),
                None => (k, v),
            };
            let a = blk.attn.c_proj.forward(attend(q, k, v, &pass.ctx.bias));
            let a = hook!(pass, hooks, HookPoint::AttnOut(l), a);
            x = hook!(pass, hooks, HookPoint::ResidMid(l), x + a);
            let m = blk
                .mlp
                .c_proj
                .forward(gelu_new(blk.mlp.c_fc.forward(blk.ln_2.forward(x.clone()))));
            let m = hook!(pass, hooks, HookPoint::MlpOut(l), m);
            x = hook!(pass, hooks, HookPoint::ResidPost(l), x + m);
        }
        x = hook!(pass, hooks, HookPoint::LnFinal, t.ln_f.forward(x));
        Ok(pass.finish(super::unembed(x, &self.lm_head, logits)))
    }
}
