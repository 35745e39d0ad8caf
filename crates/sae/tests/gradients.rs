//! The hand-written backward passes against central finite differences of an independent,
//! naive f64 implementation of each loss (loops over rows and latents, no burn).

use burn::tensor::{Device, Tensor, TensorData};
use lantern_sae::Arch;
use lantern_sae::params::{Params, download};
use lantern_sae::step::{DeadLatents, StepSettings, step};

const D: usize = 5;
const M: usize = 9;
const B: usize = 6;

/// Parameters as flat f64 vectors in the order w_enc, b_enc, w_dec, b_dec, log_threshold.
#[derive(Clone)]
struct P {
    w_enc: Vec<f64>, // [D, M]
    b_enc: Vec<f64>,
    w_dec: Vec<f64>, // [M, D]
    b_dec: Vec<f64>,
    log_t: Vec<f64>,
}

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize, scale: f64) -> Vec<f64> {
        (0..n).map(|_| self.next() * scale).collect()
    }
}

fn params(seed: u64) -> (P, Vec<f64>) {
    let mut r = Lcg(seed);
    let p = P {
        w_enc: r.vec(D * M, 0.6),
        b_enc: r.vec(M, 0.2),
        w_dec: r.vec(M * D, 0.6),
        b_dec: r.vec(D, 0.3),
        log_t: r
            .vec(M, 0.5)
            .iter()
            .map(|v| (0.15 + 0.1 * v).ln())
            .collect(),
    };
    (p, r.vec(B * D, 1.0))
}

fn pre(p: &P, x: &[f64], b: usize, apply: bool) -> Vec<f64> {
    (0..M)
        .map(|j| {
            p.b_enc[j]
                + (0..D)
                    .map(|i| {
                        (x[b * D + i] - if apply { p.b_dec[i] } else { 0.0 }) * p.w_enc[i * M + j]
                    })
                    .sum::<f64>()
        })
        .collect()
}

fn top_k(v: &[f64], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|a, b| v[*b].total_cmp(&v[*a]));
    idx.truncate(k);
    idx
}

fn decode(p: &P, f: &[f64], with_bias: bool) -> Vec<f64> {
    (0..D)
        .map(|i| {
            (0..M).map(|j| f[j] * p.w_dec[j * D + i]).sum::<f64>()
                + if with_bias { p.b_dec[i] } else { 0.0 }
        })
        .collect()
}

fn total_variance(x: &[f64]) -> f64 {
    let mean: Vec<f64> = (0..D)
        .map(|i| (0..B).map(|b| x[b * D + i]).sum::<f64>() / B as f64)
        .collect();
    (0..B)
        .map(|b| {
            (0..D)
                .map(|i| (x[b * D + i] - mean[i]).powi(2))
                .sum::<f64>()
        })
        .sum()
}

/// The loss of `lantern_sae::step`, written from its documentation.
fn loss(p: &P, x: &[f64], arch: Arch, lambda: f64, dead: Option<&[bool]>, k_aux: usize) -> f64 {
    let tv = total_variance(x);
    match arch {
        Arch::TopK { k } => {
            let mut recon = 0.0;
            let mut aux = 0.0;
            for b in 0..B {
                let a: Vec<f64> = pre(p, x, b, true).iter().map(|v| v.max(0.0)).collect();
                let mut f = vec![0.0; M];
                for j in top_k(&a, k) {
                    f[j] = a[j];
                }
                let xh = decode(p, &f, true);
                let e: Vec<f64> = (0..D).map(|i| xh[i] - x[b * D + i]).collect();
                recon += e.iter().map(|v| v * v).sum::<f64>();
                if let Some(dead) = dead {
                    let n_dead = dead.iter().filter(|d| **d).count();
                    let masked: Vec<f64> =
                        (0..M).map(|j| if dead[j] { a[j] } else { -1.0 }).collect();
                    let mut fa = vec![0.0; M];
                    for j in top_k(&masked, k_aux.min(n_dead)) {
                        fa[j] = masked[j].max(0.0);
                    }
                    let eh = decode(p, &fa, false);
                    // residual r = x − x̂ is detached: use the values, not the parameters.
                    aux += (0..D)
                        .map(|i| (eh[i] + E_DETACHED.with(|c| c.borrow()[b * D + i])).powi(2))
                        .sum::<f64>()
                        * (n_dead as f64 / k_aux as f64).min(1.0);
                }
            }
            recon / tv + aux / tv / 32.0
        }
        Arch::Relu => {
            let mut total = 0.0;
            for b in 0..B {
                let f: Vec<f64> = pre(p, x, b, true).iter().map(|v| v.max(0.0)).collect();
                let xh = decode(p, &f, true);
                total += (0..D).map(|i| (xh[i] - x[b * D + i]).powi(2)).sum::<f64>();
                for (j, fj) in f.iter().enumerate() {
                    let norm = (0..D)
                        .map(|i| p.w_dec[j * D + i].powi(2))
                        .sum::<f64>()
                        .sqrt();
                    total += lambda * fj * norm;
                }
            }
            total / B as f64
        }
        Arch::JumpRelu => {
            // Only the recon part (the L0 term has zero true gradient almost everywhere).
            let mut total = 0.0;
            for b in 0..B {
                let z = pre(p, x, b, true);
                let f: Vec<f64> = (0..M)
                    .map(|j| if z[j] > p.log_t[j].exp() { z[j] } else { 0.0 })
                    .collect();
                let xh = decode(p, &f, true);
                total += (0..D).map(|i| (xh[i] - x[b * D + i]).powi(2)).sum::<f64>();
            }
            total / B as f64
        }
        Arch::BatchTopK { k } => {
            let mut recon = 0.0;
            for (b, f) in batch_top_k(p, x, k).iter().enumerate() {
                let xh = decode(p, f, true);
                recon += (0..D).map(|i| (xh[i] - x[b * D + i]).powi(2)).sum::<f64>();
            }
            recon / tv
        }
    }
}

