//! Model diffing of SAE latents: which latents a finetune raises.
//!
//! For latent `i` and a set of selected tokens `T` of a store (base or finetuned),
//! `mean_i = (1/|T|) Σ_{t∈T} z_i(t)` and `rate_i = (1/|T|) Σ_{t∈T} 1[z_i(t) > 0]`. With
//! finetunes `f = 1..F`,
//!
//! ```text
//! Δ_i = (1/F) Σ_f (mean_i^f − mean_i^base)     (Wang et al. 2025 rank latents by the
//!                                               average increase over their misaligned models)
//! Δrate_i = (1/F) Σ_f rate_i^f − rate_i^base,   Δ_i / sd_i^base  (sd over base tokens)
//! ```
//!
//! 95 % intervals come from a bootstrap that resamples *sequences*, not tokens (the tokens of
//! one answer are correlated): the Poisson bootstrap (Hanley & MacGibbon 2006; Chamandy et al.
//! 2012), where replicate `b` weighs sequence `s` by `w_bs ~ Poisson(1)`, so that
//!
//! ```text
//! mean_i^(b) = Σ_s w_bs Σ_{t∈s} z_i(t) / Σ_s w_bs |s|
//! ```
//!
//! streams: per batch, the per-sequence sums `S [n_seq, d_sae]` (a scatter-add of the latent
//! activations) are multiplied by the weights `W [B, n_seq]` on the device and accumulated,
//! so memory is `B × d_sae` per store whatever the store's size, and no sequence is held after
//! its batch. Sequences are never split across batches. The weights depend only on
//! `(seed, store, sequence ordinal, b)`, so runs are reproducible and independent of the
//! batch size.

use std::path::PathBuf;

use burn::tensor::{Device, IndexingUpdateOp, Int, Tensor, TensorData};
use lantern_acts::{Rng, Store};
use lantern_sae::Sae;
use lantern_sae::params::download;

use crate::error::input;
use crate::sequences::{TextHash, check_selection, for_each_sequence};
use crate::tokens::TokenSelection;
use crate::{Result, SearchError};

/// Settings of [`diff_latents`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DiffOptions {
    pub selection: TokenSelection,
    /// Rows (selected tokens) per device batch; whole sequences, so a batch may exceed it by
    /// one sequence.
    pub batch_rows: usize,
    /// Bootstrap replicates (0: no intervals).
    pub bootstrap: usize,
    pub seed: u64,
}

impl Default for DiffOptions {
    fn default() -> Self {
        DiffOptions {
            selection: TokenSelection::ALL,
            batch_rows: 1024,
            bootstrap: 1000,
            seed: 0,
        }
    }
}

/// One latent's change.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct LatentDiff {
    pub latent: usize,
    /// `Δ`, the mean increase over the finetunes.
    pub delta_mean: f64,
    pub delta_rate: f64,
    pub base_mean: f64,
    /// Mean over the finetunes of their mean activation.
    pub finetuned_mean: f64,
    pub base_rate: f64,
    pub finetuned_rate: f64,
    /// `Δ / sd_base` (NaN when the latent never varies on base tokens).
    pub delta_sd: f64,
    /// 95 % percentile interval of `Δ` over sequence-bootstrap replicates (NaN without).
    pub ci95: [f64; 2],
    /// Each finetune's `mean^f − mean^base`.
    pub delta_per_finetune: Vec<f64>,
}

/// What one store contributed.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct StoreSummary {
    pub path: PathBuf,
    pub model: String,
    pub sequences: u64,
    /// Selected tokens.
    pub tokens: u64,
    /// All rows of the store.
    pub rows: u64,
    /// Whether its rows hold the same token ids, in the same order, as the base store's
    /// (the same text; reported, not required).
    pub paired_with_base: bool,
}

/// The latent table, sorted by `delta_mean`, largest first.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DiffReport {
    pub latents: Vec<LatentDiff>,
    pub base: StoreSummary,
    pub finetuned: Vec<StoreSummary>,
    pub tokens: String,
    pub bootstrap: usize,
    pub seed: u64,
}

