//! Host-side SAE weights and their exact forward pass (no burn, f64 accumulation).
//!
//! Canonical parameters (see DESIGN.md): `W_enc [d_in, d_sae]`, `b_enc [d_sae]`,
//! `W_dec [d_sae, d_in]`, `b_dec [d_in]`, optional `threshold [d_sae]`, all row-major f32.
//!
//! ```text
//! pre = (x − a·b_dec) W_enc + b_enc          a = apply_b_dec_to_input ∈ {0, 1}
//! f   = σ(pre)
//! x̂   = f W_dec + b_dec
//! ```
//!
//! This is the reference every loader in [`crate::formats`] is tested against, and the
//! oracle for the burn/CubeCL implementations.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Result, SaeError};

/// The nonlinearity σ of an SAE.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Arch {
    /// σ(pre) = max(pre, 0) (SAELens "standard").
    Relu,
    /// Keep the `k` largest entries of relu(pre) per row, zero the rest (Gao et al. 2024).
    TopK { k: usize },
    /// BatchTopK (Bussmann et al. 2024): k per row on average over a batch while training;
    /// at inference a JumpReLU with the learned threshold (or per-row TopK without one).
    BatchTopK { k: usize },
    /// σ(pre) = `relu(pre)·1[pre > θ]` (Rajamanoharan et al. 2024, Gemma Scope).
    JumpRelu,
}

/// Shape, nonlinearity and provenance of an SAE.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SaeConfig {
    pub d_in: usize,
    pub d_sae: usize,
    pub arch: Arch,
    /// Subtract `b_dec` from the input before encoding.
    pub apply_b_dec_to_input: bool,
    /// TransformerLens hook name, e.g. `blocks.6.hook_resid_post` ("" when unknown).
    pub hook_name: String,
    /// Model the SAE was trained on ("" when unknown).
    pub model_name: String,
}

/// SAE parameters on the host, row-major f32.
#[derive(Clone, Debug)]
pub struct SaeWeights {
    pub cfg: SaeConfig,
    /// `[d_in, d_sae]`
    pub w_enc: Vec<f32>,
    /// `[d_sae]`
    pub b_enc: Vec<f32>,
    /// `[d_sae, d_in]`
    pub w_dec: Vec<f32>,
    /// `[d_in]`
    pub b_dec: Vec<f32>,
    /// `[d_sae]`: JumpReLU, and BatchTopK exported as JumpReLU.
    pub threshold: Option<Vec<f32>>,
}

/// The forward methods assume consistent weights (see [`SaeWeights::validate`], which every
/// loader runs); inconsistent lengths may panic.
impl SaeWeights {
    /// `pre = (x − a·b_dec) W_enc + b_enc` with `a = apply_b_dec_to_input`, accumulated in f64.
    ///
    /// `x` is `[n, d_in]` row-major; the result is `[n, d_sae]`. A trailing partial row
    /// (`x.len()` not a multiple of `d_in`) is ignored.
    pub fn pre_acts(&self, x: &[f32]) -> Vec<f32> {
        self.map_rows(x, |pre, out| {
            for (o, &p) in out.iter_mut().zip(pre) {
                *o = p as f32;
            }
        })
    }

    /// `f = σ(pre)` per row:
    /// - `Relu`: `max(pre, 0)`;
    /// - `TopK{k}`: the `k` largest entries of `relu(pre)` (ties: lower index first), rest 0;
    /// - `BatchTopK{k}`: JumpReLU with `threshold` when present, else per-row TopK;
    /// - `JumpRelu`: `relu(pre)·1[pre > θ]`, which is `pre·1[pre > θ]` for θ ≥ 0 and matches
    ///   SAELens (`relu(pre)·1[pre > relu(θ)]`) and Gemma Scope (`1[pre > θ]·relu(pre)`) for
    ///   every θ.
    ///
    /// The nonlinearity is applied to the f64 pre-activations, then rounded to f32.
    pub fn encode(&self, x: &[f32]) -> Vec<f32> {
        let d_sae = self.cfg.d_sae;
        let jump = match (self.cfg.arch, &self.threshold) {
            (Arch::JumpRelu | Arch::BatchTopK { .. }, Some(t)) if t.len() == d_sae => Some(t),
            _ => None,
        };
        let k = match self.cfg.arch {
            Arch::TopK { k } | Arch::BatchTopK { k } => k,
            Arch::Relu | Arch::JumpRelu => d_sae,
        };
        self.map_rows(x, |pre, out| {
            if let Some(theta) = jump {
                for ((o, &p), &t) in out.iter_mut().zip(pre).zip(theta) {
                    *o = if p > f64::from(t) && p > 0.0 {
                        p as f32
                    } else {
                        0.0
                    };
                }
            } else if k >= d_sae {
                for (o, &p) in out.iter_mut().zip(pre) {
                    *o = p.max(0.0) as f32;
                }
            } else {
                out.fill(0.0);
                for j in top_k_indices(pre, k) {
                    if pre[j] > 0.0 {
                        out[j] = pre[j] as f32;
                    }
                }
            }
        })
    }