/// BatchTopK's selection: each row's `relu(pre)` where it reaches the batch's `k·B`-th largest
/// value, 0 elsewhere.
fn batch_top_k(p: &P, x: &[f64], k: usize) -> Vec<Vec<f64>> {
    let acts: Vec<Vec<f64>> = (0..B)
        .map(|b| pre(p, x, b, true).iter().map(|v| v.max(0.0)).collect())
        .collect();
    let mut all: Vec<f64> = acts.iter().flatten().copied().collect();
    all.sort_by(|a, b| b.total_cmp(a));
    let tau = all[k * B - 1];
    acts.iter()
        .map(|a| a.iter().map(|v| if *v >= tau { *v } else { 0.0 }).collect())
        .collect()
}

/// BatchTopK with free decoder norms (SAELens's `rescale_acts_by_decoder_norm`): the batch's
/// `k·B` largest of `z = relu(pre)·‖W_dec,j‖` are kept, and the decoder gets `z/‖W_dec,j‖`.
fn batch_top_k_rescaled(p: &P, x: &[f64], k: usize) -> Vec<Vec<f64>> {
    let norms: Vec<f64> = (0..M)
        .map(|j| {
            (0..D)
                .map(|i| p.w_dec[j * D + i].powi(2))
                .sum::<f64>()
                .sqrt()
        })
        .collect();
    let z: Vec<Vec<f64>> = (0..B)
        .map(|b| {
            pre(p, x, b, true)
                .iter()
                .zip(&norms)
                .map(|(v, n)| v.max(0.0) * n)
                .collect()
        })
        .collect();
    let mut all: Vec<f64> = z.iter().flatten().copied().collect();
    all.sort_by(|a, b| b.total_cmp(a));
    let tau = all[k * B - 1];
    z.iter()
        .map(|r| {
            r.iter()
                .zip(&norms)
                .map(|(v, n)| if *v >= tau { v / n } else { 0.0 })
                .collect()
        })
        .collect()
}

/// The Matryoshka BatchTopK loss, written from `lantern_sae::step`'s documentation: the
/// batch-level selection of BatchTopK, then every nested prefix `[0, w)` of the latents
/// (each width in `widths`, then all `M`) reconstructs the batch on its own, and the loss is
/// the mean of the prefix errors over the total variance.
fn matryoshka_loss(p: &P, x: &[f64], k: usize, widths: &[usize]) -> f64 {
    let selected = batch_top_k(p, x, k);
    let prefixes: Vec<usize> = widths.iter().copied().chain([M]).collect();
    let mut total = 0.0;
    for &w in &prefixes {
        for (b, a) in selected.iter().enumerate() {
            let f: Vec<f64> = (0..M).map(|j| if j < w { a[j] } else { 0.0 }).collect();
            let xh = decode(p, &f, true);
            total += (0..D).map(|i| (xh[i] - x[b * D + i]).powi(2)).sum::<f64>();
        }
    }
    total / total_variance(x) / prefixes.len() as f64
}

