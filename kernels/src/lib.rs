//! GPU kernels (CubeCL) for a TopK SAE training step (the encoder in f32 or from f16
//! operands, and the sparse half: selection, decode, backward, optimiser), each beside its
//! stock-burn-op twin ([`stock`]), so that a cubecl device (wgpu with WGSL, or SPIR-V under
//! burn's `vulkan` feature) need not go through burn's generic scatter and top-k.
//!
//! | function | what it computes | kernel |
//! |---|---|---|
//! | [`top_k_rows`] | the `k` largest of each row of `[B, m]`, values and columns (ties to the lower column) | one cube per row; for `k ≤ 512` one read of the row into a candidate buffer in shared memory, cut back to `k` by a radix select whenever it fills (`cube::top_k_stream_kernel`); above, a radix select over the row (four byte passes of a 256-bin histogram, then an ordered write; [`top_k_rows_radix`] at every `k`) |
//! | [`top_k_rows_masked`] | the same of `max(acts, 0)` with the columns outside a mask set to 0 (AuxK) | the same kernel, masking as it reads |
//! | [`top_k_rows_relu`], [`top_k_rows_masked_relu`] | the same two of `max(x W_enc + b_enc, 0)` from the GEMM's result ([`Preacts`]) | the same kernels, adding the bias and clamping as they read, so that the activations are never written |
//! | [`decode_rows`] | `x̂_b = Σ_t val_bt W_dec[lat_bt]` | gather of `k` decoder rows per batch row |
//! | [`sparse_backward`] | `∂W_dec[j] += Σ_{n: lat_n = j} val_n g_{row_n}`; `∂pre_n = 1[val_n > 0] W_dec[lat_n]·g_{row_n}`; `∂W_encᵀ[j] += Σ_{n: lat_n = j} ∂pre_n xc_{row_n}`; `∂b_enc[j] += Σ_{n: lat_n = j} ∂pre_n` | value gradient at the selected entries only; a counting sort of the entries by latent (histogram, scan, scatter); segment sums by latent, one cube per latent, no float atomics |
//! | [`adam`] | Adam (Kingma & Ba 2015), gradient scaled by a clip factor on the device | one pass over `p, g, m, v` |
//! | [`adam_unit_rows`] | `g_i ← g_i − (g_i·w_i) w_i`, Adam on the decoder rows, then `w_i ← w_i / ‖w_i‖` | one cube per row, dot and norm by trees in shared memory |
//! | [`sq_norm`] | `Σ g²` of a matrix (the clip norm's encoder term) | one cube per row, then a sum over rows |
//! | [`removed_sq_norm`] | `Σ_i ‖g_i − (g_i·w_i) w_i‖²` (the clip norm's decoder term) | one cube per row, then a sum over rows |
//! | [`fire_counts`] | entries with `val > 0` per latent | one unit per entry, `u32` atomics |
//! | [`encode`] | `max(x W_enc + b_enc, 0)`, optionally from f16 operands, always f32 out | cubek's autotuned GEMM (cooperative matrices where the device has them) told to write f32 ([`encode_gemm`]), then bias + ReLU in one elementwise pass ([`Preacts::relu`]) |
//!
//! Adam with bias correction: `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`,
//! `θ ← θ − lr · (m / (1−β₁ᵗ)) / (√(v / (1−β₂ᵗ)) + ε)`, with `g` first multiplied by the clip
//! factor `clip / max(‖g‖, clip)` (a `[1]` tensor, so the GPU never waits for the host).
//!
//! Each public function takes burn tensors on any device: on a cubecl device it launches the
//! kernel, elsewhere (burn's `flex` CPU backend) it runs the twin. The twins are what
//! `lantern-sae` computes with stock ops, and `tests/wgpu.rs` compares every kernel with its
//! twin on wgpu (Mesa's lavapipe in CI, WGSL). Sums over a latent's entries follow the entry
//! order for segments of up to [`cube::SORT_CAP`] entries, so results do not depend on the
//! GPU's scheduling below that size.
//!
//! ```no_run
//! use burn::tensor::{Device, DeviceType, Tensor};
//! let device = Device::enumerate(DeviceType::Wgpu).into_vec().remove(0);
//! let acts = Tensor::<2>::from_floats([[0.1, 0.7, 0.3, 0.9], [0.5, 0.2, 0.8, 0.0]], &device);
//! let (vals, cols) = lantern_kernels::top_k_rows(acts, 2);
//! assert_eq!(vals.dims(), [2, 2]);
//! assert_eq!(cols.dims(), [2, 2]);
//! ```

