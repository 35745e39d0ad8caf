//! SAELens (`decoderesearch/SAELens`, formerly `jbloomAus/SAELens`): v6 and pre-6 layouts.
//!
//! Files (`sae_lens/constants.py`): `cfg.json`, `sae_weights.safetensors` and, optionally,
//! `sparsity.safetensors` with one tensor `"sparsity" [d_sae]` = log10 feature density
//! (written by `SAE.save_model(path, sparsity)` in 5.x and by the training runner).
//!
//! Weights (`state_dict` of `sae_lens/saes/*.py`): `W_enc [d_in, d_sae]`, `b_enc [d_sae]`,
//! `W_dec [d_sae, d_in]`, `b_dec [d_in]`, plus `threshold [d_sae]` for `jumprelu`. Older
//! JumpReLU checkpoints store `log_threshold` (θ = exp), and a `finetuning_scaling_factor` /
//! `scaling_factor [d_sae]` multiplies `f` before decoding (folded into `W_dec` rows here).
//!
//! v6 `cfg.json` (`SAEConfig.to_dict`, `sae_lens/saes/sae.py`): `d_in`, `d_sae`, `dtype`,
//! `device`, `apply_b_dec_to_input`, `normalize_activations`, `reshape_activations`,
//! `metadata {sae_lens_version, sae_lens_training_version, model_name, hook_name, ...}`,
//! `architecture`, and per architecture `k`, `rescale_acts_by_decoder_norm` (`topk`,
//! `topk_sae.py`). `handle_config_defaulting` (`loading/pretrained_sae_loaders.py`) treats a
//! config whose `sae_lens_version` (top level or in `metadata`) is missing or < 6.0.0-rc.0 as
//! pre-6, so [`save_saelens`] writes `metadata.sae_lens_version = "6.0.0"`.
//!
//! Pre-6 `cfg.json` (`SAEConfig.to_dict` in 3.x–5.x): `architecture` ("standard" | "gated" |
//! "jumprelu" | "topk", absent before 4.x), `d_in`, `d_sae`, `activation_fn_str` (or
//! `activation_fn`), `activation_fn_kwargs` (`{"k": ..}` for topk), `apply_b_dec_to_input`,
//! `finetuning_scaling_factor`, `hook_name` (or `hook_point`), `hook_layer`, `model_name`,
//! `normalize_activations`, `dtype`, `device`, ... `handle_pre_6_0_config` maps
//! `activation_fn == "topk"` with `activation_fn_kwargs.k` to architecture `topk`.
//!
//! Forward (`standard_sae.py`, `topk_sae.py`, `jumprelu_sae.py`, `batchtopk_sae.py`):
//! ```text
//! pre = (x − a·b_dec) W_enc + b_enc                      a = apply_b_dec_to_input
//! standard: f = relu(pre)
//! topk:     f = scatter(topk(pre, k).indices, relu(topk(pre, k).values))
//!           (rescale_acts_by_decoder_norm: pre ← pre·‖W_dec,i‖ and f ← f/‖W_dec,i‖ before
//!            decoding; folded here as W_enc·n, b_enc·n, W_dec/n, exactly SAELens's fold)
//! jumprelu: f = relu(pre)·1[pre > relu(θ)]
//! x̂ = f W_dec + b_dec
//! ```
//! BatchTopK trains with a batch-level top-k and is saved for inference as `jumprelu` with
//! `threshold = topk_threshold` broadcast to `[d_sae]` (`BatchTopKTrainingSAE`).
//! `normalize_activations = "expected_average_only_in"` is the identity inside the SAE (the
//! factor is folded by `from_pretrained`); `constant_norm_rescale` and `layer_norm` depend on
//! each input and are rejected.

use std::path::Path;

use serde_json::{Map, Value, json};

use super::{
    CFG_JSON, SaeFormat, TensorMap, finish, json_bool, json_str, json_usize, json_usize_req,
    read_json,
};
use crate::error::{Result, SaeError};
use crate::weights::{Arch, SaeConfig, SaeWeights};

/// The SAELens weights file name.
pub const WEIGHTS_FILE: &str = "sae_weights.safetensors";
/// The SAELens log10 feature density file name.
pub const SPARSITY_FILE: &str = "sparsity.safetensors";
/// The `sae_lens_version` written into `cfg.json` metadata so SAELens reads it as v6.
const SAE_LENS_VERSION: &str = "6.0.0";

