//! Direction files: what feature search writes and steering reads (DESIGN.md).
//!
//! A safetensors file with one f32 tensor `layer.{L}` `[d_model]` per layer and string
//! metadata: `hook` (the site, e.g. `resid_post`), `model`, `method`, `tokens`, `n_pos`,
//! `n_neg`, `normalized`, plus method-specific entries (a probe's held-out accuracy per layer,
//! ...). Layer `L` of a `resid_post` direction is `blocks.L.hook_resid_post` = Hugging Face
//! `hidden_states[L+1]` = llama.cpp control vector `direction.L`.
//!
//! [`Directions::read`] also takes the plain-tensor exports of other tools:
//! - llama.cpp control vectors (GGUF, `general.architecture = controlvector`, tensors
//!   `direction.N` added to the output of block N → layer N at `resid_post`; written by
//!   llama.cpp's cvector-generator and by repeng);
//! - `.npy`, or `.safetensors` without `layer.{L}` keys holding one tensor: a 1-D vector is one
//!   layer (which one the caller says); a 2-D `[n, d]` array is read in the `hidden_states`
//!   index of persona vectors and steering-vectors exports, row `k` = layer `k − 1` at
//!   `resid_post` (row 0, the embedding output, is dropped).

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::TensorView;
use safetensors::{Dtype as StDtype, SafeTensors};

use crate::Result;
use crate::error::{input, io_err};

/// One vector per layer, with where and how it was measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Directions {
    /// `layer → vector [d_model]`.
    pub layers: BTreeMap<usize, Vec<f32>>,
    pub meta: DirectionMeta,
}

/// The metadata of a direction file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DirectionMeta {
    /// The site of every layer's vector: `resid_post`, `resid_pre`, `attn_out`, `mlp_out`, ...
    pub hook: String,
    pub model: String,
    /// `mean-diff`, `response-mean`, `paired-mean`, `pca-diff`, `pca-center`, `probe`,
    /// `imported:<kind>`, ...
    pub method: String,
    /// The token selection the statistics were taken over (`answer`, `last-prompt`, ...).
    pub tokens: String,
    /// Sequences on the positive / negative side.
    pub n_pos: u64,
    pub n_neg: u64,
    /// Whether every vector has unit norm.
    pub normalized: bool,
    /// Further entries (method statistics), written as string metadata.
    pub extra: BTreeMap<String, String>,
}

const CORE_KEYS: [&str; 7] = [
    "hook",
    "model",
    "method",
    "tokens",
    "n_pos",
    "n_neg",
    "normalized",
];

impl Directions {
    /// The common width of the vectors (0 when empty).
    pub fn d_model(&self) -> usize {
        self.layers.values().next().map_or(0, Vec::len)
    }

    /// Layer `l`'s vector, or an error naming the layers the file has.
    pub fn layer(&self, l: usize, path: &Path) -> Result<&[f32]> {
        self.layers.get(&l).map(Vec::as_slice).ok_or_else(|| {
            input(
                path,
                format!(
                    "no direction for layer {l}; the file has layers {}",
                    self.layer_list()
                ),
            )
        })
    }

    /// The layers as `5, 6, 7`.
    pub fn layer_list(&self) -> String {
        let v: Vec<String> = self.layers.keys().map(|l| l.to_string()).collect();
        v.join(", ")
    }

    /// Writes the direction file atomically (temporary file, then rename).
    pub fn write(&self, path: &Path) -> Result<()> {
        let d = self.d_model();
        if let Some((l, v)) = self.layers.iter().find(|(_, v)| v.len() != d) {
            return Err(input(
                path,
                format!("layer {l} has {} values, layer 0's width is {d}", v.len()),
            ));
        }
        let bytes: Vec<(String, Vec<u8>)> = self
            .layers
            .iter()
            .map(|(l, v)| {
                (
                    format!("layer.{l}"),
                    v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                )
            })
            .collect();
        let views: Vec<(String, TensorView)> = bytes
            .iter()
            .map(|(k, b)| {
                let view = TensorView::new(StDtype::F32, vec![d], b).expect("length matches");
                (k.clone(), view)
            })
            .collect();
        let m = &self.meta;
        let mut meta: HashMap<String, String> = m.extra.clone().into_iter().collect();
        for (k, v) in [
            ("hook", m.hook.clone()),
            ("model", m.model.clone()),
            ("method", m.method.clone()),
            ("tokens", m.tokens.clone()),
            ("n_pos", m.n_pos.to_string()),
            ("n_neg", m.n_neg.to_string()),
            ("normalized", m.normalized.to_string()),
        ] {
            meta.insert(k.to_string(), v);
        }
        let buf = safetensors::serialize(views, Some(meta))
            .map_err(|e| input(path, format!("cannot serialize safetensors: {e}")))?;
        Ok(lantern_output::write_atomic(path, &buf)?)
    }

