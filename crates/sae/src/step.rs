//! One SAE training step: forward pass, loss and hand-written gradients, per architecture.
//!
//! Notation: `x [B, d]` the (scaled) input batch, `xc = x − a·b_dec` with `a` =
//! `apply_b_dec_to_input`, `pre = xc W_enc + b_enc`, `f` the latent activations,
//! `x̂ = f W_dec + b_dec`, `e = x̂ − x`, `TV = Σ_b ‖x_b − x̄‖²` the batch's total variance.
//!
//! | arch | `f` | loss |
//! |---|---|---|
//! | ReLU | `relu(pre)` | `Σ‖e‖²/B + λ Σ_b Σ_i f_bi ‖W_dec,i‖ / B` (L1 weighted by decoder norms) |
//! | TopK | `k` largest of `relu(pre)` per row | `Σ‖e‖²/TV + α·AuxK` |
//! | BatchTopK | `k·B` largest of `relu(pre)` in the batch | `Σ‖e‖²/TV + α·AuxK` |
//! | Matryoshka BatchTopK | as BatchTopK | `(1/n) Σ_t Σ‖e_t‖²/TV + α·AuxK` |
//! | JumpReLU | `pre · H(pre − θ)` | `Σ‖e‖²/B + λ Σ_b Σ_i H(pre_bi − θ_i) / B` (L0) |
//! | JumpReLU, target L0 `T` | as JumpReLU | `Σ‖e‖²/B + λ (L0/T − 1)²` (dictionary_learning) |
//!
//! Matryoshka (Bussmann et al. 2025, "Learning multi-level features with Matryoshka sparse
//! autoencoders"; Nabeshima 2024): the latents are cut into `n` nested prefixes of widths
//! `w_1 < … < w_n = m`, and each prefix reconstructs the input on its own:
//! `x̂_t = f[:, :w_t] W_dec[:w_t] + b_dec`, `e_t = x̂_t − x`. The loss is the mean of the `n`
//! prefix errors (dictionary_learning's uniform group weights; SAELens sums them, which is the
//! same up to the factor `n`). The early latents must then explain the input without the
//! later ones, which keeps a general feature (a parent) from being split into its special
//! cases (absorption). With `S_t = Σ_{s ≥ t} 2 e_s / (n·TV)`, a latent of group `t` gets
//! `∂L/∂f = S_t W_decᵀ` and its decoder row `f[:, group t]ᵀ S_t`; `∂L/∂b_dec = Σ_b S_1`.
//!
//! Free decoder norms (BatchTopK and Matryoshka, `rescale_by_decoder_norm`; SAELens's
//! `rescale_acts_by_decoder_norm`): the decoder rows keep whatever norm training gives them,
//! and the batch-wide selection ranks `relu(pre_i)·‖W_dec,i‖` (each latent's contribution to
//! `x̂`) instead of `relu(pre_i)`. SAELens decodes `Σ (z_i/‖W_dec,i‖) W_dec,i` with
//! `z = relu(pre)·‖W_dec‖`, which is `Σ f_i W_dec,i` with the same `f`: the norms cancel, the
//! selection mask is piecewise constant, and the gradients are those above. Exported SAEs fold
//! the norms into the encoder (`W_dec,i/‖W_dec,i‖`, `W_enc[:, i]·‖W_dec,i‖`,
//! `b_enc,i·‖W_dec,i‖`), where the threshold on the ranked values is a JumpReLU threshold.
//!
//! AuxK (Gao et al. 2024, "Scaling and evaluating sparse autoencoders"): the `k_aux`
//! largest activations among dead latents reconstruct the residual `r = x − x̂` (detached):
//! `AuxK = s · Σ‖ê − r‖² / TV`, `ê = Σ f_aux W_dec` (no bias), `s = min(n_dead / k_aux, 1)`,
//! `α = 1/32`, `k_aux = d/2` by default.
//!
//! JumpReLU's threshold gets its gradient from the straight-through estimator of
//! Rajamanoharan et al. 2024 ("Jumping Ahead"): with the rectangle kernel
//! `K(u) = 1[|u| < ½]` and bandwidth `ε`, `∂f/∂θ := −(θ/ε) K((pre − θ)/ε)` and
//! `∂H(pre − θ)/∂θ := −(1/ε) K((pre − θ)/ε)`; `∂f/∂pre = H(pre − θ)`. Gradients are taken
//! with respect to `log θ` (`∂/∂log θ = θ ∂/∂θ`).
//!
//! JumpReLU's pre-activation loss (Anthropic 2025; SAELens `pre_act_loss_coefficient`):
//! `c_p · Σ_b Σ_i dead_i · relu(θ_i − pre_bi) / B` over the dead latents (unit decoder rows),
//! so `∂/∂pre_bi = −c_p dead_i 1[pre_bi < θ_i] / B` and `∂/∂θ_i = c_p dead_i Σ_b 1[pre_bi <
//! θ_i] / B`: a latent that never fires gets no reconstruction gradient, and this lifts its
//! pre-activations (mostly through `b_enc`) and lowers its threshold until it fires.