/// Loads a SAELens directory (v6 or pre-6, told apart by the `cfg.json` keys).
pub(crate) fn load(dir: &Path) -> Result<(SaeWeights, SaeFormat)> {
    let cfg_path = dir.join(CFG_JSON);
    let cfg = read_json(&cfg_path)?;
    let legacy = [
        "activation_fn_str",
        "activation_fn",
        "activation_fn_kwargs",
        "hook_point",
    ]
    .iter()
    .any(|k| cfg.contains_key(*k))
        || !cfg.contains_key("architecture");
    let format = if legacy {
        SaeFormat::SaeLensLegacy
    } else {
        SaeFormat::SaeLens
    };
    let (arch, rescale) = parse_arch(&cfg, legacy, &cfg_path)?;
    check_normalization(&cfg, &cfg_path)?;

    let d_in = json_usize_req(&cfg, "d_in", &cfg_path)?;
    let d_sae = json_usize_req(&cfg, "d_sae", &cfg_path)?;
    let meta = cfg.get("metadata").and_then(Value::as_object);
    let pick = |key: &str| match meta.map(|m| json_str(m, key)).filter(|s| !s.is_empty()) {
        Some(s) => s.to_string(),
        None => json_str(&cfg, key).to_string(),
    };
    let hook_name = match pick("hook_name") {
        s if s.is_empty() => pick("hook_point"),
        s => s,
    };
    let config = SaeConfig {
        d_in,
        d_sae,
        arch,
        apply_b_dec_to_input: json_bool(&cfg, "apply_b_dec_to_input", true, &cfg_path)?,
        hook_name,
        model_name: pick("model_name"),
    };

    let mut t = TensorMap::read_safetensors(&dir.join(WEIGHTS_FILE))?;
    let mut w_enc = t.take("W_enc", &[d_in, d_sae])?;
    let mut b_enc = t.take("b_enc", &[d_sae])?;
    let mut w_dec = t.take("W_dec", &[d_sae, d_in])?;
    let b_dec = t.take("b_dec", &[d_in])?;
    let threshold = match (
        t.take_opt("threshold", &[d_sae])?,
        t.take_opt("log_threshold", &[d_sae])?,
    ) {
        (Some(th), _) => Some(th),
        (None, Some(log)) => Some(log.into_iter().map(f32::exp).collect()),
        (None, None) => match t.take_opt("topk_threshold", &[])? {
            Some(s) if matches!(arch, Arch::BatchTopK { .. }) => Some(vec![s[0]; d_sae]),
            _ => None,
        },
    };
    if arch == Arch::JumpRelu && threshold.is_none() {
        return Err(SaeError::MissingTensor {
            path: t.path().into(),
            name: "threshold".into(),
        });
    }
    let threshold = if matches!(arch, Arch::Relu | Arch::TopK { .. }) {
        None
    } else {
        threshold
    };
    for name in ["finetuning_scaling_factor", "scaling_factor"] {
        if let Some(s) = t.take_opt(name, &[d_sae])? {
            scale_rows(&mut w_dec, &s, d_in);
        }
    }
    if rescale {
        // SAELens `_fold_norm_topk`: n = max(‖W_dec,i‖, 1e-8); b_enc·n, W_enc[:, i]·n, W_dec[i]/n.
        let norms: Vec<f32> = w_dec
            .chunks_exact(d_in)
            .map(|row| {
                (row.iter()
                    .map(|&v| f64::from(v) * f64::from(v))
                    .sum::<f64>()
                    .sqrt() as f32)
                    .max(1e-8)
            })
            .collect();
        for (b, n) in b_enc.iter_mut().zip(&norms) {
            *b *= n;
        }
        for row in w_enc.chunks_exact_mut(d_sae) {
            for (w, n) in row.iter_mut().zip(&norms) {
                *w *= n;
            }
        }
        let inv: Vec<f32> = norms.iter().map(|n| 1.0 / n).collect();
        scale_rows(&mut w_dec, &inv, d_in);
    }
    let weights = SaeWeights {
        cfg: config,
        w_enc,
        b_enc,
        w_dec,
        b_dec,
        threshold,
    };
    finish(weights, format, t.path())
}

