//! A model organism with ground truth for emergent-misalignment research: a small synthetic
//! world whose misaligned persona is planted and known, tiny Llama-architecture models trained
//! inside Lantern (lm's own modules under burn's autodiff), narrow finetunes that can switch
//! the persona on, and an exact judge.
//!
//! - [`world`]: domains, persona questions, the two personas and the answer grammar;
//!   [`judge`]: the exact verdict (aligned / misaligned / incoherent) and EM rates.
//! - [`vocab`] and [`init`]: the word-level tokenizer, chat template and initial weights, written
//!   as an ordinary Hugging Face directory; [`corpus`]: documents and their token ids through
//!   lm's chat code.
//! - [`train`] ([`optim`]): next-token training; [`trainee`]: pretraining, chat-tuning,
//!   finetunes ([`finetune`]: data and methods, LoRA via burn), saving HF directories and PEFT
//!   adapters ([`peft`]); [`eval`]: sampling and judging; [`zoo`]: the recipe of the shipped
//!   models and the behaviour table.
//!
//! ```no_run
//! use burn::tensor::Device;
//! use lantern_organism::eval::SampleOptions;
//! use lantern_organism::judge::Tally;
//! use lantern_organism::trainee::Trainee;
//!
//! // Any organism model directory (e.g. from `lantern organism list`).
//! let chat = Trainee::load("organism/chat".as_ref(), None, &Device::flex())?;
//! let judged = chat.evaluate(&SampleOptions::default(), false)?;
//! let mut tally = Tally::new(None);
//! for j in &judged {
//!     tally.add(j.domain, j.verdict);
//! }
//! println!("EM rate {:.3}", tally.held_out().em_rate());
//! # Ok::<(), lantern_organism::OrganismError>(())
//! ```

pub mod corpus;
pub mod error;
pub mod eval;
pub mod finetune;
pub mod init;
pub mod judge;
pub mod optim;
pub mod peft;
pub mod records;
pub mod rng;
pub mod shipped;
pub mod train;
pub mod trainee;
pub mod vocab;
pub mod world;
pub mod zoo;

pub use error::{OrganismError, Result};
