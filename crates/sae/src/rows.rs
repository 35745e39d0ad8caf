//! Which activation rows an SAE is trained and evaluated on.
//!
//! Three kinds of rows are dropped, the last two by default (the peer libraries offer the same
//! cuts as options; `../shared/research/sae-libraries.md`, "Token masking"):
//! - rows whose token id is listed ([`RowFilter::exclude_token_ids`]; sparsify's
//!   `exclude_tokens`, SAELens's `exclude_special_tokens`);
//! - the first position of every sequence ([`RowFilter::drop_first`]; dictionary_learning's
//!   `remove_bos`). In SmolLM2-135M it is an attention sink with ‖x‖ ≈ 25 000 against a median
//!   of 172: 0.75 % of the rows then hold almost all the variance and FVU reads 0.001 for any
//!   SAE. Only stores whose rows come in sequences are cut (some row of the sample sits at a
//!   later position): imported rows each sit at position 0 of a sequence of their own;
//! - rows with `‖x‖ > f · median ‖x‖` ([`RowFilter::outlier_factor`], default `f` = 10,
//!   dictionary_learning's `remove_high_norm`, for the unpredictable high-norm sinks of models
//!   like Qwen), the median taken over a sample of the rows the first two cuts keep.
//!
//! A filter is fixed on a sample ([`RowCut::from_sample`]) and then applied batch by batch,
//! counting what it dropped and why ([`Dropped`]).

use lantern_acts::Batch;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{Result, SaeError};

/// The default outlier factor: rows above 10 × the median norm are dropped.
pub const DEFAULT_OUTLIER_FACTOR: f32 = 10.0;

/// What to drop (module docs).
#[derive(Clone, Debug, PartialEq)]
pub struct RowFilter {
    /// Rows whose token id is one of these.
    pub exclude_token_ids: Vec<u32>,
    /// Rows at position 0, in stores whose rows come in sequences.
    pub drop_first: bool,
    /// Rows with `‖x‖ > factor × median ‖x‖`.
    pub outlier_factor: Option<f32>,
}

impl Default for RowFilter {
    /// Position 0 and rows above 10 × the median norm.
    fn default() -> Self {
        Self {
            exclude_token_ids: Vec::new(),
            drop_first: true,
            outlier_factor: Some(DEFAULT_OUTLIER_FACTOR),
        }
    }
}

impl RowFilter {
    /// Refuses an outlier factor that is not above 1.
    pub fn check(&self) -> Result<()> {
        // Rows above f × the median norm are dropped: at f ≤ 1 half the rows or more would go
        // (0.1 trained 52 of 200 000 tokens; 0 never found a batch and spun forever).
        match self.outlier_factor {
            Some(f) if !(f.is_finite() && f > 1.0) => Err(SaeError::Setting {
                field: "outlier_factor",
                value: f.to_string(),
                expected: "a number above 1 (rows above factor × median norm are dropped)",
            }),
            _ => Ok(()),
        }
    }

    /// Keeps every row.
    pub fn none() -> Self {
        Self {
            exclude_token_ids: Vec::new(),
            drop_first: false,
            outlier_factor: None,
        }
    }
}

/// Rows dropped, by reason (a row that meets several counts under the first that applies, in
/// this order).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dropped {
    /// Listed token ids.
    pub token_id: u64,
    /// Position 0 of a sequence.
    pub first_position: u64,
    /// Above the norm cut.
    pub outlier: u64,
}

impl Dropped {
    /// All dropped rows.
    pub fn total(&self) -> u64 {
        self.token_id + self.first_position + self.outlier
    }

    /// Adds another count.
    pub fn add(&mut self, o: &Dropped) {
        self.token_id += o.token_id;
        self.first_position += o.first_position;
        self.outlier += o.outlier;
    }

    /// One line for a person: `"12 at position 0, 3 above 10× the median norm (cut 1720.0)"`,
    /// or `"none"`; `cut` is the filter that dropped them.
    pub fn describe(&self, cut: &RowCut) -> String {
        let mut parts = Vec::new();
        if self.token_id > 0 {
            parts.push(format!("{} with an excluded token id", self.token_id));
        }
        if self.first_position > 0 {
            parts.push(format!("{} at position 0", self.first_position));
        }
        if self.outlier > 0 {
            parts.push(format!(
                "{} above {}× the median norm (‖x‖ > {:.4e})",
                self.outlier,
                cut.outlier_factor.unwrap_or(0.0),
                cut.norm_cut().unwrap_or(0.0)
            ));
        }
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(", ")
        }
    }
}

/// A [`RowFilter`] fixed on a sample: whether positions are meaningful and the norm cut.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RowCut {
    pub exclude_token_ids: Vec<u32>,
    /// Position-0 rows are dropped (asked for, and the store has sequences).
    pub drop_first: bool,
    pub outlier_factor: Option<f32>,
    /// Median ‖x‖ of the sample's rows that the token-id and position cuts keep.
    pub median_norm: f32,
}

