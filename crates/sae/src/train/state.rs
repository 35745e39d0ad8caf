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

    /// BatchTopK's inference threshold: an exponential moving average (decay 0.99, none at
    /// step 0) of each step's batch threshold `τ`, the smallest selected activation
    /// (Bussmann et al. 2024 average it over training). Called before the step counter moves.
    pub fn average_batch_threshold(&mut self, tau: Tensor<1>) {
        let decay = if self.saved.step == 0 { 0.0 } else { 0.99 };
        self.batch_threshold =
            self.batch_threshold.clone().mul_scalar(decay) + tau.mul_scalar(1.0 - decay);
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
        if cfg.free_decoder_norms {
            fold_decoder_norms(&mut w);
        }
        let s = self.saved.scale;
        w.w_enc.iter_mut().for_each(|v| *v *= s);
        w.w_dec.iter_mut().for_each(|v| *v /= s);
        w.b_dec.iter_mut().for_each(|v| *v /= s);
        Ok(w)
    }
}

/// Unit decoder rows with the same forward ([`crate::step`], free decoder norms): latent `i`
/// with decoder norm `n_i` gets `W_dec,i/n_i`, `W_enc[:, i]·n_i`, `b_enc,i·n_i`, so that its
/// activation is `relu(pre_i)·n_i` (what BatchTopK ranked and thresholded) and its
/// contribution to `x̂` is unchanged. Rows of norm 0 stay as they are.
pub(crate) fn fold_decoder_norms(w: &mut SaeWeights) {
    let (d, m) = (w.cfg.d_in, w.cfg.d_sae);
    for i in 0..m {
        let row = &mut w.w_dec[i * d..(i + 1) * d];
        let n = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        if n <= 0.0 || !n.is_finite() {
            continue;
        }
        row.iter_mut().for_each(|v| *v /= n);
        for r in 0..d {
            w.w_enc[r * m + i] *= n;
        }
        w.b_enc[i] *= n;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The folded SAE, as a JumpReLU with the batch threshold τ, reproduces the training
    /// forward of free decoder norms: keep `relu(pre_i)` where `relu(pre_i)·‖W_dec,i‖ > τ`,
    /// decode with the unnormalised rows.
    #[test]
    fn folding_decoder_norms_keeps_the_training_forward() {
        let (d, m, n) = (4usize, 6usize, 5usize);
        let mut r = Rng::new(3);
        let mut u = |scale: f32| (r.uniform_f32() * 2.0 - 1.0) * scale;
        let mut w = SaeWeights {
            cfg: SaeConfig {
                d_in: d,
                d_sae: m,
                arch: Arch::JumpRelu,
                apply_b_dec_to_input: true,
                hook_name: String::new(),
                model_name: String::new(),
            },
            w_enc: (0..d * m).map(|_| u(1.0)).collect(),
            b_enc: (0..m).map(|_| u(0.3)).collect(),
            w_dec: (0..m * d).map(|_| u(1.0)).collect(),
            b_dec: (0..d).map(|_| u(0.2)).collect(),
            threshold: None,
        };
        for j in 0..m {
            let s = [0.2, 4.0, 1.0, 0.5, 2.5, 1.5][j];
            w.w_dec[j * d..(j + 1) * d].iter_mut().for_each(|v| *v *= s);
        }
        let x: Vec<f32> = (0..n * d).map(|_| u(2.0)).collect();
        let norms: Vec<f64> = (0..m)
            .map(|j| {
                w.w_dec[j * d..(j + 1) * d]
                    .iter()
                    .map(|v| f64::from(*v).powi(2))
                    .sum::<f64>()
                    .sqrt()
            })
            .collect();
        let pre = w.pre_acts(&x);
        let mut ranked: Vec<f64> = pre
            .iter()
            .enumerate()
            .map(|(i, p)| f64::from(p.max(0.0)) * norms[i % m])
            .collect();
        let tau = {
            let mut s: Vec<f64> = ranked.iter().copied().filter(|v| *v > 0.0).collect();
            s.sort_by(|a, b| a.total_cmp(b));
            (s[s.len() / 2] + s[s.len() / 2 + 1]) / 2.0
        };
        // The training forward, by hand.
        let mut want = Vec::new();
        for b in 0..n {
            for i in 0..d {
                let mut v = f64::from(w.b_dec[i]);
                for j in 0..m {
                    if ranked[b * m + j] > tau {
                        v += f64::from(pre[b * m + j]) * f64::from(w.w_dec[j * d + i]);
                    }
                }
                want.push(v);
            }
        }
        ranked.clear();
        let mut folded = w.clone();
        fold_decoder_norms(&mut folded);
        for j in 0..m {
            let n: f32 = folded.w_dec[j * d..(j + 1) * d]
                .iter()
                .map(|v| v * v)
                .sum::<f32>()
                .sqrt();
            assert!((n - 1.0).abs() < 1e-5, "row {j} has norm {n}");
        }
        let jump = |mut s: SaeWeights| {
            s.threshold = Some(vec![tau as f32; m]);
            s.decode(&s.encode(&x))
        };
        let got = jump(folded);
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (f64::from(*g) - w).abs() < 1e-4,
                "folded {g}, training forward {w}"
            );
        }
        // Without the fold, the threshold applies to relu(pre) and selects otherwise.
        let unfolded = jump(w);
        assert!(
            unfolded
                .iter()
                .zip(&want)
                .any(|(g, w)| (f64::from(*g) - w).abs() > 1e-3)
        );
    }
}
