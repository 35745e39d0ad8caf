//! What a training run is: [`TrainConfig`], its defaults per architecture, and its schedules.
//!
//! Schedules, with `T` total steps:
//! - learning rate `lr_t = lr · min(1, (t+1)/W) · min(1, (T − t)/D)` (linear warm-up over
//!   `W = lr_warmup_steps`, linear decay to zero over the last `D = lr_decay_steps`);
//! - sparsity coefficient `λ_t = λ · min(1, (t+1)/sparsity_warmup_steps)` (ReLU, JumpReLU).

use serde::{Deserialize, Serialize};

use lantern_acts::ShuffleScope;

use crate::init::BDecInit;
use crate::rows::RowFilter;
use crate::{Arch, Result, SaeError};

/// Everything that decides a training run. Saved in checkpoints; `--resume` requires the same.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Architecture (and `k` for TopK/BatchTopK).
    pub arch: Arch,
    /// Number of latents.
    pub d_sae: usize,
    /// Optimiser steps.
    pub steps: u64,
    /// Rows per step.
    pub batch: usize,
    /// Peak learning rate.
    pub lr: f32,
    /// Linear learning-rate warm-up steps.
    pub lr_warmup_steps: u64,
    /// Linear decay to zero over the last this many steps.
    pub lr_decay_steps: u64,
    /// λ for ReLU (L1) and JumpReLU (L0).
    pub sparsity_coeff: f32,
    /// Linear warm-up of λ.
    pub sparsity_warmup_steps: u64,
    /// AuxK coefficient α (TopK, BatchTopK).
    pub aux_coeff: f32,
    /// Dead latents per row for AuxK (default `d_in / 2`).
    pub k_aux: Option<usize>,
    /// A latent that has not fired in this many tokens is dead.
    pub dead_tokens: u64,
    /// JumpReLU bandwidth ε.
    pub bandwidth: f32,
    /// JumpReLU initial threshold θ₀.
    pub init_threshold: f32,
    /// Clip the global gradient norm to this value.
    pub grad_clip: Option<f32>,
    /// Scale inputs to `E‖x‖ = √d_in` while training (folded back into the saved weights).
    pub normalize_inputs: bool,
    /// How `b_dec` starts.
    pub b_dec_init: BDecInit,
    /// Subtract `b_dec` from the input before encoding.
    pub apply_b_dec_to_input: bool,
    /// Rows whose token id is one of these are not trained on (e.g. BOS).
    pub exclude_token_ids: Vec<u32>,
    /// Rows with `‖x‖ > factor × median ‖x‖` (of the initial sample) are not trained on
    /// (default 10; [`crate::rows`]).
    pub outlier_factor: Option<f32>,
    /// The first position of each sequence is not trained on (default; [`crate::rows`]).
    /// Absent from checkpoints written before it existed, which kept those rows.
    #[serde(default)]
    pub drop_first_position: bool,
    /// Seed for initialisation and the data order.
    pub seed: u64,
    /// Rows in one shuffle window of the reader (0 = sequential).
    pub shuffle_rows: usize,
    /// What the shuffle mixes ([`ShuffleScope`]): the whole store (the default since
    /// 2026-12-04) or only windows of `shuffle_rows` consecutive rows. A store captured
    /// document by document, read in windows, ends the run on a few documents' rows: on
    /// SmolLM2 that cost 0.013 held-out FVU (0.1505 against 0.1375 for the same trainer with
    /// the store shuffled whole; BENCHMARKS.md). Absent from older checkpoints, which read in
    /// windows and resume so.
    #[serde(default)]
    pub shuffle_scope: ShuffleScope,
    /// Skip non-finite rows instead of failing.
    pub skip_non_finite: bool,
    /// Write a checkpoint every this many steps (0 = never).
    pub checkpoint_every: u64,
    /// Compute and report metrics every this many steps.
    pub log_every: u64,
    /// Rows of data used for initialisation statistics.
    pub init_rows: usize,
    /// Matryoshka BatchTopK: widths of the nested prefixes trained to reconstruct on their
    /// own, before the whole dictionary (strictly increasing, below `d_sae`; empty = plain
    /// BatchTopK). See [`crate::step`].
    #[serde(default)]
    pub matryoshka_widths: Vec<usize>,
    /// ReLU and JumpReLU: aim the training L0 at this many latents per row. ReLU adapts the
    /// sparsity coefficient after its warm-up ([`TrainConfig::next_sparsity_scale`];
    /// `sparsity_coeff` is then only the starting value); JumpReLU penalises
    /// `λ (L0/target − 1)²` instead of `λ L0` (dictionary_learning's target-L0 JumpReLU; an
    /// integral controller on λ winds up there, as L0 follows λ only slowly through the
    /// thresholds; `sae train` then sets JumpReLU's λ to [`jumprelu_target_coeff`] unless told
    /// otherwise).
    #[serde(default)]
    pub target_l0: Option<f32>,
    /// BatchTopK (and Matryoshka): start with `k₀ = max(k, min(d_in, d_sae))` active latents
    /// per row and lower it linearly to `k` over this many steps ([`TrainConfig::k_at`]; 0 =
    /// fixed `k`), so that more latents get gradient while the batch-wide competition is
    /// still being decided (dictionary_learning anneals TopK's k from d_in).
    #[serde(default)]
    pub k_anneal_steps: u64,
    /// BatchTopK (and Matryoshka): select per row (plain TopK, same `k`) for the first this
    /// many steps, then batch-wide ([`TrainConfig::k_at`]; 0 = BatchTopK from the start).
    /// Every latent then competes only inside its own row while the dictionary forms. `sae
    /// train` gives Matryoshka a tenth of its steps unless told otherwise
    /// ([`TrainConfig::default_topk_warmup_steps`]).
    #[serde(default)]
    pub topk_warmup_steps: u64,
    /// TopK and BatchTopK: AuxK also takes latents whose firing rate (a moving average over
    /// the last ≈ 50 steps) is below this, not only those silent for `dead_tokens`: under
    /// BatchTopK, latents that lose the batch-wide competition early fire too rarely to learn
    /// yet too often to count as dead. JumpReLU: the pre-activation loss
    /// ([`TrainConfig::pre_act_coeff`]) takes them.
    #[serde(default)]
    pub revive_below: Option<f32>,
    /// BatchTopK (and Matryoshka): leave the decoder norms free and rank activations by
    /// `relu(pre)·‖W_dec‖` (SAELens's `rescale_acts_by_decoder_norm`; [`crate::step`]); the
    /// saved SAE has the norms folded into the encoder.
    #[serde(default)]
    pub free_decoder_norms: bool,
    /// JumpReLU: the coefficient `c` of the pre-activation loss
    /// `c · Σ_b Σ_i dead_i · relu(θ_i − pre_bi) / B`, which pulls the pre-activations of dead
    /// latents (those of [`TrainConfig::dead_tokens`] and, with `revive_below`, the rare
    /// ones) up to their thresholds ([`crate::step`]; 0 = off).
    #[serde(default)]
    pub pre_act_coeff: f32,
    /// JumpReLU: the peak learning rate of the log-thresholds, on the same schedule as `lr`
    /// ([`ThresholdLr`]; new runs take the rule, checkpoints written before it existed
    /// trained them at `lr`).
    #[serde(default)]
    pub threshold_lr: ThresholdLr,
}