use burn::tensor::Tensor;

use crate::Arch;
use crate::params::Params;
use crate::sparse::{self, SparseGrads};
use crate::topk::Acts;

/// Settings of one step that are not parameters.
#[derive(Clone, Debug)]
pub struct StepSettings {
    /// The architecture.
    pub arch: Arch,
    /// Subtract `b_dec` from the input before encoding.
    pub apply_b_dec_to_input: bool,
    /// Sparsity coefficient λ for ReLU (L1) and JumpReLU (L0), after warm-up.
    pub sparsity_coeff: f32,
    /// AuxK coefficient α (TopK, BatchTopK).
    pub aux_coeff: f32,
    /// Number of dead latents AuxK may use per row.
    pub k_aux: usize,
    /// JumpReLU bandwidth ε.
    pub bandwidth: f32,
    /// Matryoshka BatchTopK: the widths of the nested prefixes before the whole dictionary,
    /// strictly increasing and below `d_sae` (empty: plain BatchTopK). Only read for
    /// BatchTopK.
    pub matryoshka: Vec<usize>,
    /// JumpReLU with a target L0 `T`: the sparsity term is `λ (L0/T − 1)²` instead of
    /// `λ L0` (module docs).
    pub target_l0: Option<f32>,
    /// BatchTopK: rank activations by `relu(pre_i)·‖W_dec,i‖` (free decoder norms, module
    /// docs).
    pub rescale_by_decoder_norm: bool,
    /// JumpReLU: the pre-activation loss's coefficient `c_p` on dead latents (0 = off;
    /// module docs).
    pub pre_act_coeff: f32,
}

/// Dead latents for AuxK: a `[m]` mask (1 = dead) and how many there are.
#[derive(Clone, Debug)]
pub struct DeadLatents {
    /// 1.0 where the latent is dead, 0.0 elsewhere, `[m]`.
    pub mask: Tensor<1>,
    /// Number of dead latents.
    pub count: usize,
}

/// What a step returns: gradients, and statistics left on the device until asked for.
#[derive(Clone, Debug)]
pub struct StepOutput {
    /// `∂L/∂θ` for each parameter.
    pub grads: Params,
    /// `Σ‖e‖²`, `[1]`.
    pub sse: Tensor<1>,
    /// `TV = Σ‖x − x̄‖²`, `[1]`.
    pub total_variance: Tensor<1>,
    /// Number of non-zero latent activations in the batch, `[1]`.
    pub active: Tensor<1>,
    /// The auxiliary term before its coefficient, `[1]`: AuxK (before α), or JumpReLU's
    /// pre-activation loss (before `c_p`); zero when not used.
    pub aux_loss: Tensor<1>,
    /// The sparsity term (before λ) for ReLU/JumpReLU, `[1]`.
    pub sparsity_loss: Tensor<1>,
    /// Times each latent fired in the batch, `[m]`.
    pub fires: Tensor<1>,
    /// BatchTopK: the smallest selected activation (for the inference threshold), `[1]`.
    pub min_selected: Option<Tensor<1>>,
}

/// Forward and backward of one batch `x` `[B, d]`.
pub fn step(p: &Params, x: Tensor<2>, s: &StepSettings, dead: Option<&DeadLatents>) -> StepOutput {
    match s.arch {
        Arch::TopK { k } => sparse_step(p, x, s, dead, Selection::PerRow(k)),
        Arch::BatchTopK { k } => sparse_step(p, x, s, dead, Selection::PerBatch(k)),
        Arch::Relu => relu_step(p, x, s),
        Arch::JumpRelu => jumprelu_step(p, x, s, dead),
    }
}

