//! Spliced-in evaluation of an SAE: how much of the model's next-token loss survives when the
//! SAE's reconstruction replaces the activation at its hook — the number every SAE paper
//! reports (SAELens `get_recons_loss`, SAEBench's "core" metrics; definitions in
//! `shared/research/sae-libraries.md` §1.3).
//!
//! On the same token sequences the model runs four times: clean, with the hook's activation
//! replaced by the reconstruction `x̂`, by zero (the ablation baseline), and by `x̂ + (x − x̂)`
//! (the SAE error added back, which must reproduce the clean run — a check on the splice
//! itself). With `CE` the mean next-token cross-entropy and `KL` the mean over positions of
//! `KL(p_clean ‖ p_spliced)`:
//!
//! - `ce_loss_score = (CE_zero − CE_sae) / (CE_zero − CE_clean)` (1: the SAE loses nothing;
//!   0: as bad as deleting the activation);
//! - `kl_div_score = (KL_zero − KL_sae) / KL_zero`.
//!
//! The reconstruction is also scored at the hook, over the spliced positions `n` of width `d`:
//! `mse = Σ‖x−x̂‖²/(N d)`, `explained_variance = 1 − Σ‖x−x̂‖² / Σ_n‖x_n − x̄‖²` (x̄ the mean
//! activation), SAELens' per-token `explained_variance_legacy = mean_n [1 − ‖x_n−x̂_n‖² /
//! ‖x_n − x̄_B‖²]` (x̄_B the mean of the forward batch's spliced tokens, as SAELens takes it per
//! batch), `cossim = mean_n cos(x_n, x̂_n)`, `l2_ratio = mean_n ‖x̂_n‖/‖x_n‖`,
//! `relative_reconstruction_bias = Σ‖x̂‖² / Σ⟨x, x̂⟩` (Rajamanoharan et al. 2024, Gated SAEs,
//! Eq. 10: 1 is unbiased, below 1 is shrinkage), `l0` the mean active latents; per latent the
//! firing density (fires / spliced tokens) and the consistent-activation heuristic (fires /
//! sequences where it fires at least once).
//!
//! Position 0 (the first token, an attention sink in most models with a norm tens of times the
//! median) keeps its clean activation unless `splice_first`: an SAE is not trained on it, and
//! splicing it measures the sink, not the SAE. The report says which was done.

use burn::tensor::{Int, Tensor, TensorData, activation::log_softmax};
use lantern_lm::{HookPoint, Hooks, LogitsAt, Model, Padding, TokenBatch};
use lantern_sae::Sae;
use serde::Serialize;

use crate::Result;
use crate::error::{host, setting};

/// Settings of [`splice_eval`].
#[derive(Clone, Copy, Debug)]
pub struct SpliceOptions {
    /// Splice position 0 too (see the module docs).
    pub splice_first: bool,
    /// Sequences per forward pass.
    pub batch: usize,
}

/// Reconstruction statistics at the hook over the spliced positions (module docs).
#[derive(Clone, Debug, Default, Serialize)]
pub struct ReconStats {
    pub mse: f64,
    pub explained_variance: f64,
    pub explained_variance_legacy: f64,
    pub cossim: f64,
    pub l2_ratio: f64,
    pub relative_reconstruction_bias: f64,
    pub l0: f64,
}

/// What [`splice_eval`] measured.
#[derive(Clone, Debug, Serialize)]
pub struct SpliceReport {
    /// Sequences evaluated.
    pub sequences: usize,
    /// Positions in the KL means (every real token).
    pub tokens: usize,
    /// Next-token predictions in the CE means (every real token but each sequence's last).
    pub predictions: usize,
    /// Activations replaced by the splice.
    pub spliced_tokens: usize,
    /// Whether position 0 was spliced too.
    pub first_position_spliced: bool,
    pub ce_clean: f64,
    pub ce_sae: f64,
    pub ce_zero: f64,
    pub ce_sae_plus_error: f64,
    pub kl_sae: f64,
    pub kl_zero: f64,
    pub kl_sae_plus_error: f64,
    pub ce_loss_score: f64,
    pub kl_div_score: f64,
    pub recon: ReconStats,
    /// Per latent: fires / spliced tokens.
    #[serde(skip)]
    pub density: Vec<f64>,
    /// Per latent: fires / sequences with at least one fire (NaN for a latent that never fires).
    #[serde(skip)]
    pub consistent_activation: Vec<f64>,
}

/// What replaces the activation.
#[derive(Clone, Copy)]
enum Replace {
    Sae,
    Zero,
    SaePlusError,
}

