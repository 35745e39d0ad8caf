//! Steering vectors: one vector per layer at one site of the block, from a direction file, a
//! llama.cpp control vector or an SAE latent's decoder row.
//!
//! A direction file's `hook` names the site (`resid_post`, `resid_pre`, `attn_out`, ...), its
//! `layer.{L}` tensors the layers; layer `L` at `resid_post` is `blocks.L.hook_resid_post`
//! (DESIGN.md). Soligo et al. (2025) ablate *one* layer's mean-diff vector at every layer;
//! [`LayerVectors::replicate`] builds that.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use lantern_lm::HookPoint;
use lantern_sae::SaeWeights;
use lantern_search::directions::Directions;

use crate::Result;
use crate::error::{input, setting};

/// Where in a block a vector reads or writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Site {
    ResidPre,
    AttnOut,
    ResidMid,
    MlpOut,
    ResidPost,
}

impl Site {
    /// The hook point of this site in block `layer`.
    pub fn point(self, layer: usize) -> HookPoint {
        match self {
            Self::ResidPre => HookPoint::ResidPre(layer),
            Self::AttnOut => HookPoint::AttnOut(layer),
            Self::ResidMid => HookPoint::ResidMid(layer),
            Self::MlpOut => HookPoint::MlpOut(layer),
            Self::ResidPost => HookPoint::ResidPost(layer),
        }
    }

    /// The site and block of a hook point (`None` for the embedding and the final norm).
    pub fn of_point(p: HookPoint) -> Option<(Self, usize)> {
        Some(match p {
            HookPoint::ResidPre(l) => (Self::ResidPre, l),
            HookPoint::AttnOut(l) => (Self::AttnOut, l),
            HookPoint::ResidMid(l) => (Self::ResidMid, l),
            HookPoint::MlpOut(l) => (Self::MlpOut, l),
            HookPoint::ResidPost(l) => (Self::ResidPost, l),
            HookPoint::Embed | HookPoint::LnFinal => return None,
        })
    }
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ResidPre => "resid_pre",
            Self::AttnOut => "attn_out",
            Self::ResidMid => "resid_mid",
            Self::MlpOut => "mlp_out",
            Self::ResidPost => "resid_post",
        })
    }
}

impl FromStr for Site {
    type Err = crate::SteerError;

    /// `resid_post` or `hook_resid_post` (also a full hook name, whose layer is ignored).
    fn from_str(s: &str) -> Result<Self> {
        let name = s.rsplit('.').next().unwrap_or(s);
        let name = name.strip_prefix("hook_").unwrap_or(name);
        Ok(match name {
            "resid_pre" => Self::ResidPre,
            "attn_out" => Self::AttnOut,
            "resid_mid" => Self::ResidMid,
            "mlp_out" => Self::MlpOut,
            "resid_post" => Self::ResidPost,
            _ => {
                return Err(setting(
                    "site",
                    s,
                    "resid_pre, attn_out, resid_mid, mlp_out or resid_post",
                ));
            }
        })
    }
}

/// One vector per layer at one site.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerVectors {
    pub site: Site,
    /// `layer → [d_model]`.
    pub layers: BTreeMap<usize, Vec<f32>>,
    /// Where the vectors came from (a file, `sae:DIR#latent`), for errors and results.
    pub source: PathBuf,
    /// What they are (`mean-diff`, `sae-latent 1234`, `imported:controlvector`, ...).
    pub method: String,
}

impl LayerVectors {
    /// Every layer of a direction file (or control vector, or `.npy` export; `layer` places a
    /// single 1-D vector).
    pub fn read(path: &Path, layer: Option<usize>) -> Result<Self> {
        let d = Directions::read(path, layer)?;
        let site: Site = d.meta.hook.parse().map_err(|_| {
            input(
                path,
                format!(
                    "hook = {:?}: expected a residual-stream site (resid_pre, resid_post, \
                     attn_out, resid_mid or mlp_out)",
                    d.meta.hook
                ),
            )
        })?;
        Ok(Self {
            site,
            layers: d.layers,
            source: path.to_path_buf(),
            method: d.meta.method,
        })
    }

    /// An SAE latent's decoder row `W_dec[latent]` at the SAE's hook (its `hook_name`).
    pub fn sae_latent(w: &SaeWeights, path: &Path, latent: usize) -> Result<Self> {
        let (site, layer) = sae_site(w, path)?;
        if latent >= w.cfg.d_sae {
            return Err(input(
                path,
                format!(
                    "latent {latent} out of range (the SAE has {} latents)",
                    w.cfg.d_sae
                ),
            ));
        }
        let d = w.cfg.d_in;
        Ok(Self {
            site,
            layers: BTreeMap::from([(layer, w.w_dec[latent * d..(latent + 1) * d].to_vec())]),
            source: path.to_path_buf(),
            method: format!("sae-latent {latent}"),
        })
    }

