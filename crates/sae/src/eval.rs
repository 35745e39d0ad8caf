//! Evaluating an SAE on an activation store, on any device.
//!
//! Over `N` rows: `MSE = Σ‖x − x̂‖² / (N·d)`, `FVU = Σ‖x − x̂‖² / Σ‖x − x̄‖²` (x̄ the mean over
//! all evaluated rows), `L0` the mean number of active latents per row, the *dead* fraction
//! (latents that never fired in the evaluated rows), the *dense* fraction (latents firing on
//! more than 10 % of rows) and each latent's `log10(density + 1e-10)` as SAELens stores it in
//! `sparsity.safetensors`.
//!
//! Rows are first cut as in training ([`crate::rows`]; by default position 0 of each sequence
//! and rows above 10 × the median norm, the median over the first rows of the store), and the
//! report says how many went and why.

use burn::tensor::{Tensor, TensorData};
use lantern_acts::{BatchReader, GroundTruth, NonFinite, ReaderOptions, Store};
use serde::{Deserialize, Serialize};

use crate::device::DeviceChoice;
use crate::params::download;
use crate::rows::{Dropped, RowCut, RowFilter};
use crate::sae::{Reconstruction, Sae};
use crate::{Result, SaeError, SaeWeights};

/// How much of the store to evaluate, and how.
#[derive(Clone, Debug)]
pub struct EvalOptions {
    /// Rows per batch.
    pub batch: usize,
    /// Stop after this many rows.
    pub max_rows: Option<u64>,
    /// Skip non-finite rows instead of failing.
    pub skip_non_finite: bool,
    /// Which rows to leave out ([`crate::rows`]).
    pub filter: RowFilter,
}

/// Rows of the sample the row cut is fixed on.
const CUT_SAMPLE_ROWS: usize = 1 << 16;

/// Most elements of one `[rows, d_sae]` buffer of the evaluation (64 MiB of f32).
const EVAL_BLOCK: usize = 1 << 24;

/// Rows reconstructed at once for `m` latents: all of a batch up to [`EVAL_BLOCK`] elements.
fn eval_block_rows(m: usize) -> usize {
    (EVAL_BLOCK / m.max(1)).max(1)
}

/// Pieces whose sums are read back from the device at once: one read per this many pieces
/// instead of two per piece (a GPU waits idle at each read; a piece is 682 rows at 24 576
/// latents).
const SUMS_READ_EVERY: usize = 256;

/// Reads the pending (squared error, active count) pairs in one transfer and adds them to the
/// totals in piece order (so the f64 totals equal those of reading each piece at once).
fn add_sums(pending: &mut Vec<Tensor<1>>, sse: &mut f64, active: &mut f64) -> Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    let sums = download(Tensor::cat(std::mem::take(pending), 0))?;
    for pair in sums.chunks(2) {
        *sse += f64::from(pair[0]);
        *active += f64::from(pair[1]);
    }
    Ok(())
}

/// Metrics of an SAE on a set of activations (module docs).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalReport {
    /// Rows evaluated.
    pub rows: u64,
    /// Rows left out, by reason.
    pub dropped: Dropped,
    /// The cut that left them out.
    pub row_cut: RowCut,
    /// Mean squared error per element.
    pub mse: f64,
    /// Fraction of variance unexplained.
    pub fvu: f64,
    /// Mean active latents per row.
    pub l0: f64,
    /// Fraction of latents that never fired.
    pub dead_fraction: f64,
    /// Fraction of latents firing on > 10 % of rows.
    pub dense_fraction: f64,
    /// `log10(density + 1e-10)` per latent.
    #[serde(skip)]
    pub log10_density: Vec<f32>,
}

