//! The small dense linear algebra feature search needs, in f64: dot products and norms,
//! the leading eigenvector of a symmetric matrix (cyclic Jacobi, exact to rounding), and a
//! Cholesky solve (the probe's Newton step). Matrices are row-major `Vec<f64>`.

/// `Σ a_i b_i` accumulated in f64.
pub fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

/// `‖v‖₂`.
pub fn norm(v: &[f32]) -> f64 {
    dot(v, v).sqrt()
}

/// `a·b / (‖a‖‖b‖)`; NaN when either vector is zero.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let n = norm(a) * norm(b);
    if n == 0.0 { f64::NAN } else { dot(a, b) / n }
}

/// `v / ‖v‖` (unchanged when zero).
pub fn unit(v: &[f32]) -> Vec<f32> {
    let n = norm(v);
    if n == 0.0 {
        v.to_vec()
    } else {
        v.iter().map(|&x| (x as f64 / n) as f32).collect()
    }
}

/// Eigenvalues and eigenvectors of the symmetric `n × n` matrix `a` by the cyclic Jacobi
/// method; returns `(λ, V)` with `V` row-major holding eigenvector `j` in column `j`, sorted by
/// decreasing eigenvalue. Converges quadratically; stops when the off-diagonal mass is below
/// `1e-22` of the total.
pub fn symmetric_eigen(mut a: Vec<f64>, n: usize) -> (Vec<f64>, Vec<f64>) {
    assert_eq!(a.len(), n * n, "matrix is n × n");
    let mut v = vec![0.0; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    let total: f64 = a.iter().map(|x| x * x).sum::<f64>().max(f64::MIN_POSITIVE);
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j] * a[i * n + j])
            .sum();
        if off <= 1e-22 * total {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq.abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                // A ← Jᵀ A J on rows/columns p, q.
                for k in 0..n {
                    let akp = a[k * n + p];
                    let akq = a[k * n + q];
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let apk = a[p * n + k];
                    let aqk = a[q * n + k];
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let vkp = v[k * n + p];
                    let vkq = v[k * n + q];
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| a[j * n + j].total_cmp(&a[i * n + i]));
    let values = order.iter().map(|&i| a[i * n + i]).collect();
    let mut vecs = vec![0.0; n * n];
    for (new, &old) in order.iter().enumerate() {
        for k in 0..n {
            vecs[k * n + new] = v[k * n + old];
        }
    }
    (values, vecs)
}

/// The unit leading right singular vector of the `m × d` matrix `x` (row-major), i.e. the
/// first principal axis of the rows without centring: the top eigenvector of `XᵀX`, computed
/// through the smaller of `XᵀX` (`d × d`) and `XXᵀ` (`m × m`). Sign arbitrary.
pub fn top_right_singular(x: &[f64], m: usize, d: usize) -> Vec<f64> {
    assert_eq!(x.len(), m * d);
    if m < d {
        let mut g = vec![0.0; m * m];
        for i in 0..m {
            for j in i..m {
                let s: f64 = (0..d).map(|k| x[i * d + k] * x[j * d + k]).sum();
                g[i * m + j] = s;
                g[j * m + i] = s;
            }
        }
        let (_, u) = symmetric_eigen(g, m);
        let mut v = vec![0.0; d];
        for i in 0..m {
            let ui = u[i * m];
            for k in 0..d {
                v[k] += ui * x[i * d + k];
            }
        }
        let n = v.iter().map(|a| a * a).sum::<f64>().sqrt();
        if n > 0.0 {
            v.iter_mut().for_each(|a| *a /= n);
        }
        v
    } else {
        let mut c = vec![0.0; d * d];
        for row in x.chunks_exact(d) {
            for i in 0..d {
                let ri = row[i];
                if ri == 0.0 {
                    continue;
                }
                for j in i..d {
                    c[i * d + j] += ri * row[j];
                }
            }
        }
        for i in 0..d {
            for j in 0..i {
                c[i * d + j] = c[j * d + i];
            }
        }
        let (_, v) = symmetric_eigen(c, d);
        (0..d).map(|k| v[k * d]).collect()
    }
}

/// Solves `A x = b` for symmetric positive definite `A` (`n × n`) by Cholesky; `None` when
/// `A` is not positive definite.
pub fn cholesky_solve(a: &[f64], b: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i * n + k] * l[j * n + k]).sum();
            if i == j {
                let diag = a[i * n + i] - s;
                if diag <= 0.0 || !diag.is_finite() {
                    return None;
                }
                l[i * n + i] = diag.sqrt();
            } else {
                l[i * n + j] = (a[i * n + j] - s) / l[j * n + j];
            }
        }
    }
    let mut y = vec![0.0; n];
    for i in 0..n {
        let s: f64 = (0..i).map(|k| l[i * n + k] * y[k]).sum();
        y[i] = (b[i] - s) / l[i * n + i];
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        let s: f64 = (i + 1..n).map(|k| l[k * n + i] * x[k]).sum();
        x[i] = (y[i] - s) / l[i * n + i];
    }
    Some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jacobi_finds_the_eigenpairs_of_a_hand_worked_matrix() {
        // [[2, 1], [1, 2]]: λ = 3 along (1, 1)/√2, λ = 1 along (1, −1)/√2.
        let (l, v) = symmetric_eigen(vec![2.0, 1.0, 1.0, 2.0], 2);
        assert!((l[0] - 3.0).abs() < 1e-12 && (l[1] - 1.0).abs() < 1e-12);
        let r = std::f64::consts::FRAC_1_SQRT_2;
        assert!((v[0].abs() - r).abs() < 1e-12 && (v[0] - v[2]).abs() < 1e-12);
    }

    #[test]
    fn gram_and_covariance_routes_give_the_same_singular_vector() {
        // 3 rows in d = 4 (Gram route) and the same rows repeated to 6 > 4 (covariance route).
        let x = [
            1.0, 2.0, 0.0, -1.0, 0.5, 1.5, 0.2, -0.7, 2.0, 3.5, -0.1, -2.2,
        ];
        let a = top_right_singular(&x, 3, 4);
        let x2: Vec<f64> = x.iter().chain(x.iter()).copied().collect();
        let b = top_right_singular(&x2, 6, 4);
        let c: f64 = a.iter().zip(&b).map(|(p, q)| p * q).sum();
        assert!((c.abs() - 1.0).abs() < 1e-10, "cos {c}");
    }

    #[test]
    fn cholesky_solves_a_hand_worked_system() {
        // [[4, 2], [2, 3]] x = [2, 1] → x = [0.5, 0].
        let x = cholesky_solve(&[4.0, 2.0, 2.0, 3.0], &[2.0, 1.0], 2).unwrap();
        assert!((x[0] - 0.5).abs() < 1e-12 && x[1].abs() < 1e-12);
        assert!(cholesky_solve(&[1.0, 2.0, 2.0, 1.0], &[1.0, 1.0], 2).is_none());
    }
}
