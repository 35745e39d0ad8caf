//! The training loop: one pass of [`step`] and [`optim::update`] per batch, dead-latent
//! tracking, metrics and checkpoints. What a run is lives in [`config`] (settings and
//! schedules), what it carries in `state` (the persisted half is a
//! [`Checkpoint`](crate::checkpoint::Checkpoint)), where its rows come from in `feed`;
//! [`train_lockstep`] feeds several runs one pass over the store, and [`probe`] uses it to
//! choose a short run's learning rate.
//!
//! A latent is *dead* once it has not fired in the last `dead_tokens` training tokens; AuxK
//! trains dead latents on the residual. A latent is *dense* when it fires on more than 10 % of
//! the tokens of a logging window.

pub mod config;
mod feed;
pub mod probe;
mod state;

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};
use lantern_acts::{BatchReader, NonFinite, ReaderOptions, Store};
use serde::{Deserialize, Serialize};

pub use config::{
    SHORT_RUN_LR, THRESHOLD_TRAVEL, ThresholdLr, TrainConfig, jumprelu_target_coeff,
    jumprelu_threshold_lr, sparsify_lr, topk_lr,
};
pub use probe::{
    LrProbe, PROBE_BELOW_STEPS, PROBE_FACTORS, ProbeCandidate, ProbeOutcome, train_lr_probe,
};

use crate::checkpoint;
use crate::cpu::{CpuStepOptions, CpuStepStats, CpuTopK, Select};
use crate::device::DeviceChoice;
use crate::optim;
use crate::params::{Params, download, scalar, upload1};
use crate::rows::{Dropped, RowCut};
use crate::step::{StepOutput, StepSettings, step};
use crate::{Arch, Result, SaeError, SaeWeights};
use feed::{Prefetch, Rows};
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
    /// Sparsity coefficient λ of the last step (ReLU, JumpReLU; it moves under `target_l0`).
    #[serde(default)]
    pub sparsity_coeff: f64,
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
    /// Rows not trained on, by reason.
    pub dropped: Dropped,
    /// The cut that dropped them.
    pub row_cut: RowCut,
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
    let mut run = Run::start(store, cfg, device_choice, out, resume)?;
    let reader = BatchReader::new(store.clone(), reader_options(cfg)).map_err(SaeError::Acts)?;
    // The row cut and scale are fixed for the run: the reading thread applies them, so the
    // next batch is ready while the device runs this step.
    let (cut, scale) = (run.state.saved.row_cut.clone(), run.state.saved.scale);
    let batches = Prefetch::start(reader, run.cursor(), move |b| Rows::cut(&b, &cut, scale))?;
    observer(TrainEvent::Started {
        step: run.step_done(),
        steps: cfg.steps,
    });
    while !run.done() {
        let (rows, cursor_after) = batches.next()?;
        run.feed_rows(rows, cursor_after, batches.skipped(), observer)?;
    }
    run.finish(store)
}

/// How a run reads its store: batch size, shuffling and seed, non-finite rows. Runs with the
/// same options see the same batches in the same order (what a lockstep sweep relies on).
pub fn reader_options(cfg: &TrainConfig) -> ReaderOptions {
    ReaderOptions {
        batch_rows: cfg.batch,
        shuffle_rows: cfg.shuffle_rows,
        scope: cfg.shuffle_scope,
        seed: cfg.seed,
        role: None,
        label: None,
        epochs: None,
        non_finite: if cfg.skip_non_finite {
            NonFinite::Skip
        } else {
            NonFinite::Error
        },
    }
}

