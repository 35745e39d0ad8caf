//! Adam, gradient clipping and the unit-norm decoder constraint, on [`Params`].

use burn::tensor::Tensor;

use crate::Result;
use crate::params::{Params, scalar};

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

    /// One update of `p` with gradients `g` at learning rate `lr`.
    pub fn step(&mut self, p: Params, g: &Params, lr: f32) -> Params {
        self.t += 1;
        let c1 = 1.0 - self.beta1.powi(self.t.min(i32::MAX as u64) as i32);
        let c2 = 1.0 - self.beta2.powi(self.t.min(i32::MAX as u64) as i32);
        let h = Hyper {
            lr,
            c1,
            c2,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
        };
        let (w_enc, m_w_enc, v_w_enc) = h.update(p.w_enc, &g.w_enc, &self.m.w_enc, &self.v.w_enc);
        let (b_enc, m_b_enc, v_b_enc) = h.update(p.b_enc, &g.b_enc, &self.m.b_enc, &self.v.b_enc);
        let (w_dec, m_w_dec, v_w_dec) = h.update(p.w_dec, &g.w_dec, &self.m.w_dec, &self.v.w_dec);
        let (b_dec, m_b_dec, v_b_dec) = h.update(p.b_dec, &g.b_dec, &self.m.b_dec, &self.v.b_dec);
        let (log_threshold, m_t, v_t) = match (
            p.log_threshold,
            &g.log_threshold,
            &self.m.log_threshold,
            &self.v.log_threshold,
        ) {
            (Some(t), Some(gt), Some(mt), Some(vt)) => {
                let (t, mt, vt) = h.update(t, gt, mt, vt);
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

struct Hyper {
    lr: f32,
    c1: f32,
    c2: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
}

impl Hyper {
    fn update<const D: usize>(
        &self,
        p: Tensor<D>,
        g: &Tensor<D>,
        m: &Tensor<D>,
        v: &Tensor<D>,
    ) -> (Tensor<D>, Tensor<D>, Tensor<D>) {
        let m = m.clone().mul_scalar(self.beta1) + g.clone().mul_scalar(1.0 - self.beta1);
        let v = v.clone().mul_scalar(self.beta2) + g.clone().square().mul_scalar(1.0 - self.beta2);
        let denom = (v.clone() / self.c2).sqrt().add_scalar(self.eps);
        let p = p - (m.clone() / denom).mul_scalar(self.lr / self.c1);
        (p, m, v)
    }
}

/// Global gradient norm `‖g‖ = √(Σ over every parameter of Σ g²)`.
pub fn grad_norm(g: &Params) -> Result<f64> {
    let mut total = g.w_enc.clone().square().sum()
        + g.b_enc.clone().square().sum()
        + g.w_dec.clone().square().sum()
        + g.b_dec.clone().square().sum();
    if let Some(t) = &g.log_threshold {
        total = total + t.clone().square().sum();
    }
    Ok(scalar(total)?.sqrt())
}

/// Scales every gradient by `factor`.
pub fn scale_grads(g: &Params, factor: f32) -> Params {
    g.map(|t| match t {
        crate::params::ParamTensor::One(t) => crate::params::ParamTensor::One(t.mul_scalar(factor)),
        crate::params::ParamTensor::Two(t) => crate::params::ParamTensor::Two(t.mul_scalar(factor)),
    })
}

/// Removes from each decoder-row gradient its component along the (unit) row:
/// `g_i ← g_i − (g_i · w_i) w_i`, so that a step keeps ‖w_i‖ = 1 to first order.
pub fn remove_parallel_component(w_dec: &Tensor<2>, grad_w_dec: Tensor<2>) -> Tensor<2> {
    let dots = (grad_w_dec.clone() * w_dec.clone()).sum_dim(1); // [m, 1]
    grad_w_dec - w_dec.clone() * dots
}

/// Rescales every decoder row to unit norm: `w_i ← w_i / ‖w_i‖`.
pub fn normalize_rows(w_dec: Tensor<2>) -> Tensor<2> {
    let norms = w_dec.clone().square().sum_dim(1).sqrt().clamp_min(1e-12);
    w_dec / norms
}

/// One optimiser update from a step's gradients, as the trainer does it: for unit-norm
/// decoders, remove the gradient component along each decoder row; clip the global gradient
/// norm; Adam at `lr`; renormalise the decoder rows.
pub fn update(
    params: Params,
    mut grads: Params,
    adam: &mut Adam,
    lr: f32,
    normalize_decoder: bool,
    clip: Option<f32>,
) -> Result<Params> {
    if normalize_decoder {
        grads.w_dec = remove_parallel_component(&params.w_dec, grads.w_dec);
    }
    if let Some(clip) = clip {
        let norm = grad_norm(&grads)?;
        if norm.is_finite() && norm > clip as f64 {
            grads = scale_grads(&grads, (clip as f64 / norm) as f32);
        }
    }
    let mut params = adam.step(params, &grads, lr);
    if normalize_decoder {
        params.w_dec = normalize_rows(params.w_dec);
    }
    Ok(params)
}