/// The peak learning rate of JumpReLU's log-thresholds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThresholdLr {
    /// The weights' `lr` (what runs did before 2026-12-05).
    #[default]
    SameAsLr,
    /// [`jumprelu_threshold_lr`] of the run's `lr` and length (the default).
    Rule,
    /// This rate.
    Rate(f32),
}

impl std::fmt::Display for ThresholdLr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::SameAsLr => f.write_str("same"),
            Self::Rule => f.write_str("rule"),
            Self::Rate(v) => write!(f, "{v}"),
        }
    }
}

/// The constant `c` of [`jumprelu_threshold_lr`].
pub const THRESHOLD_TRAVEL: f32 = 5.0;

/// JumpReLU's log-threshold learning rate for a run of `T` steps at weight rate `lr`:
/// `max(lr, c/T)`, `c` = [`THRESHOLD_TRAVEL`].
///
/// Adam moves `log θ` by at most about its rate per step, so in `T` steps a threshold can
/// travel `≈ lr_θ·T` in log space, whatever the input width — while [`topk_lr`] falls as
/// `1/√d`. The thresholds have to climb from θ₀ = 0.1 to the scale of the pre-activations
/// (`ln 8` ≈ 2.1 on SmolLM2 at d 576), and Adam's steps shrink where the gradient's sign
/// flips. On SmolLM2's layer 15 (d 576, 4 608 latents, target L0 32, 488 steps) the weights'
/// 3.4e-3 left the thresholds at a median 0.27 and L0 at 147 (still falling; FVU 0.148); this
/// rule's 1.02e-2 reached L0 31.8 by step 250 (FVU 0.128; BENCHMARKS.md, "JumpReLU's
/// threshold rate"). Where the thresholds were not short of travel it changes little: at d 64
/// (782 steps) and d 128 (977 steps) the rule is `lr` or within 1 % of it.
pub fn jumprelu_threshold_lr(lr: f32, steps: u64) -> f32 {
    lr.max(THRESHOLD_TRAVEL / steps.max(1) as f32)
}

/// JumpReLU's default λ with a target L0 `T` (the penalty `λ (L0/T − 1)²`) for inputs of
/// width `d_in`: `λ = 30 · (d_in / 64) · (T / 8)`.
///
/// The two terms it balances scale apart: the reconstruction error `‖x − x̂‖²` is summed over
/// `d_in` on inputs scaled to `E‖x‖ = √d_in`, so its pull towards more active latents grows with
/// `d_in`, while the penalty's slope per latent, `2λ (L0/T − 1)/T`, shrinks as `1/T`. λ 30 was
/// measured at d 64, T 8 (L0 within 5–17 % of T at 4, 8, 16). On synthetic data
/// (BENCHMARKS.md, "JumpReLU θ₀ and ε") a fixed λ 30 left L0 at 98 for T 32 at d 128
/// (2 048 latents, 977 steps; MMCS 0.31) where this rule's 240 gave 32.9 (MMCS 0.62), and at
/// d 64 it matched or beat λ 30 at T 4 (4.21, MMCS 0.980 against 4.14, 0.969) and T 16 (16.2,
/// 0.868 against 16.7, 0.831). At d 576 (SmolLM2, T 32, λ 1 080) L0 ended at 31.8 and 31.6
/// (488 and 977 steps) with the thresholds at [`jumprelu_threshold_lr`].
pub fn jumprelu_target_coeff(d_in: usize, target_l0: f32) -> f32 {
    30.0 * (d_in as f32 / 64.0) * (target_l0 / 8.0)
}