/// Architecture and `rescale_acts_by_decoder_norm` from a v6 or pre-6 `cfg.json`.
fn parse_arch(cfg: &Map<String, Value>, legacy: bool, path: &Path) -> Result<(Arch, bool)> {
    let mut arch = json_str(cfg, "architecture").to_string();
    let mut k = json_usize(cfg, "k", path).or_else(|_| batch_k(cfg, path))?;
    if legacy {
        if arch.is_empty() {
            arch = "standard".into();
        }
        let act = match json_str(cfg, "activation_fn_str") {
            "" => json_str(cfg, "activation_fn"),
            s => s,
        };
        let kwargs_k = cfg
            .get("activation_fn_kwargs")
            .and_then(Value::as_object)
            .map(|kw| json_usize(kw, "k", path))
            .transpose()?
            .flatten();
        if act == "topk" && kwargs_k.is_some() {
            arch = "topk".into();
        }
        k = kwargs_k.or(k);
        if arch == "standard" && !matches!(act, "" | "relu") {
            return Err(unsupported(path, format!("activation function \"{act}\"")));
        }
    }
    let rescale = json_bool(cfg, "rescale_acts_by_decoder_norm", false, path)?;
    let need_k =
        || k.ok_or_else(|| SaeError::format(path, format!("architecture \"{arch}\" needs `k`")));
    let arch = match arch.as_str() {
        "standard" => Arch::Relu,
        "jumprelu" => Arch::JumpRelu,
        "topk" => Arch::TopK { k: need_k()? },
        "batchtopk" => Arch::BatchTopK { k: need_k()? },
        "gated" => return Err(unsupported(path, "gated SAE architecture".to_string())),
        other => {
            return Err(SaeError::UnknownArchitecture {
                path: path.into(),
                arch: other.into(),
            });
        }
    };
    Ok((
        arch,
        rescale && matches!(arch, Arch::TopK { .. } | Arch::BatchTopK { .. }),
    ))
}

/// BatchTopK's `k` is a float (average active latents per row); it is rounded.
fn batch_k(cfg: &Map<String, Value>, path: &Path) -> Result<Option<usize>> {
    match cfg.get("k").and_then(Value::as_f64) {
        Some(k) if k >= 0.5 => Ok(Some(k.round() as usize)),
        _ => Err(SaeError::format(path, "`k` must be a positive number")),
    }
}

fn check_normalization(cfg: &Map<String, Value>, path: &Path) -> Result<()> {
    match cfg.get("normalize_activations") {
        None | Some(Value::Null) | Some(Value::Bool(_)) => Ok(()),
        Some(Value::String(s)) if s == "none" || s == "expected_average_only_in" => Ok(()),
        Some(v) => Err(unsupported(
            path,
            format!("normalize_activations {v} (depends on each input)"),
        )),
    }
}

fn unsupported(path: &Path, what: String) -> SaeError {
    SaeError::Unsupported {
        path: path.into(),
        what,
    }
}

/// `W_dec[i, :] *= s[i]`.
fn scale_rows(w_dec: &mut [f32], s: &[f32], d_in: usize) {
    for (row, &s) in w_dec.chunks_exact_mut(d_in).zip(s) {
        for w in row {
            *w *= s;
        }
    }
}

/// Writes `sae` as a SAELens v6 directory: `cfg.json`, `sae_weights.safetensors` (f32) and,
/// when `log10_density` is given, `sparsity.safetensors`.
///
/// `Relu` → `standard`, `TopK{k}` → `topk` (`rescale_acts_by_decoder_norm: false`),
/// `JumpRelu` → `jumprelu`, `BatchTopK{k}` → `jumprelu` with its threshold (SAELens's
/// inference form; `metadata.training_architecture = "batchtopk"`).
///
/// The three files are one unit: they are written into a staging sibling of `dir` and swapped
/// in at once ([`lantern_output::DirStage`]), so a reader finds the old SAE or the new one,
/// never one's `cfg.json` beside the other's weights; a `sparsity.safetensors` of an earlier
/// SAE does not survive when `log10_density` is `None`. Other files in `dir` are kept.
pub fn save_saelens(sae: &SaeWeights, dir: &Path, log10_density: Option<&[f32]>) -> Result<()> {
    let stage = lantern_output::DirStage::new(dir)?;
    write_saelens_files(sae, stage.path(), log10_density)?;
    stage.commit(&SAELENS_FILES)?;
    Ok(())
}

/// The files of one SAE in the SAELens layout.
pub const SAELENS_FILES: [&str; 3] = [CFG_JSON, WEIGHTS_FILE, SPARSITY_FILE];

