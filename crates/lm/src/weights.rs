//! Where model weights come from: a Hugging Face directory of safetensors (one file or
//! shards listed in `model.safetensors.index.json`) or a GGUF file. Both hand out f32 host
//! tensors under Hugging Face names, so the model code knows one naming scheme.
//!
//! GGUF files written by llama.cpp for the `llama` architecture store `q_proj` and `k_proj`
//! with their rows permuted (interleaved rotary pairs); [`WeightSource`] undoes that
//! permutation so the weights match the rotate-half convention of Hugging Face.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use crate::adapter::{LoraAdapter, WeightEdit};
use crate::gguf::GgufFile;
use crate::{LmError, Result};

/// A dense f32 tensor on the host, row-major, with PyTorch's shape order.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl HostTensor {
    /// `[rows, cols]` of a matrix stored as `[out, in]` turned into `[in, out]`.
    pub fn transposed(&self) -> HostTensor {
        let (r, c) = (self.shape[0], self.shape[1]);
        let mut out = vec![0.0f32; r * c];
        // Blocked transpose: cache-friendly for the 49152×576 embeddings.
        const B: usize = 64;
        for i0 in (0..r).step_by(B) {
            for j0 in (0..c).step_by(B) {
                for i in i0..(i0 + B).min(r) {
                    for j in j0..(j0 + B).min(c) {
                        out[j * r + i] = self.data[i * c + j];
                    }
                }
            }
        }
        HostTensor {
            shape: vec![c, r],
            data: out,
        }
    }
}

/// Memory-mapped weights of a Hugging Face directory or a GGUF file, optionally with a LoRA
/// adapter merged into what [`WeightSource::load`] hands out.
pub struct WeightSource {
    pub files: WeightFiles,
    pub adapter: Option<LoraAdapter>,
}

/// Where the base weights are.
pub enum WeightFiles {
    /// `model.safetensors` or shards, by tensor name.
    SafeTensors {
        dir: PathBuf,
        files: Vec<(PathBuf, Mmap)>,
        index: HashMap<String, usize>,
    },
    /// A GGUF file; `heads` are `(n_heads, n_kv_heads)` for undoing the q/k permutation of the
    /// `llama` architecture (`None` for architectures llama.cpp does not permute).
    Gguf {
        file: GgufFile,
        path: PathBuf,
        heads: Option<(usize, usize)>,
    },
}

