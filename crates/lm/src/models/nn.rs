//! The building blocks both families share: linear maps, embeddings, RMSNorm and LayerNorm
//! (burn [`Module`]s whose weights are [`Param`]s, so the same layers run inference, train
//! under autodiff and take weight edits), causal attention with grouped-query heads and a KV
//! cache, and the host-built attention mask.

use burn::module::{Module, Param};
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::Result;
use crate::weights::{HostTensor, WeightSource};

/// `y = x W + b` with `W` stored `[in, out]` on the device (burn-nn's layout; Hugging Face's
/// `nn.Linear` stores the transpose, GPT-2's `Conv1D` the same).
#[derive(Module, Debug)]
pub struct Linear {
    /// `[in, out]`.
    pub weight: Param<Tensor<2>>,
    /// `[out]`.
    pub bias: Option<Param<Tensor<1>>>,
}

impl Linear {
    /// Loads a Hugging Face `nn.Linear` (`weight [out, in]`, optional `bias [out]`).
    pub fn load_hf(
        src: &WeightSource,
        prefix: &str,
        d_in: usize,
        d_out: usize,
        bias: bool,
        dev: &Device,
    ) -> Result<Self> {
        let w = src.load(&format!("{prefix}.weight"), &[d_out, d_in])?;
        Ok(Self {
            weight: param2(&w.transposed(), dev),
            bias: if bias {
                Some(param1(&src.load(&format!("{prefix}.bias"), &[d_out])?, dev))
            } else {
                None
            },
        })
    }

    /// Loads a GPT-2 `Conv1D` (`weight [in, out]`, `bias [out]`).
    pub fn load_conv1d(
        src: &WeightSource,
        prefix: &str,
        d_in: usize,
        d_out: usize,
        dev: &Device,
    ) -> Result<Self> {
        Ok(Self {
            weight: param2(&src.load(&format!("{prefix}.weight"), &[d_in, d_out])?, dev),
            bias: Some(param1(&src.load(&format!("{prefix}.bias"), &[d_out])?, dev)),
        })
    }

    /// `[batch, seq, in] → [batch, seq, out]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, t, d] = x.dims();
        let w = self.weight.val();
        let [_, out] = w.dims();
        let mut y = x.reshape([b * t, d]).matmul(w);
        if let Some(bias) = &self.bias {
            y = y + bias.val().unsqueeze::<2>();
        }
        y.reshape([b, t, out])
    }
}

/// A token (or position) embedding table `[n, d_model]`, looked up by id.
#[derive(Module, Debug)]
pub struct Embedding {
    pub weight: Param<Tensor<2>>,
}

impl Embedding {
    /// Loads `{name}` of shape `[n, d]`.
    pub fn load(src: &WeightSource, name: &str, n: usize, d: usize, dev: &Device) -> Result<Self> {
        Ok(Self {
            weight: param2(&src.load(name, &[n, d])?, dev),
        })
    }

    /// Rows `ids` (`[batch·seq]`, row-major) as `[batch, seq, d]`.
    pub fn forward(&self, ids: &[u32], batch: usize, dev: &Device) -> Tensor<3> {
        let w = self.weight.val();
        let d = w.dims()[1];
        w.select(0, ids_tensor(ids, dev))
            .reshape([batch, ids.len() / batch.max(1), d])
    }
}

/// RMSNorm: `y = x / sqrt(mean(x²) + ε) · w`.
#[derive(Module, Debug)]
pub struct RmsNorm {
    pub weight: Param<Tensor<1>>,
    pub eps: f64,
}

impl RmsNorm {
    /// Loads the weight `{name}` of shape `[d]`.
    pub fn load(src: &WeightSource, name: &str, d: usize, eps: f64, dev: &Device) -> Result<Self> {
        Ok(Self {
            weight: param1(&src.load(name, &[d])?, dev),
            eps,
        })
    }

    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let ms = x.clone().powf_scalar(2.0).mean_dim(2);
        x * (ms + self.eps).sqrt().recip() * self.weight.val().unsqueeze::<3>()
    }
}

/// LayerNorm: `y = (x − mean(x)) / sqrt(var(x) + ε) · w + b` (biased variance).
#[derive(Module, Debug)]
pub struct LayerNorm {
    pub weight: Param<Tensor<1>>,
    pub bias: Param<Tensor<1>>,
    pub eps: f64,
}