/// Trains several SAEs on one pass over `store`: each batch is read once and fed to every run
/// (SAELens' `MultiSAETrainer`, dictionary_learning's `trainSAE` with several trainers). The
/// configurations must read the store identically ([`reader_options`] and `steps` equal);
/// each run gets exactly the batches it would get alone, so its SAE is the one `train` gives.
/// A run that diverges (a learning rate too high) ends with its error in its slot while the
/// others continue; any other error stops the sweep.
pub fn train_lockstep(
    store: &Store,
    runs: &[(TrainConfig, std::path::PathBuf)],
    device_choice: DeviceChoice,
    observer: &mut dyn FnMut(usize, TrainEvent),
) -> Result<Vec<Result<TrainReport>>> {
    let Some((first, _)) = runs.first() else {
        return Ok(Vec::new());
    };
    for (cfg, out) in runs {
        if reader_options(cfg) != reader_options(first) || cfg.steps != first.steps {
            return Err(SaeError::Config(format!(
                "{}: a lockstep sweep needs the same batch, steps, shuffle, seed and non-finite \
                 handling for every run",
                out.display()
            )));
        }
    }
    let mut live: Vec<Option<Run>> = runs
        .iter()
        .map(|(cfg, out)| Run::start(store, cfg, device_choice, out, false).map(Some))
        .collect::<Result<_>>()?;
    // A run that diverges stops alone (its slot keeps the error); the others go on.
    let mut failed: Vec<Option<SaeError>> = runs.iter().map(|_| None).collect();
    let reader = BatchReader::new(store.clone(), reader_options(first)).map_err(SaeError::Acts)?;
    let cursor = live[0].as_ref().map(Run::cursor).unwrap_or_default();
    let batches = Prefetch::start(reader, cursor, |b| b)?;
    for i in 0..live.len() {
        observer(
            i,
            TrainEvent::Started {
                step: 0,
                steps: first.steps,
            },
        );
    }
    let mut step = 0;
    while step < first.steps && live.iter().any(Option::is_some) {
        let (batch, cursor_after) = batches.next()?;
        for (i, slot) in live.iter_mut().enumerate() {
            let Some(run) = slot else { continue };
            match run.feed(&batch, cursor_after, batches.skipped(), &mut |e| {
                observer(i, e)
            }) {
                Ok(()) => {}
                Err(e @ SaeError::Diverged { .. }) => {
                    failed[i] = Some(e);
                    *slot = None;
                }
                Err(e) => return Err(e),
            }
        }
        step = live
            .iter()
            .flatten()
            .map(Run::step_done)
            .max()
            .unwrap_or(first.steps);
    }
    Ok(live
        .into_iter()
        .zip(failed)
        .map(|(run, err)| match (run, err) {
            (Some(r), _) => r.finish(store),
            (None, Some(e)) => Err(e),
            (None, None) => unreachable!("a run leaves the sweep only with an error"),
        })
        .collect())
}

/// One training run, fed batch by batch ([`train`] feeds one, [`train_lockstep`] several).
pub struct Run {
    cfg: TrainConfig,
    d: usize,
    device: Device,
    ckpt_path: PathBuf,
    state: State,
    cpu: Option<CpuTopK>,
    window: Window,
    dead_list: Vec<u32>,
    k_aux: usize,
    normalize_decoder: bool,
    skipped_before: u64,
}