impl RowCut {
    /// Fixes `filter` on `sample`: the store has sequences when some sample row sits at a
    /// position above 0; the median norm is taken over the rows the token-id and position
    /// cuts keep (0 when none is left).
    pub fn from_sample(filter: &RowFilter, sample: &Batch) -> Self {
        let sequences = sample.positions.iter().any(|p| *p > 0);
        let mut cut = Self {
            exclude_token_ids: filter.exclude_token_ids.clone(),
            drop_first: filter.drop_first && sequences,
            outlier_factor: filter.outlier_factor,
            median_norm: 0.0,
        };
        let norms: Vec<f32> = rows(sample)
            .filter(|(t, p, _)| cut.reason(*t, *p, None).is_none())
            .map(|(_, _, r)| norm(r))
            .collect();
        cut.median_norm = median(&norms);
        cut
    }

    /// `‖x‖` above which a row is an outlier.
    pub fn norm_cut(&self) -> Option<f32> {
        self.outlier_factor.map(|f| f * self.median_norm)
    }

    /// Why a row is dropped (`None`: kept). Without `row`, only the token-id and position cuts.
    fn reason(&self, token_id: u32, position: u32, row: Option<&[f32]>) -> Option<Reason> {
        if self.exclude_token_ids.contains(&token_id) {
            Some(Reason::TokenId)
        } else if self.drop_first && position == 0 {
            Some(Reason::FirstPosition)
        } else if let (Some(cut), Some(r)) = (self.norm_cut(), row)
            && norm(r) > cut
        {
            Some(Reason::Outlier)
        } else {
            None
        }
    }

    /// The kept rows of `batch`, concatenated, each passed through `f` (e.g. scaled); adds the
    /// dropped ones to `dropped`. Rows are judged (a norm each) and copied in parallel (rayon),
    /// in batch order: the same rows and values as one row at a time.
    pub fn keep(
        &self,
        batch: &Batch,
        dropped: &mut Dropped,
        f: impl Fn(f32) -> f32 + Sync,
    ) -> Vec<f32> {
        let d = batch.d.max(1);
        let n = batch.rows.min(batch.acts.len() / d);
        let row = |i: usize| &batch.acts[i * d..(i + 1) * d];
        let reasons: Vec<Option<Reason>> = (0..n)
            .into_par_iter()
            .with_min_len(KEEP_MIN_ROWS)
            .map(|i| self.reason(batch.token_ids[i], batch.positions[i], Some(row(i))))
            .collect();
        let mut kept_rows = Vec::with_capacity(n);
        for (i, reason) in reasons.iter().enumerate() {
            match reason {
                None => kept_rows.push(i),
                Some(Reason::TokenId) => dropped.token_id += 1,
                Some(Reason::FirstPosition) => dropped.first_position += 1,
                Some(Reason::Outlier) => dropped.outlier += 1,
            }
        }
        let mut kept = vec![0f32; kept_rows.len() * d];
        kept.par_chunks_mut(d)
            .zip(&kept_rows)
            .with_min_len(KEEP_MIN_ROWS)
            .for_each(|(out, &i)| {
                for (o, v) in out.iter_mut().zip(row(i)) {
                    *o = f(*v);
                }
            });
        kept
    }
}

/// Fewest rows one rayon task of [`RowCut::keep`] judges or copies.
const KEEP_MIN_ROWS: usize = 64;

enum Reason {
    TokenId,
    FirstPosition,
    Outlier,
}

/// `(token id, position, row)` of each row of `b`.
fn rows(b: &Batch) -> impl Iterator<Item = (u32, u32, &[f32])> {
    b.acts
        .chunks(b.d.max(1))
        .take(b.rows)
        .enumerate()
        .map(|(i, r)| (b.token_ids[i], b.positions[i], r))
}

/// `‖r‖`, the squares summed in 8 interleaved lanes (element `j` into lane `j mod 8`, then the
/// lanes and the tail in order): a fixed order, so the same bits on every machine, that the
/// compiler can keep in one SIMD register (a single running sum is a chain of dependent adds,
/// 4× slower at d 768 and the row cut's main cost).
fn norm(r: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let mut chunks = r.chunks_exact(8);
    for c in &mut chunks {
        for (l, v) in lanes.iter_mut().zip(c) {
            *l += v * v;
        }
    }
    let tail: f32 = chunks.remainder().iter().map(|v| v * v).sum();
    (lanes.iter().sum::<f32>() + tail).sqrt()
}