    /// Keeps only `layers` (each must be present).
    pub fn select(mut self, layers: &[usize]) -> Result<Self> {
        let mut kept = BTreeMap::new();
        for &l in layers {
            let v = self.layers.remove(&l).ok_or_else(|| {
                input(
                    &self.source,
                    format!("has no layer {l} (it holds layers {})", self.layer_list()),
                )
            })?;
            kept.insert(l, v);
        }
        self.layers = kept;
        Ok(self)
    }

    /// Layer `from`'s vector placed at every layer of `to` (Soligo et al.'s "layer-24
    /// direction at all layers").
    pub fn replicate(&self, from: usize, to: impl IntoIterator<Item = usize>) -> Result<Self> {
        let v = self.layers.get(&from).ok_or_else(|| {
            input(
                &self.source,
                format!(
                    "has no layer {from} (it holds layers {})",
                    self.layer_list()
                ),
            )
        })?;
        Ok(Self {
            layers: to.into_iter().map(|l| (l, v.clone())).collect(),
            method: format!("{} (layer {from} replicated)", self.method),
            ..self.clone()
        })
    }

    /// Checks every layer against a model of `n_layers` blocks and width `d_model`.
    pub fn check(&self, n_layers: usize, d_model: usize) -> Result<()> {
        for (&l, v) in &self.layers {
            if l >= n_layers {
                return Err(input(
                    &self.source,
                    format!(
                        "layer {l} out of range (the model has {n_layers} blocks, 0..={})",
                        n_layers.saturating_sub(1)
                    ),
                ));
            }
            if v.len() != d_model {
                return Err(input(
                    &self.source,
                    format!(
                        "layer {l} has {} values; the model's d_model is {d_model}",
                        v.len()
                    ),
                ));
            }
        }
        if self.layers.is_empty() {
            return Err(input(&self.source, "no layer selected"));
        }
        Ok(())
    }

    /// The layers, as "3, 5, 7".
    pub fn layer_list(&self) -> String {
        let v: Vec<String> = self.layers.keys().map(usize::to_string).collect();
        v.join(", ")
    }

    /// The vectors at unit norm (a zero vector stays zero).
    pub fn unit(&self) -> Self {
        let mut out = self.clone();
        for v in out.layers.values_mut() {
            let n = norm(v);
            if n > 0.0 {
                v.iter_mut().for_each(|x| *x /= n);
            }
        }
        out
    }
}

/// The site and layer of an SAE's `hook_name` (`blocks.L.hook_resid_post`), or an error.
pub fn sae_site(w: &SaeWeights, path: &Path) -> Result<(Site, usize)> {
    let hook = &w.cfg.hook_name;
    hook.parse::<HookPoint>()
        .ok()
        .and_then(Site::of_point)
        .ok_or_else(|| {
            input(
                path,
                format!(
                    "the SAE's hook_name is {hook:?}; steering needs a block hook \
                     (blocks.L.hook_resid_post, ...)"
                ),
            )
        })
}

/// `‖v‖₂`, accumulated in f64.
pub fn norm(v: &[f32]) -> f32 {
    v.iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt() as f32
}

/// An orthonormal basis of `span(vectors)` by modified Gram–Schmidt in f64 (vectors that add
/// nothing, relative norm < 1e-6, are dropped).
pub fn orthonormal(vectors: &[Vec<f32>]) -> Vec<Vec<f32>> {
    let mut basis: Vec<Vec<f64>> = Vec::new();
    for v in vectors {
        let mut w: Vec<f64> = v.iter().map(|&x| f64::from(x)).collect();
        let n0 = w.iter().map(|x| x * x).sum::<f64>().sqrt();
        for b in &basis {
            let dot: f64 = w.iter().zip(b).map(|(a, c)| a * c).sum();
            w.iter_mut().zip(b).for_each(|(a, c)| *a -= dot * c);
        }
        let n = w.iter().map(|x| x * x).sum::<f64>().sqrt();
        if n0 > 0.0 && n > 1e-6 * n0 {
            w.iter_mut().for_each(|a| *a /= n);
            basis.push(w);
        }
    }
    basis
        .into_iter()
        .map(|b| b.into_iter().map(|x| x as f32).collect())
        .collect()
}