/// Whether TopK runs densely on `device`: everywhere but burn's CPU backend, where the sparse
/// gather/scatter path is the faster one. `LANTERN_SPARSE_TOPK=1` forces the sparse path,
/// which on wgpu/vulkan runs on `lantern_kernels` (one-pass top-k, gather decode, segment-sum
/// backward; tested on lavapipe, not yet timed on a GPU, so not the default there).
fn dense_top_k(device: &burn::tensor::Device) -> bool {
    *device != burn::tensor::Device::flex()
        && std::env::var("LANTERN_SPARSE_TOPK").map_or(true, |v| v != "1")
}

enum Selection {
    PerRow(usize),
    PerBatch(usize),
}

/// `xc = x − a·b_dec`.
pub fn encoder_input(p: &Params, x: &Tensor<2>, apply_b_dec: bool) -> Tensor<2> {
    if apply_b_dec {
        x.clone() - p.b_dec.clone().unsqueeze_dim(0)
    } else {
        x.clone()
    }
}

/// `pre = xc W_enc + b_enc`.
pub fn pre_acts(p: &Params, xc: &Tensor<2>) -> Tensor<2> {
    xc.clone().matmul(p.w_enc.clone()) + p.b_enc.clone().unsqueeze_dim(0)
}

/// `max(pre, 0)` of [`pre_acts`] for a TopK/BatchTopK training step, by
/// [`lantern_kernels::encode_gemm`]: the GEMM's result with the bias and ReLU still to apply,
/// which on a cubecl device are one pass over it ([`Preacts::relu`]) or, on the sparse TopK
/// path, done by the selection as it reads. With `LANTERN_ENCODER_F16=1` (on a device with
/// f16) the GEMM takes f16 operands (tensor cores, through SPIR-V's cooperative matrices on
/// vulkan) while still accumulating and writing f32. The f16 operands are off by default: they
/// round `xc` and `W_enc` to 11-bit mantissas, and their speed has not been measured on a GPU
/// yet (`scripts/gpu-bench.sh`). Evaluation and inference always use f32.
///
/// [`Preacts::relu`]: lantern_kernels::Preacts::relu
fn training_acts(p: &Params, xc: &Tensor<2>) -> lantern_kernels::Preacts {
    let half = std::env::var("LANTERN_ENCODER_F16").is_ok_and(|v| v == "1");
    lantern_kernels::encode_gemm(xc.clone(), p.w_enc.clone(), p.b_enc.clone(), half)
}

fn total_variance(x: &Tensor<2>) -> Tensor<1> {
    (x.clone() - x.clone().mean_dim(0)).square().sum()
}

/// `∂L/∂b_dec` through the encoder input: `xc = x − b_dec` gives `−W_enc · Σ_b ∂L/∂pre_b`,
/// and `Σ_b ∂L/∂pre_b` is exactly `∂L/∂b_enc`.
fn b_dec_grad_through_encoder(p: &Params, grad_b_enc: &Tensor<1>) -> Tensor<1> {
    let [d, _] = p.w_enc.dims();
    p.w_enc
        .clone()
        .matmul(grad_b_enc.clone().unsqueeze_dim(1))
        .reshape([d])
        .neg()
}

