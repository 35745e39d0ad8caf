//! Adam, gradient clipping and the unit-norm decoder constraint, on [`Params`].

use burn::tensor::Tensor;
use lantern_kernels::{self as kernels, AdamStep};

use crate::params::{ParamTensor, Params};

/// Adam (Kingma & Ba 2015) with bias correction:
/// `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`,
/// `θ ← θ − lr · (m / (1−β₁ᵗ)) / (√(v / (1−β₂ᵗ)) + ε)`.
#[derive(Clone, Debug)]
pub struct Adam {
    /// First moments.
    pub m: Params,
    /// Second moments.
    pub v: Params,
    /// Steps taken.
    pub t: u64,
    /// β₁.
    pub beta1: f32,
    /// β₂.
    pub beta2: f32,
    /// ε.
    pub eps: f32,
}

impl Adam {
    /// Fresh state for `params` (β₁ = 0.9, β₂ = 0.999, ε = 1e-8).
    pub fn new(params: &Params) -> Self {
        Self {
            m: params.zeros_like(),
            v: params.zeros_like(),
            t: 0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }

    /// One update of `p` with gradients `g · factor` (`factor` `[1]`, e.g. the clip factor
    /// of [`clip_factor`], left on the device) at learning rates `lr`; with `unit_decoder`
    /// the decoder's update keeps its rows at unit norm: each row's gradient loses its
    /// component along the row (`g_i − (g_i·w_i) w_i`, so that a step keeps `‖w_i‖ = 1` to
    /// first order; [`lantern_kernels::adam_unit_rows`]) before Adam, and the rows are
    /// rescaled to unit norm after, in the same pass. Each parameter is one `lantern_kernels`
    /// call: a fused kernel on wgpu/vulkan, burn's stock ops on the CPU.
    pub fn step(
        &mut self,
        p: Params,
        g: &Params,
        factor: &Tensor<1>,
        lr: LearningRates,
        unit_decoder: bool,
    ) -> Params {
        self.t += 1;
        let s = AdamStep {
            lr: lr.weights,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            t: self.t,
        };
        let (m, v) = (&self.m, &self.v);
        let (w_enc, m_w_enc, v_w_enc) = kernels::adam(
            p.w_enc,
            g.w_enc.clone(),
            m.w_enc.clone(),
            v.w_enc.clone(),
            factor.clone(),
            s,
        );
        let (b_enc, m_b_enc, v_b_enc) = kernels::adam(
            p.b_enc,
            g.b_enc.clone(),
            m.b_enc.clone(),
            v.b_enc.clone(),
            factor.clone(),
            s,
        );
        let dec = if unit_decoder {
            kernels::adam_unit_rows
        } else {
            kernels::adam::<2>
        };
        let (w_dec, m_w_dec, v_w_dec) = dec(
            p.w_dec,
            g.w_dec.clone(),
            m.w_dec.clone(),
            v.w_dec.clone(),
            factor.clone(),
            s,
        );
        let (b_dec, m_b_dec, v_b_dec) = kernels::adam(
            p.b_dec,
            g.b_dec.clone(),
            m.b_dec.clone(),
            v.b_dec.clone(),
            factor.clone(),
            s,
        );
        let (log_threshold, m_t, v_t) = match (
            p.log_threshold,
            &g.log_threshold,
            &m.log_threshold,
            &v.log_threshold,
        ) {
            (Some(t), Some(gt), Some(mt), Some(vt)) => {
                let s = AdamStep {
                    lr: lr.threshold,
                    ..s
                };
                let (t, mt, vt) =
                    kernels::adam(t, gt.clone(), mt.clone(), vt.clone(), factor.clone(), s);
                (Some(t), Some(mt), Some(vt))
            }
            (t, _, mt, vt) => (t, mt.clone(), vt.clone()),
        };
        self.m = Params {
            w_enc: m_w_enc,
            b_enc: m_b_enc,
            w_dec: m_w_dec,
            b_dec: m_b_dec,
            log_threshold: m_t,
        };
        self.v = Params {
            w_enc: v_w_enc,
            b_enc: v_b_enc,
            w_dec: v_w_dec,
            b_dec: v_b_dec,
            log_threshold: v_t,
        };
        Params {
            w_enc,
            b_enc,
            w_dec,
            b_dec,
            log_threshold,
        }
    }
}

/// `‖g‖² = Σ over every parameter of Σ g²`, `[1]`, left on the device; with `unit_decoder`
/// (the decoder `[m, d]`), the decoder's term is that of its gradient without the component
/// along each row, `Σ_i ‖g_i − (g_i·w_i) w_i‖²`, as the update applies it.
fn squared_norm(g: &Params, unit_decoder: Option<&Tensor<2>>) -> Tensor<1> {
    let dec = match unit_decoder {
        Some(w) => kernels::removed_sq_norm(w.clone(), g.w_dec.clone()),
        None => g.w_dec.clone().square().sum(),
    };
    let mut total = kernels::sq_norm(g.w_enc.clone())
        + g.b_enc.clone().square().sum()
        + dec
        + g.b_dec.clone().square().sum();
    if let Some(t) = &g.log_threshold {
        total = total + t.clone().square().sum();
    }
    total
}

/// The factor `clip / max(‖g‖, clip)` that clips the global gradient norm to `clip` (1 when
/// `‖g‖ ≤ clip`), `[1]`, computed on the device: no read-back, so a GPU never waits for the
/// step before the next one is queued.
pub fn clip_factor(g: &Params, clip: f32) -> Tensor<1> {
    factor_of(squared_norm(g, None), clip)
}

fn factor_of(squared_norm: Tensor<1>, clip: f32) -> Tensor<1> {
    squared_norm.sqrt().clamp_min(clip).recip().mul_scalar(clip)
}

/// Every gradient scaled by [`clip_factor`].
pub fn clip_grads(g: &Params, clip: f32) -> Params {
    let factor = clip_factor(g, clip);
    g.map(|t| match t {
        ParamTensor::One(t) => ParamTensor::One(t * factor.clone()),
        ParamTensor::Two(t) => ParamTensor::Two(t * factor.clone().unsqueeze_dim::<2>(0)),
    })
}

/// Rescales every decoder row to unit norm: `w_i ← w_i / ‖w_i‖`.
pub fn normalize_rows(w_dec: Tensor<2>) -> Tensor<2> {
    kernels::stock::normalize_rows(w_dec)
}

/// One optimiser update from a step's gradients, as the trainer does it: for unit-norm
/// decoders, remove the gradient component along each decoder row; clip the global gradient
/// norm; Adam at `lr`; renormalise the decoder rows. On wgpu/vulkan the removal is part of
/// the decoder's Adam kernel (`lantern_kernels::adam_unit_rows`) and the clip norm counts the
/// removed gradient without it being written (`lantern_kernels::removed_sq_norm`): five
/// kernels and the norm's reductions per step; on the CPU, their stock-op twins.
pub fn update(
    params: Params,
    grads: Params,
    adam: &mut Adam,
    lr: impl Into<LearningRates>,
    normalize_decoder: bool,
    clip: Option<f32>,
) -> Params {
    let factor = match clip {
        Some(clip) => factor_of(
            squared_norm(&grads, normalize_decoder.then_some(&params.w_dec)),
            clip,
        ),
        None => Tensor::ones([1], &params.b_dec.device()),
    };
    adam.step(params, &grads, &factor, lr.into(), normalize_decoder)
}

/// Adam's learning rates: one for the weights and biases, one for JumpReLU's log-thresholds
/// ([`crate::train::TrainConfig::threshold_lr`]). A single `f32` sets both.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LearningRates {
    pub weights: f32,
    pub threshold: f32,
}

