//! The kernels as a burn backend extension: `KernelOps` is implemented for burn's cubecl
//! backend (wgpu with WGSL or SPIR-V), and `#[backend_extension]` routes a dispatch tensor on a
//! cubecl device to it. The launchers make every input contiguous `f32` / `i32` first.

use burn::backend::Cube;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Backend, TensorMetadata, backend_extension};
use burn::tensor::{DType, Shape};
use burn_cubecl::kernel::matmul::{MatmulStrategy, matmul};
use burn_cubecl::kernel::{cast, into_contiguous};
use burn_cubecl::ops::numeric::{empty_device_dtype, zeros_client};
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

use crate::cube::{self, ROW_UNITS, STREAM_K_MAX, VG_ENTRIES, VG_LANES};

/// The sparse half of a TopK SAE step and its optimiser update, as kernels (see the crate
/// docs for each formula; the Tensor-level wrappers in the crate root check shapes).
#[backend_extension(Cube)]
pub trait KernelOps: Backend {
    /// The `k` largest values of each row of `acts` `[B, m]` and their columns, `[B, k]`;
    /// with `biased`, of each row of `max(acts + bias, 0)` (`bias` `[m]`: the encoder's
    /// epilogue, done as the row is read); with `masked`, of each row of `relu(·)` with the
    /// columns where `keep` `[m]` is ≤ 0.5 set to 0 (`bias` and `keep` are unread without
    /// their flags). By the one-pass kernel for `k ≤ STREAM_K_MAX` unless `radix`, else by
    /// the radix kernel (the same result).
    #[allow(clippy::too_many_arguments)] // the row, two optional vectors and their flags
    fn top_k_rows(
        acts: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        biased: bool,
        keep: FloatTensor<Self>,
        masked: bool,
        k: usize,
        radix: bool,
    ) -> (FloatTensor<Self>, IntTensor<Self>);