fn sparse_step(
    p: &Params,
    x: Tensor<2>,
    s: &StepSettings,
    dead: Option<&DeadLatents>,
    sel: Selection,
) -> StepOutput {
    let [batch, _] = x.dims();
    let (_, m) = p.dims();
    let xc = encoder_input(p, &x, s.apply_b_dec_to_input);
    // On a GPU the sparse TopK path's selections (TopK's and AuxK's) add the bias and clamp as
    // they read the GEMM's result, so the activations `[B, m]` are never written; the dense
    // paths, and the CPU (whose selection is on the host), need them written.
    let pre = training_acts(p, &xc);
    let acts = match sel {
        Selection::PerRow(_)
            if !dense_top_k(&x.device()) && lantern_kernels::on_cube(&x.device()) =>
        {
            pre.into()
        }
        _ => Acts::Written(pre.relu()),
    };

    // TopK: k entries per row, decoded sparsely. BatchTopK: every activation at or above the
    // batch threshold τ (the k·B-th largest), decoded densely.
    let (coo, dense_f, recon) = match sel {
        Selection::PerRow(k) if dense_top_k(&x.device()) => {
            let acts = acts.clone().written();
            // On GPUs burn's scatter-add runs one thread per column over every entry, which
            // costs more than three dense matmuls: mask the k largest per row instead and
            // take the dense path (same values and gradients; ties at the k-th value keep
            // every tied latent, which has probability zero for continuous activations).
            // The mask needs only each row's k-th value, found by halving like BatchTopK's
            // threshold. On an H100 that trains 2.9× (d 128, d_sae 2048) and 1.7× (d 768,
            // d_sae 24576) faster than taking it from burn's top-k kernel, although on the
            // random data of `lantern bench sae` the kernel is the faster one (BENCHMARKS.md);
            // `LANTERN_TOPK_KTH=topk` selects the kernel.
            let kth = if std::env::var("LANTERN_TOPK_KTH").is_ok_and(|v| v == "topk") {
                crate::topk::top_k_rows(acts.clone(), k.min(m)).0.min_dim(1)
            } else {
                row_threshold(&acts, k.min(m))
            };
            let f = acts.clone() * acts.clone().greater_equal(kth.expand([batch, m])).float();
            let recon = f.clone().matmul(p.w_dec.clone());
            (None, Some((f, None)), recon)
        }
        Selection::PerRow(k) => {
            let coo = sparse::top_k_per_row(acts.clone(), k.min(m));
            let recon = sparse::decode_per_row(&coo, &p.w_dec, batch, k.min(m));
            (Some(coo), None, recon)
        }
        Selection::PerBatch(k) => {
            let acts = acts.clone().written();
            let ranked = if s.rescale_by_decoder_norm {
                let norms = p.w_dec.clone().square().sum_dim(1).sqrt().reshape([1, m]);
                acts.clone() * norms.expand([batch, m])
            } else {
                acts.clone()
            };
            let tau = batch_threshold(&ranked, k * batch);
            let f = acts.clone()
                * ranked
                    .greater_equal(tau.clone().reshape([1, 1]).expand([batch, m]))
                    .float();
            let recon = f.clone().matmul(p.w_dec.clone());
            (None, Some((f, Some(tau))), recon)
        }
    };
    let x_hat = recon + p.b_dec.clone().unsqueeze_dim(0);
    let e = x_hat - x.clone();
    let tv = total_variance(&x).clamp_min(1e-12);
    let two_over_tv = tv.clone().recip().mul_scalar(2.0).reshape([1, 1]);
    let g = e.clone() * two_over_tv.clone();

    // What ∂L/∂b_dec sums over rows: g, or S_1 for Matryoshka.
    let mut g_b_dec = g.clone();
    let mut grads = match (&coo, &dense_f) {
        (Some(coo), _) => sparse::backward(coo, &g, &xc, &p.w_dec, None),
        (None, Some((f, Some(_)))) if !s.matryoshka.is_empty() => {
            let (grads, s1) = matryoshka_backward(p, f, &x, &xc, &e, &s.matryoshka, &tv);
            g_b_dec = s1;
            grads
        }
        (None, Some((f, _))) => {
            // Dense twin of sparse::backward for the masked activations f.
            let grad_pre =
                g.clone().matmul(p.w_dec.clone().transpose()) * f.clone().greater_elem(0.0).float();
            SparseGrads {
                w_dec: f.clone().transpose().matmul(g.clone()),
                w_enc_t: grad_pre.clone().transpose().matmul(xc.clone()),
                b_enc: grad_pre.sum_dim(0).reshape([m]),
            }
        }
        (None, None) => unreachable!("a selection is always made"),
    };

    // AuxK: dead latents reconstruct the (detached) residual r = x − x̂ = −e.
    let mut aux_loss = Tensor::<1>::zeros([1], &x.device());
    if let Some(dead) = dead.filter(|d| d.count > 0 && s.aux_coeff > 0.0 && s.k_aux > 0) {
        let k_aux = s.k_aux.min(dead.count);
        let scale = (dead.count as f32 / s.k_aux as f32).min(1.0);
        // Live latents count as 0, so that top-k picks dead ones (activations are ≥ 0).
        let aux = sparse::top_k_per_row_among(acts, dead.mask.clone(), k_aux);
        let e_hat = sparse::decode_per_row(&aux, &p.w_dec, batch, k_aux);
        let diff = e_hat + e.clone(); // ê − r with r = −e
        aux_loss = diff.clone().square().sum() / tv.clone() * scale;
        let g_aux = diff * two_over_tv.clone() * (scale * s.aux_coeff);
        grads = sparse::backward(&aux, &g_aux, &xc, &p.w_dec, Some(grads));
    }

    let mut grad_b_dec = g_b_dec.sum_dim(0).reshape([x.dims()[1]]);
    if s.apply_b_dec_to_input {
        grad_b_dec = grad_b_dec + b_dec_grad_through_encoder(p, &grads.b_enc);
    }
    let (fires, active, min_selected) = match (coo, dense_f) {
        (Some(coo), _) => (
            sparse::fire_counts(&coo, m),
            coo.val.greater_elem(0.0).float().sum(),
            None,
        ),
        (None, Some((f, tau))) => {
            let fired = f.greater_elem(0.0).float();
            (fired.clone().sum_dim(0).reshape([m]), fired.sum(), tau)
        }
        (None, None) => unreachable!("a selection is always made"),
    };
    StepOutput {
        grads: Params {
            w_enc: grads.w_enc_t.transpose(),
            b_enc: grads.b_enc,
            w_dec: grads.w_dec,
            b_dec: grad_b_dec,
            log_threshold: None,
        },
        sse: e.square().sum(),
        total_variance: tv,
        active,
        aux_loss,
        sparsity_loss: Tensor::zeros([1], &x.device()),
        fires,
        min_selected,
    }
}