/// Checks that `store` was captured where `sae` reads (width, and hook when both record one).
pub fn check_store_matches_sae(sae: &Sae, store: &Store) -> Result<()> {
    let cfg = &sae.cfg;
    if store.d_model() != cfg.d_in {
        return Err(input(
            store.dir(),
            format!(
                "activations have d_model = {}, the SAE expects d_in = {}",
                store.d_model(),
                cfg.d_in
            ),
        ));
    }
    let hook = &store.manifest().hook;
    if !cfg.hook_name.is_empty() && !hook.is_empty() && &cfg.hook_name != hook {
        return Err(input(
            store.dir(),
            format!(
                "captured at {hook}, the SAE was trained at {}",
                cfg.hook_name
            ),
        ));
    }
    Ok(())
}

/// Device-side sums of one store.
struct Acc {
    sum: Tensor<1>,
    sum_sq: Tensor<1>,
    fires: Tensor<1>,
    /// `[B, d_sae]` bootstrap sums.
    boot: Option<Tensor<2>>,
    /// `Σ_s w_bs |s|` per replicate.
    boot_tokens: Vec<f64>,
    tokens: u64,
    sequences: u64,
    /// The store's text fingerprint, for the pairing report.
    text: TextHash,
}

/// Runs the SAE over the selected tokens of `base` and each of `finetuned` and ranks latents
/// by their increase (module docs). `progress` is told the rows read so far (all stores).
pub fn diff_latents(
    sae: &Sae,
    base: &Store,
    finetuned: &[Store],
    opts: &DiffOptions,
    mut progress: impl FnMut(u64),
) -> Result<DiffReport> {
    if finetuned.is_empty() {
        return Err(SearchError::Setting {
            field: "finetuned",
            value: "none".into(),
            expected: "at least one finetuned store",
        });
    }
    if opts.batch_rows == 0 {
        return Err(SearchError::Setting {
            field: "batch_rows",
            value: "0".into(),
            expected: "at least 1",
        });
    }
    let device = sae.params.w_dec.device();
    let mut accs = Vec::new();
    let mut rows_done = 0u64;
    for (k, store) in std::iter::once(base).chain(finetuned).enumerate() {
        check_store_matches_sae(sae, store)?;
        check_selection(store, opts.selection)?;
        let acc = accumulate(sae, store, k as u64, opts, &device, |r| {
            progress(rows_done + r)
        })?;
        rows_done += store.rows();
        if acc.tokens == 0 {
            return Err(input(
                store.dir(),
                format!(
                    "token selection '{}' selects no token of this store",
                    opts.selection
                ),
            ));
        }
        accs.push(acc);
    }
    let m = sae.cfg.d_sae;
    let host = |t: Tensor<1>| -> Result<Vec<f64>> {
        Ok(download(t)?.into_iter().map(f64::from).collect())
    };
    let mut means = Vec::new();
    let mut rates = Vec::new();
    let mut base_sd = Vec::new();
    for (k, a) in accs.iter().enumerate() {
        let n = a.tokens as f64;
        let mean: Vec<f64> = host(a.sum.clone())?.iter().map(|s| s / n).collect();
        rates.push(
            host(a.fires.clone())?
                .iter()
                .map(|f| f / n)
                .collect::<Vec<_>>(),
        );
        if k == 0 {
            base_sd = host(a.sum_sq.clone())?
                .iter()
                .zip(&mean)
                .map(|(s2, mu)| (s2 / n - mu * mu).max(0.0).sqrt())
                .collect();
        }
        means.push(mean);
    }
    let f = finetuned.len() as f64;
    let ci = bootstrap_intervals(&accs, m, opts.bootstrap)?;
    let mut latents: Vec<LatentDiff> = (0..m)
        .map(|i| {
            let per: Vec<f64> = means[1..].iter().map(|mf| mf[i] - means[0][i]).collect();
            let delta = per.iter().sum::<f64>() / f;
            let ft_rate = rates[1..].iter().map(|r| r[i]).sum::<f64>() / f;
            LatentDiff {
                latent: i,
                delta_mean: delta,
                delta_rate: ft_rate - rates[0][i],
                base_mean: means[0][i],
                finetuned_mean: means[1..].iter().map(|mf| mf[i]).sum::<f64>() / f,
                base_rate: rates[0][i],
                finetuned_rate: ft_rate,
                delta_sd: if base_sd[i] > 0.0 {
                    delta / base_sd[i]
                } else {
                    f64::NAN
                },
                ci95: ci.get(i).copied().unwrap_or([f64::NAN; 2]),
                delta_per_finetune: per,
            }
        })
        .collect();
    latents.sort_by(|a, b| {
        b.delta_mean
            .total_cmp(&a.delta_mean)
            .then(a.latent.cmp(&b.latent))
    });
    let summary = |s: &Store, a: &Acc| StoreSummary {
        path: s.dir().to_path_buf(),
        model: s.manifest().model.clone(),
        sequences: a.sequences,
        tokens: a.tokens,
        rows: s.rows(),
        paired_with_base: s.rows() == base.rows() && a.text == accs[0].text,
    };
    Ok(DiffReport {
        latents,
        base: summary(base, &accs[0]),
        finetuned: finetuned
            .iter()
            .zip(&accs[1..])
            .map(|(s, a)| summary(s, a))
            .collect(),
        tokens: opts.selection.to_string(),
        bootstrap: opts.bootstrap,
        seed: opts.seed,
    })
}

