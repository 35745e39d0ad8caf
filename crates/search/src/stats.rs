//! Reference distributions for cosines between directions.
//!
//! For a fixed unit `u` and `v` uniform on the sphere in `ℝ^d`, `c = u·v` has
//! `c² ~ Beta(½, (d−1)/2)`, so
//!
//! ```text
//! E[c²] = 1/d  (sd of c = 1/√d),    E|c| = Γ(d/2) / (√π Γ((d+1)/2)) ≈ √(2/(πd)),
//! p(|c| ≥ c₀) = 1 − I_{c₀²}(½, (d−1)/2) = I_{1−c₀²}((d−1)/2, ½)
//! ```
//!
//! with `I_x(a, b)` the regularised incomplete beta function, evaluated here by its continued
//! fraction (modified Lentz, Numerical Recipes §6.4) with a Lanczos log-gamma.

/// `ln Γ(x)` for `x > 0` (Lanczos, g = 7, 9 terms; relative error ~1e-15).
pub fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x)Γ(1−x) = π / sin(πx).
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let t = x + 7.5;
    let mut a = G[0];
    for (i, g) in G.iter().enumerate().skip(1) {
        a += g / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// The regularised incomplete beta function `I_x(a, b)` for `a, b > 0`, `0 ≤ x ≤ 1`.
pub fn beta_inc(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    // The continued fraction converges fast for x < (a+1)/(a+b+2); use symmetry otherwise.
    if x < (a + 1.0) / (a + b + 2.0) {
        ln_front.exp() * beta_cf(a, b, x) / a
    } else {
        1.0 - ln_front.exp() * beta_cf(b, a, 1.0 - x) / b
    }
}

fn beta_cf(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let guard = |v: f64| if v.abs() < TINY { TINY } else { v };
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 / guard(1.0 - qab * x / qap);
    let mut h = d;
    // One Lentz update with partial numerator `aa`; returns the factor applied to `h`.
    let step = |aa: f64, c: &mut f64, d: &mut f64| -> f64 {
        *d = 1.0 / guard(1.0 + aa * *d);
        *c = guard(1.0 + aa / *c);
        *d * *c
    };
    for m in 1..10_000 {
        let m = m as f64;
        let m2 = 2.0 * m;
        h *= step(m * (b - m) * x / ((qam + m2) * (a + m2)), &mut c, &mut d);
        let del = step(
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
            &mut c,
            &mut d,
        );
        h *= del;
        if (del - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
}

/// Two-sided p-value of a cosine `c` between a fixed direction and a uniformly random one in
/// `d` dimensions: `P(|u·v| ≥ |c|)` (module docs). 1 for `d < 2`.
pub fn random_cosine_p(c: f64, d: usize) -> f64 {
    if d < 2 || !c.is_finite() {
        return if c.is_finite() { 1.0 } else { f64::NAN };
    }
    let c2 = (c * c).min(1.0);
    beta_inc((d as f64 - 1.0) / 2.0, 0.5, 1.0 - c2)
}

/// `E|u·v|` for a uniformly random unit `v` in `d` dimensions: `Γ(d/2) / (√π Γ((d+1)/2))`.
pub fn random_cosine_mean_abs(d: usize) -> f64 {
    let d = d as f64;
    (ln_gamma(d / 2.0) - ln_gamma((d + 1.0) / 2.0)).exp() / std::f64::consts::PI.sqrt()
}

/// The standard deviation of `u·v` for a uniformly random unit `v`: `1/√d`.
pub fn random_cosine_sd(d: usize) -> f64 {
    1.0 / (d as f64).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_forms_match_hand_values() {
        // Γ(5) = 24, Γ(½) = √π.
        assert!((ln_gamma(5.0) - 24f64.ln()).abs() < 1e-13);
        assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-13);
        // I_x(1, 1) = x; I_x(a, 1) = x^a.
        assert!((beta_inc(1.0, 1.0, 0.3) - 0.3).abs() < 1e-14);
        assert!((beta_inc(2.5, 1.0, 0.4) - 0.4f64.powf(2.5)).abs() < 1e-14);
        // d = 3: u·v is uniform on [−1, 1], so P(|c| ≥ t) = 1 − t and E|c| = ½.
        assert!((random_cosine_p(0.25, 3) - 0.75).abs() < 1e-12);
        assert!((random_cosine_mean_abs(3) - 0.5).abs() < 1e-12);
        // Large d: E|c| → √(2/(πd)).
        let d = 10_000;
        let approx = (2.0 / (std::f64::consts::PI * d as f64)).sqrt();
        assert!((random_cosine_mean_abs(d) / approx - 1.0).abs() < 1e-3);
    }
}
