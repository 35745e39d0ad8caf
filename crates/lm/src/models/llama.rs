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

use burn::tensor::activation::silu;
use burn::tensor::{Device, Tensor};

use super::nn::{
    KvCache, Linear, RmsNorm, apply_rope, attend, extend_cache, ids_tensor, split_heads, upload1,
    upload2,
};
use super::{LogitsAt, Pass, hook};
use crate::Result;
use crate::config::ModelConfig;
use crate::hooks::{HookPoint, Hooks};
use crate::weights::WeightSource;

struct Block {
    ln1: RmsNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    ln2: RmsNorm,
    gate: Linear,
    up: Linear,
    down: Linear,
}

/// A Llama-family model on a device.
pub struct Llama {
    pub cfg: ModelConfig,
    embed: Tensor<2>,
    blocks: Vec<Block>,
    norm: RmsNorm,
    /// `[d_model, vocab]`.
    unembed: Tensor<2>,
    inv_freq: Vec<f64>,
}

impl Llama {
    /// Loads every weight under its Hugging Face name, checking shapes.
    pub fn load(cfg: ModelConfig, src: &WeightSource, dev: &Device) -> Result<Self> {
        let (d, h, kv, dh) = (cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.d_head);
        let embed_h = src.load("model.embed_tokens.weight", &[cfg.vocab_size, d])?;
        let rms = |name: &str| -> Result<RmsNorm> {
            Ok(RmsNorm {
                w: upload1(&src.load(name, &[d])?, dev),
                eps: cfg.norm_eps,
            })
        };
        let mut blocks = Vec::with_capacity(cfg.n_layers);
        for l in 0..cfg.n_layers {
            let p = format!("model.layers.{l}");
            let lin = |name: &str, i: usize, o: usize, bias: bool| {
                Linear::load_hf(src, &format!("{p}.{name}"), i, o, bias, dev)
            };
            blocks.push(Block {
                ln1: rms(&format!("{p}.input_layernorm.weight"))?,
                q: lin("self_attn.q_proj", d, h * dh, cfg.qkv_bias)?,
                k: lin("self_attn.k_proj", d, kv * dh, cfg.qkv_bias)?,
                v: lin("self_attn.v_proj", d, kv * dh, cfg.qkv_bias)?,
                o: lin("self_attn.o_proj", h * dh, d, cfg.o_bias)?,
                ln2: rms(&format!("{p}.post_attention_layernorm.weight"))?,
                gate: lin("mlp.gate_proj", d, cfg.d_mlp, cfg.mlp_bias)?,
                up: lin("mlp.up_proj", d, cfg.d_mlp, cfg.mlp_bias)?,
                down: lin("mlp.down_proj", cfg.d_mlp, d, cfg.mlp_bias)?,
            });
        }
        let tied = cfg.tie_word_embeddings || !src.contains("lm_head.weight");
        let unembed = if tied {
            upload2(&embed_h.transposed(), dev)
        } else {
            upload2(
                &src.load("lm_head.weight", &[cfg.vocab_size, d])?
                    .transposed(),
                dev,
            )
        };
        Ok(Self {
            norm: rms("model.norm.weight")?,
            embed: upload2(&embed_h, dev),
            blocks,
            unembed,
            inv_freq: cfg.inv_freq(),
            cfg,
        })
    }

    /// Runs `new` tokens per row (`ids` is `[batch·new]`, row-major) after what `cache`
    /// holds. `real` marks real tokens among the new ones (left padding is not). Returns
    /// logits `[batch, new or 1, vocab]`, or `None` when `hooks` stopped the pass early.
    pub fn forward(
        &self,
        ids: &[u32],
        batch: usize,
        real: &[Vec<bool>],
        mut cache: Option<&mut KvCache>,
        hooks: &mut Hooks,
        logits: LogitsAt,
    ) -> Result<Option<Tensor<3>>> {
        let cfg = &self.cfg;
        let dev = self.embed.device();
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

        let mut x = self
            .embed
            .clone()
            .select(0, ids_tensor(ids, &dev))
            .reshape([batch, new, cfg.d_model]);
        x = hook!(pass, hooks, HookPoint::Embed, x);
        for (l, blk) in self.blocks.iter().enumerate() {
            x = hook!(pass, hooks, HookPoint::ResidPre(l), x);
            let h = blk.ln1.forward(x.clone());
            let q = apply_rope(
                split_heads(blk.q.forward(h.clone()), cfg.n_heads),
                &cos,
                &sin,
            );
            let k = apply_rope(
                split_heads(blk.k.forward(h.clone()), cfg.n_kv_heads),
                &cos,
                &sin,
            );
            let v = split_heads(blk.v.forward(h), cfg.n_kv_heads);
            let (k, v) = match cache.as_deref_mut() {
                Some(c) => extend_cache(&mut c.layers[l], k, v, past, c.capacity),
                None => (k, v),
            };
            let a = blk.o.forward(attend(q, k, v, &pass.ctx.bias));
            let a = hook!(pass, hooks, HookPoint::AttnOut(l), a);
            x = hook!(pass, hooks, HookPoint::ResidMid(l), x + a);
            let h = blk.ln2.forward(x.clone());
            let m = blk
                .down
                .forward(silu(blk.gate.forward(h.clone())) * blk.up.forward(h));
            let m = hook!(pass, hooks, HookPoint::MlpOut(l), m);
            x = hook!(pass, hooks, HookPoint::ResidPost(l), x + m);
        }
        x = hook!(pass, hooks, HookPoint::LnFinal, self.norm.forward(x));
        Ok(super::unembed(x, &self.unembed, logits))
    }
}
