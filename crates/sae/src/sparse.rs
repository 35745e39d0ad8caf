//! The sparse half of a TopK-style SAE step, written by hand instead of differentiated
//! through `topk` + a dense scatter (which costs seconds per step under burn's autodiff).
//!
//! The active latents of a batch are kept in coordinate form ([`Coo`]): entry `n` says that
//! latent `lat[n]` of batch row `row[n]` fired with value `val[n] = relu(pre)[row[n], lat[n]]`.
//! TopK gives `k` entries per row, AuxK the `k_aux` best dead latents per row. (BatchTopK's
//! selection has no fixed count per row; `step` handles it densely.) Decoding gathers only the selected decoder rows, and the
//! gradients touch only the selected latents, as in sparsify. Each piece is a function of
//! `lantern_kernels`: a CubeCL kernel on wgpu/vulkan, tested there against its stock-op twin,
//! which is what runs on the CPU.

use burn::tensor::{Int, Tensor};

use crate::topk::Acts;

/// Active latents in coordinate form (see the module docs): lantern-kernels' [`Entries`],
/// whose kernels take it as it is.
///
/// [`Entries`]: lantern_kernels::Entries
pub type Coo = lantern_kernels::Entries;

/// The `k` largest activations of every row of `acts` `[B, m]` (TopK), `k` entries per row in
/// row order. `acts` may be pending (the encoder's GEMM result and bias, [`Acts::Pending`]):
/// on a GPU the selection then adds the bias and clamps as it reads, and the activations are
/// never written.
pub fn top_k_per_row(acts: impl Into<Acts>, k: usize) -> Coo {
    let (val, lat) = crate::topk::top_k_rows(acts, k);
    coo_per_row(val, lat)
}

/// [`top_k_per_row`] among the latents where `keep` `[m]` is 1, the others counted as 0
/// (AuxK's dead latents; `crate::topk::top_k_rows_masked`).
pub fn top_k_per_row_among(acts: impl Into<Acts>, keep: Tensor<1>, k: usize) -> Coo {
    let (val, lat) = crate::topk::top_k_rows_masked(acts, keep, k);
    coo_per_row(val, lat)
}

/// The entries of `k` values and latents per row, `[B, k]` each, in row order.
fn coo_per_row(val: Tensor<2>, lat: Tensor<2, Int>) -> Coo {
    let [batch, k] = val.dims();
    let row = Tensor::<1, Int>::arange(0..batch as i64, &val.device())
        .unsqueeze_dim::<2>(1)
        .repeat_dim(1, k)
        .reshape([batch * k]);
    Coo {
        row,
        lat: lat.reshape([batch * k]),
        val: val.reshape([batch * k]),
    }
}

/// Sparse decode for exactly `k` entries per row in row order ([`top_k_per_row`]): a
/// gather and a sum over `k`, with no scatter (`lantern_kernels::decode_rows`: a kernel on
/// wgpu/vulkan, `select` + sum on the CPU).
pub fn decode_per_row(coo: &Coo, w_dec: &Tensor<2>, batch: usize, k: usize) -> Tensor<2> {
    lantern_kernels::decode_rows(
        coo.val.clone().reshape([batch, k]),
        coo.lat.clone().reshape([batch, k]),
        w_dec.clone(),
    )
}

/// Gradients of a loss `L` with respect to the encoder and decoder weights that a sparse
/// decode touched, given `g = ∂L/∂x̂` `[B, d]` and the encoder input `xc` `[B, d]`:
///
/// - `∂L/∂W_dec[j] += Σ_{n: lat_n = j} val_n · g_{row_n}`
/// - `∂L/∂val_n = W_dec[lat_n] · g_{row_n}`, `∂L/∂pre_n = ∂L/∂val_n · 1[val_n > 0]` (ReLU)
/// - `∂L/∂W_enc[:, j] += Σ_{n: lat_n = j} ∂L/∂pre_n · xc_{row_n}`
/// - `∂L/∂b_enc[j] += Σ_{n: lat_n = j} ∂L/∂pre_n`
///
/// The results are `grad_w_dec` `[m, d]`, `grad_w_enc_t` `[m, d]` (the encoder gradient
/// transposed, so that both scatters run along rows) and `grad_b_enc` `[m]`, added to
/// `grads` when given (AuxK's into the main decode's). The
/// `b_dec` gradient through the encoder input follows from `grad_b_enc` (see `step`). On
/// wgpu/vulkan this is `lantern_kernels::sparse_backward` (segment sums by latent, no
/// scatter); on the CPU its twin of `select`s and `select_assign` adds.
pub fn backward(
    coo: &Coo,
    g: &Tensor<2>,
    xc: &Tensor<2>,
    w_dec: &Tensor<2>,
    grads: Option<SparseGrads>,
) -> SparseGrads {
    lantern_kernels::sparse_backward(coo, g, xc, w_dec, grads)
}

/// Accumulators for [`backward`]: `∂L/∂W_dec` `[m, d]`, `(∂L/∂W_enc)ᵀ` `[m, d]`, `∂L/∂b_enc`
/// `[m]`.
pub type SparseGrads = lantern_kernels::Grads;

/// Times each latent fired (`val > 0`) among the entries, `[m]` (`lantern_kernels::
/// fire_counts`: integer atomics on wgpu/vulkan, a `select_assign` add on the CPU).
pub fn fire_counts(coo: &Coo, d_sae: usize) -> Tensor<1> {
    lantern_kernels::fire_counts(coo, d_sae)
}
