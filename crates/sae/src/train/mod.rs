//! The training loop: data streaming, schedules, dead-latent tracking, metrics, checkpoints.
//!
//! Schedules, with `T` total steps:
//! - learning rate `lr_t = lr · min(1, (t+1)/W) · min(1, (T − t)/D)` (linear warm-up over
//!   `W = lr_warmup_steps`, linear decay to zero over the last `D = lr_decay_steps`);
//! - sparsity coefficient `λ_t = λ · min(1, (t+1)/sparsity_warmup_steps)` (ReLU, JumpReLU).
//!
//! A latent is *dead* once it has not fired in the last `dead_tokens` training tokens; AuxK
//! trains dead latents on the residual. A latent is *dense* when it fires on more than 10 % of
//! the tokens of a logging window.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;

use burn::tensor::{Device, Tensor, TensorData};
use lantern_acts::rng::Rng;
use lantern_acts::{Batch, BatchReader, Cursor, NonFinite, ReaderOptions, Store};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{self, Checkpoint};
use crate::device::DeviceChoice;
use crate::init::{self, BDecInit};
use crate::optim::{self, Adam};
use crate::params::{Params, download, scalar, upload1, upload2};
use crate::step::{DeadLatents, StepSettings, step};
use crate::{Arch, Result, SaeConfig, SaeError, SaeWeights};

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
    /// Rows with `‖x‖ > factor × median ‖x‖` (of the initial sample) are not trained on.
    pub outlier_factor: Option<f32>,
    /// Seed for initialisation and the data order.
    pub seed: u64,
    /// Rows in one shuffle window of the reader (0 = sequential).
    pub shuffle_rows: usize,
    /// Skip non-finite rows instead of failing.
    pub skip_non_finite: bool,
    /// Write a checkpoint every this many steps (0 = never).
    pub checkpoint_every: u64,
    /// Compute and report metrics every this many steps.
    pub log_every: u64,
    /// Rows of data used for initialisation statistics.
    pub init_rows: usize,
}

impl TrainConfig {
    /// Defaults for an architecture and dictionary size, after sparsify (TopK learning rate
    /// `2e-4 / √(d_sae / 2¹⁴)`), Anthropic (ReLU: lr 5e-5, λ = 5) and Gemma Scope (JumpReLU:
    /// ε = 0.001, θ₀ = 0.001).
    ///
    /// The gradient clip is 0.01 for TopK and BatchTopK and 1 for ReLU and JumpReLU. The
    /// TopK losses are divided by the batch's total variance (about `B·d` for scaled inputs),
    /// which makes their gradients roughly `d` times smaller, so a clip of 1 would never
    /// act. At 0.01 it acts on most steps, and that trained better in every comparison on
    /// synthetic data (BENCHMARKS.md, e.g. BatchTopK MMCS 0.48 → 0.61 at 2 M tokens).
    pub fn new(arch: Arch, d_sae: usize, steps: u64, batch: usize) -> Self {
        let (lr, sparsity_coeff, grad_clip) = match arch {
            Arch::TopK { .. } | Arch::BatchTopK { .. } => {
                (2e-4 / ((d_sae as f32) / 16384.0).sqrt(), 0.0, 0.01)
            }
            Arch::Relu => (5e-5, 5.0, 1.0),
            Arch::JumpRelu => (2e-4 / ((d_sae as f32) / 16384.0).sqrt(), 1.0, 1.0),
        };
        Self {
            arch,
            d_sae,
            steps,
            batch,
            lr,
            lr_warmup_steps: 0,
            lr_decay_steps: steps / 5,
            sparsity_coeff,
            sparsity_warmup_steps: steps / 20,
            aux_coeff: 1.0 / 32.0,
            k_aux: None,
            dead_tokens: 10_000_000,
            bandwidth: 0.001,
            init_threshold: 0.001,
            grad_clip: Some(grad_clip),
            normalize_inputs: true,
            b_dec_init: BDecInit::Median,
            apply_b_dec_to_input: true,
            exclude_token_ids: Vec::new(),
            outlier_factor: None,
            seed: 0,
            shuffle_rows: 1 << 16,
            skip_non_finite: false,
            checkpoint_every: 0,
            log_every: 50,
            init_rows: 16384,
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

    fn check(&self, d_in: usize) -> Result<()> {
        let bad = |msg: String| Err(SaeError::Config(msg));
        if self.d_sae == 0 {
            return bad("--d-sae must be at least 1".into());
        }
        if self.batch == 0 {
            return bad("--batch must be at least 1".into());
        }
        if self.steps == 0 {
            return bad("--steps/--tokens must give at least one step".into());
        }
        if let Arch::TopK { k } | Arch::BatchTopK { k } = self.arch
            && (k == 0 || k > self.d_sae)
        {
            return bad(format!(
                "--k {k} must be between 1 and d_sae = {}",
                self.d_sae
            ));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("--lr {} must be a positive number", self.lr));
        }
        if d_in == 0 {
            return bad("the activation store has d_model = 0".into());
        }
        Ok(())
    }
}

/// One row of the training log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricsRow {
    /// Steps done.
    pub step: u64,
    /// Training tokens seen.
    pub tokens: u64,
    /// Total loss of the last step.
    pub loss: f64,
    /// Mean squared error per element `Σ‖e‖² / (B·d)` (in training units).
    pub mse: f64,
    /// Fraction of variance unexplained `Σ‖e‖² / Σ‖x − x̄‖²` of the last batch.
    pub fvu: f64,
    /// Mean number of active latents per token.
    pub l0: f64,
    /// Fraction of latents that have not fired in the last `dead_tokens` tokens.
    pub dead_fraction: f64,
    /// Fraction of latents firing on > 10 % of the window's tokens.
    pub dense_fraction: f64,
    /// AuxK term (TopK, BatchTopK).
    pub aux_loss: f64,
    /// Learning rate used.
    pub lr: f64,
}