/// sparsify's Adam learning rate for `M` latents, `2e-4 / √(M / 2¹⁴)` (its `Trainer`; Gao et
/// al. 2024 fit the `1/√M` scaling on long runs).
pub fn sparsify_lr(d_sae: usize) -> f32 {
    2e-4 / ((d_sae as f32) / 16384.0).sqrt()
}

/// The constant `c` of [`topk_lr`].
pub const SHORT_RUN_LR: f64 = 1.8;

/// Lantern's TopK, BatchTopK and JumpReLU learning rate for inputs of width `d` (scaled to
/// `E‖x‖ = √d`), `M` latents and `T` steps: `lr = max(2e-4/√(M/2¹⁴), c/√(d·T))`,
/// `c` = [`SHORT_RUN_LR`].
///
/// Adam moves every weight by about `lr` a step, so an encoder column of norm 1 (entries
/// ≈ 1/√d) changes by a relative `lr·√d`: the second term holds that fixed across widths and
/// lets it shrink as `1/√T` with the run's length. Fitted on the lr sweeps of BENCHMARKS.md
/// (synthetic ground truth at d 64–256 over 245–7 325 steps, SmolLM2's residual stream at
/// d 576 over 488 steps), where sparsify's rule alone was 5–20× below the best rate on every
/// run shorter than a few thousand steps (on SmolLM2 its held-out FVU was 39 % and 85 % worse
/// at 4608 and 18432 latents); the first term, sparsify's rule, takes over on long runs (from
/// ≈ 40 000 steps at d 576, M 4608). It is the best rate swept at d 768 with 6 144 and
/// 24 576 latents (244 steps). Below ≈ 500 steps the best rate strays from it both ways: at
/// d 256 and 245 steps it was 1.43× the rule's (the rule 5–8 % FVU off at three seeds), at
/// d 128 with 4 096 latents 0.7× (3.5 % off), at d 512 and 489 steps √2× (2.9–5.0 % off),
/// while at d 128 with 1 024 latents and at d 768 the rule was the best; a `√(500/T)` factor
/// fitted to the first case killed 83 % of the latents at d 768 / 24 576, so no such factor is
/// applied (BENCHMARKS.md). Instead, `sae train` probes runs under
/// [`super::PROBE_BELOW_STEPS`] steps: [`super::train_lr_probe`] trains this rate ×1/√2, ×1
/// and ×√2 in one pass and keeps the lowest FVU.
pub fn topk_lr(d_in: usize, d_sae: usize, steps: u64) -> f32 {
    let short = SHORT_RUN_LR / (d_in.max(1) as f64 * steps.max(1) as f64).sqrt();
    sparsify_lr(d_sae).max(short as f32)
}