/// `[lo, hi]` per latent: the 2.5 % and 97.5 % quantiles of the replicate `Δ`s.
fn bootstrap_intervals(accs: &[Acc], m: usize, b: usize) -> Result<Vec<[f64; 2]>> {
    if b == 0 {
        return Ok(Vec::new());
    }
    let f = (accs.len() - 1) as f64;
    // Δ^(b)_i = (1/F) Σ_f mean^(f,b)_i − mean^(base,b)_i, built up store by store.
    let mut delta = vec![0f64; b * m];
    for (k, a) in accs.iter().enumerate() {
        let sums = download(a.boot.clone().expect("bootstrap requested"))?;
        let sign = if k == 0 { -1.0 } else { 1.0 / f };
        for r in 0..b {
            let n = a.boot_tokens[r];
            for i in 0..m {
                // A replicate that drew no sequence of a store has no mean: NaN, dropped below.
                let mean = if n > 0.0 {
                    sums[r * m + i] as f64 / n
                } else {
                    f64::NAN
                };
                delta[r * m + i] += sign * mean;
            }
        }
    }
    Ok((0..m)
        .map(|i| {
            let mut v: Vec<f64> = (0..b)
                .map(|r| delta[r * m + i])
                .filter(|x| x.is_finite())
                .collect();
            v.sort_by(f64::total_cmp);
            [quantile(&v, 0.025), quantile(&v, 0.975)]
        })
        .collect())
}

/// The `q` quantile of sorted `v` with linear interpolation (numpy's default); NaN if empty.
pub fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let h = q * (v.len() - 1) as f64;
    let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
    v[lo] + (h - lo as f64) * (v[hi] - v[lo])
}

/// The bootstrap weights of one sequence: `B` independent Poisson(1) draws determined by
/// `(seed, store, ordinal)` (Knuth's multiplication method).
pub fn poisson_weights(seed: u64, store: u64, ordinal: u64, b: usize) -> Vec<f32> {
    let mut rng = Rng::new(lantern_acts::rng::derive_seed(&[
        seed, 0xb007, store, ordinal,
    ]));
    let limit = (-1f64).exp();
    (0..b)
        .map(|_| {
            let mut k = 0u32;
            let mut p = rng.uniform_f64();
            while p > limit {
                k += 1;
                p *= rng.uniform_f64();
            }
            k as f32
        })
        .collect()
}