impl WeightSource {
    /// Maps the safetensors of a Hugging Face model directory.
    pub fn open_hf_dir(dir: &Path) -> Result<Self> {
        let single = dir.join("model.safetensors");
        let index_path = dir.join("model.safetensors.index.json");
        let names: Vec<PathBuf> = if index_path.exists() {
            let text =
                std::fs::read_to_string(&index_path).map_err(|e| LmError::io(&index_path, e))?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| LmError::format(&index_path, format!("not valid JSON: {e}")))?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| LmError::format(&index_path, "expected an object 'weight_map'"))?;
            let mut files: Vec<String> = map
                .values()
                .filter_map(|f| f.as_str().map(str::to_owned))
                .collect();
            files.sort();
            files.dedup();
            files.into_iter().map(|f| dir.join(f)).collect()
        } else if single.exists() {
            vec![single]
        } else {
            return Err(LmError::format(
                dir,
                "no model.safetensors or model.safetensors.index.json (a Hugging Face model \
                 directory needs one of them next to config.json)",
            ));
        };
        let mut files = Vec::new();
        let mut index = HashMap::new();
        for (i, path) in names.into_iter().enumerate() {
            let f = File::open(&path).map_err(|e| LmError::io(&path, e))?;
            // SAFETY: the file is opened read-only and treated as immutable input; a
            // concurrent writer could change bytes under us, which safetensors then reports
            // as a format error at worst (the mapping stays valid memory).
            let map = unsafe { Mmap::map(&f) }.map_err(|e| LmError::io(&path, e))?;
            let st = SafeTensors::deserialize(&map)
                .map_err(|e| LmError::format(&path, format!("not a safetensors file: {e}")))?;
            for name in st.names() {
                index.insert(name.to_string(), i);
            }
            files.push((path, map));
        }
        Ok(Self::new(WeightFiles::SafeTensors {
            dir: dir.to_path_buf(),
            files,
            index,
        }))
    }

    /// Opens a GGUF file; `llama`-architecture q/k rows are un-permuted with `heads`.
    pub fn from_gguf(file: GgufFile, path: &Path, heads: Option<(usize, usize)>) -> Self {
        Self::new(WeightFiles::Gguf {
            file,
            path: path.to_path_buf(),
            heads,
        })
    }

    fn new(files: WeightFiles) -> Self {
        Self {
            files,
            adapter: None,
        }
    }

    /// Merges `adapter` into every weight loaded from now on. Fails with one line, naming the
    /// weight, when the adapter changes a weight the model does not have.
    pub fn with_adapter(mut self, adapter: LoraAdapter) -> Result<Self> {
        for name in adapter.changed_weights() {
            let short = name.strip_prefix("transformer.").unwrap_or(&name);
            if !self.contains(&name) && !self.contains(short) {
                return Err(LmError::Tensor {
                    path: adapter.dir.clone(),
                    name,
                    msg: format!(
                        "the adapter changes it, but {} has no such weight",
                        self.path().display()
                    ),
                });
            }
        }
        self.adapter = Some(adapter);
        Ok(self)
    }

    /// The file or directory the weights come from.
    pub fn path(&self) -> &Path {
        match &self.files {
            WeightFiles::SafeTensors { dir, .. } => dir,
            WeightFiles::Gguf { path, .. } => path,
        }
    }

    /// Refuses weights that hold a layer `n_layers` (probed by `probe`, that layer's first
    /// tensor): a config whose layer count is below the weights' would run a shorter model.
    pub fn refuse_extra_layer(&self, probe: &str, n_layers: usize) -> Result<()> {
        if self.contains(probe) {
            return Err(LmError::format(
                self.path(),
                format!(
                    "the weights hold a layer {n_layers} ({probe}) but the config says {n_layers} layers; the model would run with layers missing"
                ),
            ));
        }
        Ok(())
    }

    /// Whether a tensor of this (Hugging Face) name exists.
    pub fn contains(&self, name: &str) -> bool {
        match &self.files {
            WeightFiles::SafeTensors { index, .. } => index.contains_key(name),
            WeightFiles::Gguf { file, .. } => {
                crate::models::llama::gguf_name(name).is_some_and(|n| file.tensor(&n).is_some())
            }
        }
    }

    /// Loads `name` as f32, failing with one line when it is missing or not of `shape`.
    pub fn load(&self, name: &str, shape: &[usize]) -> Result<HostTensor> {
        let t = self.load_any(name)?;
        if t.shape != shape {
            return Err(LmError::Tensor {
                path: self.path().to_path_buf(),
                name: name.into(),
                msg: format!("expected shape {shape:?}, found {:?}", t.shape),
            });
        }
        Ok(t)
    }

    /// Loads `name` as f32 with whatever shape it has, with the adapter's change merged in
    /// (see [`crate::adapter`]).
    pub fn load_any(&self, name: &str) -> Result<HostTensor> {
        let base = self.load_base(name)?;
        let Some(edit) = self.adapter.as_ref().and_then(|a| a.edit_of(name)) else {
            return Ok(base);
        };
        let dir = || {
            self.adapter
                .as_ref()
                .map(|a| a.dir.clone())
                .unwrap_or_default()
        };
        let (new, verb) = match edit {
            WeightEdit::Replace(t) => (t, "replaces"),
            WeightEdit::Add(mut d) => {
                if d.shape == base.shape {
                    for (x, b) in d.data.iter_mut().zip(&base.data) {
                        *x += b;
                    }
                }
                (d, "adds to")
            }
        };
        if new.shape != base.shape {
            return Err(LmError::Tensor {
                path: dir(),
                name: name.into(),
                msg: format!(
                    "the adapter {verb} it with shape {:?}, the model's is {:?}",
                    new.shape, base.shape
                ),
            });
        }
        Ok(new)
    }

    /// Loads the base weight `name` (no adapter).
    fn load_base(&self, name: &str) -> Result<HostTensor> {
        match &self.files {
            WeightFiles::SafeTensors { files, index, dir } => {
                let &i = index.get(name).ok_or_else(|| LmError::Tensor {
                    path: dir.clone(),
                    name: name.into(),
                    msg: "missing".into(),
                })?;
                let (path, map) = &files[i];
                let st = SafeTensors::deserialize(map)
                    .map_err(|e| LmError::format(path, format!("not a safetensors file: {e}")))?;
                let view = st.tensor(name).map_err(|e| LmError::Tensor {
                    path: path.clone(),
                    name: name.into(),
                    msg: e.to_string(),
                })?;
                let data = to_f32(view.dtype(), view.data()).ok_or_else(|| LmError::Tensor {
                    path: path.clone(),
                    name: name.into(),
                    msg: format!("dtype {:?} (expected F32, F16 or BF16)", view.dtype()),
                })?;
                Ok(HostTensor {
                    shape: view.shape().to_vec(),
                    data,
                })
            }
            WeightFiles::Gguf { file, path, heads } => {
                let missing = || LmError::Tensor {
                    path: path.clone(),
                    name: name.into(),
                    msg: "missing".into(),
                };
                let gname = crate::models::llama::gguf_name(name).ok_or_else(missing)?;
                if file.tensor(&gname).is_none() {
                    return Err(missing());
                }
                let (shape, data) = file.dequantize(&gname)?;
                let mut t = HostTensor { shape, data };
                if let Some((n_heads, n_kv)) = heads {
                    if name.ends_with("q_proj.weight") || name.ends_with("q_proj.bias") {
                        t = unpermute_rows(t, *n_heads);
                    } else if name.ends_with("k_proj.weight") || name.ends_with("k_proj.bias") {
                        t = unpermute_rows(t, *n_kv);
                    }
                }
                Ok(t)
            }
        }
    }
}