impl TrainConfig {
    /// Defaults for an architecture, input width `d_in`, dictionary size and run length: the
    /// TopK, BatchTopK (and Matryoshka) and JumpReLU learning rate is [`topk_lr`] (BatchTopK
    /// at full size on synthetic data: MMCS 0.765 → 0.876, FVU 0.150 → 0.108 against lr 2e-3;
    /// JumpReLU at the small size, 781 steps: MMCS 0.96–0.97 at L0 8.1 against 0.36 at L0 82,
    /// the target never reached, under sparsify's rule; BENCHMARKS.md), ReLU Anthropic's 5e-5
    /// with λ = 5. JumpReLU's log-thresholds take [`jumprelu_threshold_lr`] on the same
    /// schedule.
    ///
    /// JumpReLU starts its thresholds at θ₀ = 0.1 with bandwidth ε = 0.05, not Gemma Scope's
    /// 0.001 and 0.001. Adam moves `log θ` by at most about the learning rate per step, and
    /// with inputs scaled to `E‖x‖ = √d` and the tied initial encoder the pre-activations
    /// start with a standard deviation of about 1 or less, so a threshold that has to end near
    /// 1 climbs `ln(1/θ₀)` ≈ 6.9 from 0.001: more than 782 steps at the rule's 8e-3 allow, and
    /// in practice more than 7 813 at its 2.5e-3 (Adam's steps shrink where the gradient's
    /// sign flips). On synthetic data (d 64, 512 latents, target L0 8) Gemma Scope's values
    /// ended at L0 204–210 (MMCS 0.38–0.39, 3 seeds) after 782 steps and at L0 113 after
    /// 7 813; θ₀ 0.1 reached L0 8.1–8.2 with MMCS 0.95–0.97 at both lengths (BENCHMARKS.md,
    /// "JumpReLU θ₀ and ε"). θ₀ 0.01 (SAELens's) was still short (MMCS 0.80), θ₀ 1 left 47 %
    /// of the latents dead; ε 0.001 with a fixed λ left L0 at 22 where ε 0.05 gave 4. At
    /// d 128 with 2 048 latents JumpReLU still learns the dictionary poorly in 977 steps
    /// (MMCS 0.31 at λ 30; 0.62 at [`jumprelu_target_coeff`]'s 240, which holds the target).
    ///
    /// The gradient clip is 0.01 for TopK and BatchTopK and 1 for ReLU and JumpReLU. The
    /// TopK losses are divided by the batch's total variance (about `B·d` for scaled inputs),
    /// which makes their gradients roughly `d` times smaller, so a clip of 1 would never
    /// act. At 0.01 it acts on most steps, and that trained better in every comparison on
    /// synthetic data (BENCHMARKS.md, e.g. BatchTopK MMCS 0.48 → 0.61 at 2 M tokens).
    ///
    /// BatchTopK (and Matryoshka) also revive rare latents: AuxK takes latents firing on
    /// fewer than 0.1 % of tokens (`revive_below`), with α = 1 instead of TopK's 1/32. On
    /// synthetic data that lifted BatchTopK's MMCS from 0.91 to 0.99 at the small size and
    /// from 0.61 to 0.72 at full size (BENCHMARKS.md, "BatchTopK revival"); with the dead
    /// window alone AuxK never acted there. Their decoder norms are free
    /// ([`TrainConfig::free_decoder_norms`]): MMCS 0.72–0.74 → 0.77 at full size.
    pub fn new(arch: Arch, d_in: usize, d_sae: usize, steps: u64, batch: usize) -> Self {
        let batch_topk = matches!(arch, Arch::BatchTopK { .. });
        let (lr, sparsity_coeff, grad_clip) = match arch {
            Arch::TopK { .. } | Arch::BatchTopK { .. } => (topk_lr(d_in, d_sae, steps), 0.0, 0.01),
            Arch::Relu => (5e-5, 5.0, 1.0),
            Arch::JumpRelu => (topk_lr(d_in, d_sae, steps), 1.0, 1.0),
        };
        Self {
            arch,
            d_sae,
            steps,
            batch,
            lr,
            lr_warmup_steps: 0,
            // default_lr_decay_steps, default_topk_warmup_steps (no Matryoshka prefixes yet)
            lr_decay_steps: if batch_topk { steps / 2 } else { steps / 5 },
            sparsity_coeff,
            sparsity_warmup_steps: steps / 20,
            aux_coeff: if matches!(arch, Arch::BatchTopK { .. }) {
                1.0
            } else {
                1.0 / 32.0
            },
            k_aux: None,
            dead_tokens: 10_000_000,
            bandwidth: 0.05,
            init_threshold: 0.1,
            grad_clip: Some(grad_clip),
            normalize_inputs: true,
            b_dec_init: BDecInit::Median,
            apply_b_dec_to_input: true,
            exclude_token_ids: Vec::new(),
            outlier_factor: Some(crate::rows::DEFAULT_OUTLIER_FACTOR),
            drop_first_position: true,
            seed: 0,
            shuffle_rows: 1 << 16,
            shuffle_scope: ShuffleScope::Store,
            skip_non_finite: false,
            checkpoint_every: 0,
            log_every: 50,
            init_rows: 16384,
            matryoshka_widths: Vec::new(),
            target_l0: None,
            k_anneal_steps: 0,
            topk_warmup_steps: if batch_topk { steps / 10 } else { 0 },
            revive_below: matches!(arch, Arch::BatchTopK { .. }).then_some(1e-3),
            free_decoder_norms: matches!(arch, Arch::BatchTopK { .. }),
            pre_act_coeff: 0.0,
            threshold_lr: if matches!(arch, Arch::JumpRelu) {
                ThresholdLr::Rule
            } else {
                ThresholdLr::SameAsLr
            },
        }
    }

    /// The TopK warm-up a run gets unless told otherwise: a tenth of the steps for BatchTopK
    /// and Matryoshka, none for the others.
    ///
    /// On the hierarchy data (d 64, 16 parents × 4 children, 781 steps, seeds 0–2) 80 steps
    /// of per-row selection lifted Matryoshka's MMCS from 0.895–0.902 to 0.919–0.940, lowered
    /// FVU from 0.199–0.205 to 0.184–0.187 and absorption from 0.112–0.124 to 0.099–0.118;
    /// on the flat full-size data (d 128, 2 048 latents, k 32, 977 steps) MMCS 0.640 → 0.691,
    /// FVU 0.185 → 0.183 (BENCHMARKS.md, "Shorter TopK warm-ups"). Plain BatchTopK needs it
    /// together with the longer decay of [`TrainConfig::default_lr_decay_steps`] to come within
    /// 0.05 MMCS of TopK at full size.
    pub fn default_topk_warmup_steps(&self) -> u64 {
        if matches!(self.arch, Arch::BatchTopK { .. }) {
            self.steps / 10
        } else {
            0
        }
    }

    /// The learning-rate decay a run gets unless told otherwise: the last half of the steps for
    /// plain BatchTopK, the last fifth for the others (Matryoshka included).
    ///
    /// Full-size synthetic data (d 128, 1 024 features, 2 048 latents, k 32, 977 steps, seeds
    /// 0–2; TopK 0.947 / 0.948 / 0.947): BatchTopK with neither 0.882 / 0.878 / 0.879 MMCS
    /// (FVU 0.108), with the TopK warm-up alone 0.906 / 0.903 / 0.896, with the half-run decay
    /// alone 0.892 / 0.887 / 0.892, with both (97 and 488 steps) **0.917 / 0.913 / 0.908** (FVU
    /// 0.112–0.114): the gap to TopK falls from 0.065–0.070 to 0.030–0.039. On the hierarchy
    /// data absorption rises from 0.213 to 0.240 on average (Matryoshka 0.11, TopK 0.61);
    /// Matryoshka loses 0.02 MMCS with the longer decay, so it keeps the fifth (BENCHMARKS.md,
    /// "BatchTopK revival").
    pub fn default_lr_decay_steps(&self) -> u64 {
        if matches!(self.arch, Arch::BatchTopK { .. }) && self.matryoshka_widths.is_empty() {
            self.steps / 2
        } else {
            self.steps / 5
        }
    }