/// Evaluates `sae` on `store` (sequential order, one pass, up to `max_rows` rows kept by
/// `opts.filter`).
pub fn evaluate(
    sae: &SaeWeights,
    store: &Store,
    device: DeviceChoice,
    opts: &EvalOptions,
) -> Result<EvalReport> {
    sae.validate()?;
    opts.filter.check()?;
    let d = sae.cfg.d_in;
    if store.d_model() != d {
        return Err(SaeError::Config(format!(
            "{}: activations have d_model = {}, the SAE expects d_in = {d}",
            store.dir().display(),
            store.d_model()
        )));
    }
    let device = device.open()?;
    let model = Sae::from_weights(sae, &device)?;
    let reader = |batch_rows: usize| {
        BatchReader::new(
            store.clone(),
            ReaderOptions {
                batch_rows,
                shuffle_rows: 0,
                scope: Default::default(),
                seed: 0,
                role: None,
                label: None,
                epochs: Some(1),
                non_finite: if opts.skip_non_finite {
                    NonFinite::Skip
                } else {
                    NonFinite::Error
                },
            },
        )
        .map_err(SaeError::Acts)
    };
    let cut = match reader(CUT_SAMPLE_ROWS)?
        .next_batch()
        .map_err(SaeError::Acts)?
    {
        Some(sample) => RowCut::from_sample(&opts.filter, &sample),
        None => {
            return Err(SaeError::Config(format!(
                "{}: no rows to evaluate",
                store.dir().display()
            )));
        }
    };
    let mut reader = reader(opts.batch.max(1))?;
    let mut dropped = Dropped::default();
    let m = sae.cfg.d_sae;
    let mut fires = Tensor::<1>::zeros([m], &device);
    let (mut rows, mut sse, mut active) = (0u64, 0f64, 0f64);
    let mut sum_x = vec![0f64; d];
    let mut sum_sq = 0f64;
    // Each piece's squared error and active count, left on the device until read together.
    let mut pending: Vec<Tensor<1>> = Vec::new();
    let limit = opts.max_rows.unwrap_or(u64::MAX);
    while rows < limit {
        let Some(batch) = reader.next_batch().map_err(SaeError::Acts)? else {
            break;
        };
        let mut acts = cut.keep(&batch, &mut dropped, |v| v);
        let take = ((limit - rows) as usize).min(acts.len() / d);
        if take == 0 {
            continue;
        }
        acts.truncate(take * d);
        for row in acts.chunks(d) {
            for (s, v) in sum_x.iter_mut().zip(row) {
                *s += *v as f64;
                sum_sq += (*v as f64).powi(2);
            }
        }
        // The reconstruction holds a few [rows, d_sae] buffers: at most EVAL_BLOCK elements
        // each (a batch of 4 096 rows of 65 536 latents took 3.2 GB at once).
        for piece in acts.chunks(eval_block_rows(m) * d) {
            let n = piece.len() / d;
            let x = Tensor::<2>::from_data(TensorData::new(piece.to_vec(), [n, d]), &device);
            let Reconstruction {
                x_hat,
                active: act,
                fires: f,
            } = model.reconstruct(&x);
            pending.push((x_hat - x).square().sum());
            pending.push(act);
            fires = fires + f;
            if pending.len() >= 2 * SUMS_READ_EVERY {
                add_sums(&mut pending, &mut sse, &mut active)?;
            }
        }
        rows += take as u64;
    }
    add_sums(&mut pending, &mut sse, &mut active)?;
    if rows == 0 {
        return Err(SaeError::Config(format!(
            "{}: no rows to evaluate (left out: {})",
            store.dir().display(),
            dropped.describe(&cut)
        )));
    }
    let n = rows as f64;
    let tv = sum_sq - sum_x.iter().map(|s| s * s).sum::<f64>() / n;
    // FVU divides by the rows' total variance: with one row (or identical rows) it is 0 and
    // the FVU meaningless (it read 1e30 for one row).
    if tv.is_nan() || tv <= 1e-9 * sum_sq {
        return Err(SaeError::Config(format!(
            "{}: the {rows} evaluated rows do not vary (total variance {tv:.3e}), so FVU is undefined; evaluate on more rows",
            store.dir().display()
        )));
    }
    let fires = download(fires)?;
    let density: Vec<f64> = fires.iter().map(|f| *f as f64 / n).collect();
    Ok(EvalReport {
        rows,
        dropped,
        row_cut: cut,
        mse: sse / (n * d as f64),
        fvu: sse / tv,
        l0: active / n,
        dead_fraction: density.iter().filter(|v| **v == 0.0).count() as f64 / m as f64,
        dense_fraction: density.iter().filter(|v| **v > 0.1).count() as f64 / m as f64,
        log10_density: density.iter().map(|v| (v + 1e-10).log10() as f32).collect(),
    })
}