/// The decoder-side gradients of the Matryoshka loss (module docs) for the selected
/// activations `f [B, m]` and the whole dictionary's error `e [B, d]`: the
/// encoder/decoder/`b_enc` parts, and `S_1 [B, d]` (whose row sum is `∂L/∂b_dec` before the
/// encoder-input term). `widths` are the prefixes before `m`.
fn matryoshka_backward(
    p: &Params,
    f: &Tensor<2>,
    x: &Tensor<2>,
    xc: &Tensor<2>,
    e: &Tensor<2>,
    widths: &[usize],
    tv: &Tensor<1>,
) -> (SparseGrads, Tensor<2>) {
    let [batch, d] = x.dims();
    let (_, m) = p.dims();
    let bounds: Vec<(usize, usize)> = std::iter::once(0)
        .chain(widths.iter().copied())
        .zip(widths.iter().copied().chain(std::iter::once(m)))
        .collect();
    let n = bounds.len() as f32;
    // e_t = x̂_t − x of the prefixes, built up group by group; the last is the forward's `e`
    // (the whole dictionary is not decoded twice).
    let mut e_t = p.b_dec.clone().unsqueeze_dim::<2>(0).expand([batch, d]) - x.clone();
    let mut errors = Vec::with_capacity(bounds.len());
    for &(lo, hi) in &bounds[..bounds.len() - 1] {
        let part = f
            .clone()
            .slice([0..batch, lo..hi])
            .matmul(p.w_dec.clone().slice([lo..hi, 0..d]));
        e_t = e_t + part;
        errors.push(e_t.clone());
    }
    errors.push(e.clone());
    let scale = tv.clone().recip().mul_scalar(2.0 / n).reshape([1, 1]);
    // S_t = Σ_{s ≥ t} g_s, from the last group back.
    let mut suffix = Tensor::<2>::zeros([batch, d], &x.device());
    let mut grad_pre = Vec::with_capacity(bounds.len());
    let mut grad_w_dec = Vec::with_capacity(bounds.len());
    for (&(lo, hi), e_t) in bounds.iter().zip(errors).rev() {
        suffix = suffix + e_t * scale.clone();
        let f_t = f.clone().slice([0..batch, lo..hi]);
        let w_t = p.w_dec.clone().slice([lo..hi, 0..d]);
        grad_pre
            .push(suffix.clone().matmul(w_t.transpose()) * f_t.clone().greater_elem(0.0).float());
        grad_w_dec.push(f_t.transpose().matmul(suffix.clone()));
    }
    grad_pre.reverse();
    grad_w_dec.reverse();
    let grad_pre = Tensor::cat(grad_pre, 1);
    let grads = SparseGrads {
        w_dec: Tensor::cat(grad_w_dec, 0),
        w_enc_t: grad_pre.clone().transpose().matmul(xc.clone()),
        b_enc: grad_pre.sum_dim(0).reshape([m]),
    };
    (grads, suffix)
}