impl From<f32> for LearningRates {
    fn from(lr: f32) -> Self {
        Self {
            weights: lr,
            threshold: lr,
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Tensor, TensorData};

    use super::*;

    fn params(scale: f32) -> Params {
        let dev = Device::flex();
        let v = |n: usize, off: f32| -> Vec<f32> {
            (0..n)
                .map(|i| ((i as f32 * 0.37 + off).sin()) * scale)
                .collect()
        };
        let t2 = |r: usize, c: usize, off: f32| {
            Tensor::<2>::from_data(TensorData::new(v(r * c, off), [r, c]), &dev)
        };
        let t1 = |n: usize, off: f32| Tensor::<1>::from_data(TensorData::new(v(n, off), [n]), &dev);
        Params {
            w_enc: t2(3, 5, 0.1),
            b_enc: t1(5, 0.2),
            w_dec: t2(5, 3, 0.3),
            b_dec: t1(3, 0.4),
            log_threshold: Some(t1(5, 0.5)),
        }
    }

    fn host(p: &Params) -> Vec<f64> {
        let mut out = Vec::new();
        p.map(|t| {
            let data = match &t {
                ParamTensor::One(t) => t.to_data(),
                ParamTensor::Two(t) => t.to_data(),
            };
            out.extend(data.try_to_vec::<f32>().unwrap().into_iter().map(f64::from));
            t
        });
        out
    }

    /// Adam's first step moves every entry by its rate times the sign of its gradient
    /// (`m̂/√v̂ = g/|g|`, up to ε): the log-thresholds by the threshold rate, everything else by
    /// the weights' rate.
    #[test]
    fn log_thresholds_step_at_their_own_rate() {
        let p = params(1.0);
        let g = params(0.5);
        let mut adam = Adam::new(&p);
        let rates = LearningRates {
            weights: 1e-3,
            threshold: 7e-3,
        };
        let out = update(p.clone(), g.clone(), &mut adam, rates, false, None);
        let moved = |a: &Tensor<1>, b: &Tensor<1>| -> Vec<f64> {
            let a = a.to_data().try_to_vec::<f32>().unwrap();
            let b = b.to_data().try_to_vec::<f32>().unwrap();
            a.iter()
                .zip(&b)
                .map(|(x, y)| f64::from((x - y).abs()))
                .collect()
        };
        let close = |got: &[f64], want: f64| got.iter().all(|v| (v - want).abs() < want * 1e-3);
        let t = moved(
            out.log_threshold.as_ref().unwrap(),
            p.log_threshold.as_ref().unwrap(),
        );
        assert!(close(&t, 7e-3), "log θ moved {t:?}");
        let b = moved(&out.b_enc, &p.b_enc);
        assert!(close(&b, 1e-3), "b_enc moved {b:?}");
    }

    #[test]
    fn clipping_scales_to_the_clip_norm_only_above_it() {
        for (scale, clip) in [(2.0f32, 1.0f32), (0.05, 1.0), (1.0, 0.3)] {
            let g = params(scale);
            let before = host(&g);
            let norm = before.iter().map(|v| v * v).sum::<f64>().sqrt();
            let want = (clip as f64 / norm).min(1.0);
            let after = host(&clip_grads(&g, clip));
            for (a, b) in after.iter().zip(&before) {
                assert!(
                    (a - b * want).abs() <= 1e-6 * b.abs().max(1e-3),
                    "{a} vs {}",
                    b * want
                );
            }
        }
    }
}