/// What a finished run hands back.
#[derive(Clone, Debug)]
pub struct TrainReport {
    /// The trained SAE in input units (scaling folded in).
    pub weights: SaeWeights,
    /// The training log.
    pub history: Vec<MetricsRow>,
    /// Tokens trained on.
    pub tokens: u64,
    /// Rows skipped as non-finite.
    pub skipped_non_finite: u64,
    /// Rows excluded by token id or as outliers.
    pub excluded_rows: u64,
    /// Input scale used (1 when not normalising).
    pub input_scale: f32,
    /// Where the checkpoint is.
    pub checkpoint: PathBuf,
}

/// What the loop tells its observer.
pub enum TrainEvent<'a> {
    /// Training starts (or resumes) at this step.
    Started {
        /// First step to run.
        step: u64,
        /// Total steps.
        steps: u64,
    },
    /// A step finished.
    Step(u64),
    /// Metrics were computed.
    Metrics(&'a MetricsRow),
    /// A checkpoint was written.
    Checkpoint(u64),
}

/// Trains an SAE on `store` and returns it; checkpoints go to `out/checkpoint.safetensors`.
/// With `resume`, training continues from that checkpoint (same config required).
pub fn train(
    store: &Store,
    cfg: &TrainConfig,
    device_choice: DeviceChoice,
    out: &Path,
    resume: bool,
    observer: &mut dyn FnMut(TrainEvent),
) -> Result<TrainReport> {
    let d = store.d_model();
    cfg.check(d)?;
    let device = device_choice.open()?;
    std::fs::create_dir_all(out).map_err(|e| SaeError::Io {
        path: out.to_path_buf(),
        source: e,
    })?;
    let ckpt_path = out.join("checkpoint.safetensors");
    let mut state = if resume {
        let ck = checkpoint::load(&ckpt_path, &device)?;
        if ck.config != *cfg {
            return Err(SaeError::Config(format!(
                "--resume: {} was written with a different configuration ({})",
                ckpt_path.display(),
                checkpoint::config_difference(&ck.config, cfg)
            )));
        }
        State::from_checkpoint(ck, &device)
    } else {
        State::fresh(store, cfg, &device)?
    };

    let reader = BatchReader::new(
        store.clone(),
        ReaderOptions {
            batch_rows: cfg.batch,
            shuffle_rows: cfg.shuffle_rows,
            seed: cfg.seed,
            role: None,
            epochs: None,
            non_finite: if cfg.skip_non_finite {
                NonFinite::Skip
            } else {
                NonFinite::Error
            },
        },
    )
    .map_err(SaeError::Acts)?;
    let batches = Prefetch::start(reader, state.cursor)?;

    let k_aux = cfg.k_aux.unwrap_or(d / 2).max(1);
    let normalize_decoder = !matches!(cfg.arch, Arch::Relu);
    let median_norm_cut = cfg.outlier_factor.map(|f| f * state.median_norm);
    let mut window = Window::new(cfg.d_sae, &device);
    let skipped_before = state.skipped_non_finite;
    observer(TrainEvent::Started {
        step: state.step,
        steps: cfg.steps,
    });

    while state.step < cfg.steps {
        let (batch, cursor_after) = batches.next()?;
        state.skipped_non_finite = skipped_before + batches.skipped();
        let (rows, excluded) = filter_rows(batch, cfg, state.scale, median_norm_cut, &device);
        state.excluded += excluded;
        state.cursor = cursor_after;
        let Some(x) = rows else { continue };
        let n = x.dims()[0] as u64;

        let settings = StepSettings {
            arch: cfg.arch,
            apply_b_dec_to_input: cfg.apply_b_dec_to_input,
            sparsity_coeff: cfg.sparsity_at(state.step),
            aux_coeff: cfg.aux_coeff,
            k_aux,
            bandwidth: cfg.bandwidth,
        };
        let out_step = step(&state.params, x, &settings, state.dead.as_ref());
        let lr = cfg.lr_at(state.step);
        state.params = optim::update(
            state.params.clone(),
            out_step.grads,
            &mut state.adam,
            lr,
            normalize_decoder,
            cfg.grad_clip,
        );
        if let Some(min_sel) = out_step.min_selected {
            // BatchTopK inference threshold: exponential moving average of the smallest
            // selected activation (Bussmann et al. 2024 average it over training).
            let decay = if state.step == 0 { 0.0 } else { 0.99 };
            state.batch_threshold =
                state.batch_threshold.clone().mul_scalar(decay) + min_sel.mul_scalar(1.0 - decay);
        }
        state.fire_acc = state.fire_acc.clone() + out_step.fires.clone();
        window.fires = window.fires.clone() + out_step.fires;
        state.pending_tokens += n;
        window.tokens += n;
        state.tokens += n;
        state.step += 1;
        observer(TrainEvent::Step(state.step));

        let log_now = state.step % cfg.log_every.max(1) == 0 || state.step == cfg.steps;
        let ckpt_now = cfg.checkpoint_every > 0 && state.step % cfg.checkpoint_every == 0;
        if log_now || ckpt_now || state.step % STATS_EVERY == 0 {
            state.update_dead(cfg, &device)?;
        }
        if log_now {
            let sse = scalar(out_step.sse)?;
            if !sse.is_finite() {
                return Err(SaeError::Diverged {
                    step: state.step,
                    value: sse,
                });
            }
            let tv = scalar(out_step.total_variance)?;
            let aux = scalar(out_step.aux_loss)?;
            let sparsity = scalar(out_step.sparsity_loss)?;
            let active = scalar(out_step.active)?;
            let fvu = sse / tv.max(1e-30);
            let recon = match cfg.arch {
                Arch::TopK { .. } | Arch::BatchTopK { .. } => fvu,
                Arch::Relu | Arch::JumpRelu => sse / n as f64,
            };
            let row = MetricsRow {
                step: state.step,
                tokens: state.tokens,
                loss: recon
                    + cfg.aux_coeff as f64 * aux
                    + settings.sparsity_coeff as f64 * sparsity,
                mse: sse / (n as f64 * d as f64),
                fvu,
                l0: active / n as f64,
                dead_fraction: state.dead_count() as f64 / cfg.d_sae as f64,
                dense_fraction: window.dense_fraction()?,
                aux_loss: aux,
                lr: lr as f64,
            };
            window = Window::new(cfg.d_sae, &device);
            observer(TrainEvent::Metrics(&row));
            state.history.push(row);
        }
        if ckpt_now {
            checkpoint::save(&ckpt_path, &state.to_checkpoint(cfg)?)?;
            observer(TrainEvent::Checkpoint(state.step));
        }
    }
    if cfg.checkpoint_every > 0 {
        checkpoint::save(&ckpt_path, &state.to_checkpoint(cfg)?)?;
    }
    let weights = state.export(cfg, store)?;
    Ok(TrainReport {
        weights,
        history: state.history,
        tokens: state.tokens,
        skipped_non_finite: state.skipped_non_finite,
        excluded_rows: state.excluded,
        input_scale: state.scale,
        checkpoint: ckpt_path,
    })
}

