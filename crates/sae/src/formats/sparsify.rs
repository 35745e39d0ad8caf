//! EleutherAI sparsify (`EleutherAI/sparsify`, formerly `EleutherAI/sae`).
//!
//! Layout (`SparseCoder.save_to_disk` / `load_from_disk`, `sparsify/sparse_coder.py`): one
//! directory per hookpoint (e.g. `layers.6`) holding
//! - `cfg.json`: `SparseCoderConfig.to_dict()` plus `d_in` (`sparsify/config.py`):
//!   `activation` ("topk" | "groupmax"), `expansion_factor`, `normalize_decoder`,
//!   `num_latents` (0 → `d_in · expansion_factor`), `k`, `multi_topk`, `skip_connection`,
//!   `transcode`;
//! - `sae.safetensors`: the module's `state_dict` — `encoder.weight [m, d]` (an `nn.Linear`,
//!   so W_enc = `encoder.weight`ᵀ), `encoder.bias [m]`, `W_dec [m, d]` (already our
//!   `[d_sae, d_in]`), `b_dec [d]`, and `W_skip [d, d]` when `skip_connection`.
//!
//! Forward (`SparseCoder.encode`/`decode`, `fused_encoder.py`):
//! ```text
//! pre = relu((x − b_dec) encoder.weightᵀ + encoder.bias)     (b_dec subtracted unless transcode)
//! f   = scatter(topk(pre, k))                                 (activation = "topk")
//! x̂   = f W_dec + b_dec
//! ```
//! `d_in` and `d_sae` are taken from the tensors and checked against `cfg.json`. Transcoders,
//! skip connections and the `groupmax` activation are rejected. (SAELens's own sparsify
//! converter transposes `W_dec` and sets `apply_b_dec_to_input = not normalize_decoder`; we
//! follow sparsify's source instead.)

use std::path::Path;

use super::{
    CFG_JSON, SaeFormat, TensorMap, finish, json_bool, json_str, json_usize, json_usize_req,
    read_json, transpose,
};
use crate::error::{Result, SaeError};
use crate::weights::{Arch, SaeConfig, SaeWeights};

/// The sparsify weights file name.
pub const WEIGHTS_FILE: &str = "sae.safetensors";

/// Loads a sparsify hookpoint directory.
pub(crate) fn load(dir: &Path) -> Result<(SaeWeights, SaeFormat)> {
    let cfg_path = dir.join(CFG_JSON);
    let cfg = read_json(&cfg_path)?;
    let unsupported = |what: &str| SaeError::Unsupported {
        path: cfg_path.clone(),
        what: what.into(),
    };
    match json_str(&cfg, "activation") {
        "" | "topk" => {}
        other => {
            return Err(unsupported(&format!(
                "sparsify activation \"{other}\" (only topk)"
            )));
        }
    }
    if json_bool(&cfg, "transcode", false, &cfg_path)? {
        return Err(unsupported("sparsify transcoder (transcode = true)"));
    }
    if json_bool(&cfg, "skip_connection", false, &cfg_path)? {
        return Err(unsupported(
            "sparsify skip connection (skip_connection = true)",
        ));
    }
    let k = json_usize_req(&cfg, "k", &cfg_path)?;

    let mut t = TensorMap::read_safetensors(&dir.join(WEIGHTS_FILE))?;
    if t.contains("W_skip") {
        return Err(SaeError::Unsupported {
            path: t.path().into(),
            what: "sparsify skip connection (tensor `W_skip`)".into(),
        });
    }
    let (d_sae, d_in) = match t.shape("encoder.weight") {
        Some(&[m, d]) => (m, d),
        Some(shape) => {
            return Err(SaeError::Shape {
                path: t.path().into(),
                name: "encoder.weight".into(),
                expected: expected_enc_shape(&cfg, &cfg_path, shape)?,
                got: shape.to_vec(),
            });
        }
        None => (0, 0),
    };
    let enc = t.take("encoder.weight", &[d_sae, d_in])?;
    if let Some(cfg_d_in) = json_usize(&cfg, "d_in", &cfg_path)?
        && cfg_d_in != d_in
    {
        return Err(shape_vs_cfg(t.path(), [d_sae, cfg_d_in], [d_sae, d_in]));
    }
    let num_latents = json_usize(&cfg, "num_latents", &cfg_path)?.unwrap_or(0);
    let want_m = match num_latents {
        0 => json_usize(&cfg, "expansion_factor", &cfg_path)?.map(|e| e * d_in),
        m => Some(m),
    };
    if let Some(m) = want_m
        && m != d_sae
    {
        return Err(shape_vs_cfg(t.path(), [m, d_in], [d_sae, d_in]));
    }
    let b_enc = t.take("encoder.bias", &[d_sae])?;
    let w_dec = t.take("W_dec", &[d_sae, d_in])?;
    let b_dec = t.take("b_dec", &[d_in])?;
    let weights = SaeWeights {
        cfg: SaeConfig {
            d_in,
            d_sae,
            arch: Arch::TopK { k },
            apply_b_dec_to_input: true,
            hook_name: hook_name(dir),
            model_name: model_name(dir),
        },
        w_enc: transpose(&enc, d_sae, d_in),
        b_enc,
        w_dec,
        b_dec,
        threshold: None,
    };
    finish(weights, SaeFormat::Sparsify, t.path())
}

/// The `[m, d]` that `cfg.json` implies, for the message about a non-2-D `encoder.weight`.
fn expected_enc_shape(
    cfg: &serde_json::Map<String, serde_json::Value>,
    path: &Path,
    got: &[usize],
) -> Result<Vec<usize>> {
    let d = json_usize(cfg, "d_in", path)?.unwrap_or(got.last().copied().unwrap_or(0));
    let m = match json_usize(cfg, "num_latents", path)?.unwrap_or(0) {
        0 => json_usize(cfg, "expansion_factor", path)?.unwrap_or(0) * d,
        m => m,
    };
    Ok(vec![m, d])
}

fn shape_vs_cfg(path: &Path, expected: [usize; 2], got: [usize; 2]) -> SaeError {
    SaeError::Shape {
        path: path.into(),
        name: "encoder.weight".into(),
        expected: expected.to_vec(),
        got: got.to_vec(),
    }
}

/// `layers.N` (sparsify's residual-stream hookpoint) → `blocks.N.hook_resid_post`, as SAELens
/// maps it; `embed_tokens` → `hook_embed`; any other directory name is kept as is.
fn hook_name(dir: &Path) -> String {
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if name == "embed_tokens" {
        return "hook_embed".into();
    }
    match name
        .strip_prefix("layers.")
        .or_else(|| name.strip_prefix("layers_"))
    {
        Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
            format!("blocks.{n}.hook_resid_post")
        }
        _ => name.into(),
    }
}

/// `model` from the training run's `config.json` one directory up, if present.
fn model_name(dir: &Path) -> String {
    let Some(run_cfg) = dir
        .parent()
        .map(|p| p.join("config.json"))
        .filter(|p| p.is_file())
    else {
        return String::new();
    };
    read_json(&run_cfg)
        .map(|c| json_str(&c, "model").to_string())
        .unwrap_or_default()
}
