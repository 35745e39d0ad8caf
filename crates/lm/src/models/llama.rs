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

use burn::module::Module;
use burn::tensor::Device;
use burn::tensor::activation::silu;

use super::nn::{
    Embedding, KvCache, Linear, RmsNorm, apply_rope, attend, extend_cache, param2, split_heads,
};
use super::{Forward, LogitsAt, Pass, ResidualWriter, hook};
use crate::Result;
use crate::config::ModelConfig;
use crate::hooks::{HookPoint, Hooks};
use crate::weights::WeightSource;

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