/// Steps between downloads of the per-latent fire counts (dead-latent bookkeeping).
const STATS_EVERY: u64 = 10;

/// Mutable training state; everything here is in the checkpoint.
pub(crate) struct State {
    pub params: Params,
    pub adam: Adam,
    pub step: u64,
    pub tokens: u64,
    pub cursor: Cursor,
    pub rng: Rng,
    pub scale: f32,
    pub median_norm: f32,
    /// Tokens since each latent last fired, up to the last stats download.
    pub since_fired: Vec<u64>,
    /// Fires since the last stats download, on the device.
    pub fire_acc: Tensor<1>,
    pub pending_tokens: u64,
    pub dead: Option<DeadLatents>,
    pub batch_threshold: Tensor<1>,
    pub history: Vec<MetricsRow>,
    pub skipped_non_finite: u64,
    pub excluded: u64,
}

impl State {
    fn fresh(store: &Store, cfg: &TrainConfig, device: &Device) -> Result<Self> {
        let d = store.d_model();
        let sample = init_sample(store, cfg)?;
        let norms: Vec<f32> = sample
            .chunks(d)
            .map(|r| r.iter().map(|v| v * v).sum::<f32>().sqrt())
            .collect();
        let median_norm = median(&norms);
        let scale = if cfg.normalize_inputs {
            init::input_scale(&sample, d)
        } else {
            1.0
        };
        let scaled: Vec<f32> = sample.iter().map(|v| v * scale).collect();
        let b_dec = match cfg.b_dec_init {
            BDecInit::Median => init::geometric_median(&scaled, d, 100),
            BDecInit::Mean => init::mean(&scaled, d),
            BDecInit::Zero => vec![0.0; d],
        };
        let mut rng = Rng::new(cfg.seed);
        let (w_enc, w_dec) = init::tied_weights(d, cfg.d_sae, &mut rng);
        let m = cfg.d_sae;
        let params = Params {
            w_enc: upload2(&w_enc, [d, m], device),
            b_enc: Tensor::zeros([m], device),
            w_dec: upload2(&w_dec, [m, d], device),
            b_dec: upload1(&b_dec, device),
            log_threshold: matches!(cfg.arch, Arch::JumpRelu)
                .then(|| Tensor::full([m], cfg.init_threshold.max(1e-12).ln(), device)),
        };
        Ok(Self {
            adam: Adam::new(&params),
            params,
            step: 0,
            tokens: 0,
            cursor: Cursor::default(),
            rng,
            scale,
            median_norm,
            since_fired: vec![0; m],
            fire_acc: Tensor::zeros([m], device),
            pending_tokens: 0,
            dead: None,
            batch_threshold: Tensor::zeros([1], device),
            history: Vec::new(),
            skipped_non_finite: 0,
            excluded: 0,
        })
    }

