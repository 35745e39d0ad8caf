//! Steering strengths: a number *and a unit* (DESIGN.md), and the calibration that turns a
//! unit into a coefficient on the stored vector.
//!
//! With `v_L` the layer-`L` vector and `α` the number, the vector added at layer `L` is
//!
//! - `raw`: `α · v_L` (persona vectors, Neuronpedia, llama.cpp);
//! - `mean-norm`: `α · mean‖h_L‖ · v_L/‖v_L‖` (the activation-difference lens);
//! - `median-norm`: `α · median‖h_L‖ · v_L/‖v_L‖` (Wang et al. 2025 steer at
//!   0.05 … 0.75 × the median residual norm);
//! - `latent-max`: `α · max f_i · v_L` with `v_L` an SAE latent's decoder row and `max f_i`
//!   its largest activation on the calibration prompts (diffing-toolkit's latent steering).
//!
//! Norms are measured at the vector's own site on calibration prompts, over every real token
//! except the first `skip_first` of each sequence (SmolLM2's first position is an attention
//! sink with ‖h‖ ≈ 23 000 against ≈ 200 elsewhere; one such token per prompt would move the
//! mean by half).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use lantern_lm::{HookPoint, Hooks, LogitsAt, Model, Padding, TokenBatch};
use lantern_sae::Sae;
use serde::Serialize;

use crate::error::{host, setting};
use crate::vector::{LayerVectors, Site, norm};
use crate::{Result, SteerError};

/// The unit of a steering strength.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Unit {
    #[default]
    Raw,
    MeanNorm,
    MedianNorm,
    LatentMax,
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Raw => "raw",
            Self::MeanNorm => "mean-norm",
            Self::MedianNorm => "median-norm",
            Self::LatentMax => "latent-max",
        })
    }
}

impl FromStr for Unit {
    type Err = SteerError;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "raw" => Self::Raw,
            "mean-norm" => Self::MeanNorm,
            "median-norm" => Self::MedianNorm,
            "latent-max" => Self::LatentMax,
            _ => {
                return Err(setting(
                    "unit",
                    s,
                    "raw, mean-norm, median-norm or latent-max",
                ));
            }
        })
    }
}

/// Residual norms per layer at one site, and (for `latent-max`) a latent's largest activation.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Calibration {
    pub site: Option<String>,
    /// `layer → (mean, median)` of ‖h_L‖ over the calibration tokens.
    pub norms: BTreeMap<usize, NormStats>,
    /// The latent's max activation on the calibration tokens.
    pub latent_max: Option<f64>,
    pub skip_first: usize,
    pub tokens: usize,
}

/// Mean and median residual norm at one layer.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct NormStats {
    pub mean: f64,
    pub median: f64,
}

impl Calibration {
    /// No calibration: only `raw` strengths resolve.
    pub fn none() -> Self {
        Self::default()
    }

    /// The coefficient `c` such that `c · v_L` is the vector added at `layer` for strength
    /// `alpha` in `unit` (see the module docs).
    pub fn coefficient(&self, alpha: f64, unit: Unit, layer: usize, v: &[f32]) -> Result<f32> {
        let n = f64::from(norm(v));
        let stats = || {
            self.norms.get(&layer).copied().ok_or_else(|| {
                setting(
                    "unit",
                    unit,
                    "a unit with calibration (residual norms were not measured at this layer)",
                )
            })
        };
        let c = match unit {
            Unit::Raw => alpha,
            Unit::MeanNorm | Unit::MedianNorm if n == 0.0 => 0.0,
            Unit::MeanNorm => alpha * stats()?.mean / n,
            Unit::MedianNorm => alpha * stats()?.median / n,
            Unit::LatentMax => {
                alpha
                    * self.latent_max.ok_or_else(|| {
                        setting(
                            "unit",
                            unit,
                            "an SAE latent (latent-max needs the latent's max activation)",
                        )
                    })?
            }
        };
        Ok(c as f32)
    }
}

