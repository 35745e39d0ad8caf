//! Activation capture as a driver that pushes into a caller's sink (the way ripgrep's
//! `Searcher` drives a `Sink`): [`capture`] runs batched forward passes over tokenized
//! sequences, stopping each pass after the last hook it needs, and hands every sequence's
//! activations at every hook point to a [`CaptureSink`] — an activation store writer, a
//! statistics accumulator, a latent recorder.
//!
//! Sequences are batched right-padded (token `i` of a sequence is column `i`, so padding never
//! touches a real token's activations in a causal model). Within windows of `sort_window`
//! sequences, batches are formed from sequences sorted by length, which cuts padding; the sink
//! still receives sequences in their original order. Windows are aligned to multiples of
//! `sort_window` from the first sequence, so a run resumed at sequence `first` forms exactly
//! the batches of an uninterrupted run.
//!
//! ```no_run
//! use burn::tensor::Device;
//! use lantern_lm::capture::{CaptureOptions, CaptureSink, SequenceRows, capture};
//! use lantern_lm::{HookPoint, LanguageModel, LmError, PromptContent};
//!
//! /// Mean activation over every token.
//! struct Mean { sum: Vec<f64>, n: usize }
//! impl CaptureSink for Mean {
//!     type Error = LmError;
//!     fn sequence(&mut self, rows: SequenceRows<'_>) -> Result<(), LmError> {
//!         for tok in rows.acts[0].chunks(self.sum.len()) {
//!             self.sum.iter_mut().zip(tok).for_each(|(s, &a)| *s += f64::from(a));
//!             self.n += 1;
//!         }
//!         Ok(())
//!     }
//! }
//!
//! let lm = LanguageModel::load("SmolLM2-135M-Instruct.Q4_1.gguf".as_ref(), &Device::flex())?;
//! let prompt = PromptContent::Text("The capital of France is".into());
//! let seqs = vec![lm.sequence(&prompt, 64)?];
//! let opts = CaptureOptions::new(vec![HookPoint::ResidPost(15)]);
//! let mut mean = Mean { sum: vec![0.0; 576], n: 0 };
//! capture(&lm.model, lm.pad_id(), &seqs, 0, &opts, &mut mean)?;
//! # Ok::<(), LmError>(())
//! ```

use crate::batch::{Padding, TokenBatch};
use crate::hooks::{HookPoint, Hooks};
use crate::model::Model;
use crate::models::LogitsAt;
use crate::{LmError, Result};

/// One tokenized prompt record: the ids and a role per token (0 = prompt, 1 = answer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sequence {
    pub ids: Vec<u32>,
    pub roles: Vec<u8>,
}

/// What to capture and how to batch it.
#[derive(Clone, Debug)]
pub struct CaptureOptions {
    /// Hook points, each captured once per pass (no repeats).
    pub points: Vec<HookPoint>,
    /// Sequences per forward pass.
    pub batch: usize,
    /// Sequences sorted by length together before batching (1: keep the given order). A
    /// window's activations are held until its last batch ran, so it costs about
    /// `sort_window × tokens per sequence × d_model × points × 4` bytes.
    pub sort_window: usize,
}

impl CaptureOptions {
    /// `points` with 8 sequences a pass, sorted by length within windows of 64.
    pub fn new(points: Vec<HookPoint>) -> Self {
        Self {
            points,
            batch: 8,
            sort_window: 64,
        }
    }
}

/// The activations of one sequence at every hook point.
#[derive(Debug)]
pub struct SequenceRows<'a> {
    /// Index of the sequence in the slice given to [`capture`].
    pub index: usize,
    pub ids: &'a [u32],
    pub roles: &'a [u8],
    /// Per hook point (in [`CaptureOptions::points`] order), `[len · d_model]` row-major.
    pub acts: &'a [Vec<f32>],
}