/// The upper median (0 for no values).
pub(crate) fn median(v: &[f32]) -> f32 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s[s.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two sequences of three rows, one norm per row.
    fn batch(norms: &[f32], token_ids: &[u32], positions: &[u32]) -> Batch {
        Batch {
            rows: norms.len(),
            d: 2,
            acts: norms.iter().flat_map(|n| [0.6 * n, 0.8 * n]).collect(),
            token_ids: token_ids.to_vec(),
            seq_ids: positions.iter().map(|_| 0).collect(),
            positions: positions.to_vec(),
        }
    }

    #[test]
    fn drops_the_first_position_token_ids_and_outliers_and_counts_each() {
        // Position 0 holds a sink (norm 400–500); one later row is an outlier (norm 60, above
        // 10 × the median 4).
        let b = batch(
            &[500.0, 1.0, 2.0, 400.0, 3.0, 60.0, 4.0],
            &[1, 5, 5, 1, 7, 5, 5],
            &[0, 1, 2, 0, 1, 2, 3],
        );
        let cut = RowCut::from_sample(
            &RowFilter {
                exclude_token_ids: vec![7],
                ..RowFilter::default()
            },
            &b,
        );
        assert!(cut.drop_first);
        // The upper median of 1, 2, 60, 4 (position 0 and token 7 left out).
        assert!((cut.median_norm - 4.0).abs() < 1e-5, "{}", cut.median_norm);
        let mut dropped = Dropped::default();
        let kept = cut.keep(&b, &mut dropped, |v| 2.0 * v);
        // Kept: norms 1, 2, 4 (60 > 10 × 4), each scaled by 2.
        let kept_norms: Vec<f32> = kept.chunks(2).map(norm).collect();
        for (k, want) in kept_norms.iter().zip([2.0, 4.0, 8.0]) {
            assert!((k - want).abs() < 1e-5, "{kept_norms:?}");
        }
        assert_eq!(kept_norms.len(), 3);
        assert_eq!(
            dropped,
            Dropped {
                token_id: 1,
                first_position: 2,
                outlier: 1
            }
        );
        let line = dropped.describe(&cut);
        assert!(
            line.contains("2 at position 0") && line.contains("1 above 10× the median"),
            "{line}"
        );
    }

    #[test]
    fn a_large_batch_keeps_the_rows_a_row_by_row_loop_keeps_in_order() {
        // 5 000 rows (many parallel tasks): every 37th at position 0, every 101st with an
        // excluded token, every 53rd an outlier (norm 1 000 against a median near 5).
        let n = 5000;
        let norms: Vec<f32> = (0..n)
            .map(|i| {
                if i % 53 == 7 {
                    1000.0
                } else {
                    1.0 + (i % 9) as f32
                }
            })
            .collect();
        let tokens: Vec<u32> = (0..n).map(|i| if i % 101 == 3 { 7 } else { 5 }).collect();
        let positions: Vec<u32> = (0..n).map(|i| (i % 37) as u32).collect();
        let b = batch(&norms, &tokens, &positions);
        let filter = RowFilter {
            exclude_token_ids: vec![7],
            ..RowFilter::default()
        };
        let cut = RowCut::from_sample(&filter, &b);
        let mut dropped = Dropped::default();
        let kept = cut.keep(&b, &mut dropped, |v| -3.0 * v);
        let mut want = Vec::new();
        let mut want_dropped = Dropped::default();
        for i in 0..n {
            if tokens[i] == 7 {
                want_dropped.token_id += 1;
            } else if positions[i] == 0 {
                want_dropped.first_position += 1;
            } else if norms[i] > 100.0 {
                want_dropped.outlier += 1;
            } else {
                want.extend([-3.0 * 0.6 * norms[i], -3.0 * 0.8 * norms[i]]);
            }
        }
        assert_eq!(dropped, want_dropped);
        assert_eq!(kept.len(), want.len());
        for (j, (a, b)) in kept.iter().zip(&want).enumerate() {
            assert!(
                (a - b).abs() <= 1e-5 * b.abs(),
                "value {j}: {a} against {b}"
            );
        }
    }

    #[test]
    fn the_norm_in_lanes_is_the_norm() {
        for d in [0, 1, 7, 8, 9, 64, 768, 771] {
            let r: Vec<f32> = (0..d)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
                .collect();
            let want = r.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>().sqrt();
            let got = f64::from(norm(&r));
            assert!(
                (got - want).abs() <= 1e-6 * want.max(1.0),
                "d {d}: {got} against {want}"
            );
        }
    }

    #[test]
    fn rows_without_sequences_keep_position_zero() {
        // Imported rows: every row at position 0 of its own sequence.
        let b = batch(&[1.0, 2.0, 3.0], &[0, 0, 0], &[0, 0, 0]);
        let cut = RowCut::from_sample(&RowFilter::default(), &b);
        assert!(!cut.drop_first);
        let mut dropped = Dropped::default();
        assert_eq!(cut.keep(&b, &mut dropped, |v| v).len(), 6);
        assert_eq!(dropped.total(), 0);
        assert_eq!(dropped.describe(&cut), "none");
    }

    #[test]
    fn no_filter_keeps_everything() {
        let b = batch(&[500.0, 1.0, 2.0], &[1, 5, 5], &[0, 1, 2]);
        let cut = RowCut::from_sample(&RowFilter::none(), &b);
        let mut dropped = Dropped::default();
        assert_eq!(cut.keep(&b, &mut dropped, |v| v), b.acts);
        assert_eq!(dropped.total(), 0);
    }
}