    fn from_checkpoint(ck: Checkpoint, device: &Device) -> Self {
        let m = ck.since_fired.len();
        let mut state = Self {
            params: ck.params,
            adam: ck.adam,
            step: ck.step,
            tokens: ck.tokens,
            cursor: ck.cursor,
            rng: ck.rng,
            scale: ck.scale,
            median_norm: ck.median_norm,
            since_fired: ck.since_fired,
            fire_acc: Tensor::zeros([m], device),
            pending_tokens: 0,
            dead: None,
            batch_threshold: Tensor::from_data(
                TensorData::new(vec![ck.batch_threshold], [1]),
                device,
            ),
            history: ck.history,
            skipped_non_finite: ck.skipped_non_finite,
            excluded: ck.excluded,
        };
        state.dead = dead_latents(&state.since_fired, ck.config.dead_tokens, device);
        state
    }

    /// Folds the fire counts since the last download into `since_fired` and refreshes the
    /// dead mask.
    fn update_dead(&mut self, cfg: &TrainConfig, device: &Device) -> Result<()> {
        let fires = download(self.fire_acc.clone())?;
        for (s, f) in self.since_fired.iter_mut().zip(&fires) {
            *s = if *f > 0.0 {
                0
            } else {
                *s + self.pending_tokens
            };
        }
        self.pending_tokens = 0;
        self.fire_acc = Tensor::zeros([cfg.d_sae], device);
        self.dead = dead_latents(&self.since_fired, cfg.dead_tokens, device);
        Ok(())
    }