pub mod cube;
mod ops;

use burn::backend::{Dispatch, DispatchDevice};
use burn::tensor::{Device, IndexingUpdateOp, Int, Tensor};

pub use ops::KernelOps;

/// Whether `device` runs cubecl kernels (wgpu or vulkan), i.e. whether the functions of this
/// crate launch a kernel there rather than run the stock twin.
pub fn on_cube(device: &Device) -> bool {
    matches!(device.as_dispatch(), DispatchDevice::Cube(_))
}

/// The `k` largest values of each row of `acts` `[B, m]` and their columns, `[B, k]`, ties
/// to the lower column. On a cubecl device each row holds the values above the k-th in
/// column order, then those equal to it in column order; the twin's order is its own. Needs
/// `k ≤ m`.
pub fn top_k_rows(acts: Tensor<2>, k: usize) -> (Tensor<2>, Tensor<2, Int>) {
    let [_, m] = acts.dims();
    assert!(k <= m, "top_k_rows: k = {k} exceeds the row length {m}");
    if !on_cube(&acts.device()) {
        return stock::top_k_rows(acts, k);
    }
    launch_top_k(acts, None, None, k, false)
}

/// [`top_k_rows`] by the radix kernel at every `k` (what [`top_k_rows`] runs above
/// [`cube::STREAM_K_MAX`]; below it, the one-pass kernel gives the same result): public so
/// that a bench or a test can set the two side by side. Elsewhere than on a cubecl device,
/// the twin.
pub fn top_k_rows_radix(acts: Tensor<2>, k: usize) -> (Tensor<2>, Tensor<2, Int>) {
    let [_, m] = acts.dims();
    assert!(
        k <= m,
        "top_k_rows_radix: k = {k} exceeds the row length {m}"
    );
    if !on_cube(&acts.device()) {
        return stock::top_k_rows(acts, k);
    }
    launch_top_k(acts, None, None, k, true)
}

/// [`top_k_rows`] of `max(acts, 0)` with the columns where `keep ≤ 0.5` set to 0 (`keep`
/// `[m]`): AuxK's selection among dead latents, without writing the masked `[B, m]` copy
/// (the twin's `mask_fill` and `clamp_min`, two passes over it).
pub fn top_k_rows_masked(
    acts: Tensor<2>,
    keep: Tensor<1>,
    k: usize,
) -> (Tensor<2>, Tensor<2, Int>) {
    let [_, m] = acts.dims();
    assert!(
        k <= m,
        "top_k_rows_masked: k = {k} exceeds the row length {m}"
    );
    assert_eq!(keep.dims(), [m], "top_k_rows_masked: keep length");
    if !on_cube(&acts.device()) {
        return stock::top_k_rows_masked(acts, keep, k);
    }
    launch_top_k(acts, None, Some(keep), k, false)
}

/// The kernel behind the top-k functions: the rows of `acts` as they are, or through the
/// encoder's epilogue by `bias` and AuxK's mask by `keep` as it reads them.
fn launch_top_k(
    acts: Tensor<2>,
    bias: Option<Tensor<1>>,
    keep: Option<Tensor<1>>,
    k: usize,
    radix: bool,
) -> (Tensor<2>, Tensor<2, Int>) {
    let acts = acts.into_dispatch();
    let (biased, masked) = (bias.is_some(), keep.is_some());
    // The kernel does not read what it is not told to: any tensor stands in.
    let bias = bias.map_or_else(|| acts.clone(), Tensor::into_dispatch);
    let keep = keep.map_or_else(|| acts.clone(), Tensor::into_dispatch);
    let (v, i) = <Dispatch as KernelOps>::top_k_rows(acts, bias, biased, keep, masked, k, radix);
    (Tensor::from_dispatch(v), Tensor::from_dispatch(i))
}

