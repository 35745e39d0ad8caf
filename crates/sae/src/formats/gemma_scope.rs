//! Gemma Scope (Google DeepMind JumpReLU SAEs; HF `google/gemma-scope-*`, `google/gemma-scope-2-*`).
//!
//! - Gemma Scope (Gemma 2): `…/layer_{L}/width_{W}/average_l0_{N}/params.npz` with arrays
//!   `W_enc [d_model, d_sae]`, `W_dec [d_sae, d_model]`, `b_enc [d_sae]`, `b_dec [d_model]`,
//!   `threshold [d_sae]` (the `google/gemma-scope` tutorial's `JumpReLUSAE`, and SAELens
//!   `gemma_2_sae_huggingface_loader`, which also maps lower-case `w_*` keys to `W_*`).
//! - Gemma Scope 2 (Gemma 3): `{site}/layer_{L}_width_{W}_l0_{…}/params.safetensors` with
//!   lower-case keys `w_enc [d_in, d_sae]`, `w_dec`, `b_enc`, `b_dec`, `threshold` (SAELens
//!   `gemma_3_sae_huggingface_loader`, which reads `d_in, d_sae = shape(w_enc)`); transcoders
//!   add `affine_skip_connection`, which is rejected here.
//!
//! Forward (tutorial `JumpReLUSAE.encode`/`decode`; no b_dec subtraction):
//! ```text
//! pre = x W_enc + b_enc
//! f   = 1[pre > θ] · relu(pre)
//! x̂   = f W_dec + b_dec
//! ```
//! Neither file carries a config, so `hook_name` is guessed from the path (`layer_{L}` plus a
//! site: `resid_post`/`-res` → `hook_resid_post`, `mlp_out`/`-mlp` → `hook_mlp_out`,
//! `attn_out` → `hook_attn_out`, `-att` → `attn.hook_z`) and is "" when that fails.
//! SAELens additionally rescales the Gemma 2 *embedding* SAEs by √d_model; that is a
//! property of the release, not of the file, and is not applied here.

use std::path::Path;

use super::{SaeFormat, TensorMap, finish};
use crate::error::{Result, SaeError};
use crate::weights::{Arch, SaeConfig, SaeWeights};

/// Gemma Scope (Gemma 2) parameter file name.
pub const NPZ_FILE: &str = "params.npz";
/// Gemma Scope 2 (Gemma 3) parameter file name.
pub const SAFETENSORS_FILE: &str = "params.safetensors";

/// Loads a Gemma Scope `params.npz`.
pub(crate) fn load_npz(path: &Path) -> Result<(SaeWeights, SaeFormat)> {
    let t = TensorMap::read_npz(path)?;
    load(t, ["W_enc", "w_enc"], SaeFormat::GemmaScopeNpz)
}

/// Loads a Gemma Scope 2 `params.safetensors`.
pub(crate) fn load_safetensors(path: &Path) -> Result<(SaeWeights, SaeFormat)> {
    let t = TensorMap::read_safetensors(path)?;
    if t.contains("affine_skip_connection") {
        return Err(SaeError::Unsupported {
            path: path.into(),
            what: "Gemma Scope skip transcoder (tensor `affine_skip_connection`)".into(),
        });
    }
    load(t, ["w_enc", "W_enc"], SaeFormat::GemmaScopeSafetensors)
}

/// Shared body: `names` orders the preferred spelling (lower- or upper-case `w`) first.
fn load(
    mut t: TensorMap,
    enc_names: [&str; 2],
    format: SaeFormat,
) -> Result<(SaeWeights, SaeFormat)> {
    let lower = enc_names[0].starts_with('w');
    let dec_names = if lower {
        ["w_dec", "W_dec"]
    } else {
        ["W_dec", "w_dec"]
    };
    let enc_name = enc_names
        .iter()
        .copied()
        .find(|n| t.contains(n))
        .unwrap_or(enc_names[0]);
    let (d_in, d_sae) = match t.shape(enc_name) {
        Some(&[d, m]) => (d, m),
        Some(shape) => {
            let got = shape.to_vec();
            let expected = vec![
                t.shape("b_dec").map_or(0, |s| s.iter().product()),
                t.shape("b_enc").map_or(0, |s| s.iter().product()),
            ];
            return Err(SaeError::Shape {
                path: t.path().into(),
                name: enc_name.into(),
                expected,
                got,
            });
        }
        None => (0, 0),
    };
    let w_enc = t.take(enc_name, &[d_in, d_sae])?;
    let w_dec = t.take_any(&dec_names, &[d_sae, d_in])?;
    let b_enc = t.take("b_enc", &[d_sae])?;
    let b_dec = t.take("b_dec", &[d_in])?;
    let threshold = t.take("threshold", &[d_sae])?;
    let weights = SaeWeights {
        cfg: SaeConfig {
            d_in,
            d_sae,
            arch: Arch::JumpRelu,
            apply_b_dec_to_input: false,
            hook_name: hook_name(t.path()),
            model_name: String::new(),
        },
        w_enc,
        b_enc,
        w_dec,
        b_dec,
        threshold: Some(threshold),
    };
    finish(weights, format, t.path())
}

/// Best-effort TransformerLens hook name from a Gemma Scope path ("" when unknown).
fn hook_name(path: &Path) -> String {
    let parts: Vec<&str> = path.iter().filter_map(|p| p.to_str()).collect();
    let layer = parts.iter().find_map(|p| {
        let rest = &p[p.find("layer_")? + "layer_".len()..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        (!digits.is_empty()).then_some(digits)
    });
    let site = parts.iter().rev().find_map(|p| {
        if p.contains("resid_post") || p.ends_with("-res") {
            Some("hook_resid_post")
        } else if p.contains("mlp_out") || p.ends_with("-mlp") {
            Some("hook_mlp_out")
        } else if p.contains("attn_out") {
            Some("hook_attn_out")
        } else if p.ends_with("-att") {
            Some("attn.hook_z")
        } else {
            None
        }
    });
    match (layer, site) {
        (Some(l), Some(s)) => format!("blocks.{l}.{s}"),
        _ => String::new(),
    }
}
