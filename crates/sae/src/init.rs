//! Initialisation: decoder rows, the tied encoder, `b_dec` from a data sample, and the input
//! scale.

use lantern_acts::rng::Rng;

/// How `b_dec` starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BDecInit {
    /// Geometric median of a data sample (Weiszfeld's algorithm), as in Anthropic's SAEs.
    Median,
    /// Mean of a data sample.
    Mean,
    /// Zeros.
    Zero,
}

impl std::str::FromStr for BDecInit {
    type Err = crate::SaeError;

    fn from_str(s: &str) -> crate::Result<Self> {
        match s {
            "median" => Ok(Self::Median),
            "mean" => Ok(Self::Mean),
            "zero" | "zeros" => Ok(Self::Zero),
            other => Err(crate::SaeError::Config(format!(
                "b_dec init '{other}': expected median, mean or zero"
            ))),
        }
    }
}

/// Unit-norm Gaussian decoder rows `W_dec [m, d]` and the tied encoder `W_enc = W_decᵀ`.
pub fn tied_weights(d: usize, m: usize, rng: &mut Rng) -> (Vec<f32>, Vec<f32>) {
    let mut w_dec = vec![0f32; m * d];
    for row in w_dec.chunks_mut(d) {
        for v in row.iter_mut() {
            *v = rng.normal_f32();
        }
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        row.iter_mut().for_each(|v| *v /= norm);
    }
    let mut w_enc = vec![0f32; d * m];
    for i in 0..m {
        for j in 0..d {
            w_enc[j * m + i] = w_dec[i * d + j];
        }
    }
    (w_enc, w_dec)
}

/// Mean of the rows of `x` `[n, d]`.
pub fn mean(x: &[f32], d: usize) -> Vec<f32> {
    let n = (x.len() / d).max(1);
    let mut acc = vec![0f64; d];
    for row in x.chunks(d) {
        for (a, v) in acc.iter_mut().zip(row) {
            *a += *v as f64;
        }
    }
    acc.iter().map(|a| (a / n as f64) as f32).collect()
}

/// Geometric median `argmin_y Σ_i ‖x_i − y‖` of the rows of `x` `[n, d]` by Weiszfeld's
/// iteration `y ← Σ_i x_i/‖x_i − y‖ / Σ_i 1/‖x_i − y‖`, started at the mean.
pub fn geometric_median(x: &[f32], d: usize, iterations: usize) -> Vec<f32> {
    let mut y: Vec<f64> = mean(x, d).iter().map(|v| *v as f64).collect();
    for _ in 0..iterations {
        let mut num = vec![0f64; d];
        let mut den = 0f64;
        for row in x.chunks(d) {
            let dist = row
                .iter()
                .zip(&y)
                .map(|(a, b)| (*a as f64 - b).powi(2))
                .sum::<f64>()
                .sqrt()
                .max(1e-8);
            let w = 1.0 / dist;
            den += w;
            for (n, v) in num.iter_mut().zip(row) {
                *n += w * *v as f64;
            }
        }
        let next: Vec<f64> = num.iter().map(|n| n / den.max(1e-30)).collect();
        let moved = next
            .iter()
            .zip(&y)
            .map(|(a, b)| (a - b).powi(2))
            .sum::<f64>()
            .sqrt();
        y = next;
        if moved < 1e-7 {
            break;
        }
    }
    y.iter().map(|v| *v as f32).collect()
}

/// The factor `s = √d / E‖x‖` that brings inputs to `E‖s·x‖ = √d`.
pub fn input_scale(x: &[f32], d: usize) -> f32 {
    let n = x.len() / d;
    if n == 0 {
        return 1.0;
    }
    let mean_norm = x
        .chunks(d)
        .map(|r| r.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt())
        .sum::<f64>()
        / n as f64;
    if mean_norm > 0.0 {
        ((d as f64).sqrt() / mean_norm) as f32
    } else {
        1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometric_median_resists_an_outlier_that_moves_the_mean() {
        // Four points around the origin and one far away: the median stays near the cluster.
        let x = [1.0, 0.0, -1.0, 0.0, 0.0, 1.0, 0.0, -1.0, 1000.0, 1000.0];
        let m = geometric_median(&x, 2, 500);
        assert!(m[0].abs() < 0.5 && m[1].abs() < 0.5, "{m:?}");
        let mu = mean(&x, 2);
        assert!((mu[0] - 200.0).abs() < 1e-3);
    }

    #[test]
    fn tied_encoder_is_the_decoder_transposed_with_unit_rows() {
        let mut rng = Rng::new(1);
        let (w_enc, w_dec) = tied_weights(3, 5, &mut rng);
        for i in 0..5 {
            let norm: f32 = (0..3).map(|j| w_dec[i * 3 + j].powi(2)).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5);
            for j in 0..3 {
                assert_eq!(w_enc[j * 5 + i], w_dec[i * 3 + j]);
            }
        }
    }

    #[test]
    fn input_scale_brings_mean_norm_to_sqrt_d() {
        let x = [3.0, 4.0, 6.0, 8.0]; // norms 5 and 10
        let s = input_scale(&x, 2);
        assert!((s - (2f32.sqrt() / 7.5)).abs() < 1e-6);
    }
}