impl LayerNorm {
    /// Loads `{prefix}.weight` and `{prefix}.bias`, each `[d]`.
    pub fn load(
        src: &WeightSource,
        prefix: &str,
        d: usize,
        eps: f64,
        dev: &Device,
    ) -> Result<Self> {
        Ok(Self {
            weight: param1(&src.load(&format!("{prefix}.weight"), &[d])?, dev),
            bias: param1(&src.load(&format!("{prefix}.bias"), &[d])?, dev),
            eps,
        })
    }

    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let centered = x.clone() - x.mean_dim(2);
        let var = centered.clone().powf_scalar(2.0).mean_dim(2);
        centered * (var + self.eps).sqrt().recip() * self.weight.val().unsqueeze::<3>()
            + self.bias.val().unsqueeze::<3>()
    }
}

/// Keys and values of earlier positions, one pair per block, and which of those positions are
/// real tokens (left padding is not).
///
/// A cache without capacity grows by concatenation. With a capacity it holds that many key
/// slots from the start and writes new keys in place, so every generation step after the first
/// runs on tensors of the same shapes (GPU backends compile kernels per shape); the unused
/// slots are masked.
#[derive(Clone, Debug, Default)]
pub struct KvCache {
    /// `(k, v)` per block, each `[batch, kv_heads, seq or capacity, d_head]`.
    pub layers: Vec<Option<(Tensor<4>, Tensor<4>)>>,
    /// `[batch][seq]`: whether each cached position holds a real token.
    pub real: Vec<Vec<bool>>,
    /// Fixed number of key slots, or `None` to grow.
    pub capacity: Option<usize>,
}

impl KvCache {
    /// An empty cache of `slots` fixed key slots.
    pub fn with_capacity(slots: usize) -> Self {
        Self {
            capacity: Some(slots),
            ..Self::default()
        }
    }

    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.real.first().map_or(0, Vec::len)
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Per-call attention inputs built once and shared by every block.
pub struct AttnCtx {
    /// Additive mask `[batch, 1, new, past + new]`: 0 where attention is allowed, −1e30 where
    /// not (causality, padding, sliding window).
    pub bias: Tensor<4>,
    /// RoPE `cos`, `sin` as `[batch, 1, new, d_head]` (Llama family only).
    pub rope: Option<(Tensor<4>, Tensor<4>)>,
    /// Position index of each new token (count of real tokens before it), `[batch][new]`.
    pub positions: Vec<Vec<usize>>,
    /// Cached positions before this call.
    pub past: usize,
}

impl AttnCtx {
    /// Builds the mask and positions for `new` tokens per row after `past` cached ones.
    /// `real` (`[batch][past + new]`) marks real tokens; `window` limits how far back a
    /// query may look (Mistral).
    ///
    /// The mask spans `keys ≥ past + new` columns; columns past the real ones (unused slots of a
    /// fixed-capacity cache) are masked.
    pub fn new(
        real: &[Vec<bool>],
        past: usize,
        new: usize,
        keys: usize,
        window: Option<usize>,
        dev: &Device,
    ) -> Self {
        let batch = real.len();
        let total = keys.max(past + new);
        let mut bias = vec![0.0f32; batch * new * total];
        let mut positions = vec![vec![0usize; new]; batch];
        for (b, row) in real.iter().enumerate() {
            let mut count = row[..past].iter().filter(|&&r| r).count();
            for i in 0..new {
                let q = past + i;
                // Padding gets position 0; real tokens count from 0 after the padding.
                if row[q] {
                    positions[b][i] = count;
                    count += 1;
                }
                for j in 0..total {
                    let real_j = row.get(j).copied().unwrap_or(false);
                    let allowed = j <= q && real_j && window.is_none_or(|w| q - j < w);
                    if !allowed {
                        bias[(b * new + i) * total + j] = -1e30;
                    }
                }
            }
        }
        let bias = Tensor::<1>::from_data(TensorData::new(bias, [batch * new * total]), dev)
            .reshape([batch, 1, new, total]);
        Self {
            bias,
            rope: None,
            positions,
            past,
        }
    }