    /// Makes this BatchTopK run a Matryoshka one with the nested prefixes `widths` (strictly
    /// increasing, below `d_sae`), with Matryoshka's schedule defaults
    /// ([`TrainConfig::default_topk_warmup_steps`], [`TrainConfig::default_lr_decay_steps`]).
    pub fn set_matryoshka(&mut self, widths: Vec<usize>) {
        self.matryoshka_widths = widths;
        self.topk_warmup_steps = self.default_topk_warmup_steps();
        self.lr_decay_steps = self.default_lr_decay_steps();
    }

    /// The selected entries per row the CPU engine ([`crate::cpu`]) keeps for this run: `k`
    /// for TopK, BatchTopK's candidates ([`crate::cpu::batch_candidates`]) for BatchTopK with a
    /// fixed `k` (no Matryoshka prefixes, no k annealing; its TopK warm-up included); `None`
    /// where the engine does not train the architecture.
    pub fn engine_selection(&self) -> Option<usize> {
        match self.arch {
            Arch::TopK { k } => Some(k.min(self.d_sae)),
            Arch::BatchTopK { k }
                if self.matryoshka_widths.is_empty() && self.k_anneal_steps == 0 =>
            {
                Some(crate::cpu::batch_candidates(k.min(self.d_sae), self.d_sae))
            }
            _ => None,
        }
    }

    /// The peak learning rate of JumpReLU's log-thresholds ([`ThresholdLr`]).
    pub fn threshold_peak_lr(&self) -> f32 {
        match self.threshold_lr {
            ThresholdLr::SameAsLr => self.lr,
            ThresholdLr::Rule => jumprelu_threshold_lr(self.lr, self.steps),
            ThresholdLr::Rate(v) => v,
        }
    }

    /// The learning rates at step `t`: `lr_at(t)` for the weights, and the same schedule
    /// scaled to [`TrainConfig::threshold_peak_lr`] for JumpReLU's log-thresholds.
    pub fn rates_at(&self, t: u64) -> crate::optim::LearningRates {
        let weights = self.lr_at(t);
        crate::optim::LearningRates {
            weights,
            threshold: weights * (self.threshold_peak_lr() / self.lr),
        }
    }

    /// The rows this run trains on ([`crate::rows`]).
    pub fn row_filter(&self) -> RowFilter {
        RowFilter {
            exclude_token_ids: self.exclude_token_ids.clone(),
            drop_first: self.drop_first_position,
            outlier_factor: self.outlier_factor,
        }
    }

    /// Learning rate at step `t`.
    pub fn lr_at(&self, t: u64) -> f32 {
        let warm = if self.lr_warmup_steps > 0 {
            ((t + 1) as f32 / self.lr_warmup_steps as f32).min(1.0)
        } else {
            1.0
        };
        let decay = if self.lr_decay_steps > 0 {
            (self.steps.saturating_sub(t) as f32 / self.lr_decay_steps as f32).min(1.0)
        } else {
            1.0
        };
        self.lr * warm * decay
    }

    /// Sparsity coefficient at step `t`.
    pub fn sparsity_at(&self, t: u64) -> f32 {
        if self.sparsity_warmup_steps == 0 {
            return self.sparsity_coeff;
        }
        self.sparsity_coeff * ((t + 1) as f32 / self.sparsity_warmup_steps as f32).min(1.0)
    }

    /// The architecture of step `t` (0-based) for inputs of width `d_in`: `cfg.arch`, except
    /// that under `k_anneal_steps = A` BatchTopK's `k` is
    /// `round(k + (k₀ − k)·max(0, 1 − t/A))`, `k₀ = max(k, min(d_in, d_sae))`.
    ///
    /// Under `topk_warmup_steps = W`, steps `t < W` select per row: `Arch::TopK` with that `k`.
    pub fn k_at(&self, t: u64, d_in: usize) -> Arch {
        let arch = match self.arch {
            Arch::BatchTopK { k } if self.k_anneal_steps > 0 => {
                let k0 = k.max(d_in.min(self.d_sae));
                let left = 1.0 - (t as f64 / self.k_anneal_steps as f64).min(1.0);
                Arch::BatchTopK {
                    k: (k as f64 + (k0 - k) as f64 * left).round() as usize,
                }
            }
            a => a,
        };
        match arch {
            Arch::BatchTopK { k } if t < self.topk_warmup_steps => Arch::TopK { k },
            a => a,
        }
    }

    /// The factor on the sparsity coefficient for the next step under `target_l0`, from the
    /// current factor `s` and the L0 of the step just taken at step `t` (0-based):
    ///
    /// ```text
    /// s ← s · exp(η · clamp(ln(L0 / target), −1, 1)),   η = 0.02, after the λ warm-up
    /// ```
    ///
    /// a multiplicative integral controller: λ grows while rows use more latents than asked,
    /// and shrinks while they use fewer, by at most 2 % a step (so it follows the slower
    /// response of the weights instead of oscillating). During the warm-up, and without a
    /// target, `s` stays. A batch with no active latent counts as L0 = target/e. ReLU only:
    /// JumpReLU aims at its target through its loss, and `s` stays 1.
    pub fn next_sparsity_scale(&self, s: f32, t: u64, l0: f64) -> f32 {
        const ETA: f64 = 0.02;
        match self.target_l0 {
            Some(target) if t + 1 >= self.sparsity_warmup_steps && self.arch == Arch::Relu => {
                let ratio = if l0 > 0.0 {
                    (l0 / f64::from(target)).ln().clamp(-1.0, 1.0)
                } else {
                    -1.0
                };
                (f64::from(s) * (ETA * ratio).exp()) as f32
            }
            _ => s,
        }
    }