thread_local! {
    static E_DETACHED: std::cell::RefCell<Vec<f64>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn fields(p: &mut P) -> [&mut Vec<f64>; 5] {
    [
        &mut p.w_enc,
        &mut p.b_enc,
        &mut p.w_dec,
        &mut p.b_dec,
        &mut p.log_t,
    ]
}

fn numeric_grads(p: &P, f: &dyn Fn(&P) -> f64) -> Vec<Vec<f64>> {
    let h = 1e-6;
    let mut out = Vec::new();
    for field in 0..5 {
        let n = fields(&mut p.clone())[field].len();
        let mut g = vec![0.0; n];
        for (i, gi) in g.iter_mut().enumerate() {
            let mut plus = p.clone();
            fields(&mut plus)[field][i] += h;
            let mut minus = p.clone();
            fields(&mut minus)[field][i] -= h;
            *gi = (f(&plus) - f(&minus)) / (2.0 * h);
        }
        out.push(g);
    }
    out
}

fn to_device(p: &P, device: &Device, jump: bool) -> Params {
    let f = |v: &[f64]| v.iter().map(|x| *x as f32).collect::<Vec<f32>>();
    Params {
        w_enc: Tensor::from_data(TensorData::new(f(&p.w_enc), [D, M]), device),
        b_enc: Tensor::from_data(TensorData::new(f(&p.b_enc), [M]), device),
        w_dec: Tensor::from_data(TensorData::new(f(&p.w_dec), [M, D]), device),
        b_dec: Tensor::from_data(TensorData::new(f(&p.b_dec), [D]), device),
        log_threshold: jump.then(|| Tensor::from_data(TensorData::new(f(&p.log_t), [M]), device)),
    }
}

/// The batch `x` `[B, D]` as an f32 tensor on `device`.
fn batch_to_device(x: &[f64], device: &Device) -> Tensor<2> {
    Tensor::from_data(
        TensorData::new(x.iter().map(|v| *v as f32).collect::<Vec<_>>(), [B, D]),
        device,
    )
}

/// A dead-latent mask (`true` = dead) as the step takes it.
fn dead_to_device(dead: &[bool], device: &Device) -> DeadLatents {
    DeadLatents {
        mask: Tensor::from_data(
            TensorData::new(
                dead.iter()
                    .map(|d| if *d { 1.0f32 } else { 0.0 })
                    .collect::<Vec<_>>(),
                [M],
            ),
            device,
        ),
        count: dead.iter().filter(|d| **d).count(),
    }
}

fn assert_close(name: &str, got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    let scale = want.iter().map(|v| v.abs()).fold(0.0, f64::max).max(1e-3);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (*g as f64 - w).abs() <= tol * scale,
            "{name}[{i}]: hand-written {g}, finite difference {w} (scale {scale})"
        );
    }
}

fn settings(arch: Arch, lambda: f32) -> StepSettings {
    StepSettings {
        arch,
        apply_b_dec_to_input: true,
        sparsity_coeff: lambda,
        aux_coeff: 1.0 / 32.0,
        k_aux: 3,
        bandwidth: 0.01,
        matryoshka: Vec::new(),
        target_l0: None,
        rescale_by_decoder_norm: false,
        pre_act_coeff: 0.0,
    }
}

fn check(arch: Arch, lambda: f32, dead: Option<Vec<bool>>, seed: u64, device: &Device) {
    let (p, x) = params(seed);
    // The detached residual r = x − x̂ of the TopK forward, per row, for the AuxK term.
    if let Arch::TopK { k } = arch {
        let mut r = vec![0.0; B * D];
        for b in 0..B {
            let a: Vec<f64> = pre(&p, &x, b, true).iter().map(|v| v.max(0.0)).collect();
            let mut f = vec![0.0; M];
            for j in top_k(&a, k) {
                f[j] = a[j];
            }
            let xh = decode(&p, &f, true);
            for i in 0..D {
                r[b * D + i] = xh[i] - x[b * D + i]; // = −(x − x̂)
            }
        }
        E_DETACHED.with(|c| *c.borrow_mut() = r);
    }
    let want = numeric_grads(&p, &|q| {
        loss(q, &x, arch, lambda as f64, dead.as_deref(), 3)
    });
    let jump = matches!(arch, Arch::JumpRelu);
    let dp = to_device(&p, device, jump);
    let xt = batch_to_device(&x, device);
    let dead_latents = dead.as_deref().map(|mask| dead_to_device(mask, device));
    let out = step(&dp, xt, &settings(arch, lambda), dead_latents.as_ref());
    let g = out.grads;
    let tol = 2e-3;
    assert_close("w_enc", &download(g.w_enc).unwrap(), &want[0], tol);
    assert_close("b_enc", &download(g.b_enc).unwrap(), &want[1], tol);
    assert_close("w_dec", &download(g.w_dec).unwrap(), &want[2], tol);
    assert_close("b_dec", &download(g.b_dec).unwrap(), &want[3], tol);
}

