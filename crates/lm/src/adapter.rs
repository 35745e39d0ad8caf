//! PEFT LoRA adapters (`adapter_config.json` + `adapter_model.safetensors`), merged into the
//! base weights at load: for every adapted linear module with weight `W [out, in]`,
//!
//! ```text
//! W' = W + s · B A          A = lora_A [r, in], B = lora_B [out, r]
//! s  = α / r                (use_rslora: s = α / √r; Kalajdzievski 2023)
//! ```
//!
//! with `α` = `lora_alpha` (or its `alpha_pattern` entry) and `r` the rank of that module's `A`
//! (which also covers `rank_pattern`). `fan_in_fan_out` modules (GPT-2's `Conv1D`, stored
//! `[in, out]`) get `(B A)ᵀ`. `modules_to_save` weights replace the base weights whole. This is
//! how emergent-misalignment model organisms ship (rank-1 adapters on one `down_proj`, rank-32
//! on every module), so the unmerged `A` and `B` stay available ([`LoraAdapter::layers`]):
//! a rank-1 adapter's `B` is a direction in the residual stream.
//!
//! ```no_run
//! use lantern_lm::adapter::LoraAdapter;
//! let a = LoraAdapter::load("em-finetune/".as_ref())?;
//! let down = a.layer("model.layers.21.mlp.down_proj").expect("adapted");
//! println!("rank {}, scale {}, B is [{}, {}]", down.rank(), down.scale, down.b.shape[0], down.b.shape[1]);
//! # Ok::<(), lantern_lm::LmError>(())
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::SafeTensors;
use serde_json::Value;

use crate::weights::{HostTensor, to_f32};
use crate::{LmError, Result};

/// The parts of `adapter_config.json` the merge uses.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraConfig {
    pub r: usize,
    pub lora_alpha: f64,
    pub use_rslora: bool,
    pub fan_in_fan_out: bool,
    pub target_modules: Vec<String>,
    pub layers_to_transform: Option<Vec<usize>>,
    pub modules_to_save: Vec<String>,
    /// Per-module `α`, keyed by a module name or name suffix.
    pub alpha_pattern: BTreeMap<String, f64>,
}

/// One adapted module: its low-rank factors and scale.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraLayer {
    /// Hugging Face module name, e.g. `model.layers.3.mlp.down_proj`.
    pub module: String,
    /// `lora_A` `[r, in]`.
    pub a: HostTensor,
    /// `lora_B` `[out, r]`.
    pub b: HostTensor,
    /// `s` of the module docs.
    pub scale: f64,
}

impl LoraLayer {
    pub fn rank(&self) -> usize {
        self.a.shape[0]
    }

    /// `s · B A` `[out, in]`, accumulated in f64.
    pub fn delta(&self) -> HostTensor {
        let (r, n_in, n_out) = (self.rank(), self.a.shape[1], self.b.shape[0]);
        let mut data = vec![0.0f32; n_out * n_in];
        for o in 0..n_out {
            for i in 0..n_in {
                let mut acc = 0.0f64;
                for k in 0..r {
                    acc += f64::from(self.b.data[o * r + k]) * f64::from(self.a.data[k * n_in + i]);
                }
                data[o * n_in + i] = (self.scale * acc) as f32;
            }
        }
        HostTensor {
            shape: vec![n_out, n_in],
            data,
        }
    }
}

/// A PEFT LoRA adapter read from its directory.
#[derive(Clone, Debug)]
pub struct LoraAdapter {
    pub dir: PathBuf,
    pub config: LoraConfig,
    /// Adapted modules, by name.
    pub layers: Vec<LoraLayer>,
    /// `modules_to_save` weights under their Hugging Face names (`lm_head.weight`, ...).
    pub replaced: BTreeMap<String, HostTensor>,
}

/// The prefix PEFT puts before Hugging Face names in `adapter_model.safetensors`.
const PREFIX: &str = "base_model.model.";

