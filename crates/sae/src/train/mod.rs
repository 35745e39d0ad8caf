//! The training loop: one pass of [`step`] and [`optim::update`] per batch, dead-latent
//! tracking, metrics and checkpoints. What a run is lives in [`config`] (settings and
//! schedules), what it carries in `state` (the persisted half is a [`Checkpoint`]), where its
//! rows come from in `feed`.
//!
//! A latent is *dead* once it has not fired in the last `dead_tokens` training tokens; AuxK
//! trains dead latents on the residual. A latent is *dense* when it fires on more than 10 % of
//! the tokens of a logging window.

pub mod config;
mod feed;
mod state;

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor};
use lantern_acts::{BatchReader, NonFinite, ReaderOptions, Store};
use serde::{Deserialize, Serialize};

pub use config::TrainConfig;

use crate::checkpoint;
use crate::device::DeviceChoice;
use crate::optim;
use crate::params::{download, scalar};
use crate::step::{StepSettings, step};
use crate::{Arch, Result, SaeError, SaeWeights};
use feed::{Prefetch, filter_rows};
use state::State;

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
    let store_id = lantern_output::fingerprint(&store.dir().join("manifest.json"))?;
    let mut state = if resume {
        let ck = checkpoint::load(&ckpt_path, &device)?;
        let ck_d = ck.params.b_dec.dims()[0];
        if ck_d != d {
            return Err(SaeError::ConfigMismatch {
                path: ckpt_path,
                difference: format!(
                    "d_in {ck_d}, but the activation store {} has d_model {d}",
                    store.dir().display()
                ),
            });
        }
        if !ck.store_id.is_empty() && ck.store_id != store_id {
            return Err(SaeError::ConfigMismatch {
                path: ckpt_path,
                difference: format!(
                    "the activation store {} holds other rows than the run's (its manifest differs)",
                    store.dir().display()
                ),
            });
        }
        if ck.config != *cfg {
            return Err(SaeError::ConfigMismatch {
                path: ckpt_path,
                difference: checkpoint::config_difference(&ck.config, cfg),
            });
        }
        State::resume(ck, &device)
    } else {
        let mut s = State::fresh(store, cfg, &device)?;
        s.saved.store_id = store_id;
        s
    };

    let reader = BatchReader::new(
        store.clone(),
        ReaderOptions {
            batch_rows: cfg.batch,
            shuffle_rows: cfg.shuffle_rows,
            seed: cfg.seed,
            role: None,
            label: None,
            epochs: None,
            non_finite: if cfg.skip_non_finite {
                NonFinite::Skip
            } else {
                NonFinite::Error
            },
        },
    )
    .map_err(SaeError::Acts)?;
    let batches = Prefetch::start(reader, state.saved.cursor)?;

    let k_aux = cfg.k_aux.unwrap_or(d / 2).max(1);
    let normalize_decoder = !matches!(cfg.arch, Arch::Relu);
    let median_norm_cut = cfg.outlier_factor.map(|f| f * state.saved.median_norm);
    let mut window = Window::new(cfg.d_sae, &device);
    let skipped_before = state.saved.skipped_non_finite;
    observer(TrainEvent::Started {
        step: state.saved.step,
        steps: cfg.steps,
    });

    while state.saved.step < cfg.steps {
        let (batch, cursor_after) = batches.next()?;
        state.saved.skipped_non_finite = skipped_before + batches.skipped();
        let (rows, excluded) = filter_rows(batch, cfg, state.saved.scale, median_norm_cut, &device);
        state.saved.excluded += excluded;
        state.saved.cursor = cursor_after;
        let Some(x) = rows else { continue };
        let n = x.dims()[0] as u64;

        let settings = StepSettings {
            arch: cfg.arch,
            apply_b_dec_to_input: cfg.apply_b_dec_to_input,
            sparsity_coeff: cfg.sparsity_at(state.saved.step),
            aux_coeff: cfg.aux_coeff,
            k_aux,
            bandwidth: cfg.bandwidth,
        };
        let out_step = step(&state.saved.params, x, &settings, state.dead.as_ref());
        let lr = cfg.lr_at(state.saved.step);
        state.saved.params = optim::update(
            state.saved.params.clone(),
            out_step.grads,
            &mut state.saved.adam,
            lr,
            normalize_decoder,
            cfg.grad_clip,
        );
        if let Some(min_sel) = out_step.min_selected {
            // BatchTopK inference threshold: exponential moving average of the smallest
            // selected activation (Bussmann et al. 2024 average it over training).
            let decay = if state.saved.step == 0 { 0.0 } else { 0.99 };
            state.batch_threshold =
                state.batch_threshold.clone().mul_scalar(decay) + min_sel.mul_scalar(1.0 - decay);
        }
        state.fire_acc = state.fire_acc.clone() + out_step.fires.clone();
        window.fires = window.fires.clone() + out_step.fires;
        state.pending_tokens += n;
        window.tokens += n;
        state.saved.tokens += n;
        state.saved.step += 1;
        observer(TrainEvent::Step(state.saved.step));

        let log_now = state.saved.step % cfg.log_every.max(1) == 0 || state.saved.step == cfg.steps;
        let ckpt_now = cfg.checkpoint_every > 0 && state.saved.step % cfg.checkpoint_every == 0;
        if log_now || ckpt_now || state.saved.step % STATS_EVERY == 0 {
            state.update_dead(cfg, &device)?;
        }
        if log_now {
            let sse = scalar(out_step.sse)?;
            if !sse.is_finite() {
                return Err(SaeError::Diverged {
                    step: state.saved.step,
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
                step: state.saved.step,
                tokens: state.saved.tokens,
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
            state.saved.history.push(row);
        }
        if ckpt_now {
            checkpoint::save(&ckpt_path, &state.to_checkpoint()?)?;
            observer(TrainEvent::Checkpoint(state.saved.step));
        }
    }
    if cfg.checkpoint_every > 0 {
        checkpoint::save(&ckpt_path, &state.to_checkpoint()?)?;
    }
    let weights = state.export(cfg, store)?;
    let saved = state.saved;
    Ok(TrainReport {
        weights,
        history: saved.history,
        tokens: saved.tokens,
        skipped_non_finite: saved.skipped_non_finite,
        excluded_rows: saved.excluded,
        input_scale: saved.scale,
        checkpoint: ckpt_path,
    })
}

/// Steps between downloads of the per-latent fire counts (dead-latent bookkeeping).
const STATS_EVERY: u64 = 10;

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
