//! Transformer language models in burn for interpretability work: the Llama family (Llama
//! 2/3, Mistral, Qwen2, SmolLM2) and GPT-2, loaded from a Hugging Face directory or a GGUF
//! file, with hook points named as in TransformerLens where the residual stream can be read,
//! steered or ablated, and KV-cache generation.
//!
//! ```no_run
//! use burn::tensor::Device;
//! use lantern_lm::{HookPoint, Hooks, LanguageModel, LogitsAt};
//!
//! let lm = LanguageModel::load("SmolLM2-135M-Instruct.Q4_1.gguf".as_ref(), &Device::flex())?;
//! let ids = lm.encode("The capital of France is")?;
//! let mut hooks = Hooks::new();
//! let point: HookPoint = "blocks.15.hook_resid_post".parse()?;
//! hooks.capture(point).stop_after_last(true); // no need to run layers 16..30
//! let mut out = lm.model.forward(&ids, &[vec![true; ids.len()]], None, &mut hooks, LogitsAt::Skip)?;
//! let resid = out.captures.take_one(point)?; // [1, seq, 576]
//! # Ok::<(), lantern_lm::LmError>(())
//! ```
//!
//! Modules: [`model`] (either family behind one type, a burn `Module` that trains under
//! autodiff and exposes its parameters by Hugging Face name), [`models`] (one file per
//! family), [`hooks`] (requests) and their [`HookCache`] (results), [`batch`] (padding),
//! [`capture`] (batched capture into a caller's sink), [`prompts`] (JSONL prompt records),
//! [`adapter`] (PEFT LoRA adapters, merged at load), [`save`] (Hugging Face directories),
//! [`generate`], [`weights`] (safetensors and GGUF), [`gguf`] and [`quant`] (the GGUF reader
//! and block dequantization), [`tokenizer`] and [`chat`].

pub mod adapter;
pub mod batch;
pub mod capture;
pub mod chat;
pub mod config;
pub mod error;
pub mod generate;
pub mod gguf;
mod guard;
pub mod hooks;
pub mod language_model;
pub mod model;
pub mod models;
pub mod prompts;
pub mod quant;
pub mod save;
pub mod tokenizer;
pub mod weights;

pub use adapter::{LoraAdapter, LoraLayer};
pub use batch::{Padding, TokenBatch};
pub use capture::{CaptureOptions, CaptureSink, Sequence, SequenceRows, capture};
pub use chat::{ChatTemplate, ChatTokens, Message, RenderedChat};
pub use config::{Family, ModelConfig, RopeScaling};
pub use error::{LmError, Result};
pub use generate::{GenerateOptions, Generation, Sampling, generate};
pub use hooks::{HookCache, HookPoint, Hooks, Intervention, Positions, Scale};
pub use language_model::LanguageModel;
pub use model::{Model, NamedParameter};
pub use models::{Forward, LogitsAt, ResidualWriter, WriterParam};
pub use prompts::{PromptContent, PromptRecord, read_prompts};
pub use tokenizer::{GgufVocab, StreamDecoder, Tokenizer};
