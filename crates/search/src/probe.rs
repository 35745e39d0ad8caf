//! A linear probe: L2-regularised logistic regression on per-sequence means, the way
//! scikit-learn's `LogisticRegression(C)` fits it (penalty on the weights, not the intercept):
//!
//! ```text
//! minimise  C Σ_i log(1 + exp(−y_i (w·x_i + b))) + ½‖w‖²,     y_i ∈ {−1, +1}
//! ```
//!
//! solved by Newton's method with a backtracking line search (the objective is strictly convex
//! in `w`, so the optimum is unique and any exact solver reaches the same one). Sequences are
//! split per class into train and held-out parts by a seeded shuffle; accuracy and the AUC
//! (Mann–Whitney, ties counted half) are measured on the held-out part.

use lantern_acts::Rng;
use rayon::prelude::*;

use crate::contrast::SeqMeans;
use crate::error::input;
use crate::linalg::cholesky_solve;
use crate::{Result, SearchError};

/// Probe settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProbeOptions {
    /// Inverse regularisation strength `C` (scikit-learn's default 1.0).
    pub c: f64,
    /// Fraction of each class held out (0 ≤ f < 1; 0 = train on everything, no held-out score).
    pub test_fraction: f64,
    /// Seed of the train/held-out split.
    pub seed: u64,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            c: 1.0,
            test_fraction: 0.2,
            seed: 0,
        }
    }
}

/// A fitted probe: `P(pos | x) = σ(w·x + b)`.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeFit {
    pub weights: Vec<f32>,
    pub bias: f64,
    pub n_train: usize,
    pub n_test: usize,
    pub train_accuracy: f64,
    /// NaN when nothing is held out.
    pub test_accuracy: f64,
    pub test_auc: f64,
    pub iterations: usize,
}

impl ProbeFit {
    /// The same classifier with its sign turned round (predicting the other class).
    pub(crate) fn flip(&mut self) {
        self.weights.iter_mut().for_each(|w| *w = -*w);
        self.bias = -self.bias;
        self.train_accuracy = 1.0 - self.train_accuracy;
        self.test_accuracy = 1.0 - self.test_accuracy;
        self.test_auc = 1.0 - self.test_auc;
    }
}

/// Which sequences of one class are held out (`true`) under `opts`.
pub fn held_out(n: usize, opts: &ProbeOptions, class: u64) -> Vec<bool> {
    let mut idx: Vec<usize> = (0..n).collect();
    Rng::new(lantern_acts::rng::derive_seed(&[opts.seed, 0x9b0be, class])).shuffle(&mut idx);
    let k = (n as f64 * opts.test_fraction).round() as usize;
    let mut out = vec![false; n];
    for &i in &idx[..k.min(n)] {
        out[i] = true;
    }
    out
}

/// Fits the probe with `pos` as class 1 (see the module docs).
pub fn fit_probe(pos: &SeqMeans, neg: &SeqMeans, opts: &ProbeOptions) -> Result<ProbeFit> {
    if !(opts.c > 0.0 && opts.c.is_finite()) {
        return Err(SearchError::Setting {
            field: "probe_c",
            value: opts.c.to_string(),
            expected: "a positive number",
        });
    }
    if !(0.0..1.0).contains(&opts.test_fraction) {
        return Err(SearchError::Setting {
            field: "test_fraction",
            value: opts.test_fraction.to_string(),
            expected: "a fraction in [0, 1)",
        });
    }
    let d = pos.d;
    let (hp, hn) = (held_out(pos.len(), opts, 1), held_out(neg.len(), opts, 0));
    let mut train: Vec<(&[f32], f64)> = Vec::new();
    let mut test: Vec<(&[f32], f64)> = Vec::new();
    for (set, held, y) in [(pos, &hp, 1.0), (neg, &hn, -1.0)] {
        for (i, &h) in held.iter().enumerate() {
            if h { &mut test } else { &mut train }.push((set.mean(i), y));
        }
    }
    for (set, held) in [(pos, &hp), (neg, &hn)] {
        if held.iter().filter(|h| !**h).count() == 0 {
            return Err(input(
                &set.source,
                format!(
                    "the probe needs training sequences of both classes; this side has {} \
                     sequences and {} are held out",
                    set.len(),
                    held.iter().filter(|h| **h).count()
                ),
            ));
        }
    }
    let (w, b, iterations) = newton(&train, d, opts.c);
    let score =
        |x: &[f32]| -> f64 { x.iter().zip(&w).map(|(&a, &b)| a as f64 * b).sum::<f64>() + b };
    let accuracy = |set: &[(&[f32], f64)]| -> f64 {
        if set.is_empty() {
            return f64::NAN;
        }
        let right = set.iter().filter(|(x, y)| score(x) * y > 0.0).count();
        right as f64 / set.len() as f64
    };
    let scored: Vec<(f64, bool)> = test.iter().map(|(x, y)| (score(x), *y > 0.0)).collect();
    Ok(ProbeFit {
        weights: w.iter().map(|&x| x as f32).collect(),
        bias: b,
        n_train: train.len(),
        n_test: test.len(),
        train_accuracy: accuracy(&train),
        test_accuracy: accuracy(&test),
        test_auc: auc(&scored),
        iterations,
    })
}

