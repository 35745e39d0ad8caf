//! SAE file formats: detection, loading into [`SaeWeights`], and saving as SAELens v6.
//!
//! | format | files | forward |
//! |---|---|---|
//! | SAELens v6 ([`saelens`]) | `cfg.json` (has `architecture`), `sae_weights.safetensors`, optional `sparsity.safetensors` | `pre = (x − a·b_dec) W_enc + b_enc` |
//! | SAELens < 6 ([`saelens`]) | `cfg.json` with `activation_fn_str`/`activation_fn_kwargs`, same weights | same |
//! | sparsify ([`sparsify`]) | `cfg.json` + `sae.safetensors` (`encoder.weight [m, d]` = W_encᵀ) | `pre = (x − b_dec) W_enc + b_enc`, TopK |
//! | Gemma Scope ([`gemma_scope`]) | `params.npz`, or v2 `params.safetensors` (lower-case keys) | `pre = x W_enc + b_enc`, JumpReLU |
//!
//! Tensors may be stored as f32, f16, bf16 or f64; they are converted to f32 on load.
//! Every loaded SAE passes [`SaeWeights::validate`].

pub mod gemma_scope;
pub mod saelens;
pub mod sparsify;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
use serde_json::{Map, Value};

use crate::error::{Result, SaeError};
use crate::weights::SaeWeights;

pub use saelens::{SAELENS_FILES, load_log10_density, save_saelens, write_saelens_files};

/// The on-disk layout an SAE was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaeFormat {
    /// SAELens ≥ 6: `cfg.json` with `architecture` and `metadata`.
    SaeLens,
    /// SAELens < 6: `cfg.json` with `activation_fn_str` / `activation_fn_kwargs`.
    SaeLensLegacy,
    /// EleutherAI sparsify: `cfg.json` + `sae.safetensors`.
    Sparsify,
    /// Gemma Scope (Gemma 2): `params.npz`.
    GemmaScopeNpz,
    /// Gemma Scope 2 (Gemma 3): `params.safetensors` with lower-case keys.
    GemmaScopeSafetensors,
}

pub(crate) const CFG_JSON: &str = "cfg.json";
pub(crate) const SAELENS_WEIGHTS: &str = saelens::WEIGHTS_FILE;
pub(crate) const SPARSIFY_WEIGHTS: &str = sparsify::WEIGHTS_FILE;

/// Detects the format of a directory or file and loads it.
///
/// A directory is recognised by its files: `cfg.json` + `sae_weights.safetensors` (SAELens,
/// v6 or legacy by the `cfg.json` keys), `cfg.json` + `sae.safetensors` (sparsify),
/// `params.npz` or `params.safetensors` (Gemma Scope). A file is loaded as the format its name
/// implies (`*.npz` → Gemma Scope; `sae_weights.safetensors`, `sae.safetensors`, `cfg.json` →
/// the directory holding it; any other `*.safetensors` → Gemma Scope 2).
pub fn load_sae(path: &Path) -> Result<(SaeWeights, SaeFormat)> {
    let meta = std::fs::metadata(path).map_err(|e| SaeError::io(path, e))?;
    if meta.is_file() {
        return load_file(path);
    }
    let has = |name: &str| path.join(name).is_file();
    let cfg = path.join(CFG_JSON);
    match (has(CFG_JSON), has(SAELENS_WEIGHTS), has(SPARSIFY_WEIGHTS)) {
        (true, true, _) => saelens::load(path),
        (true, false, true) => sparsify::load(path),
        (_, false, false) if has(gemma_scope::NPZ_FILE) => {
            gemma_scope::load_npz(&path.join(gemma_scope::NPZ_FILE))
        }
        (_, false, false) if has(gemma_scope::SAFETENSORS_FILE) => {
            gemma_scope::load_safetensors(&path.join(gemma_scope::SAFETENSORS_FILE))
        }
        (true, false, false) => {
            let json = read_json(&cfg)?;
            if json.contains_key("k")
                && (json.contains_key("num_latents") || json.contains_key("expansion_factor"))
                && !json.contains_key("d_sae")
            {
                Err(missing(
                    path,
                    SPARSIFY_WEIGHTS,
                    "the sparsify weights next to cfg.json",
                ))
            } else if json.contains_key("d_sae") || json.contains_key("architecture") {
                Err(missing(
                    path,
                    SAELENS_WEIGHTS,
                    "the SAELens weights next to cfg.json",
                ))
            } else {
                Err(SaeError::UnknownFormat { path: path.into() })
            }
        }
        (false, true, _) => Err(missing(
            path,
            CFG_JSON,
            "the SAELens config next to sae_weights.safetensors",
        )),
        (false, false, true) => Err(missing(
            path,
            CFG_JSON,
            "the sparsify config next to sae.safetensors",
        )),
        _ => Err(SaeError::UnknownFormat { path: path.into() }),
    }
}

