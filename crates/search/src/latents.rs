//! Latent inspection: which SAE latents point along a direction, and the token contexts on
//! which a latent fires most (the Neuronpedia dashboard in miniature: top contexts with the
//! latent's activation on every token, its firing density and activation quantiles).

use burn::tensor::{Int, Tensor, TensorData};
use lantern_acts::{Rng, Store};
use lantern_sae::params::download;
use lantern_sae::{Sae, SaeWeights};

use crate::diff::{check_store_matches_sae, quantile};
use crate::error::input;
use crate::linalg::cosine;
use crate::sequences::{check_selection, for_each_sequence};
use crate::tokens::TokenSelection;
use crate::{Result, SearchError};

/// A latent's alignment with a direction `v`: `cos(W_dec[i], v)` and `cos(W_enc[:, i], v)`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Aligned {
    pub latent: usize,
    pub cos_dec: f64,
    pub cos_enc: f64,
}

/// The `top` latents whose decoder rows have the largest cosine with `v` (most aligned first).
pub fn aligned_latents(w: &SaeWeights, v: &[f32], top: usize) -> Vec<Aligned> {
    let (d, m) = (w.cfg.d_in, w.cfg.d_sae);
    let mut enc_col = vec![0f32; d];
    let mut out: Vec<Aligned> = (0..m)
        .map(|i| {
            for (k, e) in enc_col.iter_mut().enumerate() {
                *e = w.w_enc[k * m + i];
            }
            Aligned {
                latent: i,
                cos_dec: cosine(&w.w_dec[i * d..(i + 1) * d], v),
                cos_enc: cosine(&enc_col, v),
            }
        })
        .collect();
    out.sort_by(|a, b| {
        b.cos_dec
            .total_cmp(&a.cos_dec)
            .then(a.latent.cmp(&b.latent))
    });
    out.truncate(top);
    out
}

/// Settings of [`top_contexts`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ContextOptions {
    /// Contexts kept per latent.
    pub top: usize,
    /// Tokens shown on each side of the top token.
    pub window: usize,
    /// Which tokens may be a top token (the context shows its neighbours whatever their role).
    pub selection: TokenSelection,
    /// Rows per device batch (whole sequences).
    pub batch_rows: usize,
    /// Seed of the reservoir sample behind the quantiles.
    pub seed: u64,
}

impl Default for ContextOptions {
    fn default() -> Self {
        ContextOptions {
            top: 20,
            window: 12,
            selection: TokenSelection::ALL,
            batch_rows: 1024,
            seed: 0,
        }
    }
}

/// One top-activating token with its neighbourhood.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Context {
    pub seq_id: u32,
    /// Position of the top token in its sequence.
    pub position: u32,
    pub activation: f32,
    /// Token ids of the window and the latent's activation on each.
    pub tokens: Vec<u32>,
    pub acts: Vec<f32>,
    /// Index of the top token within `tokens`.
    pub focus: usize,
}

/// Where one latent fires.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct LatentContexts {
    pub latent: usize,
    /// Highest first.
    pub contexts: Vec<Context>,
    /// Selected tokens seen and how many the latent fired on.
    pub tokens: u64,
    pub fires: u64,
    /// `fires / tokens`.
    pub density: f64,
    pub max: f64,
    pub mean_when_firing: f64,
    /// `(q, value)` over the activations where it fires (from a reservoir sample of 8192).
    pub quantiles: Vec<(f64, f64)>,
}

/// A sequence waiting for the device: `(seq_id, token ids, roles, positions)`.
type PendingSeq = (u32, Vec<u32>, Option<Vec<u8>>, Vec<u32>);

/// Token ids with their logits, best first.
pub type Ranked = Vec<(u32, f32)>;

const RESERVOIR: usize = 8192;
const QUANTILES: [f64; 5] = [0.1, 0.25, 0.5, 0.75, 0.9];

struct Tracker {
    out: LatentContexts,
    sum: f64,
    reservoir: Vec<f64>,
    rng: Rng,
}