impl Run {
    /// A fresh run, or one resumed from `out/checkpoint.safetensors` (same config and store
    /// required).
    pub fn start(
        store: &Store,
        cfg: &TrainConfig,
        device_choice: DeviceChoice,
        out: &Path,
        resume: bool,
    ) -> Result<Self> {
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
            // The CPU engine makes its own zero moments: no burn copy of them is allocated.
            let mut s = State::fresh(store, cfg, &device, !uses_cpu_engine(cfg, &device))?;
            s.saved.store_id = store_id;
            s
        };
        let cpu = cpu_engine(&mut state, cfg, &device)?;
        let dead_list = dead_indices(&state, cfg);
        Ok(Self {
            d,
            k_aux: cfg.k_aux.unwrap_or(d / 2).max(1),
            normalize_decoder: !matches!(cfg.arch, Arch::Relu) && !cfg.free_decoder_norms,
            window: Window::new(cfg.d_sae, &device),
            skipped_before: state.saved.skipped_non_finite,
            cfg: cfg.clone(),
            device,
            ckpt_path,
            state,
            cpu,
            dead_list,
        })
    }

    /// Where in the store the next batch starts.
    pub fn cursor(&self) -> lantern_acts::Cursor {
        self.state.saved.cursor
    }

    /// Steps done.
    pub fn step_done(&self) -> u64 {
        self.state.saved.step
    }

    /// Whether every step is done.
    pub fn done(&self) -> bool {
        self.state.saved.step >= self.cfg.steps
    }

    /// One batch: filtered (excluded tokens, outliers), one step, statistics, metrics and a
    /// checkpoint when due. `skipped` is the reader's count of non-finite rows so far.
    pub fn feed(
        &mut self,
        batch: &lantern_acts::Batch,
        cursor_after: lantern_acts::Cursor,
        skipped: u64,
        observer: &mut dyn FnMut(TrainEvent),
    ) -> Result<()> {
        let rows = Rows::cut(batch, &self.state.saved.row_cut, self.state.saved.scale);
        self.feed_rows(rows, cursor_after, skipped, observer)
    }

    /// [`Run::feed`] of a batch already cut with this run's row cut and scale.
    fn feed_rows(
        &mut self,
        rows: Rows,
        cursor_after: lantern_acts::Cursor,
        skipped: u64,
        observer: &mut dyn FnMut(TrainEvent),
    ) -> Result<()> {
        let (cfg, device, d) = (&self.cfg, &self.device, self.d);
        let state = &mut self.state;
        state.saved.skipped_non_finite = self.skipped_before + skipped;
        state.saved.dropped.add(&rows.dropped);
        state.saved.cursor = cursor_after;
        let rows_n = rows.len();
        if rows_n == 0 {
            return Ok(());
        }
        let n = rows_n as u64;

        let settings = StepSettings {
            arch: cfg.k_at(state.saved.step, d),
            apply_b_dec_to_input: cfg.apply_b_dec_to_input,
            sparsity_coeff: cfg.sparsity_at(state.saved.step) * state.saved.sparsity_scale,
            aux_coeff: cfg.aux_coeff,
            k_aux: self.k_aux,
            bandwidth: cfg.bandwidth,
            matryoshka: cfg.matryoshka_widths.clone(),
            target_l0: cfg.target_l0.filter(|_| matches!(cfg.arch, Arch::JumpRelu)),
            rescale_by_decoder_norm: cfg.free_decoder_norms,
            pre_act_coeff: cfg.pre_act_coeff,
        };
        let lr = cfg.lr_at(state.saved.step);
        let outcome = match self.cpu.as_mut() {
            Some(cpu) => {
                let opts = CpuStepOptions {
                    apply_b_dec_to_input: cfg.apply_b_dec_to_input,
                    aux_coeff: cfg.aux_coeff,
                    k_aux: self.k_aux,
                    lr,
                    normalize_decoder: self.normalize_decoder,
                    clip: cfg.grad_clip,
                    select: match settings.arch {
                        Arch::BatchTopK { .. } => Select::PerBatch {
                            by_decoder_norm: cfg.free_decoder_norms,
                        },
                        _ => Select::PerRow,
                    },
                };
                let stats = cpu.step(&rows.acts, &opts, Some(&self.dead_list));
                if let Some(tau) = stats.min_selected {
                    state.average_batch_threshold(Tensor::from_floats([tau], device));
                }
                Outcome::Host(stats)
            }
            None => {
                let x = Tensor::from_data(TensorData::new(rows.acts, [rows_n, d]), device);
                let out = step(&state.saved.params, x, &settings, state.dead.as_ref());
                state.saved.params = optim::update(
                    state.saved.params.clone(),
                    out.grads.clone(),
                    &mut state.saved.adam,
                    cfg.rates_at(state.saved.step),
                    self.normalize_decoder,
                    cfg.grad_clip,
                );
                if cfg.target_l0.is_some() && matches!(cfg.arch, Arch::Relu) {
                    let l0 = scalar(out.active.clone())? / n as f64;
                    state.saved.sparsity_scale =
                        cfg.next_sparsity_scale(state.saved.sparsity_scale, state.saved.step, l0);
                }
                if let Some(min_sel) = out.min_selected.clone() {
                    state.average_batch_threshold(min_sel);
                }
                Outcome::Device(Box::new(out))
            }
        };
        let fires = outcome.fires(device);
        state.fire_acc = state.fire_acc.clone() + fires.clone();
        self.window.fires = self.window.fires.clone() + fires;
        state.pending_tokens += n;
        self.window.tokens += n;
        state.saved.tokens += n;
        state.saved.step += 1;
        observer(TrainEvent::Step(state.saved.step));

        let log_now =
            state.saved.step.is_multiple_of(cfg.log_every.max(1)) || state.saved.step == cfg.steps;
        let ckpt_now =
            cfg.checkpoint_every > 0 && state.saved.step.is_multiple_of(cfg.checkpoint_every);
        if log_now || ckpt_now || state.saved.step.is_multiple_of(STATS_EVERY) {
            state.update_dead(cfg, device)?;
            self.dead_list = dead_indices(state, cfg);
        }
        if log_now {
            let nums = outcome.numbers()?;
            let sse = nums.sse;
            if !sse.is_finite() {
                return Err(SaeError::Diverged {
                    step: state.saved.step,
                    value: sse,
                });
            }
            let (tv, aux, sparsity, active) = (nums.tv, nums.aux, nums.sparsity, nums.active);
            let fvu = sse / tv.max(1e-30);
            let recon = match cfg.arch {
                Arch::TopK { .. } | Arch::BatchTopK { .. } => fvu,
                Arch::Relu | Arch::JumpRelu => sse / n as f64,
            };
            let row = MetricsRow {
                step: state.saved.step,
                tokens: state.saved.tokens,
                loss: recon
                    + aux_weight(cfg) as f64 * aux
                    + settings.sparsity_coeff as f64 * sparsity,
                mse: sse / (n as f64 * d as f64),
                fvu,
                l0: active / n as f64,
                dead_fraction: state.dead_count() as f64 / cfg.d_sae as f64,
                dense_fraction: self.window.dense_fraction()?,
                aux_loss: aux,
                lr: lr as f64,
                sparsity_coeff: settings.sparsity_coeff as f64,
            };
            self.window = Window::new(cfg.d_sae, device);
            observer(TrainEvent::Metrics(&row));
            state.saved.history.push(row);
        }
        if ckpt_now {
            sync_from_cpu(state, self.cpu.as_ref(), device);
            checkpoint::save(&self.ckpt_path, &state.to_checkpoint()?)?;
            observer(TrainEvent::Checkpoint(state.saved.step));
        }
        Ok(())
    }

    /// The final checkpoint and the trained SAE in input units.
    pub fn finish(mut self, store: &Store) -> Result<TrainReport> {
        if let Some(cpu) = self.cpu.take() {
            // The moments are only needed for the final checkpoint.
            let moments = self.cfg.checkpoint_every > 0;
            let (params, adam) = cpu.into_params_adam(&self.device, moments);
            self.state.saved.params = params;
            self.state.saved.adam = adam;
        }
        if self.cfg.checkpoint_every > 0 {
            checkpoint::save(&self.ckpt_path, &self.state.to_checkpoint()?)?;
        }
        let weights = self.state.export(&self.cfg, store)?;
        let saved = self.state.saved;
        Ok(TrainReport {
            weights,
            history: saved.history,
            tokens: saved.tokens,
            skipped_non_finite: saved.skipped_non_finite,
            dropped: saved.dropped,
            row_cut: saved.row_cut,
            input_scale: saved.scale,
            checkpoint: self.ckpt_path,
        })
    }
}