/// A batch of whole sequences waiting for the device.
#[derive(Default)]
struct Pending {
    acts: Vec<f32>,
    /// Batch-local sequence index of each row.
    seg: Vec<i64>,
    /// Selected tokens of each batch-local sequence.
    lens: Vec<usize>,
    /// `[n_seq, B]` weights, one row per sequence.
    weights: Vec<f32>,
}

fn accumulate(
    sae: &Sae,
    store: &Store,
    store_index: u64,
    opts: &DiffOptions,
    device: &Device,
    mut progress: impl FnMut(u64),
) -> Result<Acc> {
    let m = sae.cfg.d_sae;
    let d = store.d_model();
    let b = opts.bootstrap;
    let mut acc = Acc {
        sum: Tensor::zeros([m], device),
        sum_sq: Tensor::zeros([m], device),
        fires: Tensor::zeros([m], device),
        boot: (b > 0).then(|| Tensor::zeros([b, m], device)),
        boot_tokens: vec![0.0; b],
        tokens: 0,
        sequences: 0,
        text: TextHash::default(),
    };
    let mut pending = Pending::default();
    let mut picked = Vec::new();
    let mut ordinal = 0u64;
    let mut rows_read = 0u64;
    for_each_sequence(store, None, |seq| {
        acc.text.add(&seq);
        rows_read += seq.len() as u64;
        opts.selection.select(seq.roles, seq.positions, &mut picked);
        let seq_ordinal = ordinal;
        ordinal += 1;
        if picked.is_empty() {
            return Ok(());
        }
        let local = pending.lens.len() as i64;
        for &t in &picked {
            pending
                .acts
                .extend_from_slice(&seq.acts[t * d..(t + 1) * d]);
            pending.seg.push(local);
        }
        pending.lens.push(picked.len());
        if b > 0 {
            let w = poisson_weights(opts.seed, store_index, seq_ordinal, b);
            for (r, &wr) in w.iter().enumerate() {
                acc.boot_tokens[r] += wr as f64 * picked.len() as f64;
            }
            pending.weights.extend(w);
        }
        acc.sequences += 1;
        acc.tokens += picked.len() as u64;
        if pending.seg.len() >= opts.batch_rows {
            flush(sae, &mut acc, &mut pending, d, b, device);
            progress(rows_read);
        }
        Ok(())
    })?;
    if !pending.seg.is_empty() {
        flush(sae, &mut acc, &mut pending, d, b, device);
    }
    progress(rows_read);
    Ok(acc)
}

fn flush(sae: &Sae, acc: &mut Acc, p: &mut Pending, d: usize, b: usize, device: &Device) {
    let rows = p.seg.len();
    let n_seq = p.lens.len();
    let m = sae.cfg.d_sae;
    let x = Tensor::<2>::from_data(
        TensorData::new(std::mem::take(&mut p.acts), [rows, d]),
        device,
    );
    let z = sae.encode(&x);
    acc.sum = acc.sum.clone() + z.clone().sum_dim(0).reshape([m]);
    acc.sum_sq = acc.sum_sq.clone() + z.clone().square().sum_dim(0).reshape([m]);
    acc.fires = acc.fires.clone() + z.clone().greater_elem(0.0).float().sum_dim(0).reshape([m]);
    if let Some(boot) = &mut acc.boot {
        let seg = Tensor::<1, Int>::from_data(
            TensorData::new(std::mem::take(&mut p.seg), [rows]),
            device,
        );
        let per_seq =
            Tensor::<2>::zeros([n_seq, m], device).select_assign(0, seg, z, IndexingUpdateOp::Add);
        // weights are [n_seq, B] row-major; Wᵀ S is [B, d_sae].
        let w = Tensor::<2>::from_data(
            TensorData::new(std::mem::take(&mut p.weights), [n_seq, b]),
            device,
        );
        *boot = boot.clone() + w.transpose().matmul(per_seq);
    }
    p.seg.clear();
    p.lens.clear();
    p.weights.clear();
}