/// The encoder's GEMM result before its epilogue: `gemm = x W_enc` `[B, m]` (f32) and the bias
/// `b_enc` `[m]` of `max(gemm + b, 0)`. [`top_k_rows_relu`] and [`top_k_rows_masked_relu`]
/// apply the epilogue as they read each row, so that a sparse TopK step never writes the
/// activations `[B, m]`: one read and one write of them fewer than [`encode`] then
/// [`top_k_rows`] (at d_sae 24 576, batch 4 096: 800 MB of the ≈ 4.5 GB of memory traffic
/// of a step, by our count). [`Preacts::relu`] writes them for the paths that need them (what
/// [`encode`] returns).
#[derive(Clone, Debug)]
pub struct Preacts {
    /// `x W_enc` `[B, m]`.
    pub gemm: Tensor<2>,
    /// `b_enc` `[m]`.
    pub bias: Tensor<1>,
}

impl Preacts {
    /// `max(gemm + b, 0)` `[B, m]`: on a cubecl device one elementwise pass, in place unless
    /// `gemm` is shared; elsewhere the twin.
    pub fn relu(self) -> Tensor<2> {
        if !on_cube(&self.gemm.device()) {
            return stock::bias_relu(self.gemm, self.bias);
        }
        Tensor::from_dispatch(<Dispatch as KernelOps>::bias_relu(
            self.gemm.into_dispatch(),
            self.bias.into_dispatch(),
        ))
    }
}

/// [`top_k_rows`] of `max(pre.gemm + pre.bias, 0)`, the bias and ReLU applied by the kernel
/// as it reads the row (the same values and columns as [`Preacts::relu`] then
/// [`top_k_rows`], positions included). Elsewhere than on a cubecl device, the twin.
pub fn top_k_rows_relu(pre: &Preacts, k: usize) -> (Tensor<2>, Tensor<2, Int>) {
    pre_dims(pre, "top_k_rows_relu", k);
    if !on_cube(&pre.gemm.device()) {
        return stock::top_k_rows(pre.clone().relu(), k);
    }
    launch_top_k(pre.gemm.clone(), Some(pre.bias.clone()), None, k, false)
}

/// [`top_k_rows_masked`] of `max(pre.gemm + pre.bias, 0)`, applied as it reads (AuxK on a
/// sparse step; the same result as [`Preacts::relu`] then [`top_k_rows_masked`]).
pub fn top_k_rows_masked_relu(
    pre: &Preacts,
    keep: Tensor<1>,
    k: usize,
) -> (Tensor<2>, Tensor<2, Int>) {
    let m = pre_dims(pre, "top_k_rows_masked_relu", k);
    assert_eq!(keep.dims(), [m], "top_k_rows_masked_relu: keep length");
    if !on_cube(&pre.gemm.device()) {
        return stock::top_k_rows_masked(pre.clone().relu(), keep, k);
    }
    launch_top_k(
        pre.gemm.clone(),
        Some(pre.bias.clone()),
        Some(keep),
        k,
        false,
    )
}

/// The row length `m` of `pre`, checked against its bias and `k`.
fn pre_dims(pre: &Preacts, what: &str, k: usize) -> usize {
    let [_, m] = pre.gemm.dims();
    assert_eq!(pre.bias.dims(), [m], "{what}: bias length");
    assert!(k <= m, "{what}: k = {k} exceeds the row length {m}");
    m
}

/// Sparse decode of `k` entries per row: `out[b] = Σ_t val[b, t] · w[lat[b, t]]` for
/// `val`, `lat` `[B, k]` and `w` `[m, d]`; `[B, d]`.
pub fn decode_rows(val: Tensor<2>, lat: Tensor<2, Int>, w: Tensor<2>) -> Tensor<2> {
    assert_eq!(val.dims(), lat.dims(), "decode_rows: val and lat shapes");
    if !on_cube(&w.device()) {
        return stock::decode_rows(val, lat, w);
    }
    Tensor::from_dispatch(<Dispatch as KernelOps>::decode_rows(
        val.into_dispatch(),
        lat.into_dispatch(),
        w.into_dispatch(),
    ))
}