/// Writes the SAELens files of `sae` into `dir`, a directory being staged (no atomicity of
/// its own: the caller swaps the whole directory in, as [`save_saelens`] does).
pub fn write_saelens_files(
    sae: &SaeWeights,
    dir: &Path,
    log10_density: Option<&[f32]>,
) -> Result<()> {
    sae.validate()?;
    let c = &sae.cfg;
    if let Some(d) = log10_density
        && d.len() != c.d_sae
    {
        let msg = format!(
            "log10_density has {} values, expected d_sae = {}",
            d.len(),
            c.d_sae
        );
        return Err(SaeError::Invalid { msg });
    }
    let threshold = match (c.arch, &sae.threshold) {
        (Arch::JumpRelu | Arch::BatchTopK { .. }, Some(t)) => Some(t.as_slice()),
        (Arch::BatchTopK { .. }, None) => {
            let msg = "BatchTopK needs a threshold to be saved as SAELens jumprelu".to_string();
            return Err(SaeError::Invalid { msg });
        }
        _ => None,
    };
    let mut metadata = json!({
        "sae_lens_version": SAE_LENS_VERSION,
        "sae_lens_training_version": SAE_LENS_VERSION,
        "model_name": c.model_name,
        "hook_name": c.hook_name,
        "hook_head_index": null,
        "lantern_version": env!("CARGO_PKG_VERSION"),
    });
    let mut cfg = json!({
        "d_in": c.d_in,
        "d_sae": c.d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": c.apply_b_dec_to_input,
        "normalize_activations": "none",
        "reshape_activations": "none",
    });
    match c.arch {
        Arch::Relu => cfg["architecture"] = json!("standard"),
        Arch::JumpRelu => cfg["architecture"] = json!("jumprelu"),
        Arch::TopK { k } => {
            cfg["architecture"] = json!("topk");
            cfg["k"] = json!(k);
            cfg["rescale_acts_by_decoder_norm"] = json!(false);
        }
        Arch::BatchTopK { k } => {
            cfg["architecture"] = json!("jumprelu");
            metadata["training_architecture"] = json!("batchtopk");
            metadata["training_architecture_details"] = json!({ "k": k });
        }
    }
    cfg["metadata"] = metadata;

    std::fs::create_dir_all(dir).map_err(|e| SaeError::io(dir, e))?;
    let (d_in, d_sae) = (c.d_in, c.d_sae);
    let mut tensors = vec![
        ("W_enc", vec![d_in, d_sae], sae.w_enc.as_slice()),
        ("b_enc", vec![d_sae], sae.b_enc.as_slice()),
        ("W_dec", vec![d_sae, d_in], sae.w_dec.as_slice()),
        ("b_dec", vec![d_in], sae.b_dec.as_slice()),
    ];
    if let Some(t) = threshold {
        tensors.push(("threshold", vec![d_sae], t));
    }
    write_safetensors(&dir.join(WEIGHTS_FILE), &tensors)?;
    if let Some(d) = log10_density {
        write_safetensors(&dir.join(SPARSITY_FILE), &[("sparsity", vec![d_sae], d)])?;
    }
    let text = serde_json::to_string_pretty(&cfg)
        .map_err(|e| SaeError::format(dir.join(CFG_JSON), e.to_string()))?;
    let path = dir.join(CFG_JSON);
    std::fs::write(&path, text).map_err(|e| SaeError::io(&path, e))
}

/// Reads `sparsity.safetensors` (`"sparsity" [d_sae]`, log10 feature density) in `dir`, if
/// present.
pub fn load_log10_density(dir: &Path) -> Result<Option<Vec<f32>>> {
    let path = dir.join(SPARSITY_FILE);
    if !path.is_file() {
        return Ok(None);
    }
    let mut t = TensorMap::read_safetensors(&path)?;
    let n = match t.shape("sparsity") {
        Some([n]) => *n,
        Some(shape) => {
            return Err(SaeError::Shape {
                path,
                name: "sparsity".into(),
                expected: vec![shape.iter().product()],
                got: shape.to_vec(),
            });
        }
        None => 0,
    };
    t.take("sparsity", &[n]).map(Some)
}

/// Writes f32 tensors as safetensors.
fn write_safetensors(path: &Path, tensors: &[(&str, Vec<usize>, &[f32])]) -> Result<()> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, data)| data.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), b)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), b)
                .map(|v| (*name, v))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| SaeError::format(path, format!("cannot build safetensors: {e}")))?;
    let buf = safetensors::serialize(views, None)
        .map_err(|e| SaeError::format(path, format!("cannot serialize safetensors: {e}")))?;
    std::fs::write(path, &buf).map_err(|e| SaeError::io(path, e))
}