    /// `x̂ = f W_dec + b_dec`, accumulated in f64. `f` is `[n, d_sae]`; the result `[n, d_in]`.
    pub fn decode(&self, f: &[f32]) -> Vec<f32> {
        let (d_in, d_sae) = (self.cfg.d_in, self.cfg.d_sae);
        if d_in == 0 || d_sae == 0 {
            return Vec::new();
        }
        let n = f.len() / d_sae;
        let mut out = vec![0f32; n * d_in];
        out.par_chunks_mut(d_in)
            .zip(f.par_chunks_exact(d_sae))
            .for_each(|(out, f)| {
                let mut acc: Vec<f64> = self.b_dec.iter().map(|&b| f64::from(b)).collect();
                for (j, &fj) in f.iter().enumerate() {
                    if fj != 0.0 {
                        let row = &self.w_dec[j * d_in..(j + 1) * d_in];
                        for (a, &w) in acc.iter_mut().zip(row) {
                            *a += f64::from(fj) * f64::from(w);
                        }
                    }
                }
                for (o, a) in out.iter_mut().zip(acc) {
                    *o = a as f32;
                }
            });
        out
    }

    /// Checks that the lengths match `cfg`, that `threshold` is present exactly for
    /// `JumpRelu` (optional for `BatchTopK`, absent otherwise), that `1 ≤ k ≤ d_sae`, and that every
    /// value is finite.
    pub fn validate(&self) -> Result<()> {
        let (d_in, d_sae) = (self.cfg.d_in, self.cfg.d_sae);
        let invalid = |msg: String| Err(SaeError::Invalid { msg });
        if d_in == 0 || d_sae == 0 {
            return invalid(format!(
                "d_in = {d_in} and d_sae = {d_sae} must be positive"
            ));
        }
        let lens = [
            ("w_enc", self.w_enc.len(), d_in * d_sae),
            ("b_enc", self.b_enc.len(), d_sae),
            ("w_dec", self.w_dec.len(), d_sae * d_in),
            ("b_dec", self.b_dec.len(), d_in),
        ];
        for (name, got, want) in lens {
            if got != want {
                return invalid(format!("{name} has {got} values, expected {want}"));
            }
        }
        match (self.cfg.arch, &self.threshold) {
            (Arch::JumpRelu, None) => return invalid("JumpRelu needs a threshold".into()),
            (Arch::Relu | Arch::TopK { .. }, Some(_)) => {
                return invalid(format!("{:?} must not have a threshold", self.cfg.arch));
            }
            (_, Some(t)) if t.len() != d_sae => {
                return invalid(format!(
                    "threshold has {} values, expected {d_sae}",
                    t.len()
                ));
            }
            _ => {}
        }
        // The trainer's range for k (TrainConfig::check), so a loaded SAE meets what a
        // trained one does.
        if let Arch::TopK { k } | Arch::BatchTopK { k } = self.cfg.arch
            && (k == 0 || k > d_sae)
        {
            return invalid(format!("k = {k} (expected between 1 and d_sae = {d_sae})"));
        }
        let tensors = [
            ("w_enc", &self.w_enc),
            ("b_enc", &self.b_enc),
            ("w_dec", &self.w_dec),
            ("b_dec", &self.b_dec),
        ];
        let threshold = self.threshold.as_ref().map(|t| ("threshold", t));
        for (name, values) in tensors.into_iter().chain(threshold) {
            if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                return invalid(format!("{name}[{i}] = {} is not finite", values[i]));
            }
        }
        Ok(())
    }

    /// Runs `f(pre_f64_row, out_row)` for every input row, in parallel.
    fn map_rows(&self, x: &[f32], f: impl Fn(&[f64], &mut [f32]) + Sync) -> Vec<f32> {
        let (d_in, d_sae) = (self.cfg.d_in, self.cfg.d_sae);
        if d_in == 0 || d_sae == 0 {
            return Vec::new();
        }
        let n = x.len() / d_in;
        let mut out = vec![0f32; n * d_sae];
        out.par_chunks_mut(d_sae)
            .zip(x.par_chunks_exact(d_in))
            .for_each(|(out, x)| f(&self.pre_row(x), out));
        out
    }

    /// One row of `(x − a·b_dec) W_enc + b_enc` in f64.
    fn pre_row(&self, x: &[f32]) -> Vec<f64> {
        let d_sae = self.cfg.d_sae;
        let a = if self.cfg.apply_b_dec_to_input {
            1.0
        } else {
            0.0
        };
        let mut acc: Vec<f64> = self.b_enc.iter().map(|&b| f64::from(b)).collect();
        for (i, (&xi, &bi)) in x.iter().zip(&self.b_dec).enumerate() {
            let xi = f64::from(xi) - a * f64::from(bi);
            if xi != 0.0 {
                let row = &self.w_enc[i * d_sae..(i + 1) * d_sae];
                for (s, &w) in acc.iter_mut().zip(row) {
                    *s += xi * f64::from(w);
                }
            }
        }
        acc
    }
}

/// Indices of the `k` largest values (ties broken towards the lower index), unordered.
fn top_k_indices(values: &[f64], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    if k < idx.len() {
        let by_value_desc =
            |&a: &usize, &b: &usize| values[b].total_cmp(&values[a]).then(a.cmp(&b));
        idx.select_nth_unstable_by(k, by_value_desc);
        idx.truncate(k);
    }
    idx
}
