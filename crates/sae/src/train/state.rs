//! The training state: the persisted half is a [`Checkpoint`] (written to disk as is), the
//! rest lives on the device between statistics downloads (fire counts, the dead mask, the
//! BatchTopK threshold).

use burn::tensor::{Device, Tensor, TensorData};
use lantern_acts::Store;
use lantern_acts::rng::Rng;

use super::TrainConfig;
use super::feed::init_sample;
use crate::checkpoint::Checkpoint;
use crate::init::{self, BDecInit};
use crate::optim::Adam;
use crate::params::{Params, download, scalar, upload1, upload2};
use crate::step::DeadLatents;
use crate::{Arch, Result, SaeConfig, SaeWeights};

/// Mutable training state.
pub(crate) struct State {
    /// Everything a resumed run needs; `saved.batch_threshold` is refreshed from the device
    /// copy when a checkpoint is taken.
    pub saved: Checkpoint,
    /// Fires since the last stats download, on the device.
    pub fire_acc: Tensor<1>,
    /// Tokens since the last stats download.
    pub pending_tokens: u64,
    pub dead: Option<DeadLatents>,
    /// The BatchTopK inference threshold (an EMA), on the device.
    pub batch_threshold: Tensor<1>,
}

impl State {
    /// A new run: the row cut, `b_dec` and the input scale from an initial sample,
    /// tied encoder/decoder weights.
    ///
    /// Without `moments`, the Adam state holds 1-element stand-ins (step 0): for the CPU
    /// engine, which creates its own zero moments.
    pub fn fresh(store: &Store, cfg: &TrainConfig, device: &Device, moments: bool) -> Result<Self> {
        let d = store.d_model();
        let (row_cut, sample) = init_sample(store, cfg)?;
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
        Ok(Self::resume(
            Checkpoint {
                config: cfg.clone(),
                adam: Adam::new(&if moments {
                    params.clone()
                } else {
                    Params::stand_in(device)
                }),
                params,
                step: 0,
                tokens: 0,
                cursor: Default::default(),
                rng,
                scale,
                row_cut,
                since_fired: vec![0; m],
                fire_rate: vec![0.0; m],
                batch_threshold: 0.0,
                sparsity_scale: 1.0,
                history: Vec::new(),
                skipped_non_finite: 0,
                dropped: Default::default(),
                store_id: String::new(),
            },
            device,
        ))
    }

    /// Continues from a checkpoint.
    pub fn resume(saved: Checkpoint, device: &Device) -> Self {
        let m = saved.since_fired.len();
        Self {
            fire_acc: Tensor::zeros([m], device),
            pending_tokens: 0,
            dead: dead_latents(&saved, device),
            batch_threshold: Tensor::from_data(
                TensorData::new(vec![saved.batch_threshold], [1]),
                device,
            ),
            saved,
        }
    }

    /// Folds the fire counts since the last download into `since_fired` and refreshes the
    /// dead mask.
    pub fn update_dead(&mut self, cfg: &TrainConfig, device: &Device) -> Result<()> {
        let fires = download(self.fire_acc.clone())?;
        for (s, f) in self.saved.since_fired.iter_mut().zip(&fires) {
            *s = if *f > 0.0 {
                0
            } else {
                *s + self.pending_tokens
            };
        }
        if self.pending_tokens > 0 {
            let n = self.pending_tokens as f32;
            for (r, f) in self.saved.fire_rate.iter_mut().zip(&fires) {
                *r = (1.0 - RATE_EMA) * *r + RATE_EMA * (*f / n);
            }
        }
        self.pending_tokens = 0;
        self.fire_acc = Tensor::zeros([cfg.d_sae], device);
        self.dead = dead_latents(&self.saved, device);
        Ok(())
    }

    /// Latents silent for `dead_tokens` (the dead fraction reported), not counting those
    /// that AuxK also takes for their low firing rate.
    pub fn dead_count(&self) -> usize {
        let limit = self.saved.config.dead_tokens;
        self.saved
            .since_fired
            .iter()
            .filter(|s| **s >= limit)
            .count()
    }

    /// The persisted state with the device-side threshold read back.
    pub fn to_checkpoint(&self) -> Result<Checkpoint> {
        let mut ck = self.saved.clone();
        ck.batch_threshold = scalar(self.batch_threshold.clone())? as f32;
        Ok(ck)
    }

    /// The SAE in input units: with training inputs `s·x`, `W_enc' = s·W_enc`,
    /// `b_dec' = b_dec/s`, `W_dec' = W_dec/s` give `pre' = pre` and `x̂' = x̂/s`.
    pub fn export(&self, cfg: &TrainConfig, store: &Store) -> Result<SaeWeights> {
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
        let mut w = self.saved.params.to_weights(sae_cfg, threshold)?;
        let s = self.saved.scale;
        w.w_enc.iter_mut().for_each(|v| *v *= s);
        w.w_dec.iter_mut().for_each(|v| *v /= s);
        w.b_dec.iter_mut().for_each(|v| *v /= s);
        Ok(w)
    }
}

/// Weight of the newest statistics window in the firing-rate average (a horizon of about five
/// windows of `STATS_EVERY` steps).
const RATE_EMA: f32 = 0.2;

/// Whether latent `j` is one AuxK may use: silent for `dead_tokens`, or, with
/// `revive_below = r`, firing at an average rate below `r` ([`TrainConfig::revive_below`]).
pub(crate) fn takes_auxk(saved: &Checkpoint, j: usize) -> bool {
    let cfg = &saved.config;
    saved.since_fired[j] >= cfg.dead_tokens
        || cfg.revive_below.is_some_and(|r| saved.fire_rate[j] < r)
}

fn dead_latents(saved: &Checkpoint, device: &Device) -> Option<DeadLatents> {
    let mask: Vec<f32> = (0..saved.since_fired.len())
        .map(|j| if takes_auxk(saved, j) { 1.0 } else { 0.0 })
        .collect();
    let count = mask.iter().filter(|v| **v > 0.0).count();
    (count > 0).then(|| DeadLatents {
        mask: upload1(&mask, device),
        count,
    })
}