/// The area under the ROC curve of `(score, is_positive)`: the probability that a random
/// positive scores above a random negative, ties counting half. NaN without both classes.
pub fn auc(scored: &[(f64, bool)]) -> f64 {
    let mut s = scored.to_vec();
    s.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n_pos = s.iter().filter(|x| x.1).count() as f64;
    let n_neg = s.len() as f64 - n_pos;
    if n_pos == 0.0 || n_neg == 0.0 {
        return f64::NAN;
    }
    // Sum of positive ranks with average ranks for ties.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < s.len() {
        let mut j = i;
        while j + 1 < s.len() && s[j + 1].0 == s[i].0 {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += rank * s[i..=j].iter().filter(|x| x.1).count() as f64;
        i = j + 1;
    }
    (rank_sum - n_pos * (n_pos + 1.0) / 2.0) / (n_pos * n_neg)
}

/// `log(1 + e^{−m})` without overflow.
fn log1p_exp_neg(m: f64) -> f64 {
    if m > 0.0 {
        (-m).exp().ln_1p()
    } else {
        -m + m.exp().ln_1p()
    }
}

fn objective(rows: &[(&[f32], f64)], w: &[f64], b: f64, c: f64) -> f64 {
    let loss: f64 = rows
        .par_iter()
        .map(|(x, y)| {
            log1p_exp_neg(y * (x.iter().zip(w).map(|(&a, &w)| a as f64 * w).sum::<f64>() + b))
        })
        .sum();
    c * loss + 0.5 * w.iter().map(|a| a * a).sum::<f64>()
}

/// Newton's method on `θ = (w, b)`; returns `(w, b, iterations)`.
fn newton(rows: &[(&[f32], f64)], d: usize, c: f64) -> (Vec<f64>, f64, usize) {
    let p = d + 1;
    let mut w = vec![0.0; d];
    let mut b = 0.0;
    let mut f = objective(rows, &w, b, c);
    let mut iterations = 0;
    for it in 0..200 {
        iterations = it + 1;
        // Gradient and Hessian of the loss term, summed in parallel over rows.
        let (mut g, mut h) = rows
            .par_iter()
            .fold(
                || (vec![0.0; p], vec![0.0; p * p]),
                |(mut g, mut h), (x, y)| {
                    let z = x.iter().zip(&w).map(|(&a, &w)| a as f64 * w).sum::<f64>() + b;
                    let s = 1.0 / (1.0 + (y * z).exp()); // σ(−y z)
                    let q = s * (1.0 - s); // σ(z)(1 − σ(z))
                    let xs: Vec<f64> = x.iter().map(|&a| a as f64).chain([1.0]).collect();
                    for i in 0..p {
                        g[i] -= y * s * xs[i];
                        let qi = q * xs[i];
                        if qi != 0.0 {
                            for j in i..p {
                                h[i * p + j] += qi * xs[j];
                            }
                        }
                    }
                    (g, h)
                },
            )
            .reduce(
                || (vec![0.0; p], vec![0.0; p * p]),
                |(mut g1, mut h1), (g2, h2)| {
                    g1.iter_mut().zip(&g2).for_each(|(a, b)| *a += b);
                    h1.iter_mut().zip(&h2).for_each(|(a, b)| *a += b);
                    (g1, h1)
                },
            );
        for i in 0..p {
            g[i] *= c;
            if i < d {
                g[i] += w[i];
            }
            for j in i..p {
                h[i * p + j] *= c;
                h[j * p + i] = h[i * p + j];
            }
            if i < d {
                h[i * p + i] += 1.0;
            }
        }
        let gnorm = g.iter().map(|a| a * a).sum::<f64>().sqrt();
        if gnorm < 1e-9 * (1.0 + f.abs()) {
            break;
        }
        // A tiny ridge keeps the intercept row positive definite when every q vanishes.
        h[(p - 1) * p + (p - 1)] += 1e-12;
        let Some(step) = cholesky_solve(&h, &g, p) else {
            break;
        };
        let slope: f64 = g.iter().zip(&step).map(|(a, b)| a * b).sum();
        let mut t = 1.0;
        let mut moved = false;
        for _ in 0..60 {
            let wn: Vec<f64> = w.iter().zip(&step).map(|(a, s)| a - t * s).collect();
            let bn = b - t * step[d];
            let fnew = objective(rows, &wn, bn, c);
            if fnew <= f - 1e-4 * t * slope {
                moved = fnew < f;
                w = wn;
                b = bn;
                f = fnew;
                break;
            }
            t *= 0.5;
        }
        if !moved {
            break;
        }
    }
    (w, b, iterations)
}

#[cfg(test)]
mod tests {
    use super::auc;

    #[test]
    fn auc_counts_ties_half() {
        assert_eq!(auc(&[(0.0, false), (1.0, true)]), 1.0);
        assert_eq!(auc(&[(1.0, false), (0.0, true)]), 0.0);
        assert_eq!(auc(&[(0.5, false), (0.5, true)]), 0.5);
        // 2 positives {3, 1}, 2 negatives {2, 0}: pairs won 3 of 4.
        assert_eq!(
            auc(&[(3.0, true), (1.0, true), (2.0, false), (0.0, false)]),
            0.75
        );
    }
}