/// The top contexts of each of `latents` over `store`.
pub fn top_contexts(
    sae: &Sae,
    store: &Store,
    latents: &[usize],
    opts: &ContextOptions,
) -> Result<Vec<LatentContexts>> {
    check_store_matches_sae(sae, store)?;
    check_selection(store, opts.selection)?;
    let m = sae.cfg.d_sae;
    if let Some(&bad) = latents.iter().find(|&&l| l >= m) {
        return Err(SearchError::Setting {
            field: "latent",
            value: bad.to_string(),
            expected: "a latent index below the SAE's d_sae",
        });
    }
    if latents.is_empty() || opts.top == 0 {
        return Err(SearchError::Setting {
            field: "latent",
            value: "none".into(),
            expected: "at least one latent and a top count ≥ 1",
        });
    }
    let device = sae.params.w_dec.device();
    let d = store.d_model();
    let cols = Tensor::<1, Int>::from_data(
        TensorData::new(
            latents.iter().map(|&l| l as i64).collect::<Vec<_>>(),
            [latents.len()],
        ),
        &device,
    );
    let mut trackers: Vec<Tracker> = latents
        .iter()
        .map(|&l| Tracker {
            out: LatentContexts {
                latent: l,
                contexts: Vec::new(),
                tokens: 0,
                fires: 0,
                density: 0.0,
                max: 0.0,
                mean_when_firing: 0.0,
                quantiles: Vec::new(),
            },
            sum: 0.0,
            reservoir: Vec::new(),
            rng: Rng::new(lantern_acts::rng::derive_seed(&[
                opts.seed, 0x5e5, l as u64,
            ])),
        })
        .collect();
    // Whole sequences wait here: (seq_id, ids, roles, positions) and their rows.
    let mut seqs: Vec<PendingSeq> = Vec::new();
    let mut acts: Vec<f32> = Vec::new();
    let mut picked = Vec::new();
    let mut run = |seqs: &mut Vec<PendingSeq>,
                   acts: &mut Vec<f32>,
                   trackers: &mut Vec<Tracker>|
     -> Result<()> {
        let rows = acts.len() / d;
        let x = Tensor::<2>::from_data(TensorData::new(std::mem::take(acts), [rows, d]), &device);
        let z = download(sae.encode(&x).select(1, cols.clone()))?;
        let l = latents.len();
        let mut row0 = 0;
        for (seq_id, ids, roles, positions) in seqs.drain(..) {
            let n = ids.len();
            opts.selection
                .select(roles.as_deref(), &positions, &mut picked);
            for (j, t) in trackers.iter_mut().enumerate() {
                let col = |i: usize| z[(row0 + i) * l + j];
                t.out.tokens += picked.len() as u64;
                for &i in &picked {
                    let a = col(i);
                    if a <= 0.0 {
                        continue;
                    }
                    t.out.fires += 1;
                    t.sum += a as f64;
                    t.out.max = t.out.max.max(a as f64);
                    if t.reservoir.len() < RESERVOIR {
                        t.reservoir.push(a as f64);
                    } else {
                        let k = t.rng.below(t.out.fires) as usize;
                        if k < RESERVOIR {
                            t.reservoir[k] = a as f64;
                        }
                    }
                    let full = t.out.contexts.len() >= opts.top;
                    if full && t.out.contexts.last().is_some_and(|c| c.activation >= a) {
                        continue;
                    }
                    let (lo, hi) = (i.saturating_sub(opts.window), (i + opts.window + 1).min(n));
                    let c = Context {
                        seq_id,
                        position: positions[i],
                        activation: a,
                        tokens: ids[lo..hi].to_vec(),
                        acts: (lo..hi).map(col).collect(),
                        focus: i - lo,
                    };
                    let at = t.out.contexts.partition_point(|o| o.activation >= a);
                    t.out.contexts.insert(at, c);
                    t.out.contexts.truncate(opts.top);
                }
            }
            row0 += n;
        }
        Ok(())
    };
    for_each_sequence(store, None, |seq| {
        acts.extend_from_slice(seq.acts);
        seqs.push((
            seq.seq_id,
            seq.token_ids.to_vec(),
            seq.roles.map(<[u8]>::to_vec),
            seq.positions.to_vec(),
        ));
        if acts.len() / d >= opts.batch_rows {
            run(&mut seqs, &mut acts, &mut trackers)?;
        }
        Ok(())
    })?;
    if !seqs.is_empty() {
        run(&mut seqs, &mut acts, &mut trackers)?;
    }
    if trackers[0].out.tokens == 0 {
        return Err(input(
            store.dir(),
            format!(
                "token selection '{}' selects no token of this store",
                opts.selection
            ),
        ));
    }
    Ok(trackers
        .into_iter()
        .map(|mut t| {
            t.out.density = t.out.fires as f64 / t.out.tokens as f64;
            t.out.mean_when_firing = if t.out.fires > 0 {
                t.sum / t.out.fires as f64
            } else {
                0.0
            };
            t.reservoir.sort_by(f64::total_cmp);
            t.out.quantiles = QUANTILES
                .iter()
                .map(|&q| (q, quantile(&t.reservoir, q)))
                .collect();
            t.out
        })
        .collect())
}

/// The top and bottom `k` token ids of logits `[vocab]` (largest first; smallest first).
pub fn top_bottom(logits: &[f32], k: usize) -> (Ranked, Ranked) {
    let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
    idx.sort_by(|&a, &b| {
        logits[b as usize]
            .total_cmp(&logits[a as usize])
            .then(a.cmp(&b))
    });
    let top = idx
        .iter()
        .take(k)
        .map(|&i| (i, logits[i as usize]))
        .collect();
    let bottom = idx
        .iter()
        .rev()
        .take(k)
        .map(|&i| (i, logits[i as usize]))
        .collect();
    (top, bottom)
}
