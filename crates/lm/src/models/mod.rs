//! One file per model family, plus the blocks they share ([`nn`]).

pub mod gpt2;
pub mod llama;
pub mod nn;

use burn::module::Param;
use burn::tensor::{Device, Tensor};

use crate::config::Family;
use crate::hooks::{HookCache, HookPoint, Hooks};
use crate::{LmError, Result};
use nn::{AttnCtx, KvCache, Linear};

/// Every `model_type` of `config.json` this crate reads, by family. Adding a family is one
/// file in this directory (config, weight names, forward) plus its line here and in
/// [`family_of`].
pub const MODEL_TYPES: [&str; 4] = ["llama", "mistral", "qwen2", "gpt2"];

/// The family that implements a `config.json` `model_type`.
pub fn family_of(model_type: &str) -> Option<Family> {
    if llama::MODEL_TYPES.contains(&model_type) {
        Some(Family::Llama)
    } else if model_type == "gpt2" {
        Some(Family::Gpt2)
    } else {
        None
    }
}

/// Which positions' logits a forward pass computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogitsAt {
    /// Every position: `[batch, new, vocab]`.
    All,
    /// The last position only: `[batch, 1, vocab]` (generation).
    Last,
    /// None (activations only); the forward returns `None`.
    Skip,
}

/// Joins the cached rows' real-token masks with the new tokens' masks, checking shapes.
/// Returns the number of cached positions and `[batch][past + new]`.
pub(crate) fn merge_real(
    cache: Option<&KvCache>,
    real: &[Vec<bool>],
    batch: usize,
    new: usize,
) -> Result<(usize, Vec<Vec<bool>>)> {
    if real.len() != batch || real.iter().any(|r| r.len() != new) {
        return Err(LmError::Config(format!(
            "the attention mask must be {batch} rows of {new} entries, one per token"
        )));
    }
    if let Some(cap) = cache.and_then(|c| c.capacity)
        && cache.map_or(0, KvCache::len) + new > cap
    {
        return Err(LmError::Config(format!(
            "the KV cache has {cap} slots; {} are used and {new} more were asked for",
            cache.map_or(0, KvCache::len)
        )));
    }
    match cache {
        Some(c) if !c.is_empty() => {
            if c.real.len() != batch {
                return Err(LmError::Config(format!(
                    "the KV cache holds {} rows, this call has {batch}",
                    c.real.len()
                )));
            }
            let past = c.len();
            let rows = c
                .real
                .iter()
                .zip(real)
                .map(|(old, r)| old.iter().chain(r).copied().collect())
                .collect();
            Ok((past, rows))
        }
        _ => Ok((0, real.to_vec())),
    }
}

/// What one forward pass returns: the logits asked for, and what the hooks captured.
#[derive(Debug)]
pub struct Forward {
    /// `[batch, new or 1, vocab]`; `None` with [`LogitsAt::Skip`] or when the hooks stopped
    /// the pass early.
    pub logits: Option<Tensor<3>>,
    /// One tensor per capture registered, at each point.
    pub captures: HookCache,
}

/// `x W_U` at the positions `at` asks for.
pub(crate) fn unembed(x: Tensor<3>, lm_head: &Linear, at: LogitsAt) -> Option<Tensor<3>> {
    let t = x.dims()[1];
    match at {
        LogitsAt::Skip => None,
        LogitsAt::All => Some(lm_head.forward(x)),
        LogitsAt::Last => Some(lm_head.forward(x.narrow(1, t - 1, 1))),
    }
}

/// A parameter that writes into the residual stream, under its Hugging Face name. Its last
/// axis is the residual stream (`[rows, d_model]` for embeddings and output projections stored
/// `[in, out]`, `[d_model]` for their biases), so one rule edits every kind: orthogonalizing
/// against a unit direction `r` is `W ← W − (W r) rᵀ` row by row.
pub struct ResidualWriter<'a> {
    /// Hugging Face name, e.g. `model.layers.3.self_attn.o_proj.weight`.
    pub name: String,
    pub param: WriterParam<'a>,
}