    fn dead_count(&self) -> usize {
        self.dead.as_ref().map_or(0, |d| d.count)
    }

    fn to_checkpoint(&self, cfg: &TrainConfig) -> Result<Checkpoint> {
        Ok(Checkpoint {
            config: cfg.clone(),
            params: self.params.clone(),
            adam: self.adam.clone(),
            step: self.step,
            tokens: self.tokens,
            cursor: self.cursor,
            rng: self.rng.clone(),
            scale: self.scale,
            median_norm: self.median_norm,
            since_fired: self.since_fired.clone(),
            batch_threshold: scalar(self.batch_threshold.clone())? as f32,
            history: self.history.clone(),
            skipped_non_finite: self.skipped_non_finite,
            excluded: self.excluded,
        })
    }

    /// The SAE in input units: with training inputs `s·x`, `W_enc' = s·W_enc`,
    /// `b_dec' = b_dec/s`, `W_dec' = W_dec/s` give `pre' = pre` and `x̂' = x̂/s`.
    fn export(&self, cfg: &TrainConfig, store: &Store) -> Result<SaeWeights> {
        let manifest = store.manifest();
        let arch = match cfg.arch {
            Arch::BatchTopK { .. } => Arch::JumpRelu,
            a => a,
        };
        let sae_cfg = SaeConfig {
            d_in: store.d_model(),
            d_sae: cfg.d_sae,
            arch,
            apply_b_dec_to_input: cfg.apply_b_dec_to_input,
            hook_name: manifest.hook.clone(),
            model_name: manifest.model.clone(),
        };
        let threshold = match cfg.arch {
            Arch::BatchTopK { .. } => Some(vec![
                scalar(self.batch_threshold.clone())? as f32;
                cfg.d_sae
            ]),
            _ => None,
        };
        let mut w = self.params.to_weights(sae_cfg, threshold)?;
        let s = self.scale;
        w.w_enc.iter_mut().for_each(|v| *v *= s);
        w.w_dec.iter_mut().for_each(|v| *v /= s);
        w.b_dec.iter_mut().for_each(|v| *v /= s);
        Ok(w)
    }
}

fn dead_latents(since_fired: &[u64], dead_tokens: u64, device: &Device) -> Option<DeadLatents> {
    let mask: Vec<f32> = since_fired
        .iter()
        .map(|s| if *s >= dead_tokens { 1.0 } else { 0.0 })
        .collect();
    let count = mask.iter().filter(|v| **v > 0.0).count();
    (count > 0).then(|| DeadLatents {
        mask: upload1(&mask, device),
        count,
    })
}

/// Fire counts over one logging window, for the dense fraction.
struct Window {
    fires: Tensor<1>,
    tokens: u64,
}

impl Window {
    fn new(m: usize, device: &Device) -> Self {
        Self {
            fires: Tensor::zeros([m], device),
            tokens: 0,
        }
    }