/// Receives each captured sequence, in order.
pub trait CaptureSink {
    /// The sink's error; capture's own errors convert into it.
    type Error: From<LmError>;
    /// Called once per sequence, in increasing [`SequenceRows::index`].
    fn sequence(&mut self, rows: SequenceRows<'_>) -> std::result::Result<(), Self::Error>;
}

/// Runs `model` over `seqs[first..]` and pushes each sequence's activations at `opts.points`
/// into `sink`, in order. `pad_id` fills the padding (never attended to).
pub fn capture<S: CaptureSink>(
    model: &Model,
    pad_id: u32,
    seqs: &[Sequence],
    first: usize,
    opts: &CaptureOptions,
    sink: &mut S,
) -> std::result::Result<(), S::Error> {
    opts.validate(model, seqs)?;
    let window = opts.sort_window.max(1);
    let d = model.config().d_model;
    let mut start = first - first % window;
    while start < seqs.len() {
        let end = (start + window).min(seqs.len());
        let mut order: Vec<usize> = (start..end).collect();
        // Longest first (stable), so each batch holds sequences of similar length.
        order.sort_by_key(|&i| std::cmp::Reverse(seqs[i].ids.len()));
        let mut held: Vec<Option<Vec<Vec<f32>>>> = vec![None; end - start];
        for group in order.chunks(opts.batch) {
            if group.iter().all(|&i| i < first) {
                continue; // all already delivered before a resume
            }
            let rows: Vec<&[u32]> = group.iter().map(|&i| seqs[i].ids.as_slice()).collect();
            let batch = TokenBatch::new(&rows, pad_id, Padding::Right)?;
            let mut hooks = Hooks::new();
            for &p in &opts.points {
                hooks.capture(p);
            }
            hooks.stop_after_last(true);
            let mut out =
                model.forward(&batch.ids, &batch.real, None, &mut hooks, LogitsAt::Skip)?;
            let mut per_point = Vec::with_capacity(opts.points.len());
            for &p in &opts.points {
                let host = out
                    .captures
                    .take_one(p)?
                    .try_into_vec_as::<f32>()
                    .map_err(|e| LmError::DeviceRead {
                        what: format!("activations at '{p}'"),
                        msg: e.to_string(),
                    })?;
                per_point.push(host);
            }
            for (b, &i) in group.iter().enumerate() {
                held[i - start] = Some(
                    per_point
                        .iter()
                        .map(|a| batch.row_slice(a, b, d).to_vec())
                        .collect(),
                );
            }
        }
        for (k, acts) in held.into_iter().enumerate() {
            let i = start + k;
            if i < first {
                continue;
            }
            let acts = acts.expect("every sequence of the window ran");
            sink.sequence(SequenceRows {
                index: i,
                ids: &seqs[i].ids,
                roles: &seqs[i].roles,
                acts: &acts,
            })?;
        }
        start = end;
    }
    Ok(())
}

impl CaptureOptions {
    /// Checks these options and `seqs` against `model` with one-line errors (what [`capture`]
    /// does first; a caller can run it before creating its outputs).
    pub fn validate(&self, model: &Model, seqs: &[Sequence]) -> Result<()> {
        check(model, seqs, self)
    }
}

fn check(model: &Model, seqs: &[Sequence], opts: &CaptureOptions) -> Result<()> {
    let n_layers = model.config().n_layers;
    if opts.batch == 0 {
        return Err(LmError::Setting {
            field: "batch",
            value: "0".into(),
            expected: "at least 1 sequence per pass",
        });
    }
    if opts.points.is_empty() {
        return Err(LmError::Config(
            "capture needs at least one hook point".into(),
        ));
    }
    for (k, p) in opts.points.iter().enumerate() {
        p.check(n_layers)?;
        if opts.points[..k].contains(p) {
            return Err(LmError::Hook(format!("hook '{p}' is listed twice")));
        }
    }
    for (i, s) in seqs.iter().enumerate() {
        if s.ids.is_empty() || s.roles.len() != s.ids.len() {
            return Err(LmError::Config(format!(
                "sequence {i}: {} ids and {} roles (expected at least one id and a role per id)",
                s.ids.len(),
                s.roles.len()
            )));
        }
    }
    Ok(())
}