/// The CPU engine ([`crate::cpu`]) for TopK and BatchTopK on burn's CPU device (see
/// [`uses_cpu_engine`]). It takes the parameters and Adam state over; the checkpoint's copies
/// are replaced by 1-element stand-ins until [`sync_from_cpu`] writes them back (a d 4096 ×
/// 65 536 SAE with its moments is 6.4 GB, which should not be held twice).
fn cpu_engine(state: &mut State, cfg: &TrainConfig, device: &Device) -> Result<Option<CpuTopK>> {
    let (Arch::TopK { k } | Arch::BatchTopK { k }) = cfg.arch else {
        return Ok(None);
    };
    if !uses_cpu_engine(cfg, device) {
        return Ok(None);
    }
    let stand_in = Params::stand_in(device);
    let params = std::mem::replace(&mut state.saved.params, stand_in.clone());
    let adam = std::mem::replace(&mut state.saved.adam, crate::optim::Adam::new(&stand_in));
    Ok(Some(CpuTopK::from_params(params, adam, k)?))
}

/// Whether a run of `cfg` on `device` trains on the CPU engine: TopK, and BatchTopK with a
/// fixed `k` (no Matryoshka prefixes, no k annealing; its TopK warm-up included), on burn's
/// CPU device, unless `LANTERN_SAE_ENGINE=burn`.
fn uses_cpu_engine(cfg: &TrainConfig, device: &Device) -> bool {
    cfg.engine_selection().is_some()
        && *device == Device::flex()
        && !std::env::var("LANTERN_SAE_ENGINE").is_ok_and(|v| v == "burn")
}