#[test]
fn topk_gradients_match_finite_differences() {
    check(Arch::TopK { k: 3 }, 0.0, None, 11, &Device::flex());
}

#[test]
fn topk_with_auxk_gradients_match_finite_differences() {
    let dead = (0..M).map(|j| j % 2 == 0).collect();
    check(Arch::TopK { k: 2 }, 0.0, Some(dead), 12, &Device::flex());
}

#[test]
fn batchtopk_gradients_match_finite_differences() {
    check(Arch::BatchTopK { k: 2 }, 0.0, None, 17, &Device::flex());
}

#[test]
fn matryoshka_batchtopk_gradients_match_finite_differences() {
    let device = Device::flex();
    let (k, widths) = (3, vec![2, 5]);
    for seed in [18, 19] {
        let (p, x) = params(seed);
        let want = numeric_grads(&p, &|q| matryoshka_loss(q, &x, k, &widths));
        let xt = batch_to_device(&x, &device);
        let mut s = settings(Arch::BatchTopK { k }, 0.0);
        s.matryoshka = widths.clone();
        let out = step(&to_device(&p, &device, false), xt, &s, None);
        // The reported error is the whole dictionary's.
        let want_sse = {
            let one = matryoshka_loss(&p, &x, k, &[]) * total_variance(&x);
            one as f32
        };
        let sse = download(out.sse).unwrap()[0];
        assert!(
            (sse - want_sse).abs() <= 1e-4 * want_sse,
            "sse {sse} vs {want_sse}"
        );
        let g = out.grads;
        assert_close("w_enc", &download(g.w_enc).unwrap(), &want[0], 2e-3);
        assert_close("b_enc", &download(g.b_enc).unwrap(), &want[1], 2e-3);
        assert_close("w_dec", &download(g.w_dec).unwrap(), &want[2], 2e-3);
        assert_close("b_dec", &download(g.b_dec).unwrap(), &want[3], 2e-3);
        // Not the plain BatchTopK gradient (the prefixes matter).
        let plain = numeric_grads(&p, &|q| loss(q, &x, Arch::BatchTopK { k }, 0.0, None, 3));
        let differs = plain[2]
            .iter()
            .zip(&want[2])
            .any(|(a, b)| (a - b).abs() > 1e-3);
        assert!(
            differs,
            "seed {seed}: the prefixes did not change the gradient"
        );
    }
}

#[test]
fn batchtopk_with_free_decoder_norms_ranks_by_contribution_and_gradients_match() {
    let device = Device::flex();
    let k = 2;
    let mut reranked = false;
    for seed in [21, 22, 23] {
        let (mut p, x) = params(seed);
        // Decoder rows of unequal norms, so that ranking by contribution differs.
        for j in 0..M {
            let s = [0.3, 3.0, 1.0, 0.5, 2.0][j % 5];
            p.w_dec[j * D..(j + 1) * D].iter_mut().for_each(|v| *v *= s);
        }
        let recon = |q: &P| {
            let mut sse = 0.0;
            for (b, f) in batch_top_k_rescaled(q, &x, k).iter().enumerate() {
                let xh = decode(q, f, true);
                sse += (0..D).map(|i| (xh[i] - x[b * D + i]).powi(2)).sum::<f64>();
            }
            sse / total_variance(&x)
        };
        let want = numeric_grads(&p, &recon);
        let mut s = settings(Arch::BatchTopK { k }, 0.0);
        s.rescale_by_decoder_norm = true;
        let xt = batch_to_device(&x, &device);
        let out = step(&to_device(&p, &device, false), xt, &s, None);
        let want_sse = (recon(&p) * total_variance(&x)) as f32;
        let sse = download(out.sse).unwrap()[0];
        assert!(
            (sse - want_sse).abs() <= 1e-4 * want_sse,
            "seed {seed}: sse {sse} vs {want_sse}"
        );
        let g = out.grads;
        assert_close("w_enc", &download(g.w_enc).unwrap(), &want[0], 2e-3);
        assert_close("b_enc", &download(g.b_enc).unwrap(), &want[1], 2e-3);
        assert_close("w_dec", &download(g.w_dec).unwrap(), &want[2], 2e-3);
        assert_close("b_dec", &download(g.b_dec).unwrap(), &want[3], 2e-3);
        let chosen =
            |sel: Vec<Vec<f64>>| -> Vec<bool> { sel.iter().flatten().map(|v| *v > 0.0).collect() };
        reranked |= chosen(batch_top_k_rescaled(&p, &x, k)) != chosen(batch_top_k(&p, &x, k));
    }
    assert!(reranked, "the decoder norms never changed the selection");
}