/// Converts raw little-endian safetensors bytes (F32, F16, BF16) to f32; `None` for other
/// dtypes.
pub fn to_f32(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    Some(match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        _ => return None,
    })
}

/// Undoes llama.cpp's conversion permutation of q/k rows. The converter reshapes the rows as
/// `[heads, 2, d_head/2]` and swaps the last two axes (pairing rotary halves); the inverse
/// reshapes as `[heads, d_head/2, 2]` and swaps back.
fn unpermute_rows(t: HostTensor, heads: usize) -> HostTensor {
    let rows = t.shape[0];
    let cols: usize = t.shape[1..].iter().product();
    if heads == 0 || !rows.is_multiple_of(2 * heads) {
        return t;
    }
    let half = rows / heads / 2;
    let mut out = vec![0.0f32; t.data.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                // permuted row (h, i, j) → original row (h, j, i)
                let src = (h * half + i) * 2 + j;
                let dst = (h * 2 + j) * half + i;
                out[dst * cols..(dst + 1) * cols]
                    .copy_from_slice(&t.data[src * cols..(src + 1) * cols]);
            }
        }
    }
    HostTensor {
        shape: t.shape,
        data: out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_inverts_the_llama_cpp_permutation() {
        // llama.cpp's convert: w.reshape(h, 2, r/h/2, c).swapaxes(1, 2).reshape(r, c)
        let (h, r, c) = (2, 8, 3);
        let orig: Vec<f32> = (0..r * c).map(|i| i as f32).collect();
        let half = r / h / 2;
        let mut perm = vec![0.0; r * c];
        for hh in 0..h {
            for i in 0..half {
                for j in 0..2 {
                    let src = (hh * 2 + j) * half + i; // orig index (h, j, i)
                    let dst = (hh * half + i) * 2 + j; // permuted (h, i, j)
                    perm[dst * c..(dst + 1) * c].copy_from_slice(&orig[src * c..(src + 1) * c]);
                }
            }
        }
        let back = unpermute_rows(
            HostTensor {
                shape: vec![r, c],
                data: perm,
            },
            h,
        );
        assert_eq!(back.data, orig);
    }

    #[test]
    fn transpose_moves_every_entry() {
        let t = HostTensor {
            shape: vec![3, 70],
            data: (0..210).map(|i| i as f32).collect(),
        };
        let tt = t.transposed();
        assert_eq!(tt.shape, vec![70, 3]);
        for i in 0..3 {
            for j in 0..70 {
                assert_eq!(tt.data[j * 3 + i], t.data[i * 70 + j]);
            }
        }
    }
}