    /// Checks the settings against a store of width `d_in`, naming the field that is out of
    /// range (the CLI adds its flag).
    pub(crate) fn check(&self, d_in: usize) -> Result<()> {
        let bad = |field: &'static str, value: String, expected: &'static str| {
            Err(SaeError::Setting {
                field,
                value,
                expected,
            })
        };
        if self.d_sae == 0 {
            return bad("d_sae", "0".into(), "at least 1");
        }
        if self.batch == 0 {
            return bad("batch", "0".into(), "at least 1");
        }
        if self.steps == 0 {
            return bad("steps", "0".into(), "at least one step");
        }
        if let Arch::TopK { k } | Arch::BatchTopK { k } = self.arch
            && (k == 0 || k > self.d_sae)
        {
            return bad("k", k.to_string(), "between 1 and d_sae");
        }
        if !self.matryoshka_widths.is_empty() {
            let w = &self.matryoshka_widths;
            let shown = || w.iter().map(usize::to_string).collect::<Vec<_>>().join(",");
            if !matches!(self.arch, Arch::BatchTopK { .. }) {
                return bad(
                    "matryoshka_widths",
                    shown(),
                    "nothing: Matryoshka prefixes apply to batchtopk only",
                );
            }
            if w[0] == 0 || w.windows(2).any(|p| p[0] >= p[1]) || w[w.len() - 1] >= self.d_sae {
                return bad(
                    "matryoshka_widths",
                    shown(),
                    "strictly increasing widths between 1 and d_sae − 1",
                );
            }
        }
        if self.free_decoder_norms && !matches!(self.arch, Arch::BatchTopK { .. }) {
            return bad(
                "free_decoder_norms",
                "true".into(),
                "false: free decoder norms apply to batchtopk and matryoshka",
            );
        }
        if self.topk_warmup_steps > 0 && !matches!(self.arch, Arch::BatchTopK { .. }) {
            return bad(
                "topk_warmup_steps",
                self.topk_warmup_steps.to_string(),
                "0: a TopK warm-up applies to batchtopk and matryoshka",
            );
        }
        if self.topk_warmup_steps > 0 && self.topk_warmup_steps >= self.steps {
            // The inference threshold averages the batch-wide cut of the steps after it: with
            // none, the saved SAE would keep every positive activation.
            return bad(
                "topk_warmup_steps",
                format!("{} of a {}-step run", self.topk_warmup_steps, self.steps),
                "fewer than the run's steps: the batch threshold is learnt after the warm-up",
            );
        }
        if self.k_anneal_steps > 0 && !matches!(self.arch, Arch::BatchTopK { .. }) {
            return bad(
                "k_anneal_steps",
                self.k_anneal_steps.to_string(),
                "0: k annealing applies to batchtopk and matryoshka",
            );
        }
        let jumprelu = matches!(self.arch, Arch::JumpRelu);
        if self.pre_act_coeff != 0.0 && !jumprelu {
            return bad(
                "pre_act_coeff",
                self.pre_act_coeff.to_string(),
                "0: the pre-activation loss applies to jumprelu",
            );
        }
        if let Some(r) = self.revive_below {
            if matches!(self.arch, Arch::Relu) {
                return bad(
                    "revive_below",
                    r.to_string(),
                    "nothing: only topk, batchtopk, matryoshka (AuxK) and jumprelu (pre-activation loss) revive latents",
                );
            }
            if !(r.is_finite() && r > 0.0 && r < 1.0) {
                return bad(
                    "revive_below",
                    r.to_string(),
                    "a firing rate between 0 and 1",
                );
            }
        }
        if let Some(t) = self.target_l0 {
            if !matches!(self.arch, Arch::Relu | Arch::JumpRelu) {
                return bad(
                    "target_l0",
                    t.to_string(),
                    "nothing: topk, batchtopk and matryoshka fix L0 with k",
                );
            }
            if !(t.is_finite() && t > 0.0 && t < self.d_sae as f32) {
                return bad("target_l0", t.to_string(), "a number between 0 and d_sae");
            }
            if self.sparsity_coeff <= 0.0 {
                return bad(
                    "sparsity_coeff",
                    self.sparsity_coeff.to_string(),
                    "a positive starting value for --target-l0 to scale",
                );
            }
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("lr", self.lr.to_string(), "a positive number");
        }
        if self.threshold_lr != ThresholdLr::SameAsLr && !jumprelu {
            return bad(
                "threshold_lr",
                self.threshold_lr.to_string(),
                "nothing: only jumprelu has thresholds to train",
            );
        }
        if let ThresholdLr::Rate(v) = self.threshold_lr
            && !(v.is_finite() && v > 0.0)
        {
            return bad("threshold_lr", v.to_string(), "a positive number");
        }
        // Every other float setting, here once for every caller (CLI, sweeps, resume).
        let non_negative = [
            ("sparsity_coeff", self.sparsity_coeff),
            ("aux_coeff", self.aux_coeff),
            ("init_threshold", self.init_threshold),
            ("pre_act_coeff", self.pre_act_coeff),
        ];
        for (field, v) in non_negative {
            if !(v.is_finite() && v >= 0.0) {
                return bad(field, v.to_string(), "a finite number ≥ 0");
            }
        }
        if !(self.bandwidth.is_finite() && self.bandwidth > 0.0) {
            return bad("bandwidth", self.bandwidth.to_string(), "a positive number");
        }
        if let Some(g) = self.grad_clip
            && !(g.is_finite() && g > 0.0)
        {
            return bad("grad_clip", g.to_string(), "a positive number");
        }
        self.row_filter().check()?;
        if d_in == 0 {
            return Err(SaeError::Config(
                "the activation store has d_model = 0".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The TopK default at points of the lr sweeps (BENCHMARKS.md), computed by hand from
    /// `max(2e-4/√(M/16384), 1.8/√(d·T))`: short runs get the second term, long ones
    /// sparsify's; BatchTopK and JumpReLU follow it.
    #[test]
    fn topk_default_lr_follows_width_and_run_length() {
        let lr = |d, m, t| TrainConfig::new(Arch::TopK { k: 8 }, d, m, t, 4096).lr;
        let close = |a: f32, b: f32| (a / b - 1.0).abs() < 1e-4;
        // 1.8/√(576·488) = 3.3951e-3 (SmolLM2, M 4608, 2 M tokens).
        assert!(
            close(lr(576, 4608, 488), 3.3951e-3),
            "{}",
            lr(576, 4608, 488)
        );
        // 1.8/√(64·7325) = 2.6289e-3 (the long synthetic run).
        assert!(close(lr(64, 512, 7325), 2.6289e-3), "{}", lr(64, 512, 7325));
        // 10⁶ steps at d 576: 1.8/√(5.76e8) = 7.5e-5 < sparsify's 2e-4/√(4608/16384) = 3.7712e-4.
        assert!(
            close(lr(576, 4608, 1_000_000), 3.7712e-4),
            "{}",
            lr(576, 4608, 1_000_000)
        );
        let b = TrainConfig::new(Arch::BatchTopK { k: 8 }, 576, 4608, 488, 4096).lr;
        assert!(close(b, 3.3951e-3), "batchtopk {b}");
        let j = TrainConfig::new(Arch::JumpRelu, 576, 4608, 488, 4096).lr;
        assert!(close(j, 3.3951e-3), "jumprelu {j}");
    }

    /// JumpReLU's log-thresholds take `max(lr, 5/T)` on the weights' schedule, computed by
    /// hand: at d 576, 4 608 latents, 488 steps, lr = 1.8/√(576·488) = 3.3951e-3 and
    /// 5/488 = 1.02459e-2; at d 64 over 782 steps lr 8.0460e-3 is the larger. Other
    /// architectures, and JumpReLU checkpoints written before the field (no key), use `lr`.
    #[test]
    fn jumprelu_thresholds_take_their_own_rate_on_the_weights_schedule() {
        let close = |a: f32, b: f32| (a / b - 1.0).abs() < 1e-4;
        let cfg = TrainConfig::new(Arch::JumpRelu, 576, 4608, 488, 2048);
        let r = cfg.rates_at(0);
        assert!(close(r.weights, 3.3951e-3), "{r:?}");
        assert!(close(r.threshold, 1.02459e-2), "{r:?}");
        // In the linear decay (the last 97 steps), both fall by the same factor: 10/97 left.
        let late = cfg.rates_at(478);
        assert!(close(late.threshold, 1.02459e-2 * 10.0 / 97.0), "{late:?}");
        assert!(close(late.weights, 3.3951e-3 * 10.0 / 97.0), "{late:?}");
        let small = TrainConfig::new(Arch::JumpRelu, 64, 512, 782, 1024).rates_at(0);
        assert!(close(small.threshold, 8.0460e-3), "{small:?}");
        let topk = TrainConfig::new(Arch::TopK { k: 8 }, 576, 4608, 488, 2048);
        assert_eq!(topk.rates_at(0).threshold, topk.rates_at(0).weights);
        let mut json = serde_json::to_value(&cfg).unwrap();
        assert_eq!(json["threshold_lr"], "rule");
        json.as_object_mut().unwrap().remove("threshold_lr");
        let old: TrainConfig = serde_json::from_value(json).unwrap();
        assert_eq!(old.rates_at(0).threshold, old.rates_at(0).weights);
        let mut set = cfg.clone();
        set.threshold_lr = ThresholdLr::Rate(0.02);
        assert!(close(set.rates_at(0).threshold, 0.02));
        let mut wrong = topk.clone();
        wrong.threshold_lr = ThresholdLr::Rule;
        assert!(wrong.check(576).is_err(), "TopK has no thresholds");
    }

    /// New runs shuffle the whole store; a checkpoint written before the scope existed (no
    /// `shuffle_scope` key) resumes in the windowed order it was trained in.
    #[test]
    fn new_runs_shuffle_the_whole_store_and_old_checkpoints_keep_windows() {
        let cfg = TrainConfig::new(Arch::TopK { k: 8 }, 64, 512, 100, 256);
        assert_eq!(cfg.shuffle_scope, ShuffleScope::Store);
        let mut json = serde_json::to_value(&cfg).unwrap();
        assert_eq!(json["shuffle_scope"], "store");
        json.as_object_mut().unwrap().remove("shuffle_scope");
        let old: TrainConfig = serde_json::from_value(json).unwrap();
        assert_eq!(old.shuffle_scope, ShuffleScope::Window);
        assert_eq!(
            crate::train::reader_options(&cfg).scope,
            ShuffleScope::Store
        );
    }

    /// The controller on a plant whose L0 falls as λ grows (`L0 = 40/λ`, so λ* = 5 gives
    /// the target 8): it leaves λ alone during the warm-up and without a target, then settles
    /// within 1 % of λ* from below and from above, without overshooting by more than 5 %.
    #[test]
    fn target_l0_controller_settles_on_the_lambda_that_gives_the_target() {
        let mut cfg = TrainConfig::new(Arch::Relu, 64, 512, 2000, 1024);
        cfg.sparsity_coeff = 1.0;
        cfg.sparsity_warmup_steps = 100;
        assert_eq!(cfg.next_sparsity_scale(1.0, 500, 80.0), 1.0, "no target");
        cfg.target_l0 = Some(8.0);
        assert_eq!(
            cfg.next_sparsity_scale(1.0, 50, 80.0),
            1.0,
            "in the warm-up"
        );
        for start in [1.0f32, 20.0] {
            let mut s = start;
            let mut extreme = s;
            for t in 100..1100 {
                let l0 = 40.0 / f64::from(s * cfg.sparsity_coeff);
                s = cfg.next_sparsity_scale(s, t, l0);
                extreme = if start < 5.0 {
                    extreme.max(s)
                } else {
                    extreme.min(s)
                };
            }
            assert!((s - 5.0).abs() < 0.05, "from {start}: λ {s}");
            assert!(
                (extreme - 5.0).abs() < 0.25,
                "from {start}: overshoot to {extreme}"
            );
        }
        // No active latent at all: λ falls.
        assert!(cfg.next_sparsity_scale(1.0, 500, 0.0) < 1.0);
    }

    #[test]
    fn batchtopk_k_anneals_linearly_from_d_in_to_k() {
        let mut cfg = TrainConfig::new(Arch::BatchTopK { k: 32 }, 128, 2048, 1000, 1024);
        cfg.topk_warmup_steps = 0; // batch-wide from the first step
        assert_eq!(
            cfg.k_at(0, 128),
            Arch::BatchTopK { k: 32 },
            "off by default"
        );
        cfg.k_anneal_steps = 100;
        let ks: Vec<Arch> = [0, 50, 99, 100, 500]
            .iter()
            .map(|t| cfg.k_at(*t, 128))
            .collect();
        let want = [128, 80, 33, 32, 32].map(|k| Arch::BatchTopK { k });
        assert_eq!(ks, want);
        // k₀ never exceeds d_sae nor falls below k.
        cfg.d_sae = 64;
        assert_eq!(cfg.k_at(0, 128), Arch::BatchTopK { k: 64 });
        assert_eq!(cfg.k_at(0, 16), Arch::BatchTopK { k: 32 });
        cfg.arch = Arch::TopK { k: 32 };
        assert!(cfg.check(128).is_err(), "TopK does not anneal");
    }

    #[test]
    fn batchtopk_schedule_defaults() {
        let mut cfg = TrainConfig::new(Arch::BatchTopK { k: 32 }, 128, 2048, 977, 2048);
        assert_eq!(
            (cfg.topk_warmup_steps, cfg.lr_decay_steps),
            (97, 488),
            "plain BatchTopK"
        );
        assert_eq!(cfg.default_topk_warmup_steps(), 97);
        assert_eq!(cfg.default_lr_decay_steps(), 488);
        cfg.set_matryoshka(vec![128, 512]);
        assert_eq!((cfg.topk_warmup_steps, cfg.lr_decay_steps), (97, 195));
        let topk = TrainConfig::new(Arch::TopK { k: 32 }, 128, 2048, 977, 2048);
        assert_eq!((topk.topk_warmup_steps, topk.lr_decay_steps), (0, 195));
        assert_eq!(topk.default_topk_warmup_steps(), 0);
        assert_eq!(topk.default_lr_decay_steps(), 195);
    }

    #[test]
    fn batchtopk_selects_per_row_during_the_topk_warmup() {
        let mut cfg = TrainConfig::new(Arch::BatchTopK { k: 32 }, 128, 2048, 1000, 1024);
        cfg.topk_warmup_steps = 10;
        assert_eq!(cfg.k_at(0, 128), Arch::TopK { k: 32 });
        assert_eq!(cfg.k_at(9, 128), Arch::TopK { k: 32 });
        assert_eq!(cfg.k_at(10, 128), Arch::BatchTopK { k: 32 });
        cfg.topk_warmup_steps = 1000;
        assert!(
            cfg.check(128).is_err(),
            "no step left to learn the threshold"
        );
        cfg.topk_warmup_steps = 10;
        cfg.k_anneal_steps = 100;
        assert_eq!(
            cfg.k_at(0, 128),
            Arch::TopK { k: 128 },
            "annealed k, per row"
        );
        assert!(cfg.check(128).is_ok());
        cfg.arch = Arch::TopK { k: 32 };
        cfg.k_anneal_steps = 0;
        assert!(cfg.check(128).is_err(), "TopK has no TopK warm-up");
    }
}