#[test]
fn relu_l1_gradients_match_finite_differences() {
    check(Arch::Relu, 0.3, None, 13, &Device::flex());
}

#[test]
fn jumprelu_reconstruction_gradients_match_finite_differences() {
    // λ = 0: the L0 term only moves θ through the straight-through estimator, checked below.
    check(Arch::JumpRelu, 0.0, None, 14, &Device::flex());
}

#[test]
fn jumprelu_threshold_gradient_is_the_straight_through_estimate() {
    jumprelu_threshold_gradient(None);
}

/// With a target L0 `T` the sparsity term is `λ (L0/T − 1)²`, so `λ` in the estimate becomes
/// its derivative at the batch's L0, `2λ (L0/T − 1)/T`: negative below the target (checked
/// with T above and below the batch's L0).
#[test]
fn jumprelu_threshold_gradient_with_a_target_l0_uses_the_quadratic_penalty() {
    jumprelu_threshold_gradient(Some(1.5));
    jumprelu_threshold_gradient(Some(12.0));
}

fn jumprelu_threshold_gradient(target: Option<f64>) {
    let device = Device::flex();
    let (p, x) = params(15);
    let (eps, lambda) = (0.4f64, 0.7f64); // wide kernel so that some pre-activations fall in it
    // The batch's L0 = Σ_b Σ_j H(pre_bj − θ_j) / B.
    let l0 = (0..B)
        .map(|b| {
            let z = pre(&p, &x, b, true);
            (0..M).filter(|&j| z[j] > p.log_t[j].exp()).count() as f64
        })
        .sum::<f64>()
        / B as f64;
    let lambda_eff = match target {
        Some(t) => 2.0 * lambda * (l0 / t - 1.0) / t,
        None => lambda,
    };
    // ∂L/∂log θ_j = θ_j Σ_b K_bj [∂L/∂f_bj · (−θ_j/ε) − λ/(ε B)], with K = 1[|pre − θ| < ε/2].
    let mut want = vec![0.0; M];
    for b in 0..B {
        let z = pre(&p, &x, b, true);
        let f: Vec<f64> = (0..M)
            .map(|j| if z[j] > p.log_t[j].exp() { z[j] } else { 0.0 })
            .collect();
        let xh = decode(&p, &f, true);
        let g: Vec<f64> = (0..D)
            .map(|i| 2.0 * (xh[i] - x[b * D + i]) / B as f64)
            .collect();
        for j in 0..M {
            let theta = p.log_t[j].exp();
            if (z[j] - theta).abs() < eps / 2.0 {
                let grad_f: f64 = (0..D).map(|i| g[i] * p.w_dec[j * D + i]).sum();
                want[j] += theta * (grad_f * (-theta / eps) - lambda_eff / (eps * B as f64));
            }
        }
    }
    assert!(
        want.iter().filter(|v| **v != 0.0).count() >= 3,
        "test needs latents in the kernel"
    );
    let dp = to_device(&p, &device, true);
    let xt = batch_to_device(&x, &device);
    let mut s = settings(Arch::JumpRelu, lambda as f32);
    s.bandwidth = eps as f32;
    s.target_l0 = target.map(|t| t as f32);
    let out = step(&dp, xt, &s, None);
    if let Some(t) = target {
        let got = download(out.sparsity_loss.clone()).unwrap()[0] as f64;
        assert!(
            (got - (l0 / t - 1.0).powi(2)).abs() < 1e-5,
            "sparsity term {got}"
        );
    }
    assert_close(
        "log_threshold",
        &download(out.grads.log_threshold.unwrap()).unwrap(),
        &want,
        1e-4,
    );
}

