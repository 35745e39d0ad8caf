//! Contrastive directions: the vector that separates a positive set of sequences from a
//! negative one, by six estimators (the doc of [`Method`] gives each formula).
//!
//! Statistics are gathered per sequence in one streaming pass ([`SeqMeans::collect`]): the
//! mean `m_i` of the selected tokens of sequence `i`, its token count `n_i` and the running
//! token-weighted sum — memory grows with the number of sequences, not tokens. Paired methods
//! pair the `i`-th positive sequence with the `i`-th negative one (store order; with one
//! labelled store, order of appearance within each label).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use lantern_acts::Store;

use crate::error::input;
use crate::linalg::{dot, top_right_singular, unit};
use crate::probe::{ProbeFit, ProbeOptions, fit_probe};
use crate::sequences::{check_selection, for_each_sequence};
use crate::tokens::TokenSelection;
use crate::{Result, SearchError};

/// Per-sequence means of the selected tokens of one set.
#[derive(Clone, Debug)]
pub struct SeqMeans {
    pub d: usize,
    /// `[n_seq, d]` row-major: `m_i = (1/n_i) Σ_{t ∈ sel(i)} h_t`.
    pub means: Vec<f32>,
    /// `n_i`, selected tokens per sequence (≥ 1).
    pub counts: Vec<u32>,
    pub seq_ids: Vec<u32>,
    /// `Σ_i Σ_{t ∈ sel(i)} h_t` in f64.
    pub sum: Vec<f64>,
    /// Sequences left out because the selection chose none of their tokens.
    pub skipped: usize,
    /// The store (for error messages).
    pub source: PathBuf,
}

impl SeqMeans {
    /// Streams `store` (the sequences labelled `label`, or all) once.
    pub fn collect(store: &Store, label: Option<u8>, selection: TokenSelection) -> Result<Self> {
        check_selection(store, selection)?;
        let d = store.d_model();
        let mut out = SeqMeans {
            d,
            means: Vec::new(),
            counts: Vec::new(),
            seq_ids: Vec::new(),
            sum: vec![0.0; d],
            skipped: 0,
            source: store.dir().to_path_buf(),
        };
        let mut picked = Vec::new();
        let mut acc = vec![0f64; d];
        for_each_sequence(store, label, |seq| {
            selection.select(seq.roles, seq.positions, &mut picked);
            if picked.is_empty() {
                out.skipped += 1;
                return Ok(());
            }
            acc.iter_mut().for_each(|a| *a = 0.0);
            for &t in &picked {
                for (a, &x) in acc.iter_mut().zip(&seq.acts[t * d..(t + 1) * d]) {
                    *a += x as f64;
                }
            }
            let n = picked.len() as f64;
            for (s, a) in out.sum.iter_mut().zip(&acc) {
                *s += a;
            }
            out.means.extend(acc.iter().map(|a| (a / n) as f32));
            out.counts.push(picked.len() as u32);
            out.seq_ids.push(seq.seq_id);
            Ok(())
        })?;
        if out.counts.is_empty() {
            let what = match label {
                Some(l) => format!("label '{}'", store.labels()[l as usize]),
                None => "the store".into(),
            };
            return Err(input(
                store.dir(),
                format!("token selection '{selection}' selects no token of any sequence of {what}"),
            ));
        }
        Ok(out)
    }

    /// Number of sequences.
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// Selected tokens in all.
    pub fn tokens(&self) -> u64 {
        self.counts.iter().map(|&c| c as u64).sum()
    }

    /// Sequence `i`'s mean.
    pub fn mean(&self, i: usize) -> &[f32] {
        &self.means[i * self.d..(i + 1) * self.d]
    }

    /// The token-weighted mean `Σ h / N`.
    pub fn token_mean(&self) -> Vec<f64> {
        let n = self.tokens() as f64;
        self.sum.iter().map(|s| s / n).collect()
    }

    /// The mean of per-sequence means.
    pub fn sequence_mean(&self) -> Vec<f64> {
        let mut m = vec![0.0; self.d];
        for i in 0..self.len() {
            for (a, &x) in m.iter_mut().zip(self.mean(i)) {
                *a += x as f64;
            }
        }
        let n = self.len() as f64;
        m.iter_mut().for_each(|a| *a /= n);
        m
    }
}

/// How a direction is estimated from positive sequences `P` and negative ones `N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// `v = (1/N_P) Σ_{t∈P} h_t − (1/N_N) Σ_{t∈N} h_t`, token-weighted means over the selected
    /// tokens, raw (not normalised): Soligo et al. 2025's per-layer misalignment vector.
    MeanDiff,
    /// `v = (1/|P|) Σ_i m_i − (1/|N|) Σ_j m_j`, the mean of per-sequence means (persona
    /// vectors' `response_avg_diff`, Chen et al. 2025), raw.
    ResponseMean,
    /// `v = (1/n) Σ_i (m⁺_i − m⁻_i)` over pairs (steering-vectors' mean aggregator), raw.
    PairedMean,
    /// First principal component of the paired differences `δ_i = m⁺_i − m⁻_i` after
    /// centring them (repeng's `pca_diff`, sklearn PCA on the differences), unit norm.
    PcaDiff,
    /// First principal component of the pair-centred activations `m^±_i − (m⁺_i + m⁻_i)/2`
    /// (repeng's `pca_center`; the rows are `±δ_i/2`, zero-mean by construction, so this is
    /// the top right singular vector of the uncentred differences), unit norm.
    PcaCenter,
    /// L2-regularised logistic regression on the per-sequence means, fitted on a training
    /// split (minimising `C Σ log(1 + e^{−y(w·m + b)}) + ½‖w‖²`, sklearn's objective); the
    /// unit weight vector is the direction, held-out accuracy and AUC go in the metadata.
    Probe,
}