    fn dense_fraction(&self) -> Result<f64> {
        let fires = download(self.fires.clone())?;
        let cut = 0.1 * self.tokens as f64;
        let dense = fires.iter().filter(|f| **f as f64 > cut).count();
        Ok(dense as f64 / fires.len().max(1) as f64)
    }
}

fn median(v: &[f32]) -> f32 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s[s.len() / 2]
}

/// The first `init_rows` rows in the training order's seed, for `b_dec`, the input scale and
/// the outlier cut.
fn init_sample(store: &Store, cfg: &TrainConfig) -> Result<Vec<f32>> {
    let mut reader = BatchReader::new(
        store.clone(),
        ReaderOptions {
            batch_rows: cfg.init_rows.clamp(1, 1 << 16),
            shuffle_rows: cfg.shuffle_rows,
            seed: cfg.seed ^ 0x5eed_1417,
            role: None,
            epochs: Some(1),
            non_finite: NonFinite::Skip,
        },
    )
    .map_err(SaeError::Acts)?;
    let batch = reader.next_batch().map_err(SaeError::Acts)?;
    let mut rows = Vec::new();
    if let Some(b) = batch {
        for (i, row) in b.acts.chunks(b.d).enumerate() {
            if !cfg.exclude_token_ids.contains(&b.token_ids[i]) {
                rows.extend_from_slice(row);
            }
        }
    }
    if rows.is_empty() {
        return Err(SaeError::Config(format!(
            "{}: no usable rows to initialise from (empty store, or every row excluded)",
            store.dir().display()
        )));
    }
    Ok(rows)
}

/// Drops excluded rows, scales, uploads: the batch tensor (None if nothing is left) and the
/// number of rows dropped.
fn filter_rows(
    batch: Batch,
    cfg: &TrainConfig,
    scale: f32,
    norm_cut: Option<f32>,
    device: &Device,
) -> (Option<Tensor<2>>, u64) {
    let d = batch.d;
    let mut kept = Vec::with_capacity(batch.acts.len());
    let mut dropped = 0u64;
    for (i, row) in batch.acts.chunks(d).enumerate() {
        let excluded_id = cfg.exclude_token_ids.contains(&batch.token_ids[i]);
        let outlier =
            norm_cut.is_some_and(|cut| row.iter().map(|v| v * v).sum::<f32>().sqrt() > cut);
        if excluded_id || outlier {
            dropped += 1;
        } else {
            kept.extend(row.iter().map(|v| v * scale));
        }
    }
    let n = kept.len() / d.max(1);
    if n == 0 {
        return (None, dropped);
    }
    (
        Some(Tensor::from_data(TensorData::new(kept, [n, d]), device)),
        dropped,
    )
}

/// Reads batches on a background thread, two ahead, with the cursor after each.
struct Prefetch {
    rx: mpsc::Receiver<lantern_acts::Result<(Batch, Cursor, u64)>>,
    skipped: std::cell::Cell<u64>,
}

impl Prefetch {
    fn start(mut reader: BatchReader, cursor: Cursor) -> Result<Self> {
        reader.seek(cursor).map_err(SaeError::Acts)?;
        let (tx, rx) = mpsc::sync_channel(2);
        thread::spawn(move || {
            loop {
                let item = match reader.next_batch() {
                    Ok(Some(b)) => Ok((b, reader.cursor(), reader.skipped_non_finite())),
                    Ok(None) => break,
                    Err(e) => Err(e),
                };
                let failed = item.is_err();
                if tx.send(item).is_err() || failed {
                    break;
                }
            }
        });
        Ok(Self {
            rx,
            skipped: std::cell::Cell::new(0),
        })
    }

    fn next(&self) -> Result<(Batch, Cursor)> {
        match self.rx.recv() {
            Ok(Ok((b, c, skipped))) => {
                self.skipped.set(skipped);
                Ok((b, c))
            }
            Ok(Err(e)) => Err(SaeError::Acts(e)),
            Err(_) => Err(SaeError::Config(
                "the activation store ran out of usable rows".into(),
            )),
        }
    }

    fn skipped(&self) -> u64 {
        self.skipped.get()
    }
}