    /// Reads a direction file or another tool's export (see the module docs). `layer` places
    /// a single 1-D vector; it is ignored for files that name their layers.
    pub fn read(path: &Path, layer: Option<usize>) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(io_err(path))?;
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase());
        let dirs = if bytes.starts_with(b"GGUF") {
            read_control_vector(path)?
        } else if bytes.starts_with(b"\x93NUMPY") || ext.as_deref() == Some("npy") {
            let (shape, data) = read_npy(path, &bytes)?;
            from_array(path, &shape, data, layer, "npy")?
        } else {
            read_safetensors(path, &bytes, layer)?
        };
        let d = dirs.d_model();
        if dirs.layers.is_empty() || d == 0 {
            return Err(input(path, "holds no direction"));
        }
        if let Some((l, v)) = dirs.layers.iter().find(|(_, v)| v.len() != d) {
            return Err(input(
                path,
                format!("layer {l} has {} values, the others {d}", v.len()),
            ));
        }
        if let Some((l, _)) = dirs
            .layers
            .iter()
            .find(|(_, v)| v.iter().any(|x| !x.is_finite()))
        {
            return Err(input(path, format!("layer {l} holds NaN or ±∞")));
        }
        Ok(dirs)
    }
}

fn read_safetensors(path: &Path, bytes: &[u8], layer: Option<usize>) -> Result<Directions> {
    let bad = |e: safetensors::SafeTensorError| {
        input(
            path,
            format!("not a direction file (safetensors, GGUF control vector or .npy): {e}"),
        )
    };
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(bad)?;
    let st = SafeTensors::deserialize(bytes).map_err(bad)?;
    let meta: BTreeMap<String, String> = header
        .metadata()
        .clone()
        .map(|m| m.into_iter().collect())
        .unwrap_or_default();
    let f32_of = |name: &str| -> Result<(Vec<usize>, Vec<f32>)> {
        let t = st.tensor(name).map_err(bad)?;
        let data = match t.dtype() {
            StDtype::F64 => t
                .data()
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                .collect(),
            dt => lantern_lm::weights::to_f32(dt, t.data()).ok_or_else(|| {
                input(
                    path,
                    format!("tensor {name} is {dt:?}; expected a float type"),
                )
            })?,
        };
        Ok((t.shape().to_vec(), data))
    };
    let names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
    let layered: Vec<(usize, &String)> = names
        .iter()
        .filter_map(|n| Some((n.strip_prefix("layer.")?.parse().ok()?, n)))
        .collect();
    if layered.is_empty() {
        if names.len() != 1 {
            return Err(input(
                path,
                format!(
                    "no layer.{{L}} tensors, and {} tensors ({}) instead of one array to read",
                    names.len(),
                    names.join(", ")
                ),
            ));
        }
        let (shape, data) = f32_of(&names[0])?;
        return from_array(path, &shape, data, layer, "safetensors");
    }
    let mut layers = BTreeMap::new();
    for (l, name) in layered {
        let (shape, data) = f32_of(name)?;
        if shape.len() != 1 {
            return Err(input(
                path,
                format!("tensor {name} has shape {shape:?}; expected [d_model]"),
            ));
        }
        layers.insert(l, data);
    }
    let get = |k: &str| meta.get(k).cloned().unwrap_or_default();
    let num = |k: &str| -> Result<u64> {
        match meta.get(k) {
            None => Ok(0),
            Some(v) => v
                .parse()
                .map_err(|_| input(path, format!("metadata {k} = {v:?} is not a count"))),
        }
    };
    Ok(Directions {
        layers,
        meta: DirectionMeta {
            hook: match get("hook") {
                h if h.is_empty() => "resid_post".into(),
                h => h,
            },
            model: get("model"),
            method: get("method"),
            tokens: get("tokens"),
            n_pos: num("n_pos")?,
            n_neg: num("n_neg")?,
            normalized: get("normalized") == "true",
            extra: meta
                .iter()
                .filter(|(k, _)| !CORE_KEYS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        },
    })
}

/// A plain array as directions (module docs: 1-D at `layer`, 2-D in the `hidden_states` index).
fn from_array(
    path: &Path,
    shape: &[usize],
    data: Vec<f32>,
    layer: Option<usize>,
    kind: &str,
) -> Result<Directions> {
    let mut layers = BTreeMap::new();
    if shape.contains(&0) {
        return Err(input(
            path,
            format!("array of shape {shape:?} holds no values; expected a direction"),
        ));
    }
    match shape {
        [_] => {
            let l = layer.ok_or_else(|| {
                input(
                    path,
                    "a single vector with no layer recorded; say which layer it is",
                )
            })?;
            layers.insert(l, data);
        }
        [n, d] if *n >= 2 => {
            for (k, row) in data.chunks_exact(*d).enumerate().skip(1) {
                layers.insert(k - 1, row.to_vec());
            }
            debug_assert_eq!(layers.len(), n - 1);
        }
        _ => {
            return Err(input(
                path,
                format!(
                    "array of shape {shape:?}; expected [d_model] or [n_layers + 1, d_model] \
                     (hidden_states index)"
                ),
            ));
        }
    }
    Ok(imported(layers, kind, String::new()))
}

/// Directions read from another tool's file: `resid_post`, method `imported:<kind>`,
/// `normalized` when every vector has unit norm.
fn imported(layers: BTreeMap<usize, Vec<f32>>, kind: &str, model: String) -> Directions {
    let normalized = layers
        .values()
        .all(|v| (crate::linalg::norm(v) - 1.0).abs() < 1e-4);
    Directions {
        layers,
        meta: DirectionMeta {
            hook: "resid_post".into(),
            model,
            method: format!("imported:{kind}"),
            normalized,
            ..Default::default()
        },
    }
}

fn read_npy(path: &Path, bytes: &[u8]) -> Result<(Vec<usize>, Vec<f32>)> {
    lantern_acts::npy::check_npy_header(bytes)
        .map_err(|why| input(path, format!("not a readable .npy file: {why}")))?;
    let npy = npyz::NpyFile::new(bytes)
        .map_err(|e| input(path, format!("not a readable .npy file: {e}")))?;
    let shape: Vec<usize> = npy.shape().iter().map(|&s| s as usize).collect();
    let bad = |e: std::io::Error| input(path, format!("cannot read the array: {e}"));
    let data: Vec<f32> = match npy.dtype() {
        npyz::DType::Plain(t) if t.type_char() == npyz::TypeChar::Float && t.size_field() == 8 => {
            npy.into_vec::<f64>()
                .map_err(bad)?
                .into_iter()
                .map(|x| x as f32)
                .collect()
        }
        npyz::DType::Plain(t) if t.type_char() == npyz::TypeChar::Float && t.size_field() == 4 => {
            npy.into_vec::<f32>().map_err(bad)?
        }
        other => {
            return Err(input(
                path,
                format!("dtype {}; expected float32 or float64", other.descr()),
            ));
        }
    };
    Ok((shape, data))
}

/// A llama.cpp control vector: `direction.N` (added to block N's output) → layer N at
/// `resid_post`.
fn read_control_vector(path: &Path) -> Result<Directions> {
    let f = lantern_lm::gguf::GgufFile::open(path)?;
    if f.architecture() != Some("controlvector") {
        return Err(input(
            path,
            format!(
                "a GGUF file with general.architecture = {:?}; expected a control vector \
                 (controlvector)",
                f.architecture().unwrap_or("(none)")
            ),
        ));
    }
    let mut layers = BTreeMap::new();
    for info in f.tensor_infos() {
        let Some(n) = info
            .name
            .strip_prefix("direction.")
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        let (_, data) = f.dequantize(&info.name)?;
        layers.insert(n, data);
    }
    if layers.is_empty() {
        return Err(input(path, "control vector without direction.N tensors"));
    }
    let hint = f.get_str("controlvector.model_hint").unwrap_or_default();
    Ok(imported(layers, "controlvector", hint.to_string()))
}