/// Recovery of known features: `MMCS = mean_i max_j cos(f_i, W_dec,j)` for ground-truth
/// features `f` `[n_true, d]` and decoder rows `w_dec` `[m, d]` (Sharkey et al. 2022, "Taking
/// features out of superposition with sparse autoencoders").
///
/// Rows are scaled to unit norm, then the cosines come from a GEMM, `C = F̂ Ŵᵀ`, over blocks
/// of 512 features (a `[512, m]` buffer, 50 MB at m 24 576), each row's maximum
/// taken as the block is done. At (6 144 × 24 576 × 768), what a d 768 ground-truth run checks,
/// that is 116 G multiply-adds: a GEMM's work, a minute of scalar dot products on two cores.
pub fn mean_max_cosine(features: &[f32], w_dec: &[f32], d: usize) -> f64 {
    use rayon::prelude::*;
    if d == 0 {
        return 0.0;
    }
    let unit = |rows: &[f32]| -> Vec<f32> {
        rows.par_chunks(d)
            .flat_map_iter(|r| {
                let n = r.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
                r.iter().map(move |v| v / n)
            })
            .collect()
    };
    let (f, w) = (unit(features), unit(w_dec));
    let (n_true, m) = (f.len() / d, w.len() / d);
    if n_true == 0 || m == 0 {
        return 0.0;
    }
    let mut cos = vec![0f32; MMCS_BLOCK.min(n_true) * m];
    let mut total = 0f64;
    for block in f.chunks(MMCS_BLOCK * d) {
        let rows = block.len() / d;
        let c = &mut cos[..rows * m];
        crate::cpu::gemm_by_rows(c, block, d, &w, m, d);
        let best: Vec<f32> = c
            .par_chunks(m)
            .map(|row| row.iter().copied().fold(f32::NEG_INFINITY, f32::max))
            .collect();
        total += best.iter().map(|&b| f64::from(b)).sum::<f64>();
    }
    total / n_true as f64
}

/// Ground-truth features per GEMM of [`mean_max_cosine`].
const MMCS_BLOCK: usize = 512;

/// Feature absorption measured against a ground truth with a parent/child hierarchy
/// ([`absorption`]).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Absorption {
    /// Parent features measured.
    pub parents: usize,
    /// Fresh rows drawn from the ground truth's law.
    pub rows: usize,
    /// Mean over parents of the fraction of rows where a child fires (so the parent does) but
    /// the parent's latent is silent: 0 when the parent latent always fires with its parent,
    /// 1 when the children have absorbed it entirely.
    pub absorption: f64,
    /// Mean over parents of the fraction of rows with the parent and none of its children
    /// where the parent's latent fires (is it a parent latent at all?).
    pub parent_recall: f64,
    /// Mean cosine of each parent feature with its latent's decoder row.
    pub parent_cosine: f64,
}