/// Gradient accumulators of [`sparse_backward`].
#[derive(Clone, Debug)]
pub struct Grads {
    /// `∂L/∂W_dec`, `[m, d]`.
    pub w_dec: Tensor<2>,
    /// `(∂L/∂W_enc)ᵀ`, `[m, d]`.
    pub w_enc_t: Tensor<2>,
    /// `∂L/∂b_enc`, `[m]`.
    pub b_enc: Tensor<1>,
}

/// Entries of a sparse code (coordinate form): entry `n` says that latent `lat[n]` of batch
/// row `row[n]` took the value `val[n]` (lantern-sae's `Coo`).
#[derive(Clone, Debug)]
pub struct Entries {
    /// Batch row of each entry, `[n]`.
    pub row: Tensor<1, Int>,
    /// Latent of each entry, `[n]`.
    pub lat: Tensor<1, Int>,
    /// Value of each entry (≥ 0 for ReLU-family codes), `[n]`.
    pub val: Tensor<1>,
}

impl Entries {
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.val.dims()[0]
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The gradients of a sparse decode (table in the crate docs), added to `acc` when given (a
/// second decode's, e.g. AuxK's, into the first's), given `g = ∂L/∂x̂` `[B, d]`, the encoder
/// input `xc` `[B, d]` and the decoder `w` `[m, d]`. Without `acc` the kernel writes the sums
/// directly: no zero `[m, d]` accumulators are filled and read.
pub fn sparse_backward(
    e: &Entries,
    g: &Tensor<2>,
    xc: &Tensor<2>,
    w: &Tensor<2>,
    acc: Option<Grads>,
) -> Grads {
    if !on_cube(&w.device()) {
        return stock::sparse_backward(e, g, xc, w, acc);
    }
    let accumulate = acc.is_some();
    // Unread without accumulation: any f32 tensors will do.
    let acc = acc.unwrap_or_else(|| {
        let [m, d] = w.dims();
        Grads {
            w_dec: w.clone(),
            w_enc_t: w.clone(),
            b_enc: w.clone().reshape([m * d]),
        }
    });
    let (w_dec, w_enc_t, b_enc) = <Dispatch as KernelOps>::sparse_backward(
        e.val.clone().into_dispatch(),
        e.row.clone().into_dispatch(),
        e.lat.clone().into_dispatch(),
        g.clone().into_dispatch(),
        xc.clone().into_dispatch(),
        w.clone().into_dispatch(),
        acc.w_dec.into_dispatch(),
        acc.w_enc_t.into_dispatch(),
        acc.b_enc.into_dispatch(),
        accumulate,
    );
    Grads {
        w_dec: Tensor::from_dispatch(w_dec),
        w_enc_t: Tensor::from_dispatch(w_enc_t),
        b_enc: Tensor::from_dispatch(b_enc),
    }
}

/// Adam's state-independent numbers for one step `t` (crate docs).
#[derive(Clone, Copy, Debug)]
pub struct AdamStep {
    /// Learning rate.
    pub lr: f32,
    /// β₁.
    pub beta1: f32,
    /// β₂.
    pub beta2: f32,
    /// ε.
    pub eps: f32,
    /// The step number, from 1.
    pub t: u64,
}

impl AdamStep {
    fn bias(self) -> (f32, f32) {
        let t = self.t.min(i32::MAX as u64) as i32;
        (1.0 - self.beta1.powi(t), 1.0 - self.beta2.powi(t))
    }
}

/// One Adam step of `p` with gradient `g · factor` (`factor` `[1]`, the clip factor);
/// returns `(p, m, v)`.
pub fn adam<const D: usize>(
    p: Tensor<D>,
    g: Tensor<D>,
    m: Tensor<D>,
    v: Tensor<D>,
    factor: Tensor<1>,
    s: AdamStep,
) -> (Tensor<D>, Tensor<D>, Tensor<D>) {
    if !on_cube(&p.device()) {
        return stock::adam(p, g, m, v, factor, s);
    }
    adam_kernel(p, g, m, v, factor, s, false)
}

/// The update of a unit-norm decoder `p` `[m, d]` in one kernel: each row's gradient without
/// its component along the row (`g_i − (g_i·p_i) p_i`, [`stock::remove_parallel`]), [`adam`] on it,
/// then every row rescaled to unit norm.
pub fn adam_unit_rows(
    p: Tensor<2>,
    g: Tensor<2>,
    m: Tensor<2>,
    v: Tensor<2>,
    factor: Tensor<1>,
    s: AdamStep,
) -> (Tensor<2>, Tensor<2>, Tensor<2>) {
    if !on_cube(&p.device()) {
        return stock::adam_unit_rows(p, g, m, v, factor, s);
    }
    adam_kernel(p, g, m, v, factor, s, true)
}

fn adam_kernel<const D: usize>(
    p: Tensor<D>,
    g: Tensor<D>,
    m: Tensor<D>,
    v: Tensor<D>,
    factor: Tensor<1>,
    s: AdamStep,
    unit_rows: bool,
) -> (Tensor<D>, Tensor<D>, Tensor<D>) {
    let (c1, c2) = s.bias();
    let (p, m, v) = <Dispatch as KernelOps>::adam(
        p.into_dispatch(),
        g.into_dispatch(),
        m.into_dispatch(),
        v.into_dispatch(),
        factor.into_dispatch(),
        s.lr / c1,
        c2,
        s.beta1,
        s.beta2,
        s.eps,
        unit_rows,
    );
    (
        Tensor::from_dispatch(p),
        Tensor::from_dispatch(m),
        Tensor::from_dispatch(v),
    )
}

/// Fire counts of a sparse code: for each of the `m` latents, the entries with `val > 0`,
/// `[m]` (as f32). burn's `select_assign` add, the twin, runs as one GPU thread per output
/// column, so on a `[m]` vector one thread walks every entry; the kernel is one unit per
/// entry with integer atomics.
pub fn fire_counts(e: &Entries, m: usize) -> Tensor<1> {
    if !on_cube(&e.val.device()) {
        return stock::fire_counts(e, m);
    }
    Tensor::from_dispatch(<Dispatch as KernelOps>::fire_counts(
        e.val.clone().into_dispatch(),
        e.lat.clone().into_dispatch(),
        m,
    ))
}

/// The encoder of a ReLU-family SAE, `max(x w + b, 0)` `[B, m]` for `x` `[B, d]`, `w`
/// `[d, m]`, `b` `[m]`, in f32. On a cubecl device the GEMM is cubek's autotuned matmul (as
/// burn's own) writing f32, and the bias and ReLU are one pass over its result instead of
/// two; with `half` (and a device with f16) its operands are rounded to f16 first, so it can
/// run on tensor cores while still accumulating and writing f32. Elsewhere `half` is
/// ignored and the stock twin runs.
pub fn encode(x: Tensor<2>, w: Tensor<2>, b: Tensor<1>, half: bool) -> Tensor<2> {
    encode_gemm(x, w, b, half).relu()
}

/// [`encode`] without its epilogue: the GEMM `x W` and the bias, for a selection that applies
/// `max(· + b, 0)` as it reads ([`top_k_rows_relu`]). `half` as in [`encode`].
pub fn encode_gemm(x: Tensor<2>, w: Tensor<2>, b: Tensor<1>, half: bool) -> Preacts {
    let [_, d] = x.dims();
    let [d_w, m] = w.dims();
    assert_eq!(d, d_w, "encode: x is [B, {d}] but w is [{d_w}, {m}]");
    assert_eq!(b.dims(), [m], "encode: bias length");
    let device = w.device();
    if !on_cube(&device) {
        return Preacts {
            gemm: x.matmul(w),
            bias: b,
        };
    }
    let half = half && device.supports_dtype(burn::tensor::FloatDType::F16);
    Preacts {
        gemm: Tensor::from_dispatch(<Dispatch as KernelOps>::encode_gemm(
            x.into_dispatch(),
            w.into_dispatch(),
            half,
        )),
        bias: b,
    }
}

/// `Σ_i ‖g_i − (g_i · w_i) w_i‖²` over the rows of `w`, `g` `[m, d]`, `[1]`: the squared norm
/// of [`stock::remove_parallel`]'s result without writing it (one kernel per row, then a sum of `m`
/// numbers), for the clip factor of [`adam_unit_rows`]' update.
pub fn removed_sq_norm(w: Tensor<2>, g: Tensor<2>) -> Tensor<1> {
    if !on_cube(&w.device()) {
        return stock::removed_sq_norm(w, g);
    }
    Tensor::<1>::from_dispatch(<Dispatch as KernelOps>::row_sq_norms(
        w.into_dispatch(),
        g.into_dispatch(),
        true,
    ))
    .sum()
}

/// `Σ g²` over `g` `[r, c]`, `[1]`, without writing `g²` (the twin's `square` does): one
/// cube per row, then a sum of `r` numbers. For the clip norm of the encoder's gradient.
pub fn sq_norm(g: Tensor<2>) -> Tensor<1> {
    if !on_cube(&g.device()) {
        return stock::sq_norm(g);
    }
    let g = g.into_dispatch();
    Tensor::<1>::from_dispatch(<Dispatch as KernelOps>::row_sq_norms(g.clone(), g, false)).sum()
}

/// The stock-burn-op twins of the kernels: the same results from burn's generic ops, on any
/// device. `lantern-sae` runs these on the CPU; the tests compare each kernel against them.
pub mod stock {
    use super::*;

    /// Twin of [`super::top_k_rows`] (burn's `topk_with_indices`, exact for every `k` on
    /// `flex`; burn's cubecl reduction was wrong above k = 33 on lavapipe, hence the kernel).
    pub fn top_k_rows(acts: Tensor<2>, k: usize) -> (Tensor<2>, Tensor<2, Int>) {
        acts.topk_with_indices(k, 1)
    }

    /// The masked rows of [`super::top_k_rows_masked`]: `max(acts, 0)`, 0 where `keep ≤ 0.5`.
    pub fn mask_rows(acts: Tensor<2>, keep: Tensor<1>) -> Tensor<2> {
        let dims = acts.dims();
        let drop = keep
            .lower_equal_elem(0.5)
            .unsqueeze_dim::<2>(0)
            .expand(dims);
        acts.mask_fill(drop, -1.0).clamp_min(0.0)
    }

    /// Twin of [`super::top_k_rows_masked`].
    pub fn top_k_rows_masked(
        acts: Tensor<2>,
        keep: Tensor<1>,
        k: usize,
    ) -> (Tensor<2>, Tensor<2, Int>) {
        top_k_rows(mask_rows(acts, keep), k)
    }

    /// Twin of [`super::decode_rows`]: a `select` of the decoder rows and a sum over `k`.
    pub fn decode_rows(val: Tensor<2>, lat: Tensor<2, Int>, w: Tensor<2>) -> Tensor<2> {
        let [b, k] = val.dims();
        let [_, d] = w.dims();
        let rows = w.select(0, lat.reshape([b * k])).reshape([b, k, d]);
        (rows * val.reshape([b, k, 1])).sum_dim(1).reshape([b, d])
    }

    /// Twin of [`super::sparse_backward`]: `select`s and `select_assign` adds.
    pub fn sparse_backward(
        e: &Entries,
        g: &Tensor<2>,
        xc: &Tensor<2>,
        w: &Tensor<2>,
        acc: Option<Grads>,
    ) -> Grads {
        let acc = acc.unwrap_or_else(|| {
            let [m, d] = w.dims();
            let device = w.device();
            Grads {
                w_dec: Tensor::zeros([m, d], &device),
                w_enc_t: Tensor::zeros([m, d], &device),
                b_enc: Tensor::zeros([m], &device),
            }
        });
        let n = e.val.dims()[0];
        let g_rows = g.clone().select(0, e.row.clone());
        let dec_rows = w.clone().select(0, e.lat.clone());
        let grad_val = (dec_rows * g_rows.clone()).sum_dim(1).reshape([n]);
        let grad_pre = grad_val * e.val.clone().greater_elem(0.0).float();
        let w_dec = acc.w_dec.select_assign(
            0,
            e.lat.clone(),
            g_rows * e.val.clone().unsqueeze_dim(1),
            IndexingUpdateOp::Add,
        );
        let x_rows = xc.clone().select(0, e.row.clone());
        let w_enc_t = acc.w_enc_t.select_assign(
            0,
            e.lat.clone(),
            x_rows * grad_pre.clone().unsqueeze_dim(1),
            IndexingUpdateOp::Add,
        );
        let b_enc = acc
            .b_enc
            .select_assign(0, e.lat.clone(), grad_pre, IndexingUpdateOp::Add);
        Grads {
            w_dec,
            w_enc_t,
            b_enc,
        }
    }

    /// Twin of [`super::adam`].
    pub fn adam<const D: usize>(
        p: Tensor<D>,
        g: Tensor<D>,
        m: Tensor<D>,
        v: Tensor<D>,
        factor: Tensor<1>,
        s: AdamStep,
    ) -> (Tensor<D>, Tensor<D>, Tensor<D>) {
        let (c1, c2) = s.bias();
        let shape = g.shape();
        let f: Tensor<D> = factor.reshape([1; D]).expand(shape);
        let g = g * f;
        let m = m.mul_scalar(s.beta1) + g.clone().mul_scalar(1.0 - s.beta1);
        let v = v.mul_scalar(s.beta2) + g.square().mul_scalar(1.0 - s.beta2);
        let denom = (v.clone() / c2).sqrt().add_scalar(s.eps);
        let p = p - (m.clone() / denom).mul_scalar(s.lr / c1);
        (p, m, v)
    }

    /// Twin of [`super::adam_unit_rows`].
    pub fn adam_unit_rows(
        p: Tensor<2>,
        g: Tensor<2>,
        m: Tensor<2>,
        v: Tensor<2>,
        factor: Tensor<1>,
        s: AdamStep,
    ) -> (Tensor<2>, Tensor<2>, Tensor<2>) {
        let g = remove_parallel(p.clone(), g);
        let (p, m, v) = adam(p, g, m, v, factor, s);
        (normalize_rows(p), m, v)
    }

    /// Every row rescaled to unit norm: `w_i ← w_i / max(‖w_i‖, 1e-12)`.
    pub fn normalize_rows(w: Tensor<2>) -> Tensor<2> {
        let norms = w.clone().square().sum_dim(1).sqrt().clamp_min(1e-12);
        w / norms
    }

    /// Twin of [`super::fire_counts`].
    pub fn fire_counts(e: &Entries, m: usize) -> Tensor<1> {
        Tensor::zeros([m], &e.val.device()).select_assign(
            0,
            e.lat.clone(),
            e.val.clone().greater_elem(0.0).float(),
            IndexingUpdateOp::Add,
        )
    }

    /// Twin of [`super::Preacts::relu`]: `max(acts + b, 0)`; after `x.matmul(w)` (what
    /// [`super::encode_gemm`] gives elsewhere than on a cubecl device), the twin of
    /// [`super::encode`].
    pub fn bias_relu(acts: Tensor<2>, b: Tensor<1>) -> Tensor<2> {
        (acts + b.unsqueeze_dim(0)).clamp_min(0.0)
    }

    /// Twin of [`super::sq_norm`].
    pub fn sq_norm(g: Tensor<2>) -> Tensor<1> {
        g.square().sum()
    }

    /// Twin of [`super::removed_sq_norm`].
    pub fn removed_sq_norm(w: Tensor<2>, g: Tensor<2>) -> Tensor<1> {
        remove_parallel(w, g).square().sum()
    }

    /// `g_i − (g_i · w_i) w_i` for each row `i` of the (unit-norm) decoder `w` and its
    /// gradient `g`, `[m, d]`: what [`super::adam_unit_rows`] removes before Adam.
    pub fn remove_parallel(w: Tensor<2>, g: Tensor<2>) -> Tensor<2> {
        let dots = (g.clone() * w.clone()).sum_dim(1);
        g - w * dots
    }
}
