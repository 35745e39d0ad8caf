//! The sparse half of a TopK-style SAE step, written by hand instead of differentiated
//! through `topk` + a dense scatter (which costs seconds per step under burn's autodiff).
//!
//! The active latents of a batch are kept in coordinate form ([`Coo`]): entry `n` says that
//! latent `lat[n]` of batch row `row[n]` fired with value `val[n] = relu(pre)[row[n], lat[n]]`.
//! TopK gives `k` entries per row, AuxK the `k_aux` best dead latents per row. (BatchTopK's
//! selection has no fixed count per row; `step` handles it densely.) Decoding gathers only the selected decoder rows, and the
//! gradients touch only the selected latents, as in sparsify. Each piece is a separate function
//! so a later CubeCL kernel can replace it and be tested against it.

use burn::tensor::{IndexingUpdateOp, Int, Tensor};

/// Active latents in coordinate form (see the module docs).
#[derive(Clone, Debug)]
pub struct Coo {
    /// Batch row of each entry, `[n]`.
    pub row: Tensor<1, Int>,
    /// Latent of each entry, `[n]`.
    pub lat: Tensor<1, Int>,
    /// Activation of each entry (≥ 0), `[n]`.
    pub val: Tensor<1>,
}

impl Coo {
    /// The `k` largest activations of every row of `acts` `[B, m]` (TopK).
    pub fn top_k_per_row(acts: Tensor<2>, k: usize) -> Self {
        let [batch, _] = acts.dims();
        let (val, lat) = crate::topk::top_k_rows(acts, k);
        let row = Tensor::<1, Int>::arange(0..batch as i64, &val.device())
            .unsqueeze_dim::<2>(1)
            .repeat_dim(1, k)
            .reshape([batch * k]);
        Self {
            row,
            lat: lat.reshape([batch * k]),
            val: val.reshape([batch * k]),
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.val.dims()[0]
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Sparse decode for exactly `k` entries per row in row order ([`Coo::top_k_per_row`]): a
/// gather and a sum over `k`, with no scatter.
pub fn decode_per_row(coo: &Coo, w_dec: &Tensor<2>, batch: usize, k: usize) -> Tensor<2> {
    let [_, d] = w_dec.dims();
    let rows = w_dec
        .clone()
        .select(0, coo.lat.clone())
        .reshape([batch, k, d]);
    (rows * coo.val.clone().reshape([batch, k, 1]))
        .sum_dim(1)
        .reshape([batch, d])
}

/// Gradients of a loss `L` with respect to the encoder and decoder weights that a sparse
/// decode touched, given `g = ∂L/∂x̂` `[B, d]` and the encoder input `xc` `[B, d]`:
///
/// - `∂L/∂W_dec[j] += Σ_{n: lat_n = j} val_n · g_{row_n}`
/// - `∂L/∂val_n = W_dec[lat_n] · g_{row_n}`, `∂L/∂pre_n = ∂L/∂val_n · 1[val_n > 0]` (ReLU)
/// - `∂L/∂W_enc[:, j] += Σ_{n: lat_n = j} ∂L/∂pre_n · xc_{row_n}`
/// - `∂L/∂b_enc[j] += Σ_{n: lat_n = j} ∂L/∂pre_n`
///
/// The results are added into `grad_w_dec` `[m, d]`, `grad_w_enc_t` `[m, d]` (the encoder
/// gradient transposed, so that both scatters run along rows) and `grad_b_enc` `[m]`. The `b_dec` gradient through the encoder input follows from `grad_b_enc` (see
/// `step`).
pub fn backward(
    coo: &Coo,
    g: &Tensor<2>,
    xc: &Tensor<2>,
    w_dec: &Tensor<2>,
    grads: SparseGrads,
) -> SparseGrads {
    let g_rows = g.clone().select(0, coo.row.clone());
    let dec_rows = w_dec.clone().select(0, coo.lat.clone());
    let grad_val = (dec_rows * g_rows.clone()).sum_dim(1).reshape([coo.len()]);
    let grad_pre = grad_val * coo.val.clone().greater_elem(0.0).float();

    let grad_w_dec = grads.w_dec.select_assign(
        0,
        coo.lat.clone(),
        g_rows * coo.val.clone().unsqueeze_dim(1),
        IndexingUpdateOp::Add,
    );
    let x_rows = xc.clone().select(0, coo.row.clone());
    let grad_w_enc_t = grads.w_enc_t.select_assign(
        0,
        coo.lat.clone(),
        x_rows * grad_pre.clone().unsqueeze_dim(1),
        IndexingUpdateOp::Add,
    );
    let grad_b_enc = grads
        .b_enc
        .select_assign(0, coo.lat.clone(), grad_pre, IndexingUpdateOp::Add);
    SparseGrads {
        w_dec: grad_w_dec,
        w_enc_t: grad_w_enc_t,
        b_enc: grad_b_enc,
    }
}

/// Accumulators for [`backward`].
#[derive(Clone, Debug)]
pub struct SparseGrads {
    /// `∂L/∂W_dec`, `[m, d]`.
    pub w_dec: Tensor<2>,
    /// `(∂L/∂W_enc)ᵀ`, `[m, d]`.
    pub w_enc_t: Tensor<2>,
    /// `∂L/∂b_enc`, `[m]`.
    pub b_enc: Tensor<1>,
}

/// Times each latent fired (`val > 0`) among the entries, `[m]`.
pub fn fire_counts(coo: &Coo, d_sae: usize) -> Tensor<1> {
    Tensor::zeros([d_sae], &coo.val.device()).select_assign(
        0,
        coo.lat.clone(),
        coo.val.clone().greater_elem(0.0).float(),
        IndexingUpdateOp::Add,
    )
}