/// Feature absorption (Chanin et al. 2024, "A is for Absorption"; the toy setting of
/// Bussmann et al. 2025, "Learning multi-level features with Matryoshka SAEs"), measured
/// with the ground truth instead of probes. Each parent feature `p` gets its latent
/// `ℓ(p) = argmax_j cos(f_p, W_dec,j)`; on `rows` fresh rows drawn from the truth
/// ([`GroundTruth::sample`], seed `seed`) the absorption of `p` is
/// `#{rows: a child of p fires, ℓ(p) silent} / #{rows: a child of p fires}`, averaged over
/// the parents with at least one such row. `None` when the truth has no hierarchy or its `d`
/// is not the SAE's `d_in`.
pub fn absorption(
    w: &SaeWeights,
    truth: &GroundTruth,
    rows: usize,
    seed: u64,
) -> Option<Absorption> {
    let d = w.cfg.d_in;
    let families = truth.families();
    if families.is_empty() || truth.d != d {
        return None;
    }
    let m = w.cfg.d_sae;
    let unit = |r: &[f32]| -> Vec<f32> {
        let n = r.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        r.iter().map(|v| v / n).collect()
    };
    let dec: Vec<Vec<f32>> = w.w_dec.chunks(d).map(unit).collect();
    let latent_of = |feature: u32| -> (usize, f32) {
        let f = unit(&truth.features[feature as usize * d..(feature as usize + 1) * d]);
        dec.iter()
            .map(|r| r.iter().zip(&f).map(|(a, b)| a * b).sum::<f32>())
            .enumerate()
            .fold(
                (0, f32::NEG_INFINITY),
                |b, (j, c)| if c > b.1 { (j, c) } else { b },
            )
    };
    let parents: Vec<(usize, f32)> = families.iter().map(|(p, _)| latent_of(*p)).collect();
    let sample = truth.sample(rows, seed);
    // Per parent: [rows with a child, of those with the latent silent, rows alone, of those
    // with the latent firing].
    let mut counts = vec![[0u64; 4]; families.len()];
    const CHUNK: usize = 2048;
    for (xs, active) in sample
        .acts
        .chunks(CHUNK * d)
        .zip(sample.active.chunks(CHUNK))
    {
        let f = w.encode(xs);
        for (row, fired) in f.chunks(m).zip(active) {
            for (((p, kids), &(lat, _)), c) in families.iter().zip(&parents).zip(&mut counts) {
                if fired.binary_search(p).is_err() {
                    continue;
                }
                let on = row[lat] > 0.0;
                if kids.iter().any(|k| fired.binary_search(k).is_ok()) {
                    c[0] += 1;
                    c[1] += u64::from(!on);
                } else {
                    c[2] += 1;
                    c[3] += u64::from(on);
                }
            }
        }
    }
    let mean = |num: usize, den: usize| -> f64 {
        let v: Vec<f64> = counts
            .iter()
            .filter(|c| c[den] > 0)
            .map(|c| c[num] as f64 / c[den] as f64)
            .collect();
        if v.is_empty() {
            f64::NAN
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    Some(Absorption {
        parents: families.len(),
        rows,
        absorption: mean(1, 0),
        parent_recall: mean(3, 2),
        parent_cosine: parents.iter().map(|(_, c)| *c as f64).sum::<f64>() / parents.len() as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic test values in [-0.5, 0.5) from a 64-bit LCG seeded with `state`.
    fn lcg(mut state: u64) -> impl FnMut() -> f32 {
        move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        }
    }

    /// A parent `e0` with one child `e1` (d 2, parent rate 0.5, child given parent 0.5, no
    /// noise), read by two hand-built ReLU SAEs: one with a latent per feature, and one whose
    /// parent latent is switched off by the child (`pre = x₀ − 3x₁`, silent whenever the child
    /// fires, as amplitudes lie in [0.5, 1.5]) while the child latent decodes to `e0 + e1`.
    #[test]
    fn absorption_is_zero_for_separate_latents_and_one_when_the_child_latent_takes_the_parent() {
        let truth = GroundTruth {
            d: 2,
            features: vec![1.0, 0.0, 0.0, 1.0],
            frequencies: vec![0.5, 0.25],
            parent: vec![-1, 0],
            noise: Some(0.0),
        };
        let sae = |w_enc: Vec<f32>, w_dec: Vec<f32>| SaeWeights {
            cfg: crate::SaeConfig {
                d_in: 2,
                d_sae: 2,
                arch: crate::Arch::Relu,
                apply_b_dec_to_input: false,
                hook_name: String::new(),
                model_name: String::new(),
            },
            w_enc,
            b_enc: vec![0.0; 2],
            w_dec,
            b_dec: vec![0.0; 2],
            threshold: None,
        };
        let separate = sae(vec![1.0, 0.0, 0.0, 1.0], vec![1.0, 0.0, 0.0, 1.0]);
        let a = absorption(&separate, &truth, 4000, 1).unwrap();
        assert_eq!((a.parents, a.absorption, a.parent_recall), (1, 0.0, 1.0));
        assert!((a.parent_cosine - 1.0).abs() < 1e-6);
        // W_enc [d_in, d_sae]: latent 0 reads x₀ − 3x₁, latent 1 reads x₁.
        let r = std::f32::consts::FRAC_1_SQRT_2;
        let absorbing = sae(vec![1.0, 0.0, -3.0, 1.0], vec![1.0, 0.0, r, r]);
        let a = absorption(&absorbing, &truth, 4000, 1).unwrap();
        assert_eq!((a.absorption, a.parent_recall), (1.0, 1.0));
        // No hierarchy: nothing to measure.
        let flat = GroundTruth {
            parent: vec![-1, -1],
            ..truth
        };
        assert!(absorption(&separate, &flat, 10, 1).is_none());
    }

    /// With 65 536 latents a batch of 600 rows is reconstructed in pieces of
    /// [`eval_block_rows`] = 256 rows (the last one 88); FVU, L0 and the dead fraction still
    /// equal the f64 reference forward's ([`SaeWeights::encode`], [`SaeWeights::decode`]) over
    /// every row.
    #[test]
    fn evaluation_in_pieces_matches_the_f64_reference_forward() {
        let (d, m, k, n) = (8, 65_536, 4, 700);
        assert_eq!(eval_block_rows(m), 256);
        let dir = tempfile::tempdir().unwrap();
        let synth = lantern_acts::SynthConfig {
            d,
            features: 32,
            rows: n as u64,
            seed: 2,
            ..Default::default()
        };
        lantern_acts::synthesize(&synth, dir.path()).unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut next = lcg(0x9e37_79b9_7f4a_7c15);
        let sae = SaeWeights {
            cfg: crate::SaeConfig {
                d_in: d,
                d_sae: m,
                arch: crate::Arch::TopK { k },
                apply_b_dec_to_input: true,
                hook_name: String::new(),
                model_name: String::new(),
            },
            w_enc: (0..d * m).map(|_| next()).collect(),
            b_enc: (0..m).map(|_| 0.1 * next()).collect(),
            w_dec: (0..m * d).map(|_| next()).collect(),
            b_dec: (0..d).map(|_| 0.2 * next()).collect(),
            threshold: None,
        };
        let keep_all = RowFilter {
            exclude_token_ids: Vec::new(),
            drop_first: false,
            outlier_factor: None,
        };
        let opts = EvalOptions {
            batch: 600,
            max_rows: None,
            skip_non_finite: false,
            filter: keep_all,
        };
        let r = evaluate(&sae, &store, DeviceChoice::Cpu, &opts).unwrap();
        assert_eq!(r.rows, n as u64);
        // The reference over the store's rows in order.
        let mut reader = BatchReader::new(
            store.clone(),
            ReaderOptions {
                batch_rows: n,
                shuffle_rows: 0,
                epochs: Some(1),
                ..Default::default()
            },
        )
        .unwrap();
        let x = reader.next_batch().unwrap().unwrap().acts;
        let f = sae.encode(&x);
        let x_hat = sae.decode(&f);
        let sse: f64 = x
            .iter()
            .zip(&x_hat)
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum();
        let mean: Vec<f64> = (0..d)
            .map(|j| x.chunks(d).map(|r| f64::from(r[j])).sum::<f64>() / n as f64)
            .collect();
        let tv: f64 = x
            .chunks(d)
            .flat_map(|r| {
                r.iter()
                    .zip(&mean)
                    .map(|(v, mu)| (f64::from(*v) - mu).powi(2))
            })
            .sum();
        let active = f.iter().filter(|v| **v != 0.0).count() as f64;
        let fired: std::collections::HashSet<usize> = f
            .chunks(m)
            .flat_map(|row| {
                row.iter()
                    .enumerate()
                    .filter(|(_, v)| **v != 0.0)
                    .map(|(j, _)| j)
            })
            .collect();
        let dead = 1.0 - fired.len() as f64 / m as f64;
        assert!(
            (r.fvu / (sse / tv) - 1.0).abs() < 1e-4,
            "FVU {} against {}",
            r.fvu,
            sse / tv
        );
        assert!((r.l0 - active / n as f64).abs() < 1e-9, "L0 {}", r.l0);
        assert!(
            (r.dead_fraction - dead).abs() < 1e-9,
            "dead {}",
            r.dead_fraction
        );
    }

    #[test]
    fn mean_max_cosine_of_a_permuted_scaled_copy_is_one_and_of_orthogonal_rows_zero() {
        let f = [1.0, 0.0, 0.0, 1.0];
        let w = [0.0, 3.0, 2.0, 0.0, 1.0, 1.0];
        assert!((mean_max_cosine(&f, &w, 2) - 1.0).abs() < 1e-6);
        // One feature, one decoder row, orthogonal to it.
        let f2 = [1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0];
        let w2 = [0.0, 0.0, 1.0, -1.0, 0.0, 0.0, 1.0];
        assert!(mean_max_cosine(&f2, &w2, 7).abs() < 1e-6);
    }

    #[test]
    fn mean_max_cosine_matches_f64_dot_products_across_blocks() {
        // More features than one GEMM block, an odd d and m, rows of any norm.
        let (n_true, m, d) = (MMCS_BLOCK + 77, 301, 13);
        let mut next = lcg(7);
        let mut draw = |n: usize| -> Vec<f32> { (0..n).map(|_| 3.0 * next()).collect() };
        let (f, w) = (draw(n_true * d), draw(m * d));
        let norm = |r: &[f32]| r.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>().sqrt();
        let want = f
            .chunks(d)
            .map(|fi| {
                w.chunks(d)
                    .map(|wj| {
                        let dot: f64 = fi
                            .iter()
                            .zip(wj)
                            .map(|(a, b)| f64::from(*a) * f64::from(*b))
                            .sum();
                        dot / (norm(fi) * norm(wj))
                    })
                    .fold(f64::NEG_INFINITY, f64::max)
            })
            .sum::<f64>()
            / n_true as f64;
        let got = mean_max_cosine(&f, &w, d);
        assert!((got - want).abs() < 1e-6, "{got} against {want}");
    }
}
