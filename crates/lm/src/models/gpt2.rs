//! GPT-2: learned position embeddings, LayerNorm, fused `c_attn`, gelu_new.
//!
//! Block `L`:
//! ```text
//! h = LN₁(x);  [q k v] = h W_attn + b_attn;  x = x + Attn(q, k, v) W_proj + b_proj
//! h = LN₂(x);  x = x + gelu_new(h W_fc + b_fc) W_proj2 + b_proj2
//! gelu_new(u) = ½u(1 + tanh(√(2/π)(u + 0.044715u³)))
//! ```
//! Hugging Face stores GPT-2's projections as `Conv1D`, already `[in, out]`; the
//! unembedding is the token embedding.

use burn::tensor::{Device, Tensor};

use super::nn::{
    KvCache, LayerNorm, Linear, attend, extend_cache, ids_tensor, split_heads, upload1, upload2,
};
use super::{LogitsAt, Pass, hook};
use crate::Result;
use crate::config::ModelConfig;
use crate::hooks::{HookPoint, Hooks};
use crate::weights::WeightSource;

struct Block {
    ln1: LayerNorm,
    attn: Linear,
    proj: Linear,
    ln2: LayerNorm,
    fc: Linear,
    out: Linear,
}

/// A GPT-2 model on a device.
pub struct Gpt2 {
    pub cfg: ModelConfig,
    wte: Tensor<2>,
    wpe: Tensor<2>,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    /// `[d_model, vocab]` (= `wteᵀ`).
    unembed: Tensor<2>,
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
        let ln = |name: &str| -> Result<LayerNorm> {
            Ok(LayerNorm {
                w: upload1(&src.load(&format!("{pre}{name}.weight"), &[d])?, dev),
                b: upload1(&src.load(&format!("{pre}{name}.bias"), &[d])?, dev),
                eps: cfg.norm_eps,
            })
        };
        let conv = |name: &str, i: usize, o: usize| -> Result<Linear> {
            Ok(Linear {
                w: upload2(&src.load(&format!("{pre}{name}.weight"), &[i, o])?, dev),
                b: Some(upload1(&src.load(&format!("{pre}{name}.bias"), &[o])?, dev)),
            })
        };
        let mut blocks = Vec::with_capacity(cfg.n_layers);
        for l in 0..cfg.n_layers {
            let p = format!("h.{l}");
            blocks.push(Block {
                ln1: ln(&format!("{p}.ln_1"))?,
                attn: conv(&format!("{p}.attn.c_attn"), d, 3 * d)?,
                proj: conv(&format!("{p}.attn.c_proj"), d, d)?,
                ln2: ln(&format!("{p}.ln_2"))?,
                fc: conv(&format!("{p}.mlp.c_fc"), d, cfg.d_mlp)?,
                out: conv(&format!("{p}.mlp.c_proj"), cfg.d_mlp, d)?,
            });
        }
        let wte = src.load(&format!("{pre}wte.weight"), &[cfg.vocab_size, d])?;
        let wpe = src.load(&format!("{pre}wpe.weight"), &[cfg.max_position, d])?;
        Ok(Self {
            unembed: upload2(&wte.transposed(), dev),
            wte: upload2(&wte, dev),
            wpe: upload2(&wpe, dev),
            blocks,
            ln_f: ln("ln_f")?,
            cfg,
        })
    }

    /// As [`Llama::forward`](super::llama::Llama::forward).
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
        let dev = self.wte.device();
        let new = ids.len() / batch.max(1);
        let (n, d) = (cfg.n_layers, cfg.d_model);
        let pass = Pass::begin(
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

        let tok = self
            .wte
            .clone()
            .select(0, ids_tensor(ids, &dev))
            .reshape([batch, new, d]);
        let tok = hook!(pass, hooks, HookPoint::Embed, tok);
        let pos_ids: Vec<u32> = pass
            .ctx
            .positions
            .iter()
            .flatten()
            .map(|&p| p as u32)
            .collect();
        let pos = self
            .wpe
            .clone()
            .select(0, ids_tensor(&pos_ids, &dev))
            .reshape([batch, new, d]);
        let mut x = tok + pos;
        for (l, blk) in self.blocks.iter().enumerate() {
            x = hook!(pass, hooks, HookPoint::ResidPre(l), x);
            let qkv = blk.attn.forward(blk.ln1.forward(x.clone()));
            let q = split_heads(qkv.clone().narrow(2, 0, d), cfg.n_heads);
            let k = split_heads(qkv.clone().narrow(2, d, d), cfg.n_heads);
            let v = split_heads(qkv.narrow(2, 2 * d, d), cfg.n_heads);
            let (k, v) = match cache.as_deref_mut() {
                Some(c) => extend_cache(&mut c.layers[l], k, v, past, c.capacity),
                None => (k, v),
            };
            let a = blk.proj.forward(attend(q, k, v, &pass.ctx.bias));
            let a = hook!(pass, hooks, HookPoint::AttnOut(l), a);
            x = hook!(pass, hooks, HookPoint::ResidMid(l), x + a);
            let m = blk
                .out
                .forward(gelu_new(blk.fc.forward(blk.ln2.forward(x.clone()))));
            let m = hook!(pass, hooks, HookPoint::MlpOut(l), m);
            x = hook!(pass, hooks, HookPoint::ResidPost(l), x + m);
        }
        x = hook!(pass, hooks, HookPoint::LnFinal, self.ln_f.forward(x));
        Ok(super::unembed(x, &self.unembed, logits))
    }
}