/// The BatchTopK threshold `τ` `[1]`: the largest value with at least `n` activations
/// `≥ τ` in the batch, by 40 halvings of `[0, max]` on the device (no read-back; exact up to
/// `max·2⁻⁴⁰`). Ties at `τ` can select a few more than `n`.
pub fn batch_threshold(acts: &Tensor<2>, n: usize) -> Tensor<1> {
    halving_threshold(acts, n, false).reshape([1])
}

/// The TopK threshold of each row `[B, 1]`: for row `b` the largest value `τ_b` with at least
/// `n` activations `≥ τ_b` in that row (the `n`-th largest, up to `max_b·2⁻⁴⁰`), by the same
/// halving as [`batch_threshold`]. `0` when the row has fewer than `n` positive activations,
/// so that the mask `acts ≥ τ_b` keeps them all (activations are `≥ 0`).
pub fn row_threshold(acts: &Tensor<2>, n: usize) -> Tensor<2> {
    halving_threshold(acts, n, true)
}

/// Bisection of `[0, max]` for the largest `τ` with `count(acts ≥ τ) ≥ n`, per row (`[B, 1]`)
/// or over the whole batch (`[1, 1]`). `acts` must be `≥ 0`.
fn halving_threshold(acts: &Tensor<2>, n: usize, per_row: bool) -> Tensor<2> {
    let dims = acts.dims();
    let mut hi = if per_row {
        acts.clone().max_dim(1)
    } else {
        acts.clone().max().reshape([1, 1])
    };
    let mut lo = hi.zeros_like();
    for _ in 0..40 {
        let mid = (lo.clone() + hi.clone()).mul_scalar(0.5);
        let above = acts.clone().greater_equal(mid.clone().expand(dims)).float();
        let count = if per_row {
            above.sum_dim(1)
        } else {
            above.sum().reshape([1, 1])
        };
        let enough = count.greater_equal_elem(n as f32);
        lo = lo.mask_where(enough.clone(), mid.clone());
        hi = mid.mask_where(enough, hi);
    }
    lo
}

/// ReLU SAE with L1 weighted by decoder row norms (Anthropic, "Towards Monosemanticity" and
/// the April 2024 update): `L = Σ‖e‖²/B + λ Σ_b Σ_i f_bi ‖W_dec,i‖ / B`.
fn relu_step(p: &Params, x: Tensor<2>, s: &StepSettings) -> StepOutput {
    let [batch, _] = x.dims();
    let xc = encoder_input(p, &x, s.apply_b_dec_to_input);
    let pre = pre_acts(p, &xc);
    let f = pre.clone().clamp_min(0.0);
    let e = f.clone().matmul(p.w_dec.clone()) + p.b_dec.clone().unsqueeze_dim(0) - x.clone();
    let inv_b = 1.0 / batch as f32;
    let g = e.clone().mul_scalar(2.0 * inv_b);

    let norms = p.w_dec.clone().square().sum_dim(1).sqrt().clamp_min(1e-12); // [m, 1]
    let norms_row = norms.clone().transpose(); // [1, m]
    let lambda = s.sparsity_coeff;
    let sparsity = (f.clone() * norms_row.clone()).sum() * inv_b;

    let grad_f =
        g.clone().matmul(p.w_dec.clone().transpose()) + norms_row.mul_scalar(lambda * inv_b);
    let grad_pre = grad_f * pre.greater_elem(0.0).float();
    let f_col_sum = f.clone().sum_dim(0).transpose(); // [m, 1]
    let grad_w_dec = f.clone().transpose().matmul(g.clone())
        + (p.w_dec.clone() / norms) * f_col_sum.mul_scalar(lambda * inv_b);
    let parts = DenseParts {
        xc,
        e,
        g,
        f,
        grad_pre,
        grad_w_dec,
        grad_log_threshold: None,
        sparsity_loss: sparsity,
    };
    dense_output(p, &x, parts, s.apply_b_dec_to_input)
}