impl Method {
    pub const ALL: [Method; 6] = [
        Self::MeanDiff,
        Self::ResponseMean,
        Self::PairedMean,
        Self::PcaDiff,
        Self::PcaCenter,
        Self::Probe,
    ];

    /// Whether the method pairs positive and negative sequences.
    pub fn paired(self) -> bool {
        matches!(self, Self::PairedMean | Self::PcaDiff | Self::PcaCenter)
    }

    /// Whether its vectors have unit norm.
    pub fn normalized(self) -> bool {
        matches!(self, Self::PcaDiff | Self::PcaCenter | Self::Probe)
    }
}

impl FromStr for Method {
    type Err = SearchError;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|m| m.to_string() == s)
            .ok_or(SearchError::Setting {
                field: "method",
                value: s.to_string(),
                expected: "mean-diff, response-mean, paired-mean, pca-diff, pca-center or probe",
            })
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::MeanDiff => "mean-diff",
            Self::ResponseMean => "response-mean",
            Self::PairedMean => "paired-mean",
            Self::PcaDiff => "pca-diff",
            Self::PcaCenter => "pca-center",
            Self::Probe => "probe",
        })
    }
}

/// A fitted direction with what the method measured on the way.
#[derive(Clone, Debug)]
pub struct Fit {
    pub vector: Vec<f32>,
    /// The probe's fit (only for [`Method::Probe`]).
    pub probe: Option<ProbeFit>,
    /// Mean projection `m·v̂` of the positive and of the negative sequences.
    pub pos_projection: f64,
    pub neg_projection: f64,
}

/// Estimates the direction from `pos` to `neg` by `method` and fixes its sign so that the
/// positive sequences project higher on average.
pub fn direction(
    method: Method,
    pos: &SeqMeans,
    neg: &SeqMeans,
    probe: &ProbeOptions,
) -> Result<Fit> {
    if pos.d != neg.d {
        return Err(input(
            &neg.source,
            format!(
                "d_model {} differs from the positive store's {}",
                neg.d, pos.d
            ),
        ));
    }
    if method.paired() && pos.len() != neg.len() {
        return Err(input(
            &neg.source,
            format!(
                "{method} pairs sequences, and the sets are unpaired: {} positive sequences \
                 ({}) against {} negative ones",
                pos.len(),
                pos.source.display(),
                neg.len()
            ),
        ));
    }
    let d = pos.d;
    let diff = |a: Vec<f64>, b: Vec<f64>| -> Vec<f32> {
        a.iter().zip(&b).map(|(x, y)| (x - y) as f32).collect()
    };
    let mut probe_fit = None;
    let mut v: Vec<f32> = match method {
        Method::MeanDiff => diff(pos.token_mean(), neg.token_mean()),
        Method::ResponseMean => diff(pos.sequence_mean(), neg.sequence_mean()),
        Method::PairedMean => {
            let deltas = paired_deltas(pos, neg);
            let n = pos.len() as f64;
            (0..d)
                .map(|k| (deltas.iter().skip(k).step_by(d).sum::<f64>() / n) as f32)
                .collect()
        }
        Method::PcaDiff | Method::PcaCenter => {
            let mut x = paired_deltas(pos, neg);
            let n = pos.len();
            if method == Method::PcaDiff {
                for k in 0..d {
                    let mean = (0..n).map(|i| x[i * d + k]).sum::<f64>() / n as f64;
                    (0..n).for_each(|i| x[i * d + k] -= mean);
                }
            }
            top_right_singular(&x, n, d)
                .iter()
                .map(|&a| a as f32)
                .collect()
        }
        Method::Probe => {
            let fit = fit_probe(pos, neg, probe)?;
            let v = unit(&fit.weights);
            probe_fit = Some(fit);
            v
        }
    };
    if v.iter().all(|&x| x == 0.0) {
        return Err(input(
            &pos.source,
            format!("{method}: the positive and negative sets give a zero direction"),
        ));
    }
    let proj = |s: &SeqMeans, v: &[f32]| -> f64 {
        (0..s.len()).map(|i| dot(s.mean(i), v)).sum::<f64>() / s.len() as f64
    };
    let vh = unit(&v);
    let (mut pp, mut np) = (proj(pos, &vh), proj(neg, &vh));
    if pp < np {
        v.iter_mut().for_each(|x| *x = -*x);
        (pp, np) = (-pp, -np);
        if let Some(f) = &mut probe_fit {
            f.flip();
        }
    }
    Ok(Fit {
        vector: v,
        probe: probe_fit,
        pos_projection: pp,
        neg_projection: np,
    })
}

/// `δ_i = m⁺_i − m⁻_i`, `[n, d]` f64.
fn paired_deltas(pos: &SeqMeans, neg: &SeqMeans) -> Vec<f64> {
    (0..pos.len())
        .flat_map(|i| {
            pos.mean(i)
                .iter()
                .zip(neg.mean(i))
                .map(|(&a, &b)| a as f64 - b as f64)
                .collect::<Vec<_>>()
        })
        .collect()
}