/// Runs the evaluation of `sae` at `point` on `texts` (token ids, each at least two tokens).
pub fn splice_eval(
    model: &Model,
    sae: &Sae,
    point: HookPoint,
    texts: &[Vec<u32>],
    opts: &SpliceOptions,
    mut progress: impl FnMut(usize),
) -> Result<SpliceReport> {
    if texts.is_empty() || texts.iter().any(|t| t.len() < 2) {
        return Err(setting(
            "texts",
            "an empty set or a text of < 2 tokens",
            "texts of at least 2 tokens",
        ));
    }
    let d = model.config().d_model;
    if sae.cfg.d_in != d {
        return Err(setting(
            "sae",
            format!("d_in {} for a model of width {d}", sae.cfg.d_in),
            "an SAE of the model's width",
        ));
    }
    let m = sae.cfg.d_sae;
    let start = usize::from(!opts.splice_first);
    let modes = [Replace::Sae, Replace::Zero, Replace::SaePlusError];
    let (mut ce, mut kl) = ([0f64; 4], [0f64; 3]);
    let (mut n_ce, mut n_kl) = (0usize, 0usize);
    let mut acc = ReconAcc::new(d, m);
    for chunk in texts.chunks(opts.batch.max(1)) {
        let tb = TokenBatch::new(chunk, 0, Padding::Right)?;
        let t = tb.width;
        let mut hooks = Hooks::new();
        hooks.capture(point);
        let (clean_picked, clean_lp, x) = run(model, &tb, &mut hooks, Some(point))?;
        let x = x.expect("captured");
        acc.add(sae, &x, chunk, start)?;
        for (r, s) in chunk.iter().enumerate() {
            for c in 0..s.len() - 1 {
                ce[0] -= f64::from(clean_picked[r * t + c]);
            }
        }
        for (k, mode) in modes.iter().enumerate() {
            let mut hooks = Hooks::new();
            let mode = *mode;
            hooks.edit(point, move |x: Tensor<3>, first_col: usize| {
                splice(sae, x, mode, first_col, start)
            });
            let (picked, lp, _) = run(model, &tb, &mut hooks, None)?;
            let kl_pos = host(
                (clean_lp.clone().exp() * (clean_lp.clone() - lp)).sum_dim(2),
                "KL per position",
            )?;
            for (r, s) in chunk.iter().enumerate() {
                for c in 0..s.len() {
                    kl[k] += f64::from(kl_pos[r * t + c]);
                    if c + 1 < s.len() {
                        ce[k + 1] -= f64::from(picked[r * t + c]);
                    }
                }
            }
        }
        n_ce += chunk.iter().map(|s| s.len() - 1).sum::<usize>();
        n_kl += chunk.iter().map(Vec::len).sum::<usize>();
        progress(chunk.len());
    }
    let ce = ce.map(|v| v / n_ce as f64);
    let kl = kl.map(|v| v / n_kl as f64);
    let (recon, density, consistent_activation) = acc.finish();
    Ok(SpliceReport {
        sequences: texts.len(),
        tokens: n_kl,
        predictions: n_ce,
        spliced_tokens: acc.n,
        first_position_spliced: opts.splice_first,
        ce_clean: ce[0],
        ce_sae: ce[1],
        ce_zero: ce[2],
        ce_sae_plus_error: ce[3],
        kl_sae: kl[0],
        kl_zero: kl[1],
        kl_sae_plus_error: kl[2],
        ce_loss_score: (ce[2] - ce[1]) / (ce[2] - ce[0]),
        kl_div_score: (kl[1] - kl[0]) / kl[1],
        recon,
        density,
        consistent_activation,
    })
}

/// The activation `x [b, t, d]` with columns `start..` (absolute; `first_col` is the absolute
/// column of `x`'s first) replaced.
fn splice(sae: &Sae, x: Tensor<3>, mode: Replace, first_col: usize, start: usize) -> Tensor<3> {
    let [b, t, d] = x.dims();
    let flat = x.clone().reshape([b * t, d]);
    let new = match mode {
        Replace::Sae => sae.reconstruct(&flat).x_hat,
        Replace::Zero => flat.zeros_like(),
        Replace::SaePlusError => {
            let x_hat = sae.reconstruct(&flat).x_hat;
            x_hat.clone() + (flat - x_hat)
        }
    }
    .reshape([b, t, d]);
    let keep = start.saturating_sub(first_col).min(t);
    if keep == 0 {
        new
    } else {
        new.slice_assign([0..b, 0..keep, 0..d], x.slice([0..b, 0..keep, 0..d]))
    }
}

/// One forward pass: `log p` of each next token `[b·t]` (host), the log-softmax `[b, t, V]`,
/// and the capture at `capture` when asked.
fn run(
    model: &Model,
    tb: &TokenBatch,
    hooks: &mut Hooks<'_>,
    capture: Option<HookPoint>,
) -> Result<(Vec<f32>, Tensor<3>, Option<Tensor<3>>)> {
    let mut out = model.forward(&tb.ids, &tb.real, None, hooks, LogitsAt::All)?;
    let logits = out
        .logits
        .take()
        .expect("no early stop without stop_after_last");
    let [b, t, _] = logits.dims();
    let lp = log_softmax(logits, 2);
    let mut next = vec![0i64; b * t];
    for r in 0..b {
        for c in 0..t - 1 {
            next[r * t + c] = i64::from(tb.ids[r * t + c + 1]);
        }
    }
    let idx = Tensor::<1, Int>::from_data(TensorData::new(next, [b * t]), &lp.device())
        .reshape([b, t, 1]);
    let picked = host(lp.clone().gather(2, idx), "log-probs")?;
    let x = match capture {
        Some(p) => Some(out.captures.take_one(p)?),
        None => None,
    };
    Ok((picked, lp, x))
}

