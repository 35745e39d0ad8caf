//! The learning-rate probe for short runs: train the run at a few rates around
//! [`topk_lr`](super::topk_lr)'s in lockstep ([`train_lockstep`]: every batch read once and fed
//! to each), evaluate each SAE on the same rows and keep the one with the lowest FVU.
//!
//! The rule `max(2e-4/√(M/2¹⁴), 1.8/√(d·T))` lands within 2 % FVU and 0.02 MMCS of the best
//! swept rate on every measured run of 732 steps or more, but below ≈ 500 steps the best rate
//! strays from it both ways (BENCHMARKS.md, "SAE learning rate on synthetic ground truth"): at
//! d 256, 2 048 latents, 245 steps it was 1.43× the rule's (the rule 5–8 % FVU off at three
//! seeds), at d 128, 4 096 latents, 245 steps 0.7× (3.5 % off), at d 512, 489 steps √2×
//! (2.9–5.0 % off), while at d 128 / 1 024, at d 768 and on SmolLM2 (488 steps) the rule's
//! rate was the best. What moves it (latents per dimension, features per row)
//! could not be separated from those points, so instead of a second rule a short run tries
//! the rule's rate times [`PROBE_FACTORS`] (`1/√2, 1, √2`) and keeps the best — at three times
//! the training cost of a run that is short by definition. Measured (BENCHMARKS.md, "The
//! short-run probe"): within 1.6 % FVU and 0.010 MMCS of the best swept rate at every run,
//! d 128 to d 768 (three seeds at most points); on SmolLM2 activations it kept the best of six.
//!
//! The SAE kept is exactly the one training alone at its rate gives (the lockstep runs see the
//! same batches in the same order). The FVU that chooses it is measured on the evaluation rows
//! `sae train` reports on (the store's first rows), so the kept SAE's reported FVU is the
//! lowest of three measured on those rows, not an independent estimate.

use std::path::Path;

use lantern_acts::Store;
use serde::Serialize;

use super::{TrainConfig, TrainEvent, TrainReport, train_lockstep};
use crate::device::DeviceChoice;
use crate::eval::{EvalOptions, EvalReport, evaluate};
use crate::{Arch, Result, SaeError};

/// Runs shorter than this many steps probe their learning rate by default (`sae train`):
/// [`super::topk_lr`] holds at every measured point from 732 steps, and misses at some below
/// (d 512 at 489 steps; d 256 and d 128 at 245).
pub const PROBE_BELOW_STEPS: u64 = 500;

/// The multiples of the rule's rate a probe trains: the measured best short-run rates sat at
/// 0.7×, 1× and 1.43× the rule's.
pub const PROBE_FACTORS: [f32; 3] = [
    std::f32::consts::FRAC_1_SQRT_2,
    1.0,
    std::f32::consts::SQRT_2,
];

/// One rate a probe trained.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProbeCandidate {
    /// Peak learning rate.
    pub lr: f32,
    /// FVU on the evaluation rows (absent when the run diverged).
    pub fvu: Option<f64>,
    /// Fraction of latents that never fired on those rows.
    pub dead_fraction: Option<f64>,
    /// Why the run stopped, when it diverged.
    pub diverged: Option<String>,
}

/// A finished probe: the kept SAE's run, its configuration (`lr` the kept rate), its
/// evaluation on the probe's rows, and the table of every rate.
#[derive(Clone, Debug)]
pub struct ProbeOutcome {
    /// The kept run.
    pub report: TrainReport,
    /// The run's configuration with the kept rate.
    pub config: TrainConfig,
    /// The kept SAE's evaluation (the one that chose it).
    pub eval: EvalReport,
    /// Every rate tried.
    pub probe: LrProbe,
}

/// What a probe tried and what it kept.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LrProbe {
    /// Every rate tried, in the order of the factors.
    pub candidates: Vec<ProbeCandidate>,
    /// Index of the kept rate in `candidates`.
    pub chosen: usize,
}

impl LrProbe {
    /// The kept learning rate.
    pub fn lr(&self) -> f32 {
        self.candidates[self.chosen].lr
    }
}

/// Whether `cfg`'s architecture takes [`super::topk_lr`]'s rate by default (TopK, BatchTopK,
/// Matryoshka, JumpReLU; ReLU keeps its fixed 5e-5), the rates a probe is made for.
pub fn rule_rated(arch: Arch) -> bool {
    !matches!(arch, Arch::Relu)
}

/// Trains `cfg` at `cfg.lr × f` for each `f` of `factors` in one pass over `store`, evaluates
/// each SAE with `eval` and returns the one with the lowest FVU ([`ProbeOutcome`]). `out` receives nothing (it is created); checkpoints are
/// refused (`cfg.checkpoint_every` must be 0), since only one of the runs is kept. A
/// candidate that diverges is recorded and skipped; when all do, the first one's error is
/// returned.
pub fn train_lr_probe(
    store: &Store,
    cfg: &TrainConfig,
    factors: &[f32],
    device: DeviceChoice,
    out: &Path,
    eval: &EvalOptions,
    observer: &mut dyn FnMut(usize, TrainEvent),
) -> Result<ProbeOutcome> {
    if cfg.checkpoint_every > 0 {
        return Err(SaeError::Setting {
            field: "checkpoint_every",
            value: cfg.checkpoint_every.to_string(),
            expected: "0 with a learning-rate probe, which trains several SAEs and keeps one \
                       (give the learning rate to checkpoint a run)",
        });
    }
    if factors.is_empty() || factors.iter().any(|f| !(f.is_finite() && *f > 0.0)) {
        return Err(SaeError::Config(format!(
            "learning-rate probe factors {factors:?}: expected one or more positive numbers"
        )));
    }
    let runs: Vec<(TrainConfig, std::path::PathBuf)> = factors
        .iter()
        .map(|f| {
            let mut c = cfg.clone();
            c.lr = cfg.lr * f;
            (c, out.to_path_buf())
        })
        .collect();
    let reports = train_lockstep(store, &runs, device, observer)?;
    let mut candidates = Vec::new();
    let mut best: Option<(usize, TrainReport, EvalReport)> = None;
    let mut first_error = None;
    for (i, ((c, _), report)) in runs.iter().zip(reports).enumerate() {
        match report {
            Ok(r) => {
                let e = evaluate(&r.weights, store, device, eval)?;
                candidates.push(ProbeCandidate {
                    lr: c.lr,
                    fvu: Some(e.fvu),
                    dead_fraction: Some(e.dead_fraction),
                    diverged: None,
                });
                // The lowest finite FVU; the first of equals.
                if e.fvu.is_finite() && best.as_ref().is_none_or(|(_, _, b)| e.fvu < b.fvu) {
                    best = Some((i, r, e));
                }
            }
            Err(e @ SaeError::Diverged { .. }) => {
                candidates.push(ProbeCandidate {
                    lr: c.lr,
                    fvu: None,
                    dead_fraction: None,
                    diverged: Some(e.to_string()),
                });
                first_error.get_or_insert(e);
            }
            Err(e) => return Err(e),
        }
    }
    match best {
        Some((chosen, report, eval)) => {
            let mut config = cfg.clone();
            config.lr = candidates[chosen].lr;
            Ok(ProbeOutcome {
                report,
                config,
                eval,
                probe: LrProbe { candidates, chosen },
            })
        }
        None => Err(first_error.unwrap_or_else(|| {
            SaeError::Config(
                "learning-rate probe: no rate gave a finite FVU on the evaluation rows".into(),
            )
        })),
    }
}