/// JumpReLU SAE with an L0 penalty and straight-through threshold gradients (module docs).
fn jumprelu_step(
    p: &Params,
    x: Tensor<2>,
    s: &StepSettings,
    dead: Option<&DeadLatents>,
) -> StepOutput {
    let [batch, _] = x.dims();
    let xc = encoder_input(p, &x, s.apply_b_dec_to_input);
    let pre = pre_acts(p, &xc);
    let log_t = p
        .log_threshold
        .clone()
        .unwrap_or_else(|| Tensor::zeros([p.dims().1], &x.device()));
    let theta = log_t.exp().unsqueeze_dim::<2>(0); // [1, m]
    let fired = pre.clone().greater(theta.clone()).float();
    let f = pre.clone() * fired.clone();
    let e = f.clone().matmul(p.w_dec.clone()) + p.b_dec.clone().unsqueeze_dim(0) - x.clone();
    let inv_b = 1.0 / batch as f32;
    let g = e.clone().mul_scalar(2.0 * inv_b);
    let grad_f = g.clone().matmul(p.w_dec.clone().transpose());

    let eps = s.bandwidth;
    // The coefficient of ∂L0/∂θ: λ, or with a target T the derivative of λ (L0/T − 1)² at
    // the batch's L0 = Σ H / B, `2λ (L0/T − 1)/T` (negative when too few latents fire).
    let l0 = fired.clone().sum().mul_scalar(inv_b);
    let (coeff, sparsity) = match s.target_l0 {
        Some(t) => {
            let gap = l0.clone().mul_scalar(1.0 / t).sub_scalar(1.0);
            (
                gap.clone().mul_scalar(2.0 * s.sparsity_coeff / t),
                gap.square(),
            )
        }
        None => (l0.ones_like().mul_scalar(s.sparsity_coeff), l0),
    };
    // K((pre − θ)/ε) = 1[|pre − θ| < ε/2]
    let kernel = (pre.clone() - theta.clone())
        .abs()
        .lower_elem(eps * 0.5)
        .float();
    // ∂L/∂θ_i = Σ_b [∂L/∂f_bi · (−θ_i/ε) K_bi − (λ/(ε B)) K_bi]
    let mut grad_theta = ((grad_f.clone() * theta.clone()).mul_scalar(-1.0 / eps)
        + coeff.reshape([1, 1]).mul_scalar(-inv_b / eps))
        * kernel;
    let mut grad_pre = grad_f * fired.clone();
    let mut aux_loss = Tensor::zeros([1], &x.device());
    if let Some(dead) = dead.filter(|_| s.pre_act_coeff > 0.0) {
        // c_p Σ dead_i relu(θ_i − pre_bi) / B
        let mask = dead.mask.clone().unsqueeze_dim::<2>(0); // [1, m]
        let gap = (theta.clone() - pre.clone()).clamp_min(0.0) * mask.clone();
        aux_loss = gap.sum().mul_scalar(inv_b);
        let below = pre.lower(theta.clone()).float() * mask;
        let push = below.mul_scalar(s.pre_act_coeff * inv_b);
        grad_pre = grad_pre - push.clone();
        grad_theta = grad_theta + push;
    }
    let grad_log_t = (grad_theta.sum_dim(0) * theta).reshape([p.dims().1]);

    let grad_w_dec = f.clone().transpose().matmul(g.clone());
    let parts = DenseParts {
        xc,
        e,
        g,
        f,
        grad_pre,
        grad_w_dec,
        grad_log_threshold: Some(grad_log_t),
        sparsity_loss: sparsity,
    };
    let mut out = dense_output(p, &x, parts, s.apply_b_dec_to_input);
    out.aux_loss = aux_loss;
    out
}

/// What the ReLU and JumpReLU forward/backward hand to [`dense_output`].
struct DenseParts {
    xc: Tensor<2>,
    e: Tensor<2>,
    g: Tensor<2>,
    f: Tensor<2>,
    grad_pre: Tensor<2>,
    grad_w_dec: Tensor<2>,
    grad_log_threshold: Option<Tensor<1>>,
    sparsity_loss: Tensor<1>,
}

