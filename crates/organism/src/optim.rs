//! AdamW over a burn module's trainable parameters, with global-norm gradient clipping.
//!
//! For each parameter `θ` with gradient `g` (after clipping: `g ← g · min(1, c / ‖G‖)`, `‖G‖`
//! the norm of all gradients together), at step `t` (from 1):
//!
//! ```text
//! m ← β₁ m + (1 − β₁) g          v ← β₂ v + (1 − β₂) g²
//! θ ← θ − lr · ( m / (1 − β₁ᵗ) / (√(v / (1 − β₂ᵗ)) + ε)  +  λ θ )
//! ```
//!
//! (Loshchilov & Hutter 2019, decoupled weight decay; PyTorch's `AdamW` defaults β = (0.9,
//! 0.999), ε = 1e-8.) Parameters that do not require gradients (a frozen base under LoRA) are
//! left untouched, so the same optimizer serves full finetunes and adapters.

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::{Gradients, Tensor};

/// AdamW settings.
#[derive(Clone, Debug, PartialEq)]
pub struct AdamW {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Global gradient-norm clip `c` (`None`: no clipping).
    pub clip: Option<f64>,
}

impl Default for AdamW {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            clip: Some(1.0),
        }
    }
}

/// The moments of every parameter seen so far.
pub struct AdamWState {
    pub settings: AdamW,
    step: i32,
    moments: HashMap<ParamId, (Tensor<1>, Tensor<1>)>,
}

impl AdamWState {
    pub fn new(settings: AdamW) -> Self {
        Self {
            settings,
            step: 0,
            moments: HashMap::new(),
        }
    }

    /// One update of `module` from `grads` at learning rate `lr`; returns the module and the
    /// gradient norm before clipping.
    pub fn step<M: Module>(&mut self, module: M, grads: &Gradients, lr: f64) -> (M, f64) {
        let mut norm = GradNorm { grads, sq: None };
        module.visit(&mut norm);
        let total = norm
            .sq
            .map_or(0.0, |s| f64::from(s.into_scalar::<f32>()).sqrt());
        let scale = match self.settings.clip {
            Some(c) if total > c => c / total,
            _ => 1.0,
        };
        self.step += 1;
        let mut m = Mapper {
            state: self,
            grads,
            lr,
            scale,
        };
        (module.map(&mut m), total)
    }
}

struct GradNorm<'g> {
    grads: &'g Gradients,
    sq: Option<Tensor<1>>,
}

impl ModuleVisitor for GradNorm<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = param.val().grad(self.grads) {
            let s = g.powf_scalar(2.0).sum();
            self.sq = Some(match self.sq.take() {
                Some(acc) => acc + s,
                None => s,
            });
        }
    }
}

struct Mapper<'a, 'g> {
    state: &'a mut AdamWState,
    grads: &'g Gradients,
    lr: f64,
    scale: f64,
}

impl ModuleMapper for Mapper<'_, '_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        let Some(grad) = tensor.grad(self.grads) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let s = &self.state.settings;
        let shape = grad.shape();
        let n = shape.num_elements();
        let g = grad.reshape([n]) * self.scale;
        let theta = tensor.inner().reshape([n]);
        let (m, v) = match self.state.moments.remove(&id) {
            Some((m, v)) => (
                m * s.beta1 + g.clone() * (1.0 - s.beta1),
                v * s.beta2 + g.powf_scalar(2.0) * (1.0 - s.beta2),
            ),
            None => (
                g.clone() * (1.0 - s.beta1),
                g.powf_scalar(2.0) * (1.0 - s.beta2),
            ),
        };
        let t = self.state.step;
        let bc1 = 1.0 - s.beta1.powi(t);
        let bc2 = 1.0 - s.beta2.powi(t);
        let update = (m.clone() / bc1) / ((v.clone() / bc2).sqrt() + s.eps);
        let theta = theta.clone() - (update + theta * s.weight_decay) * self.lr;
        self.state.moments.insert(id, (m, v));
        let updated = Tensor::<D>::from_inner(theta.reshape(shape)).require_grad();
        Param::from_mapped_value(id, updated, mapper)
    }
}