/// JumpReLU's pre-activation loss `c_p Σ_b Σ_i dead_i relu(θ_i − pre_bi) / B` is continuous in
/// every parameter, θ included: with the straight-through window made too narrow to hold any
/// pre-activation (ε = 1e-7), the step's gradients of reconstruction plus this term are the
/// finite differences of the naive loss, for all five parameters. Latents 0, 3 and 7 are dead.
#[test]
fn jumprelu_pre_activation_loss_gradients_match_finite_differences() {
    let device = Device::flex();
    let (p, x) = params(17);
    let c_p = 0.8;
    let dead: Vec<bool> = (0..M).map(|j| [0, 3, 7].contains(&j)).collect();
    let naive = |q: &P| {
        let mut total = 0.0;
        for b in 0..B {
            let z = pre(q, &x, b, true);
            let f: Vec<f64> = (0..M)
                .map(|j| if z[j] > q.log_t[j].exp() { z[j] } else { 0.0 })
                .collect();
            let xh = decode(q, &f, true);
            total += (0..D).map(|i| (xh[i] - x[b * D + i]).powi(2)).sum::<f64>();
            for j in (0..M).filter(|&j| dead[j]) {
                total += c_p * (q.log_t[j].exp() - z[j]).max(0.0);
            }
        }
        total / B as f64
    };
    let want = numeric_grads(&p, &naive);
    assert!(
        want[4].iter().filter(|v| v.abs() > 1e-3).count() >= 2,
        "test needs dead latents below their thresholds"
    );
    let dp = to_device(&p, &device, true);
    let xt = batch_to_device(&x, &device);
    let mask = dead_to_device(&dead, &device);
    let mut s = settings(Arch::JumpRelu, 0.0);
    s.bandwidth = 1e-7;
    s.pre_act_coeff = c_p as f32;
    let out = step(&dp, xt, &s, Some(&mask));
    let g = out.grads;
    let tol = 2e-3;
    assert_close("w_enc", &download(g.w_enc).unwrap(), &want[0], tol);
    assert_close("b_enc", &download(g.b_enc).unwrap(), &want[1], tol);
    assert_close("w_dec", &download(g.w_dec).unwrap(), &want[2], tol);
    assert_close("b_dec", &download(g.b_dec).unwrap(), &want[3], tol);
    assert_close(
        "log_threshold",
        &download(g.log_threshold.unwrap()).unwrap(),
        &want[4],
        tol,
    );
    // The term itself, before c_p.
    let term = (0..B)
        .map(|b| {
            let z = pre(&p, &x, b, true);
            (0..M)
                .filter(|&j| dead[j])
                .map(|j| (p.log_t[j].exp() - z[j]).max(0.0))
                .sum::<f64>()
        })
        .sum::<f64>()
        / B as f64;
    let got = download(out.aux_loss).unwrap()[0] as f64;
    assert!(
        (got - term).abs() < 1e-5 * term.max(1.0),
        "term {got} vs {term}"
    );
}

#[test]
fn batchtopk_selects_k_times_batch_entries_across_rows() {
    let device = Device::flex();
    let (p, x) = params(16);
    let dp = to_device(&p, &device, false);
    let xt = batch_to_device(&x, &device);
    let k = 2;
    let out = step(&dp, xt, &settings(Arch::BatchTopK { k }, 0.0), None);
    // Naive: the k·B largest relu(pre) values of the whole batch.
    let mut all: Vec<f64> = (0..B)
        .flat_map(|b| pre(&p, &x, b, true))
        .map(|v| v.max(0.0))
        .collect();
    all.sort_by(|a, b| b.total_cmp(a));
    let positive = all[..k * B].iter().filter(|v| **v > 0.0).count();
    let active = download(out.active).unwrap()[0];
    assert_eq!(active as usize, positive);
    let min_sel = download(out.min_selected.unwrap()).unwrap()[0] as f64;
    let want_min = all[..k * B]
        .iter()
        .copied()
        .filter(|v| *v > 0.0)
        .fold(f64::INFINITY, f64::min);
    assert!((min_sel - want_min).abs() < 1e-5, "{min_sel} vs {want_min}");
}