    /// Adds rotate-half RoPE tables for these positions: `cos(p·f_i)`, `sin(p·f_i)` with each
    /// frequency repeated for both halves of the head.
    pub fn with_rope(mut self, inv_freq: &[f64], dev: &Device) -> Self {
        let batch = self.positions.len();
        let new = self.positions.first().map_or(0, Vec::len);
        let half = inv_freq.len();
        let d_head = 2 * half;
        let mut cos = vec![0.0f32; batch * new * d_head];
        let mut sin = vec![0.0f32; batch * new * d_head];
        for (b, row) in self.positions.iter().enumerate() {
            for (i, &p) in row.iter().enumerate() {
                let base = (b * new + i) * d_head;
                for (k, f) in inv_freq.iter().enumerate() {
                    // Hugging Face computes the angle in f32.
                    let angle = (p as f32) * (*f as f32);
                    let (s, c) = angle.sin_cos();
                    cos[base + k] = c;
                    cos[base + half + k] = c;
                    sin[base + k] = s;
                    sin[base + half + k] = s;
                }
            }
        }
        let shape = [batch, 1, new, d_head];
        let up = |v: Vec<f32>| {
            Tensor::<1>::from_data(TensorData::new(v, [batch * new * d_head]), dev).reshape(shape)
        };
        self.rope = Some((up(cos), up(sin)));
        self
    }
}

/// Applies rotate-half RoPE to `x [batch, heads, new, d_head]`:
/// `x·cos + rotate_half(x)·sin`, `rotate_half([x₁, x₂]) = [−x₂, x₁]`.
pub fn apply_rope(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Tensor<4> {
    let d = x.dims()[3];
    let half = d / 2;
    let x1 = x.clone().narrow(3, 0, half);
    let x2 = x.clone().narrow(3, half, half);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
    x * cos.clone() + rotated * sin.clone()
}

/// Splits `[batch, seq, heads·d_head]` into `[batch, heads, seq, d_head]`.
pub fn split_heads(x: Tensor<3>, heads: usize) -> Tensor<4> {
    let [b, t, hd] = x.dims();
    x.reshape([b, t, heads, hd / heads]).swap_dims(1, 2)
}

/// Scaled dot-product attention of `q [b, h, new, d]` over `k, v [b, h_kv, total, d]`,
/// each key/value head serving `h / h_kv` query heads; returns `[b, new, h·d]`.
pub fn attend(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, bias: &Tensor<4>) -> Tensor<3> {
    let [b, h, t, d] = q.dims();
    let [_, h_kv, s, _] = k.dims();
    let (k, v) = if h_kv == h {
        (k, v)
    } else {
        let rep = h / h_kv;
        let grow = |x: Tensor<4>| {
            x.unsqueeze_dim::<5>(2)
                .expand([b, h_kv, rep, s, d])
                .reshape([b, h, s, d])
        };
        (grow(k), grow(v))
    };
    let scores = q.matmul(k.swap_dims(2, 3)) * (1.0 / (d as f64).sqrt()) + bias.clone();
    let probs = softmax(scores, 3);
    probs.matmul(v).swap_dims(1, 2).reshape([b, t, h * d])
}

/// Adds the new keys/values (positions `past..past + new`) to the cache of one block and
/// returns the full ones: concatenated, or written into the fixed `capacity` slots.
pub fn extend_cache(
    slot: &mut Option<(Tensor<4>, Tensor<4>)>,
    k: Tensor<4>,
    v: Tensor<4>,
    past: usize,
    capacity: Option<usize>,
) -> (Tensor<4>, Tensor<4>) {
    let (k, v) = match (slot.take(), capacity) {
        (Some((pk, pv)), None) => (Tensor::cat(vec![pk, k], 2), Tensor::cat(vec![pv, v], 2)),
        (None, None) => (k, v),
        (old, Some(cap)) => {
            let [b, h, new, d] = k.dims();
            let dev = k.device();
            let (ck, cv) = old.unwrap_or_else(|| {
                (
                    Tensor::zeros([b, h, cap, d], &dev),
                    Tensor::zeros([b, h, cap, d], &dev),
                )
            });
            let at = [0..b, 0..h, past..past + new, 0..d];
            (ck.slice_assign(at.clone(), k), cv.slice_assign(at, v))
        }
    };
    *slot = Some((k.clone(), v.clone()));
    (k, v)
}

/// Token ids `[batch·seq]` to an int tensor.
pub fn ids_tensor(ids: &[u32], dev: &Device) -> Tensor<1, Int> {
    let v: Vec<i32> = ids.iter().map(|&i| i as i32).collect();
    Tensor::from_data(TensorData::new(v, [ids.len()]), dev)
}

/// Host vector to a `[n]` parameter (trainable when `dev` has autodiff).
pub fn param1(t: &HostTensor, dev: &Device) -> Param<Tensor<1>> {
    Param::from_tensor(Tensor::from_data(
        TensorData::new(t.data.clone(), [t.data.len()]),
        dev,
    ))
}

/// Host matrix to a `[r, c]` parameter (trainable when `dev` has autodiff).
pub fn param2(t: &HostTensor, dev: &Device) -> Param<Tensor<2>> {
    Param::from_tensor(Tensor::from_data(
        TensorData::new(t.data.clone(), [t.shape[0], t.shape[1]]),
        dev,
    ))
}