/// Writes the CPU engine's parameters and Adam state back into the checkpoint state.
fn sync_from_cpu(state: &mut State, cpu: Option<&CpuTopK>, device: &Device) {
    if let Some(cpu) = cpu {
        state.saved.params = cpu.to_params(device);
        state.saved.adam = cpu.to_adam(device);
    }
}

/// The coefficient of the auxiliary term in the logged loss: AuxK's α, or for JumpReLU the
/// pre-activation loss's `c`.
fn aux_weight(cfg: &TrainConfig) -> f32 {
    match cfg.arch {
        Arch::JumpRelu => cfg.pre_act_coeff,
        _ => cfg.aux_coeff,
    }
}

/// The latents AuxK may use as indices (what the CPU engine's AuxK reads): those that have
/// not fired in the last `dead_tokens` tokens, and with `revive_below` the rare ones, as in
/// `State::update_dead` ([`state::takes_auxk`]).
fn dead_indices(state: &State, cfg: &TrainConfig) -> Vec<u32> {
    (0..cfg.d_sae)
        .filter(|&j| state::takes_auxk(&state.saved, j))
        .map(|j| j as u32)
        .collect()
}

/// A step's result from either engine.
enum Outcome {
    Device(Box<StepOutput>),
    Host(CpuStepStats),
}

/// The logged numbers of a step.
struct Numbers {
    sse: f64,
    tv: f64,
    aux: f64,
    sparsity: f64,
    active: f64,
}

impl Outcome {
    /// Times each latent fired, on `device`.
    fn fires(&self, device: &Device) -> Tensor<1> {
        match self {
            Outcome::Device(o) => o.fires.clone(),
            Outcome::Host(s) => upload1(&s.fires, device),
        }
    }

    /// The statistics, read back from the device if they are there.
    fn numbers(&self) -> Result<Numbers> {
        Ok(match self {
            Outcome::Device(o) => Numbers {
                sse: scalar(o.sse.clone())?,
                tv: scalar(o.total_variance.clone())?,
                aux: scalar(o.aux_loss.clone())?,
                sparsity: scalar(o.sparsity_loss.clone())?,
                active: scalar(o.active.clone())?,
            },
            Outcome::Host(s) => Numbers {
                sse: s.sse,
                tv: s.total_variance,
                aux: s.aux_loss,
                sparsity: 0.0,
                active: s.active as f64,
            },
        })
    }
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