impl LoraAdapter {
    /// Reads `dir/adapter_config.json` and `dir/adapter_model.safetensors`.
    pub fn load(dir: &Path) -> Result<Self> {
        let cfg_path = dir.join("adapter_config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| LmError::io(&cfg_path, e))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| LmError::format(&cfg_path, format!("not valid JSON: {e}")))?;
        let config = parse_config(&v, &cfg_path)?;
        let st_path = dir.join("adapter_model.safetensors");
        let bytes = std::fs::read(&st_path).map_err(|e| LmError::io(&st_path, e))?;
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| LmError::format(&st_path, format!("not a safetensors file: {e}")))?;
        let mut a_of = BTreeMap::new();
        let mut b_of = BTreeMap::new();
        let mut replaced = BTreeMap::new();
        for (key, view) in st.tensors() {
            let bad = |msg: String| LmError::Tensor {
                path: st_path.clone(),
                name: key.clone(),
                msg,
            };
            let name = key
                .strip_prefix(PREFIX)
                .ok_or_else(|| bad(format!("expected a name starting with '{PREFIX}'")))?;
            let data = to_f32(view.dtype(), view.data()).ok_or_else(|| {
                bad(format!(
                    "dtype {:?} (expected F32, F16 or BF16)",
                    view.dtype()
                ))
            })?;
            let t = HostTensor {
                shape: view.shape().to_vec(),
                data,
            };
            if let Some(m) = name.strip_suffix(".lora_A.weight") {
                a_of.insert(m.to_string(), t);
            } else if let Some(m) = name.strip_suffix(".lora_B.weight") {
                b_of.insert(m.to_string(), t);
            } else if name.contains(".lora_") {
                return Err(bad(
                    "an unsupported LoRA tensor (expected lora_A / lora_B weights)".into(),
                ));
            } else {
                replaced.insert(name.to_string(), t);
            }
        }
        let mut layers = Vec::with_capacity(a_of.len());
        for (module, a) in a_of {
            let b = b_of.remove(&module).ok_or_else(|| LmError::Tensor {
                path: st_path.clone(),
                name: format!("{PREFIX}{module}.lora_B.weight"),
                msg: "missing (lora_A has no lora_B)".into(),
            })?;
            let ok = a.shape.len() == 2 && b.shape.len() == 2 && a.shape[0] == b.shape[1];
            if !ok || a.shape[0] == 0 {
                return Err(LmError::Tensor {
                    path: st_path.clone(),
                    name: format!("{PREFIX}{module}"),
                    msg: format!(
                        "lora_A {:?} and lora_B {:?} are not [r, in] and [out, r]",
                        a.shape, b.shape
                    ),
                });
            }
            let r = a.shape[0] as f64;
            let alpha = config
                .alpha_pattern
                .iter()
                .find(|(k, _)| module == **k || module.ends_with(&format!(".{k}")))
                .map_or(config.lora_alpha, |(_, a)| *a);
            let scale = if config.use_rslora {
                alpha / r.sqrt()
            } else {
                alpha / r
            };
            layers.push(LoraLayer {
                module,
                a,
                b,
                scale,
            });
        }
        if let Some(m) = b_of.keys().next() {
            return Err(LmError::Tensor {
                path: st_path,
                name: format!("{PREFIX}{m}.lora_A.weight"),
                msg: "missing (lora_B has no lora_A)".into(),
            });
        }
        if layers.is_empty() && replaced.is_empty() {
            return Err(LmError::format(&st_path, "holds no LoRA weights"));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            layers,
            replaced,
        })
    }

    /// The adapted module `module` (Hugging Face name without `.weight`).
    pub fn layer(&self, module: &str) -> Option<&LoraLayer> {
        self.layers.iter().find(|l| l.module == module)
    }

    /// What the adapter does to the base weight `name` (a Hugging Face name), in the base
    /// weight's layout: a replacement (`modules_to_save`), or the delta `s·BA` to add
    /// (transposed for `fan_in_fan_out`). GPT-2 names also match without `transformer.`.
    pub(crate) fn edit_of(&self, name: &str) -> Option<WeightEdit> {
        let names = [name.to_string(), format!("transformer.{name}")];
        for n in &names {
            if let Some(t) = self.replaced.get(n) {
                return Some(WeightEdit::Replace(t.clone()));
            }
            if let Some(l) = n.strip_suffix(".weight").and_then(|m| self.layer(m)) {
                let d = l.delta();
                return Some(WeightEdit::Add(if self.config.fan_in_fan_out {
                    d.transposed()
                } else {
                    d
                }));
            }
        }
        None
    }

    /// The Hugging Face names of every base weight this adapter changes.
    pub fn changed_weights(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .layers
            .iter()
            .map(|l| format!("{}.weight", l.module))
            .chain(self.replaced.keys().cloned())
            .collect();
        v.sort();
        v
    }
}

/// How an adapter changes one base weight.
pub(crate) enum WeightEdit {
    Replace(HostTensor),
    Add(HostTensor),
}

fn parse_config(v: &Value, path: &Path) -> Result<LoraConfig> {
    let unsupported = |what: String| LmError::Unsupported {
        path: path.to_path_buf(),
        what,
    };
    let bad = |msg: String| LmError::format(path, msg);
    match v.get("peft_type").and_then(Value::as_str) {
        Some("LORA") => {}
        Some(other) => return Err(unsupported(format!("peft_type '{other}' (expected LORA)"))),
        None => return Err(bad("expected \"peft_type\": \"LORA\"".into())),
    }
    if v.get("use_dora").and_then(Value::as_bool) == Some(true) {
        return Err(unsupported("use_dora (DoRA adapters)".into()));
    }
    match v.get("bias").and_then(Value::as_str) {
        None | Some("none") => {}
        Some(b) => return Err(unsupported(format!("bias '{b}' (expected none)"))),
    }
    let num = |k: &str| v.get(k).and_then(Value::as_f64);
    let r = num("r").ok_or_else(|| bad("expected a positive integer \"r\"".into()))?;
    if r < 1.0 || r.fract() != 0.0 {
        return Err(bad(format!("r = {r}: expected a positive integer")));
    }
    let lora_alpha = num("lora_alpha").unwrap_or(8.0);
    if !lora_alpha.is_finite() {
        return Err(bad(format!(
            "lora_alpha = {lora_alpha}: expected a finite number"
        )));
    }
    let strings = |k: &str| -> Vec<String> {
        match v.get(k) {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        }
    };
    let layers_to_transform = match v.get("layers_to_transform") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => n.as_u64().map(|l| vec![l as usize]),
        Some(Value::Array(a)) => Some(
            a.iter()
                .filter_map(|x| x.as_u64().map(|l| l as usize))
                .collect(),
        ),
        Some(_) => {
            return Err(bad(
                "layers_to_transform: expected an integer or a list".into()
            ));
        }
    };
    let mut alpha_pattern = BTreeMap::new();
    if let Some(Value::Object(m)) = v.get("alpha_pattern") {
        for (k, a) in m {
            let a = a
                .as_f64()
                .ok_or_else(|| bad(format!("alpha_pattern '{k}': expected a number")))?;
            alpha_pattern.insert(k.clone(), a);
        }
    }
    Ok(LoraConfig {
        r: r as usize,
        lora_alpha,
        use_rslora: v
            .get("use_rslora")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        fan_in_fan_out: v
            .get("fan_in_fan_out")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        target_modules: strings("target_modules"),
        layers_to_transform,
        modules_to_save: strings("modules_to_save"),
        alpha_pattern,
    })
}
