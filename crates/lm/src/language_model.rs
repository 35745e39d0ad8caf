//! A model with its tokenizer and chat template, loaded from one path: what `capture` and
//! `generate` work with.
//!
//! - Hugging Face directory: `config.json`, safetensors, `tokenizer.json`, and the chat
//!   template of `tokenizer_config.json` (or `chat_template.jinja`) when there is one.
//! - GGUF file: weights, the embedded tokenizer (`tokenizer.ggml.*`) and
//!   `tokenizer.chat_template`.

use std::path::{Path, PathBuf};

use burn::tensor::Device;

use crate::adapter::LoraAdapter;
use crate::capture::Sequence;
use crate::chat::{ChatTemplate, ChatTokens, Message};
use crate::gguf::GgufFile;
use crate::model::Model;
use crate::prompts::PromptContent;
use crate::tokenizer::{GgufVocab, Tokenizer};
use crate::{LmError, Result};

/// A model, its tokenizer and (when the files have one) its chat template.
pub struct LanguageModel {
    pub model: Model,
    pub tokenizer: Tokenizer,
    pub chat: Option<ChatTemplate>,
    /// The path it was loaded from.
    pub source: PathBuf,
}

impl LanguageModel {
    /// Loads everything from a Hugging Face directory or a `.gguf` file.
    pub fn load(path: &Path, dev: &Device) -> Result<Self> {
        Self::load_with_adapter(path, None, dev)
    }

    /// As [`LanguageModel::load`], with the PEFT LoRA adapter in `adapter` (a directory with
    /// `adapter_config.json`) merged into the weights.
    pub fn load_with_adapter(path: &Path, adapter: Option<&Path>, dev: &Device) -> Result<Self> {
        let adapter = adapter.map(LoraAdapter::load).transpose()?;
        let model = Model::load_with_adapter(path, adapter, dev)?;
        let (tokenizer, chat) = if path.is_dir() {
            let tj = path.join("tokenizer.json");
            if !tj.exists() {
                return Err(LmError::format(
                    path,
                    "no tokenizer.json (needed to turn text into token ids)",
                ));
            }
            let tokenizer = Tokenizer::from_file(&tj)?;
            let tc = path.join("tokenizer_config.json");
            let chat = if tc.exists() {
                match ChatTemplate::from_tokenizer_config(&tc) {
                    Ok(c) => Some(c),
                    // A config without any template is fine; a broken template is not.
                    Err(LmError::NoChatTemplate { .. }) => None,
                    Err(e) => return Err(e),
                }
            } else {
                None
            };
            (tokenizer, chat)
        } else {
            let f = GgufFile::open(path)?;
            let vocab = gguf_vocab(&f, path)?;
            let tokenizer = Tokenizer::from_gguf_metadata(path, &vocab)?;
            let chat = match f.get_str("tokenizer.chat_template") {
                Some(src) => {
                    let tok = |id: Option<u32>| {
                        id.and_then(|i| vocab.tokens.get(i as usize).cloned())
                            .unwrap_or_default()
                    };
                    Some(
                        ChatTemplate::new(src, tok(vocab.bos), tok(vocab.eos))?
                            .with_origin(format!("{}: tokenizer.chat_template", path.display())),
                    )
                }
                None => None,
            };
            (tokenizer, chat)
        };
        Ok(Self {
            model,
            tokenizer,
            chat,
            source: path.to_path_buf(),
        })
    }

    /// Token ids of plain text, with the special tokens the tokenizer adds (e.g. BOS).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.tokenizer.encode(text, true)
    }

    /// A conversation rendered with the chat template, with a role per token
    /// (1 = assistant answer).
    pub fn encode_chat(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<ChatTokens> {
        let chat = self.chat.as_ref().ok_or_else(|| {
            LmError::Tokenizer(format!(
                "{}: the model has no chat template (tokenizer_config.json chat_template or GGUF \
                 tokenizer.chat_template)",
                self.source.display()
            ))
        })?;
        chat.render_with_spans(messages, add_generation_prompt)?
            .tokenize(&self.tokenizer)
    }

    /// A prompt as a capture [`Sequence`]: ids and roles (1 for assistant answer tokens),
    /// cut to the first `max_tokens`.
    pub fn sequence(&self, content: &PromptContent, max_tokens: usize) -> Result<Sequence> {
        let (mut ids, mut roles) = match content {
            PromptContent::Text(t) => {
                let ids = self.tokenizer.encode_prefix(t, true, max_tokens)?;
                let roles = vec![0u8; ids.len()];
                (ids, roles)
            }
            PromptContent::Messages(m) => {
                let c = self.encode_chat(m, false)?;
                (c.ids, c.roles)
            }
        };
        if ids.is_empty() {
            return Err(LmError::Tokenizer("the prompt has no tokens".into()));
        }
        ids.truncate(max_tokens);
        roles.truncate(max_tokens);
        Ok(Sequence { ids, roles })
    }

    /// Ids that end generation: the tokenizer's end tokens and the config's `eos_token_id`.
    pub fn stop_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self.tokenizer.eos_ids().to_vec();
        ids.extend(&self.model.config().eos_token_ids);
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Id written into padding.
    pub fn pad_id(&self) -> u32 {
        self.tokenizer
            .pad_id()
            .or_else(|| self.tokenizer.eos_ids().first().copied())
            .unwrap_or(0)
    }
}

/// The `tokenizer.ggml.*` metadata of a GGUF file.
pub fn gguf_vocab(f: &GgufFile, path: &Path) -> Result<GgufVocab> {
    let strings = |key: &str| -> Option<Vec<String>> {
        let arr = f.get(key)?.as_array()?.as_strings()?;
        Some(arr.iter().map(str::to_owned).collect())
    };
    let id = |key: &str| f.get_u64(key).map(|v| v as u32);
    let model = f
        .get_str("tokenizer.ggml.model")
        .ok_or_else(|| LmError::format(path, "GGUF metadata lacks tokenizer.ggml.model"))?
        .to_string();
    let tokens = strings("tokenizer.ggml.tokens")
        .ok_or_else(|| LmError::format(path, "GGUF metadata lacks tokenizer.ggml.tokens"))?;
    Ok(GgufVocab {
        model,
        pre: f.get_str("tokenizer.ggml.pre").map(str::to_owned),
        tokens,
        merges: strings("tokenizer.ggml.merges").unwrap_or_default(),
        token_types: f
            .get("tokenizer.ggml.token_type")
            .and_then(|v| v.as_array())
            .and_then(|a| a.to_i64s())
            .map(|v| v.into_iter().map(|x| x as i32).collect())
            .unwrap_or_default(),
        bos: id("tokenizer.ggml.bos_token_id"),
        eos: id("tokenizer.ggml.eos_token_id"),
        pad: id("tokenizer.ggml.padding_token_id"),
        unk: id("tokenizer.ggml.unknown_token_id"),
        add_bos: f
            .get("tokenizer.ggml.add_bos_token")
            .and_then(|v| v.as_bool()),
        add_eos: f
            .get("tokenizer.ggml.add_eos_token")
            .and_then(|v| v.as_bool()),
    })
}