/// Sums for [`ReconStats`] and the per-latent statistics, in f64 on the host.
struct ReconAcc {
    d: usize,
    n: usize,
    sse: f64,
    sum_x: Vec<f64>,
    sum_x2: f64,
    xhat2: f64,
    x_dot_xhat: f64,
    cos: f64,
    ratio: f64,
    /// `Σ_n [1 − ‖x_n − x̂_n‖² / ‖x_n − x̄_B‖²]`.
    legacy: f64,
    fires: Vec<f64>,
    seqs_firing: Vec<f64>,
}

impl ReconAcc {
    fn new(d: usize, m: usize) -> Self {
        Self {
            d,
            n: 0,
            sse: 0.0,
            sum_x: vec![0.0; d],
            sum_x2: 0.0,
            xhat2: 0.0,
            x_dot_xhat: 0.0,
            cos: 0.0,
            ratio: 0.0,
            legacy: 0.0,
            fires: vec![0.0; m],
            seqs_firing: vec![0.0; m],
        }
    }

    /// Adds the spliced positions (`start..len` of each row) of `x [b, t, d]`.
    fn add(&mut self, sae: &Sae, x: &Tensor<3>, chunk: &[Vec<u32>], start: usize) -> Result<()> {
        let [b, t, d] = x.dims();
        let m = self.fires.len();
        let flat = x.clone().reshape([b * t, d]);
        let f = sae.encode(&flat);
        let x_hat = sae.decode(&f);
        let fired = f.greater_elem(0.0).float().reshape([b, t, m]);
        let mut mask = vec![0f32; b * t];
        for (r, s) in chunk.iter().enumerate() {
            for c in start.min(s.len())..s.len() {
                mask[r * t + c] = 1.0;
            }
        }
        let mask_t = Tensor::<3>::from_data(TensorData::new(mask.clone(), [b, t, 1]), &x.device());
        let per_seq = host((fired * mask_t).sum_dim(1).reshape([b, m]), "fire counts")?;
        for row in per_seq.chunks(m) {
            for (i, &c) in row.iter().enumerate() {
                self.fires[i] += f64::from(c);
                self.seqs_firing[i] += f64::from(u8::from(c > 0.0));
            }
        }
        let xs = host(flat, "activations")?;
        let xh = host(x_hat, "reconstructions")?;
        let rows: Vec<usize> = (0..b * t).filter(|p| mask[*p] > 0.0).collect();
        let mut batch_mean = vec![0f64; d];
        for &p in &rows {
            for (s, a) in batch_mean.iter_mut().zip(&xs[p * d..(p + 1) * d]) {
                *s += f64::from(*a) / rows.len() as f64;
            }
        }
        for &p in &rows {
            let (xr, hr) = (&xs[p * d..(p + 1) * d], &xh[p * d..(p + 1) * d]);
            let (mut e2, mut x2, mut h2, mut xh_dot) = (0f64, 0f64, 0f64, 0f64);
            for (a, b) in xr.iter().zip(hr) {
                let (a, b) = (f64::from(*a), f64::from(*b));
                e2 += (a - b) * (a - b);
                x2 += a * a;
                h2 += b * b;
                xh_dot += a * b;
            }
            for (s, a) in self.sum_x.iter_mut().zip(xr) {
                *s += f64::from(*a);
            }
            self.n += 1;
            self.sse += e2;
            self.sum_x2 += x2;
            self.xhat2 += h2;
            self.x_dot_xhat += xh_dot;
            self.cos += xh_dot / (x2.sqrt() * h2.sqrt()).max(1e-30);
            self.ratio += h2.sqrt() / x2.sqrt().max(1e-30);
            let v: f64 = xr
                .iter()
                .zip(&batch_mean)
                .map(|(a, m)| (f64::from(*a) - m).powi(2))
                .sum();
            self.legacy += 1.0 - e2 / v.max(1e-30);
        }
        Ok(())
    }

    fn finish(&self) -> (ReconStats, Vec<f64>, Vec<f64>) {
        let (n, d) = (self.n.max(1) as f64, self.d);
        let mean: Vec<f64> = self.sum_x.iter().map(|s| s / n).collect();
        let total_var = self.sum_x2 - n * mean.iter().map(|m| m * m).sum::<f64>();
        let stats = ReconStats {
            mse: self.sse / (n * d as f64),
            explained_variance: 1.0 - self.sse / total_var.max(1e-30),
            explained_variance_legacy: self.legacy / n,
            cossim: self.cos / n,
            l2_ratio: self.ratio / n,
            relative_reconstruction_bias: self.xhat2 / self.x_dot_xhat,
            l0: self.fires.iter().sum::<f64>() / n,
        };
        let density = self.fires.iter().map(|f| f / n).collect();
        let cah = self
            .fires
            .iter()
            .zip(&self.seqs_firing)
            .map(|(f, s)| if *s > 0.0 { f / s } else { f64::NAN })
            .collect();
        (stats, density, cah)
    }
}
