//! Row-wise top-k selection, the slowest stock op of a TopK step on the CPU backend.
//!
//! burn's `topk_with_indices` on `flex` sorts every row (≈ 270 ms for a 4096 × 2048 batch
//! on 2 cores); a partial selection per row with rayon does it in a fraction of that. On cubecl
//! devices (wgpu, vulkan) burn's stock op is a reduction that returned wrong results for k > 33
//! on lavapipe with burn 0.22.1 (k = 64 of 2048: right for 4 rows, wrong from 8; whether a GPU
//! driver does too is checked by an ignored test of `kernels/tests/wgpu.rs` that
//! `scripts/gpu-bench.sh` runs on the device); there
//! `lantern_kernels::top_k_rows` (one cube per row, exact for every k: one read of the row
//! for k ≤ 512, a radix select above) runs instead. The paths are compared in the tests below, in `kernels/tests/wgpu.rs` and in
//! `tests/wgpu.rs`.

use burn::tensor::{Int, Tensor, TensorData};
use lantern_kernels::Preacts;
use rayon::prelude::*;

/// What a selection reads: activations written out `[B, m]`, or the encoder's GEMM result
/// with its bias and ReLU still to apply ([`Preacts`]; the GPU kernels apply them as they
/// read the row, elsewhere they are applied first).
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)] // two tensors against one, held for one step
pub enum Acts {
    Written(Tensor<2>),
    Pending(Preacts),
}

impl From<Tensor<2>> for Acts {
    fn from(acts: Tensor<2>) -> Self {
        Acts::Written(acts)
    }
}

impl From<Preacts> for Acts {
    fn from(pre: Preacts) -> Self {
        Acts::Pending(pre)
    }
}

impl Acts {
    /// The activations written out (the pending epilogue applied).
    pub fn written(self) -> Tensor<2> {
        match self {
            Acts::Written(acts) => acts,
            Acts::Pending(pre) => pre.relu(),
        }
    }
}

/// The `k` largest values of each row of `acts` `[B, m]` and their column indices, both
/// `[B, k]`; the order inside a row is unspecified, ties go to the lower index.
pub fn top_k_rows(acts: impl Into<Acts>, k: usize) -> (Tensor<2>, Tensor<2, Int>) {
    let acts = match acts.into() {
        Acts::Pending(pre) if lantern_kernels::on_cube(&pre.gemm.device()) => {
            return lantern_kernels::top_k_rows_relu(&pre, k);
        }
        acts => acts.written(),
    };
    let device = acts.device();
    if lantern_kernels::on_cube(&device) {
        return lantern_kernels::top_k_rows(acts, k);
    }
    let [batch, m] = acts.dims();
    let Ok(host) = acts.clone().try_into_vec_as::<f32>() else {
        return acts.topk_with_indices(k, 1);
    };
    let (vals, idx) = top_k_rows_host(&host, m, k);
    (
        Tensor::from_data(TensorData::new(vals, [batch, k]), &device),
        Tensor::from_data(TensorData::new(idx, [batch, k]), &device),
    )
}

/// [`top_k_rows`] of `max(acts, 0)` with the columns where `keep` `[m]` is ≤ 0.5 set to 0
/// (AuxK among dead latents): on cubecl devices one kernel that masks as it reads
/// (`lantern_kernels::top_k_rows_masked`, or `top_k_rows_masked_relu` for pending
/// activations), elsewhere the masked copy and the host selection.
pub fn top_k_rows_masked(
    acts: impl Into<Acts>,
    keep: Tensor<1>,
    k: usize,
) -> (Tensor<2>, Tensor<2, Int>) {
    match acts.into() {
        Acts::Pending(pre) if lantern_kernels::on_cube(&pre.gemm.device()) => {
            lantern_kernels::top_k_rows_masked_relu(&pre, keep, k)
        }
        Acts::Written(acts) if lantern_kernels::on_cube(&acts.device()) => {
            lantern_kernels::top_k_rows_masked(acts, keep, k)
        }
        acts => top_k_rows(lantern_kernels::stock::mask_rows(acts.written(), keep), k),
    }
}

/// Host twin of [`top_k_rows`] on a row-major `[B, m]` slice: values and `i64` indices.
pub fn top_k_rows_host(acts: &[f32], m: usize, k: usize) -> (Vec<f32>, Vec<i64>) {
    let batch = acts.len() / m.max(1);
    let mut vals = vec![0f32; batch * k];
    let mut idx = vec![0i64; batch * k];
    vals.par_chunks_mut(k)
        .zip(idx.par_chunks_mut(k))
        .zip(acts.par_chunks(m))
        .for_each_init(
            || Vec::with_capacity(m),
            |order, ((v, i), row)| {
                order.clear();
                order.extend(0..m as u32);
                // Descending by value, ties to the lower index; NaN sorts last.
                let cmp = |a: &u32, b: &u32| {
                    let (x, y) = (row[*a as usize], row[*b as usize]);
                    y.partial_cmp(&x)
                        .unwrap_or_else(|| x.is_nan().cmp(&y.is_nan()))
                        .then(a.cmp(b))
                };
                if k < m {
                    order.select_nth_unstable_by(k, cmp);
                }
                for (j, o) in order[..k].iter().enumerate() {
                    v[j] = row[*o as usize];
                    i[j] = *o as i64;
                }
            },
        );
    (vals, idx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution};

    fn sorted_pairs(vals: Vec<f32>, idx: Vec<i64>, k: usize) -> Vec<Vec<(i64, u32)>> {
        vals.chunks(k)
            .zip(idx.chunks(k))
            .map(|(v, i)| {
                let mut row: Vec<(i64, u32)> = i
                    .iter()
                    .copied()
                    .zip(v.iter().map(|x| x.to_bits()))
                    .collect();
                row.sort();
                row
            })
            .collect()
    }

    #[test]
    fn host_top_k_selects_the_same_entries_as_burns_stock_topk() {
        let device = Device::flex();
        let (b, m, k) = (64, 300, 17);
        let acts = Tensor::<2>::random([b, m], Distribution::Normal(0.0, 1.0), &device);
        let host = acts.clone().try_into_vec_as::<f32>().unwrap();
        let (v, i) = top_k_rows_host(&host, m, k);
        let (sv, si) = acts.topk_with_indices(k, 1);
        let want = sorted_pairs(
            sv.try_into_vec_as::<f32>().unwrap(),
            si.try_into_vec_as::<i64>().unwrap(),
            k,
        );
        assert_eq!(sorted_pairs(v, i, k), want);
    }

    #[test]
    fn ties_go_to_the_lower_index_and_k_equal_to_m_keeps_everything() {
        let row = [1.0, 3.0, 3.0, 0.5, 3.0];
        let (v, i) = top_k_rows_host(&row, 5, 2);
        let mut got: Vec<i64> = i.clone();
        got.sort();
        assert_eq!(got, vec![1, 2]);
        assert_eq!(v, vec![3.0, 3.0]);
        let (_, all) = top_k_rows_host(&row, 5, 5);
        let mut all = all;
        all.sort();
        assert_eq!(all, vec![0, 1, 2, 3, 4]);
    }
}