fn load_file(path: &Path) -> Result<(SaeWeights, SaeFormat)> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let parent = || match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if name == CFG_JSON || name == SAELENS_WEIGHTS || name == SPARSIFY_WEIGHTS {
        load_sae(&parent())
    } else if name.ends_with(".npz") {
        gemma_scope::load_npz(path)
    } else if name.ends_with(".safetensors") {
        gemma_scope::load_safetensors(path)
    } else {
        Err(SaeError::UnknownFormat { path: path.into() })
    }
}

fn missing(dir: &Path, file: &str, what: &str) -> SaeError {
    SaeError::MissingFile {
        path: dir.into(),
        file: file.into(),
        what: what.into(),
    }
}

/// Reads a JSON object (`cfg.json`).
pub(crate) fn read_json(path: &Path) -> Result<Map<String, Value>> {
    let text = std::fs::read_to_string(path).map_err(|e| SaeError::io(path, e))?;
    match serde_json::from_str(&text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(SaeError::format(path, "expected a JSON object")),
        Err(e) => Err(SaeError::format(path, format!("invalid JSON: {e}"))),
    }
}

/// A non-negative integer `cfg.json` key (integral floats such as `32.0` are accepted).
pub(crate) fn json_usize(
    cfg: &Map<String, Value>,
    key: &str,
    path: &Path,
) -> Result<Option<usize>> {
    match cfg.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .or_else(|| {
                v.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                    .map(|f| f as u64)
            })
            .and_then(|u| usize::try_from(u).ok())
            .map(Some)
            .ok_or_else(|| {
                SaeError::format(
                    path,
                    format!("`{key}` must be a non-negative integer, got {v}"),
                )
            }),
    }
}

/// A required non-negative integer `cfg.json` key.
pub(crate) fn json_usize_req(cfg: &Map<String, Value>, key: &str, path: &Path) -> Result<usize> {
    json_usize(cfg, key, path)?
        .ok_or_else(|| SaeError::format(path, format!("missing key `{key}`")))
}

/// A boolean `cfg.json` key with a default.
pub(crate) fn json_bool(
    cfg: &Map<String, Value>,
    key: &str,
    default: bool,
    path: &Path,
) -> Result<bool> {
    match cfg.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(SaeError::format(
            path,
            format!("`{key}` must be a boolean, got {v}"),
        )),
    }
}

/// A string `cfg.json` key ("" when absent or null).
pub(crate) fn json_str<'a>(cfg: &'a Map<String, Value>, key: &str) -> &'a str {
    cfg.get(key).and_then(Value::as_str).unwrap_or("")
}

/// A tensor converted to f32, or the dtype it had when it could not be converted.
enum Entry {
    F32 { shape: Vec<usize>, data: Vec<f32> },
    Other { dtype: String },
}

/// The tensors of one weights file, converted to f32, taken out by name with shape checks.
pub(crate) struct TensorMap {
    path: PathBuf,
    tensors: BTreeMap<String, Entry>,
}