    /// `out[b] = Σ_t val[b, t] · w[lat[b, t]]` for `val`, `lat` `[B, k]` and `w` `[m, d]`.
    fn decode_rows(
        val: FloatTensor<Self>,
        lat: IntTensor<Self>,
        w: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    /// The weight gradients of a sparse decode (crate docs), added to `acc_dec` `[m, d]`,
    /// `acc_enc_t` `[m, d]` and `acc_b` `[m]` with `accumulate` (without, those are unread).
    #[allow(clippy::too_many_arguments)] // every buffer and hyper-parameter of the kernel
    fn sparse_backward(
        val: FloatTensor<Self>,
        row: IntTensor<Self>,
        lat: IntTensor<Self>,
        g: FloatTensor<Self>,
        xc: FloatTensor<Self>,
        w: FloatTensor<Self>,
        acc_dec: FloatTensor<Self>,
        acc_enc_t: FloatTensor<Self>,
        acc_b: FloatTensor<Self>,
        accumulate: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// One Adam step of every element of `p` (crate docs); with `unit_rows`, the update of a
    /// unit-norm decoder `p` `[m, d]` instead: each row's gradient without its component along
    /// the row, Adam, the row rescaled to unit norm, in one kernel. Returns `(p, m, v)`.
    #[allow(clippy::too_many_arguments)] // every buffer and hyper-parameter of the kernel
    fn adam(
        p: FloatTensor<Self>,
        g: FloatTensor<Self>,
        m: FloatTensor<Self>,
        v: FloatTensor<Self>,
        factor: FloatTensor<Self>,
        lr_c1: f32,
        c2: f32,
        beta1: f32,
        beta2: f32,
        eps: f32,
        unit_rows: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// `‖g_i − (g_i · w_i) w_i‖²` (with `remove`) or `‖g_i‖²` for every row `i` of `g`
    /// `[m, d]` (and `w`, read only with `remove`); `[m]`.
    fn row_sq_norms(w: FloatTensor<Self>, g: FloatTensor<Self>, remove: bool) -> FloatTensor<Self>;

    /// Entries with `val > 0` per latent, `[m]` f32, for `val`, `lat` `[n]`.
    fn fire_counts(val: FloatTensor<Self>, lat: IntTensor<Self>, m: usize) -> FloatTensor<Self>;

    /// `x w` `[B, m]` in f32 for `x` `[B, d]`, `w` `[d, m]`; with `half` the GEMM's operands
    /// are f16 (accumulation and result stay f32).
    fn encode_gemm(x: FloatTensor<Self>, w: FloatTensor<Self>, half: bool) -> FloatTensor<Self>;

    /// `max(acts + b, 0)` for `acts` `[B, m]`, `b` `[m]`: in place when `acts` is not shared.
    fn bias_relu(acts: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// wgpu's limit on cubes along one dimension of a grid.
const MAX_GRID: usize = 65_535;

/// A grid of `n` cubes, folded into y past [`MAX_GRID`] (the kernels read `cube_id`).
fn grid(n: usize) -> CubeCount {
    let x = n.clamp(1, MAX_GRID);
    CubeCount::Static(x as u32, n.div_ceil(x).max(1) as u32, 1)
}

fn as_dtype(t: CubeTensor, dtype: DType) -> CubeTensor {
    let t = if t.dtype == dtype { t } else { cast(t, dtype) };
    into_contiguous(t)
}

fn f32s(t: CubeTensor) -> CubeTensor {
    as_dtype(t, DType::F32)
}

fn i32s(t: CubeTensor) -> CubeTensor {
    as_dtype(t, DType::I32)
}

fn empty(like: &CubeTensor, shape: Shape, dtype: DType) -> CubeTensor {
    empty_device_dtype(like.client.clone(), like.device.clone(), shape, dtype)
}

fn zeros(like: &CubeTensor, shape: Shape, dtype: DType) -> CubeTensor {
    zeros_client(like.client.clone(), like.device.clone(), shape, dtype)
}

fn dims2(t: &CubeTensor) -> (usize, usize) {
    let s = t.shape();
    (s[0], s[1])
}

/// Cubes of `units` units covering `n` elements one unit each.
fn elementwise(n: usize, units: u32) -> CubeCount {
    grid(n.div_ceil(units as usize))
}

impl KernelOps for Cube {
    fn top_k_rows(
        acts: CubeTensor,
        bias: CubeTensor,
        biased: bool,
        keep: CubeTensor,
        masked: bool,
        k: usize,
        radix: bool,
    ) -> (CubeTensor, CubeTensor) {
        let acts = f32s(acts);
        let (rows, m) = dims2(&acts);
        let vals = empty(&acts, Shape::new([rows, k]), DType::F32);
        let idx = empty(&acts, Shape::new([rows, k]), DType::I32);
        // Unread without their flags: any f32 tensor will do.
        let bias = if biased { f32s(bias) } else { acts.clone() };
        let keep = if masked { f32s(keep) } else { acts.clone() };
        if rows > 0 && k > 0 && k <= STREAM_K_MAX && !radix {
            cube::top_k_stream_kernel::launch(
                &acts.client,
                grid(rows),
                CubeDim::new_1d(ROW_UNITS),
                acts.clone().into_tensor_arg(),
                keep.into_tensor_arg(),
                bias.into_tensor_arg(),
                vals.clone().into_tensor_arg(),
                idx.clone().into_tensor_arg(),
                rows,
                m,
                k,
                masked,
                biased,
                cube::stream_reads(k),
            );
        } else if rows > 0 && k > 0 {
            cube::top_k_rows_kernel::launch(
                &acts.client,
                grid(rows),
                CubeDim::new_1d(ROW_UNITS),
                acts.clone().into_tensor_arg(),
                keep.into_tensor_arg(),
                bias.into_tensor_arg(),
                vals.clone().into_tensor_arg(),
                idx.clone().into_tensor_arg(),
                rows,
                m,
                k,
                masked,
                biased,
            );
        }
        (vals, idx)
    }

    fn decode_rows(val: CubeTensor, lat: CubeTensor, w: CubeTensor) -> CubeTensor {
        let (val, lat, w) = (f32s(val), i32s(lat), f32s(w));
        let (rows, k) = dims2(&val);
        let (_, d) = dims2(&w);
        let out = empty(&w, Shape::new([rows, d]), DType::F32);
        let units = 128u32.min(d.next_power_of_two().max(32) as u32);
        let blocks = d.div_ceil(units as usize);
        if rows > 0 && d > 0 {
            cube::decode_kernel::launch(
                &w.client,
                grid(rows * blocks),
                CubeDim::new_1d(units),
                val.into_tensor_arg(),
                lat.into_tensor_arg(),
                w.clone().into_tensor_arg(),
                out.clone().into_tensor_arg(),
                rows,
                k,
                d,
                blocks,
            );
        }
        out
    }

    fn sparse_backward(
        val: CubeTensor,
        row: CubeTensor,
        lat: CubeTensor,
        g: CubeTensor,
        xc: CubeTensor,
        w: CubeTensor,
        acc_dec: CubeTensor,
        acc_enc_t: CubeTensor,
        acc_b: CubeTensor,
        accumulate: bool,
    ) -> (CubeTensor, CubeTensor, CubeTensor) {
        let (val, row, lat) = (f32s(val), i32s(row), i32s(lat));
        let (g, xc, w) = (f32s(g), f32s(xc), f32s(w));
        let (acc_dec, acc_enc_t, acc_b) = (f32s(acc_dec), f32s(acc_enc_t), f32s(acc_b));
        let n = val.shape().num_elements();
        let (m, d) = dims2(&w);
        let client = w.client.clone();
        let dec_out = empty(&w, Shape::new([m, d]), DType::F32);
        let enc_out = empty(&w, Shape::new([m, d]), DType::F32);
        let b_out = empty(&w, Shape::new([m]), DType::F32);
        if m == 0 {
            return (dec_out, enc_out, b_out);
        }
        let gp = empty(&w, Shape::new([n.max(1)]), DType::F32);
        let counts = zeros(&w, Shape::new([m]), DType::U32);
        let cursor = zeros(&w, Shape::new([m]), DType::U32);
        let offsets = empty(&w, Shape::new([m + 1]), DType::U32);
        let perm = empty(&w, Shape::new([n.max(1)]), DType::U32);
        if n > 0 {
            cube::value_grad_kernel::launch(
                &client,
                grid(n.div_ceil(VG_ENTRIES as usize)),
                CubeDim::new_2d(VG_LANES, VG_ENTRIES),
                val.clone().into_tensor_arg(),
                row.clone().into_tensor_arg(),
                lat.clone().into_tensor_arg(),
                g.clone().into_tensor_arg(),
                w.clone().into_tensor_arg(),
                gp.clone().into_tensor_arg(),
                n,
                d,
            );
            cube::count_kernel::launch(
                &client,
                elementwise(n, 256),
                CubeDim::new_1d(256),
                lat.clone().into_tensor_arg(),
                counts.clone().into_tensor_arg(),
                n,
            );
        }
        cube::scan_kernel::launch(
            &client,
            CubeCount::Static(1, 1, 1),
            CubeDim::new_1d(ROW_UNITS),
            counts.into_tensor_arg(),
            offsets.clone().into_tensor_arg(),
            m,
        );
        if n > 0 {
            cube::scatter_kernel::launch(
                &client,
                elementwise(n, 256),
                CubeDim::new_1d(256),
                lat.into_tensor_arg(),
                offsets.clone().into_tensor_arg(),
                cursor.into_tensor_arg(),
                perm.clone().into_tensor_arg(),
                n,
            );
        }
        cube::segment_kernel::launch(
            &client,
            grid(m),
            CubeDim::new_1d(128),
            perm.into_tensor_arg(),
            offsets.into_tensor_arg(),
            val.into_tensor_arg(),
            gp.into_tensor_arg(),
            row.into_tensor_arg(),
            g.into_tensor_arg(),
            xc.into_tensor_arg(),
            acc_dec.into_tensor_arg(),
            acc_enc_t.into_tensor_arg(),
            acc_b.into_tensor_arg(),
            dec_out.clone().into_tensor_arg(),
            enc_out.clone().into_tensor_arg(),
            b_out.clone().into_tensor_arg(),
            m,
            d,
            accumulate,
        );
        (dec_out, enc_out, b_out)
    }

    fn adam(
        p: CubeTensor,
        g: CubeTensor,
        m: CubeTensor,
        v: CubeTensor,
        factor: CubeTensor,
        lr_c1: f32,
        c2: f32,
        beta1: f32,
        beta2: f32,
        eps: f32,
        unit_rows: bool,
    ) -> (CubeTensor, CubeTensor, CubeTensor) {
        let (p, g, m, v, factor) = (f32s(p), f32s(g), f32s(m), f32s(v), f32s(factor));
        let shape = p.shape();
        let n = shape.num_elements();
        let [p_out, m_out, v_out] = [(); 3].map(|_| empty(&p, shape.clone(), DType::F32));
        let args = |t: &CubeTensor| t.clone().into_tensor_arg();
        if n > 0 && unit_rows {
            let (rows, d) = dims2(&p);
            cube::adam_unit_rows_kernel::launch(
                &p.client,
                grid(rows),
                CubeDim::new_1d(ROW_UNITS),
                args(&p),
                args(&g),
                args(&m),
                args(&v),
                args(&factor),
                args(&p_out),
                args(&m_out),
                args(&v_out),
                rows,
                d,
                lr_c1,
                c2,
                beta1,
                beta2,
                eps,
            );
        } else if n > 0 {
            cube::adam_kernel::launch(
                &p.client,
                elementwise(n, 256),
                CubeDim::new_1d(256),
                args(&p),
                args(&g),
                args(&m),
                args(&v),
                args(&factor),
                args(&p_out),
                args(&m_out),
                args(&v_out),
                n,
                lr_c1,
                c2,
                beta1,
                beta2,
                eps,
            );
        }
        (p_out, m_out, v_out)
    }

    fn row_sq_norms(w: CubeTensor, g: CubeTensor, remove: bool) -> CubeTensor {
        let g = f32s(g);
        let w = if remove { f32s(w) } else { g.clone() };
        let (rows, d) = dims2(&g);
        let out = empty(&g, Shape::new([rows]), DType::F32);
        if rows > 0 {
            cube::row_sq_norm_kernel::launch(
                &g.client,
                grid(rows),
                CubeDim::new_1d(ROW_UNITS),
                w.into_tensor_arg(),
                g.clone().into_tensor_arg(),
                out.clone().into_tensor_arg(),
                rows,
                d,
                remove,
            );
        }
        out
    }

    fn fire_counts(val: CubeTensor, lat: CubeTensor, m: usize) -> CubeTensor {
        let (val, lat) = (f32s(val), i32s(lat));
        let n = val.shape().num_elements();
        let counts = zeros(&val, Shape::new([m]), DType::U32);
        if n > 0 && m > 0 {
            cube::fire_count_kernel::launch(
                &val.client,
                elementwise(n, 256),
                CubeDim::new_1d(256),
                val.clone().into_tensor_arg(),
                lat.into_tensor_arg(),
                counts.clone().into_tensor_arg(),
                n,
            );
        }
        f32s(counts)
    }

    fn encode_gemm(x: CubeTensor, w: CubeTensor, half: bool) -> CubeTensor {
        let operands = if half { DType::F16 } else { DType::F32 };
        let (x, w) = (as_dtype(x, operands), as_dtype(w, operands));
        // cubek's matmul (autotuned like burn's own), told to write f32 whatever the
        // operands: with f16 operands it accumulates in f32 (`MatmulElems::from_globals`)
        // and, on devices with cooperative matrices, runs on them.
        let acts = matmul(x, w, None, MatmulStrategy::default(), DType::F32)
            .unwrap_or_else(|e| panic!("encoder GEMM ({operands:?} operands): {e:?}"));
        into_contiguous(acts)
    }

    fn bias_relu(acts: CubeTensor, b: CubeTensor) -> CubeTensor {
        let (acts, b) = (f32s(acts), f32s(b));
        let acts = if acts.can_mut() { acts } else { acts.copy() };
        let (rows, m) = dims2(&acts);
        let n = rows * m;
        if n > 0 {
            cube::bias_relu_kernel::launch(
                &acts.client,
                elementwise(n, 256),
                CubeDim::new_1d(256),
                acts.clone().into_tensor_arg(),
                b.into_tensor_arg(),
                n,
                m,
            );
        }
        acts
    }
}
