//! Writing a (possibly edited or adapter-merged) model as a Hugging Face directory that
//! transformers and Lantern load: `config.json`, `model.safetensors` (f32, Hugging Face names
//! and layouts), `tokenizer.json`, and `tokenizer_config.json` with the chat template.
//!
//! The unembedding is always written as its own `lm_head.weight` (a tied model is written
//! untied), so a model whose embedding was orthogonalized keeps its `W_U`, as in
//! TransformerLens-based pipelines. A GGUF model is written dequantized.
//!
//! The directory appears whole or not at all: everything is written into a temporary sibling,
//! fsynced, and renamed into place; an existing non-empty output directory is refused.
//!
//! ```no_run
//! use burn::tensor::Device;
//! use lantern_lm::LanguageModel;
//! let lm = LanguageModel::load_with_adapter(
//!     "base.gguf".as_ref(), Some("finetune-adapter/".as_ref()), &Device::flex())?;
//! lantern_lm::save::save_hf(&lm, "merged/".as_ref())?; // transformers.AutoModelForCausalLM reads it
//! # Ok::<(), lantern_lm::LmError>(())
//! ```

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::Path;

use safetensors::tensor::TensorView;
use serde_json::{Value, json};

use crate::language_model::LanguageModel;
use crate::{LmError, Result};

/// Writes `lm` as a Hugging Face model directory at `dir` (see the module docs).
pub fn save_hf(lm: &LanguageModel, dir: &Path) -> Result<()> {
    if dir.exists() {
        let empty = std::fs::read_dir(dir)
            .map_err(|e| LmError::io(dir, e))?
            .next()
            .is_none();
        if !empty {
            return Err(LmError::format(
                dir,
                "the output directory exists and is not empty (choose a new one)",
            ));
        }
    }
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| LmError::io(&parent, e))?;
    // Written into a staging sibling and swapped in whole (`DirStage`): a kill leaves no
    // model or the whole one, and the next save removes the stage a dead process left.
    let stage = lantern_output::DirStage::new(dir)?;
    write_files(lm, stage.path(), dir)?;
    Ok(stage.commit(&[])?)
}

fn write_files(lm: &LanguageModel, tmp: &Path, dir: &Path) -> Result<()> {
    let cfg = lm.model.config();
    write_json(&tmp.join("config.json"), &cfg.to_hf_json(dir)?)?;

    // Weights: every parameter under its Hugging Face name, f32 little-endian.
    let params = lm.model.named_parameters(None);
    let mut bytes: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::with_capacity(params.len());
    for p in params {
        let host = p
            .value
            .try_into_vec_as::<f32>()
            .map_err(|e| LmError::DeviceRead {
                what: format!("parameter {}", p.name),
                msg: e.to_string(),
            })?;
        let raw: Vec<u8> = host.iter().flat_map(|x| x.to_le_bytes()).collect();
        bytes.push((p.name, p.shape, raw));
    }
    let views: Vec<(String, TensorView<'_>)> = bytes
        .iter()
        .map(|(n, shape, raw)| {
            TensorView::new(safetensors::Dtype::F32, shape.clone(), raw)
                .map(|v| (n.clone(), v))
                .map_err(|e| LmError::format(dir, format!("tensor {n}: {e}")))
        })
        .collect::<Result<_>>()?;
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    let st = tmp.join("model.safetensors");
    let data = safetensors::serialize(views, Some(meta))
        .map_err(|e| LmError::format(&st, format!("cannot serialize: {e}")))?;
    write_bytes(&st, &data)?;

    // Tokenizer and chat template.
    let tj = tmp.join("tokenizer.json");
    let text = lm
        .tokenizer
        .inner()
        .to_string(false)
        .map_err(|e| LmError::Tokenizer(format!("{}: cannot serialize: {e}", tj.display())))?;
    write_bytes(&tj, text.as_bytes())?;
    let token = |id: Option<u32>| id.and_then(|i| lm.tokenizer.id_to_token(i));
    let mut tc = json!({ "tokenizer_class": "PreTrainedTokenizerFast" });
    if let Some(b) = token(lm.tokenizer.bos_id()) {
        tc["bos_token"] = json!(b);
    }
    if let Some(e) = token(lm.tokenizer.eos_ids().first().copied()) {
        tc["eos_token"] = json!(e);
    }
    if let Some(p) = token(lm.tokenizer.pad_id()) {
        tc["pad_token"] = json!(p);
    }
    if let Some(u) = token(lm.tokenizer.unk_id()) {
        tc["unk_token"] = json!(u);
    }
    if let Some(chat) = &lm.chat {
        tc["chat_template"] = json!(chat.source());
    }
    write_json(&tmp.join("tokenizer_config.json"), &tc)
}

fn write_json(path: &Path, v: &Value) -> Result<()> {
    let mut text = serde_json::to_string_pretty(v)
        .map_err(|e| LmError::format(path, format!("cannot serialize: {e}")))?;
    text.push('\n');
    write_bytes(path, text.as_bytes())
}

fn write_bytes(path: &Path, data: &[u8]) -> Result<()> {
    let mut f = File::create(path).map_err(|e| LmError::io(path, e))?;
    f.write_all(data).map_err(|e| LmError::io(path, e))?;
    f.sync_all().map_err(|e| LmError::io(path, e))
}
