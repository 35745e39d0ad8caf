//! One file per model family, plus the blocks they share ([`nn`]).

pub mod gpt2;
pub mod llama;
pub mod nn;

use burn::tensor::Tensor;

use crate::{LmError, Result};
use nn::KvCache;

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