impl TensorMap {
    /// Reads every tensor of a safetensors file (F32, F16, BF16 and F64 are converted).
    pub(crate) fn read_safetensors(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| SaeError::io(path, e))?;
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| SaeError::format(path, format!("invalid safetensors file: {e}")))?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.iter() {
            let shape = view.shape().to_vec();
            let entry = match bytes_to_f32(view.dtype(), view.data()) {
                Some(data) => Entry::F32 { shape, data },
                None => Entry::Other {
                    dtype: format!("{:?}", view.dtype()),
                },
            };
            tensors.insert(name.to_string(), entry);
        }
        Ok(TensorMap {
            path: path.into(),
            tensors,
        })
    }

    /// Reads every array of an `.npz` archive (`<f4`, `<f8`, C or Fortran order).
    pub(crate) fn read_npz(path: &Path) -> Result<Self> {
        let fmt = |e: std::io::Error| SaeError::format(path, format!("invalid npz archive: {e}"));
        let mut npz = npyz::npz::NpzArchive::open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => SaeError::io(path, e),
            _ => fmt(e),
        })?;
        let names: Vec<String> = npz.array_names().map(str::to_string).collect();
        let mut tensors = BTreeMap::new();
        for name in names {
            // The member's header, checked before npyz parses it (see lantern_acts::npy).
            if let Ok(member) = npz.zip_archive().by_name(&format!("{name}.npy")) {
                let mut head = Vec::new();
                std::io::Read::read_to_end(
                    &mut std::io::Read::take(member, (lantern_acts::npy::MAX_HEADER + 12) as u64),
                    &mut head,
                )
                .map_err(fmt)?;
                lantern_acts::npy::check_npy_header(&head).map_err(|why| {
                    SaeError::format(path, format!("invalid npz archive: array `{name}`: {why}"))
                })?;
            }
            let Some(file) = npz.by_name(&name).map_err(fmt)? else {
                continue;
            };
            let shape = file
                .shape()
                .iter()
                .map(|&d| usize::try_from(d))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|_| SaeError::format(path, format!("array `{name}` is too large")))?;
            let fortran = file.order() == npyz::Order::Fortran;
            let dtype = file.dtype();
            let descr = dtype.descr();
            let data = match &dtype {
                npyz::DType::Plain(ts) if ts.type_char() == npyz::TypeChar::Float => {
                    match ts.size_field() {
                        4 => Some(file.into_vec::<f32>().map_err(fmt)?),
                        8 => Some(
                            file.into_vec::<f64>()
                                .map_err(fmt)?
                                .into_iter()
                                .map(|v| v as f32)
                                .collect(),
                        ),
                        _ => None,
                    }
                }
                _ => None,
            };
            let entry = match data {
                Some(data) if fortran && shape.len() == 2 => Entry::F32 {
                    data: transpose(&data, shape[1], shape[0]),
                    shape,
                },
                Some(_) if fortran && shape.len() > 2 => Entry::Other {
                    dtype: format!("{descr} (Fortran order)"),
                },
                Some(data) => Entry::F32 { shape, data },
                None => Entry::Other { dtype: descr },
            };
            tensors.insert(name, entry);
        }
        Ok(TensorMap {
            path: path.into(),
            tensors,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The shape of a tensor, if present and convertible.
    pub(crate) fn shape(&self, name: &str) -> Option<&[usize]> {
        match self.tensors.get(name) {
            Some(Entry::F32 { shape, .. }) => Some(shape),
            _ => None,
        }
    }

    /// Removes `name` and checks its shape (`[]` and `[1]` both match a scalar `[]`).
    pub(crate) fn take(&mut self, name: &str, expected: &[usize]) -> Result<Vec<f32>> {
        self.take_opt(name, expected)?
            .ok_or_else(|| SaeError::MissingTensor {
                path: self.path.clone(),
                name: name.into(),
            })
    }

    /// Like [`TensorMap::take`] but `Ok(None)` when the tensor is absent.
    pub(crate) fn take_opt(&mut self, name: &str, expected: &[usize]) -> Result<Option<Vec<f32>>> {
        match self.tensors.remove(name) {
            None => Ok(None),
            Some(Entry::Other { dtype }) => Err(SaeError::Dtype {
                path: self.path.clone(),
                name: name.into(),
                dtype,
            }),
            Some(Entry::F32 { shape, data }) => {
                let scalar = expected.is_empty() && (shape.is_empty() || shape == [1]);
                if shape != expected && !scalar {
                    return Err(SaeError::Shape {
                        path: self.path.clone(),
                        name: name.into(),
                        expected: expected.to_vec(),
                        got: shape,
                    });
                }
                Ok(Some(data))
            }
        }
    }

    /// Takes the first of `names` that is present; `MissingTensor` names the first.
    pub(crate) fn take_any(&mut self, names: &[&str], expected: &[usize]) -> Result<Vec<f32>> {
        let name = names.iter().find(|n| self.contains(n)).unwrap_or(&names[0]);
        self.take(name, expected)
    }
}

/// Little-endian tensor bytes to f32 (`None` for non-float dtypes).
fn bytes_to_f32(dtype: Dtype, data: &[u8]) -> Option<Vec<f32>> {
    Some(match dtype {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::F64 => data
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32)
            .collect(),
        _ => return None,
    })
}

/// Transposes a row-major `[rows, cols]` matrix into `[cols, rows]`.
pub(crate) fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; data.len()];
    for (r, row) in data.chunks_exact(cols.max(1)).take(rows).enumerate() {
        for (c, &v) in row.iter().enumerate() {
            out[c * rows + r] = v;
        }
    }
    out
}

/// Checks the loaded weights and returns them with their format.
pub(crate) fn finish(
    weights: SaeWeights,
    format: SaeFormat,
    path: &Path,
) -> Result<(SaeWeights, SaeFormat)> {
    weights
        .validate()
        .map_err(|e| SaeError::format(path, e.to_string()))?;
    Ok((weights, format))
}