/// The encoder half of a dense step and the statistics, shared by ReLU and JumpReLU:
/// `∂L/∂W_enc = xcᵀ ∂L/∂pre`, `∂L/∂b_enc = Σ_b ∂L/∂pre_b`, `∂L/∂b_dec = Σ_b g_b` (+ the
/// encoder-input term).
fn dense_output(p: &Params, x: &Tensor<2>, parts: DenseParts, apply_b_dec: bool) -> StepOutput {
    let (d, m) = p.dims();
    let grad_w_enc = parts.xc.transpose().matmul(parts.grad_pre.clone());
    let grad_b_enc = parts.grad_pre.sum_dim(0).reshape([m]);
    let mut grad_b_dec = parts.g.sum_dim(0).reshape([d]);
    if apply_b_dec {
        grad_b_dec = grad_b_dec + b_dec_grad_through_encoder(p, &grad_b_enc);
    }
    let fired = parts.f.greater_elem(0.0).float();
    StepOutput {
        grads: Params {
            w_enc: grad_w_enc,
            b_enc: grad_b_enc,
            w_dec: parts.grad_w_dec,
            b_dec: grad_b_dec,
            log_threshold: parts.grad_log_threshold,
        },
        sse: parts.e.square().sum(),
        total_variance: total_variance(x).clamp_min(1e-12),
        active: fired.clone().sum(),
        aux_loss: Tensor::zeros([1], &x.device()),
        sparsity_loss: parts.sparsity_loss,
        fires: fired.sum_dim(0).reshape([m]),
        min_selected: None,
    }
}

/// A random TopK SAE and batch on `device` for speed measurements: unit-norm Gaussian decoder
/// rows, tied encoder, Gaussian inputs `[batch, d]`, and the step settings (AuxK on,
/// `k_aux = d/2`).
pub fn random_topk_setup(
    device: &burn::tensor::Device,
    d: usize,
    m: usize,
    k: usize,
    batch: usize,
) -> (Params, Tensor<2>, StepSettings) {
    use burn::tensor::Distribution;
    let w_dec = crate::optim::normalize_rows(Tensor::<2>::random(
        [m, d],
        Distribution::Normal(0.0, 1.0),
        device,
    ));
    let params = Params {
        w_enc: w_dec.clone().transpose(),
        b_enc: Tensor::zeros([m], device),
        w_dec,
        b_dec: Tensor::zeros([d], device),
        log_threshold: None,
    };
    let x = Tensor::<2>::random([batch, d], Distribution::Normal(0.0, 1.0), device);
    let settings = StepSettings {
        arch: crate::Arch::TopK { k },
        apply_b_dec_to_input: true,
        sparsity_coeff: 0.0,
        aux_coeff: 1.0 / 32.0,
        k_aux: d / 2,
        bandwidth: 0.001,
        matryoshka: Vec::new(),
        target_l0: None,
        rescale_by_decoder_norm: false,
        pre_act_coeff: 0.0,
    };
    (params, x, settings)
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Distribution, Tensor, TensorData};

    use super::*;

    #[test]
    fn row_threshold_is_each_rows_kth_largest_value() {
        let device = Device::flex();
        let (b, m, k) = (16, 300, 7);
        let mut acts = Tensor::<2>::random([b, m], Distribution::Normal(0.0, 1.0), &device)
            .clamp_min(0.0)
            .try_into_vec_as::<f32>()
            .unwrap();
        // Row 0 has only 3 positive activations: everything is kept.
        for (j, v) in acts[..m].iter_mut().enumerate() {
            *v = if j < 3 { j as f32 + 1.0 } else { 0.0 };
        }
        let t = Tensor::<2>::from_data(TensorData::new(acts.clone(), [b, m]), &device);
        let got = row_threshold(&t, k).try_into_vec_as::<f32>().unwrap();
        assert_eq!(got[0], 0.0);
        for (row, tau) in acts.chunks(m).zip(&got).skip(1) {
            let mut sorted = row.to_vec();
            sorted.sort_by(|a, b| b.total_cmp(a));
            let kth = sorted[k - 1];
            assert!(*tau <= kth && *tau > sorted[k], "τ {tau}, k-th {kth}");
            assert_eq!(row.iter().filter(|v| **v >= *tau).count(), k);
        }
        let batch = batch_threshold(&t, 5 * k).try_into_vec_as::<f32>().unwrap()[0];
        let mut all = acts.clone();
        all.sort_by(|a, b| b.total_cmp(a));
        assert_eq!(all.iter().filter(|v| **v >= batch).count(), 5 * k);
    }
}
