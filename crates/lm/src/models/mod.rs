//! One file per model family, plus the blocks they share ([`nn`]).

pub mod gpt2;
pub mod llama;
pub mod nn;

use burn::tensor::{Device, Tensor};

use crate::hooks::{HookPoint, Hooks};
use crate::{LmError, Result};
use nn::{AttnCtx, KvCache};

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

/// `x W_U` at the positions `at` asks for.
pub(crate) fn unembed(x: Tensor<3>, w_u: &Tensor<2>, at: LogitsAt) -> Option<Tensor<3>> {
    let [b, t, d] = x.dims();
    let [_, vocab] = w_u.dims();
    let (x, t) = match at {
        LogitsAt::Skip => return None,
        LogitsAt::All => (x, t),
        LogitsAt::Last => (x.narrow(1, t - 1, 1), 1),
    };
    Some(
        x.reshape([b * t, d])
            .matmul(w_u.clone())
            .reshape([b, t, vocab]),
    )
}

/// What both families hold during one forward pass: the attention inputs, and where the hooks
/// let the pass stop.
pub(crate) struct Pass {
    pub ctx: AttnCtx,
    stop: Option<usize>,
    n_layers: usize,
}

impl Pass {
    /// Everything before the first block: refuses an early stop together with a cache, joins
    /// the cached and new padding masks, builds the attention mask and positions (checked
    /// against `max_position` when the model has learned positions), and records the new
    /// tokens in the cache.
    #[allow(clippy::too_many_arguments)] // one call per family; a struct would only rename them
    pub(crate) fn begin(
        cache: Option<&mut KvCache>,
        hooks: &Hooks,
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
        })
    }

    /// Applies the hooks registered at `p` to `x`; `None` when the pass stops here.
    pub(crate) fn at(&self, hooks: &mut Hooks, p: HookPoint, x: Tensor<3>) -> Option<Tensor<3>> {
        let x = if hooks.wants(p) {
            hooks.apply(p, x, self.ctx.past)
        } else {
            x
        };
        (self.stop != Some(p.order(self.n_layers))).then_some(x)
    }
}

/// `x` after the hooks at a point, or an early `return Ok(None)` from the forward pass.
macro_rules! hook {
    ($pass:expr, $hooks:expr, $p:expr, $x:expr) => {
        match $pass.at($hooks, $p, $x) {
            Some(x) => x,
            None => return Ok(None),
        }
    };
}
pub(crate) use hook;
