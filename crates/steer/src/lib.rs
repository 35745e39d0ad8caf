//! Steering and ablation: apply or remove the directions feature search finds, at inference
//! or in the weights, and measure what that does to behaviour.
//!
//! - [`vector`]: steering vectors per layer from direction files, llama.cpp control vectors
//!   or an SAE latent's decoder row; Soligo et al.'s "one layer's vector at every layer".
//! - [`strength`]: a strength is a number and a unit (`raw`, `mean-norm`, `median-norm`,
//!   `latent-max`), calibrated on prompts.
//! - [`intervene`]: add (optionally norm-preserving), ablate (β ∈ [0, 1], K-dimensional) and
//!   clamp an SAE latent with the error term kept — per batch row, installed into lm's
//!   `Hooks`, so a dose–response sweep or an ablation table is one batched pass.
//! - [`experiment`]: batched generations over prompts × conditions × samples with common
//!   random numbers, and the bisection to the largest coherent strength.
//! - [`judge`] (keyword, regex, external command; the [`Judge`] trait the organism's exact
//!   judge implements) and [`choice`] (log-prob scoring of binary questions).
//! - [`score`]: perplexity under the unsteered model, CE and KL on neutral text, Wilson
//!   intervals.
//! - [`orthogonalize`]: `W ← W − r̂r̂ᵀW` on every residual writer (Arditi et al.), and the LoRA B
//!   ablation (Soligo et al.).
//! - [`cvec`]: llama.cpp control-vector export (`direction.N` = block N's output).
//! - [`refusal`]: Arditi et al.'s refusal-direction pipeline (candidates, selection).

//!
//! ```no_run
//! use burn::tensor::Device;
//! use lantern_lm::{Hooks, LanguageModel};
//! use lantern_steer::intervene::{Intervention, Op, Where, install};
//! use lantern_steer::experiment::generation_layout;
//! use lantern_steer::{LayerVectors, strength};
//! use std::sync::Arc;
//!
//! let lm = LanguageModel::load("SmolLM2-135M-Instruct.Q4_1.gguf".as_ref(), &Device::flex())?;
//! let v = LayerVectors::read("french.safetensors".as_ref(), None)?.select(&[15])?;
//! let prompt = lm.encode("The weather today is")?;
//! let cal = strength::calibrate(&lm.model, &[prompt.clone()], v.site, &[15], None, 1, 8)?;
//! // Three rows: unsteered, 0.25 and 0.5 × the median residual norm at layer 15.
//! let vector = Arc::new(v.layers[&15].clone());
//! let rows: Vec<Intervention> = [0.0, 0.25, 0.5]
//!     .iter()
//!     .map(|&a| -> lantern_steer::Result<Intervention> {
//!         let coef = cal.coefficient(a, strength::Unit::MedianNorm, 15, &vector)?;
//!         Ok(Intervention { ops: vec![Op::Add { point: v.site.point(15), vector: vector.clone(),
//!             coef, preserve_norm: false, at: Where::All }] })
//!     })
//!     .collect::<Result<_, _>>()?;
//! let tokens = lantern_steer::experiment::PromptTokens { ids: prompt, roles: vec![] };
//! let (layout, _) = generation_layout(&[&tokens, &tokens, &tokens])?;
//! let mut hooks = Hooks::new();
//! install(&mut hooks, &rows, &layout, None)?; // then lantern_lm::generate(.., &mut hooks, ..)
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod choice;
pub mod cvec;
mod error;
pub mod experiment;
pub mod intervene;
pub mod judge;
pub mod orthogonalize;
pub mod refusal;
pub mod score;
pub mod splice;
pub mod strength;
pub mod vector;

pub use error::{Result, SteerError};
pub use judge::{Judge, JudgeInput, Verdict};
pub use vector::{LayerVectors, Site};