/// Measures ‖h_L‖ at `site` for every layer of `layers` on `prompts` (token ids), and, when
/// `latent` is given, the SAE latent's max activation at the SAE's hook (`sae_point`).
pub fn calibrate(
    model: &Model,
    prompts: &[Vec<u32>],
    site: Site,
    layers: &[usize],
    latent: Option<(&Sae, HookPoint, usize)>,
    skip_first: usize,
    batch: usize,
) -> Result<Calibration> {
    if prompts.is_empty() {
        return Err(setting("calibration_prompts", 0, "at least one prompt"));
    }
    let mut per_layer: BTreeMap<usize, Vec<f32>> =
        layers.iter().map(|&l| (l, Vec::new())).collect();
    let mut latent_max = f64::NEG_INFINITY;
    let pad = 0;
    let mut tokens = 0;
    for chunk in prompts.chunks(batch.max(1)) {
        let tb = TokenBatch::new(chunk, pad, Padding::Right)?;
        let mut hooks = Hooks::new();
        for &l in layers {
            hooks.capture(site.point(l));
        }
        // The latent's hook is captured once even when it is also a layer's site.
        let latent_shared =
            latent.is_some_and(|(_, p, _)| layers.iter().any(|&l| site.point(l) == p));
        if let Some((_, p, _)) = latent
            && !latent_shared
        {
            hooks.capture(p);
        }
        hooks.stop_after_last(true);
        let mut out = model.forward(&tb.ids, &tb.real, None, &mut hooks, LogitsAt::Skip)?;
        // Which columns count: real tokens after the first `skip_first` of each row.
        let keep: Vec<bool> = chunk
            .iter()
            .flat_map(|s| (0..tb.width).map(move |c| c >= skip_first && c < s.len()))
            .collect();
        tokens += keep.iter().filter(|&&k| k).count();
        let mut latent_x = None;
        for &l in layers {
            let x = out.captures.take_one(site.point(l))?;
            if latent.is_some_and(|(_, p, _)| site.point(l) == p) {
                latent_x = Some(x.clone());
            }
            let norms = host(x.powi_scalar(2).sum_dim(2).sqrt(), "residual norms")?;
            let v = per_layer.get_mut(&l).expect("inserted above");
            v.extend(
                norms
                    .iter()
                    .zip(&keep)
                    .filter(|(_, k)| **k)
                    .map(|(n, _)| *n),
            );
        }
        if let Some((sae, p, i)) = latent {
            let x = match latent_x {
                Some(x) => x,
                None => out.captures.take_one(p)?,
            };
            let [b, t, d] = x.dims();
            let f = sae.encode(&x.reshape([b * t, d])).narrow(1, i, 1);
            let f = host(f, "latent activations")?;
            for (a, k) in f.iter().zip(&keep) {
                if *k {
                    latent_max = latent_max.max(f64::from(*a));
                }
            }
        }
    }
    if tokens == 0 {
        return Err(setting(
            "skip_first",
            skip_first,
            "fewer than the tokens of the calibration prompts",
        ));
    }
    let norms = per_layer
        .into_iter()
        .map(|(l, mut v)| {
            let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64;
            v.sort_by(f32::total_cmp);
            let m = v.len();
            let median = if m % 2 == 1 {
                f64::from(v[m / 2])
            } else {
                (f64::from(v[m / 2 - 1]) + f64::from(v[m / 2])) / 2.0
            };
            (l, NormStats { mean, median })
        })
        .collect();
    Ok(Calibration {
        site: Some(site.to_string()),
        norms,
        latent_max: latent.map(|_| latent_max),
        skip_first,
        tokens,
    })
}

/// `c · v` for each layer of `vectors` at strength `alpha` in `unit`.
pub fn scaled(
    vectors: &LayerVectors,
    alpha: f64,
    unit: Unit,
    cal: &Calibration,
) -> Result<BTreeMap<usize, f32>> {
    vectors
        .layers
        .iter()
        .map(|(&l, v)| Ok((l, cal.coefficient(alpha, unit, l, v)?)))
        .collect()
}