/// The parameter a [`ResidualWriter`] edits.
pub enum WriterParam<'a> {
    Matrix(&'a mut Param<Tensor<2>>),
    Bias(&'a mut Param<Tensor<1>>),
}

impl<'a> ResidualWriter<'a> {
    pub(crate) fn matrix(name: &str, p: &'a mut Param<Tensor<2>>) -> Self {
        Self {
            name: name.to_string(),
            param: WriterParam::Matrix(p),
        }
    }

    /// The weight of an output projection stored `[in, out]`, and its bias when it has one.
    pub(crate) fn linear(prefix: &str, l: &'a mut Linear) -> Vec<Self> {
        let mut out = vec![Self::matrix(&format!("{prefix}.weight"), &mut l.weight)];
        if let Some(b) = l.bias.as_mut() {
            out.push(Self {
                name: format!("{prefix}.bias"),
                param: WriterParam::Bias(b),
            });
        }
        out
    }

    /// The value as `[rows, d_model]` (a bias is one row).
    pub fn rows(&self) -> Tensor<2> {
        match &self.param {
            WriterParam::Matrix(p) => p.val(),
            WriterParam::Bias(p) => p.val().unsqueeze::<2>(),
        }
    }

    /// Replaces the value with `rows`, of the shape [`ResidualWriter::rows`] gave; the
    /// parameter keeps its id. Another shape is refused.
    pub fn set_rows(&mut self, rows: Tensor<2>) -> Result<()> {
        let want = self.rows().dims();
        if rows.dims() != want {
            return Err(LmError::Config(format!(
                "{}: new rows of shape {:?}, the parameter's are {want:?}",
                self.name,
                rows.dims()
            )));
        }
        match &mut self.param {
            WriterParam::Matrix(p) => **p = Param::initialized(p.id, rows),
            WriterParam::Bias(p) => **p = Param::initialized(p.id, rows.reshape([want[1]])),
        }
        Ok(())
    }
}

/// What both families hold during one forward pass: the attention inputs, and where the hooks
/// let the pass stop.
pub(crate) struct Pass {
    pub ctx: AttnCtx,
    stop: Option<usize>,
    n_layers: usize,
    captures: HookCache,
}

impl Pass {
    /// Everything before the first block: refuses an early stop together with a cache, joins
    /// the cached and new padding masks, builds the attention mask and positions (checked
    /// against `max_position` when the model has learned positions), and records the new
    /// tokens in the cache.
    #[allow(clippy::too_many_arguments)] // one call per family; a struct would only rename them
    pub(crate) fn begin(
        cache: Option<&mut KvCache>,
        hooks: &Hooks<'_>,
        real: &[Vec<bool>],
        batch: usize,
        new: usize,
        n_layers: usize,
        window: Option<usize>,
        max_position: Option<usize>,
        dev: &Device,
    ) -> Result<Self> {
        let stop = hooks.stop_order(n_layers);
        if stop.is_some() && cache.is_some() {
            return Err(LmError::Config(
                "stopping the forward pass early cannot be combined with a KV cache".into(),
            ));
        }
        let (past, real_all) = merge_real(cache.as_deref(), real, batch, new)?;
        let keys = cache
            .as_deref()
            .and_then(|c| c.capacity)
            .unwrap_or(past + new);
        let ctx = AttnCtx::new(&real_all, past, new, keys, window, dev);
        if let Some(limit) = max_position
            && let Some(&p) = ctx.positions.iter().flatten().max()
            && p >= limit
        {
            return Err(LmError::Config(format!(
                "position {p} is beyond the model's {limit} learned positions"
            )));
        }
        if let Some(c) = cache {
            c.real = real_all;
            c.layers.resize(n_layers, None);
        }
        Ok(Self {
            ctx,
            stop,
            n_layers,
            captures: HookCache::default(),
        })
    }

    /// Applies the hooks registered at `p` to `x`; `None` when the pass stops here.
    pub(crate) fn at(
        &mut self,
        hooks: &mut Hooks<'_>,
        p: HookPoint,
        x: Tensor<3>,
    ) -> Option<Tensor<3>> {
        let x = if hooks.wants(p) {
            hooks.apply(p, x, self.ctx.past, &mut self.captures)
        } else {
            x
        };
        (self.stop != Some(p.order(self.n_layers))).then_some(x)
    }

    /// The pass's result with these logits.
    pub(crate) fn finish(self, logits: Option<Tensor<3>>) -> Forward {
        Forward {
            logits,
            captures: self.captures,
        }
    }
}

/// `x` after the hooks at a point, or an early return (no logits) from the forward pass.
macro_rules! hook {
    ($pass:expr, $hooks:expr, $p:expr, $x:expr) => {
        match $pass.at($hooks, $p, $x) {
            Some(x) => x,
            None => return Ok($pass.finish(None)),
        }
    };
}
pub(crate) use hook;
