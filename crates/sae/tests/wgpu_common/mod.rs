//! Helpers shared by `wgpu.rs`, `wgpu_kernels.rs` and `wgpu_f16.rs`: a wgpu device, random
//! parameters and inputs drawn once on the host, and one SAE step plus optimiser update on
//! wgpu and on the CPU, compared.
#![allow(dead_code)]

use burn::tensor::{Device, Tensor, TensorData};
use lantern_sae::optim::{self, Adam};
use lantern_sae::params::{Params, download};
use lantern_sae::step::{DeadLatents, StepSettings, step};
use lantern_sae::{Arch, DeviceChoice};

pub fn wgpu() -> Option<Device> {
    match DeviceChoice::Wgpu.open() {
        Ok(d) => Some(d),
        Err(e) if std::env::var("LANTERN_REQUIRE_WGPU").as_deref() == Ok("1") => {
            panic!("LANTERN_REQUIRE_WGPU=1 but {e}")
        }
        Err(e) => {
            eprintln!("skipping wgpu test: {e}");
            None
        }
    }
}

pub fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    download(t).unwrap()
}

pub fn upload<const D: usize>(v: Vec<f32>, shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(v, shape), device)
}

pub fn assert_close(name: &str, a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len(), "{name}");
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    let worst = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(
        worst <= tol * scale,
        "{name}: wgpu and cpu differ by {worst} (scale {scale})"
    );
}

/// An SAE's parameters (`W ~ N(0, 0.3²)`, biases `~ N(0, 0.1²)`) and an input batch
/// (`x ~ N(0, 1)`) drawn on the CPU and kept on the host, so that every device gets the same
/// numbers.
pub struct HostCase {
    pub d: usize,
    pub m: usize,
    pub b: usize,
    w_enc: Vec<f32>,
    b_enc: Vec<f32>,
    w_dec: Vec<f32>,
    b_dec: Vec<f32>,
    x: Vec<f32>,
}

impl HostCase {
    /// Width `d`, `m` latents, batch `b`.
    ///
    /// The draws are seeded (burn's are not): a selection that the two devices' rounding can
    /// flip would otherwise turn up in one run of many, and a seed makes every run the same test.
    pub fn random(d: usize, m: usize, b: usize) -> Self {
        let mut rng = lantern_acts::rng::Rng::new(0x5ae);
        let mut draw =
            |n: usize, sd: f32| -> Vec<f32> { (0..n).map(|_| sd * rng.normal_f32()).collect() };
        Self {
            d,
            m,
            b,
            w_enc: draw(d * m, 0.3),
            b_enc: draw(m, 0.1),
            w_dec: draw(m * d, 0.3),
            b_dec: draw(d, 0.1),
            x: draw(b * d, 1.0),
        }
    }

    /// The parameters on `dev`, with JumpReLU's `log θ` if given.
    pub fn params(&self, dev: &Device, log_threshold: Option<Tensor<1>>) -> Params {
        let (d, m) = (self.d, self.m);
        Params {
            w_enc: upload(self.w_enc.clone(), [d, m], dev),
            b_enc: upload(self.b_enc.clone(), [m], dev),
            w_dec: upload(self.w_dec.clone(), [m, d], dev),
            b_dec: upload(self.b_dec.clone(), [d], dev),
            log_threshold,
        }
    }

    /// The input batch on `dev`, `[b, d]`.
    pub fn x(&self, dev: &Device) -> Tensor<2> {
        upload(self.x.clone(), [self.b, self.d], dev)
    }
}

pub fn compare(arch: Arch, with_dead: bool) {
    compare_matryoshka(arch, with_dead, &[]);
}

pub fn compare_matryoshka(arch: Arch, with_dead: bool, widths: &[usize]) {
    let tol = 1e-4;
    let Some(gpu) = wgpu() else { return };
    let cpu = Device::flex();
    let (d, m, b) = (24, 96, 64);
    let case = HostCase::random(d, m, b);
    let on = |dev: &Device| {
        let p = case.params(
            dev,
            matches!(arch, Arch::JumpRelu).then(|| upload(vec![(0.2f32).ln(); m], [m], dev)),
        );
        let dead = with_dead.then(|| DeadLatents {
            mask: upload(
                (0..m).map(|j| (j % 3 == 0) as u8 as f32).collect(),
                [m],
                dev,
            ),
            count: m.div_ceil(3),
        });
        let s = StepSettings {
            arch,
            apply_b_dec_to_input: true,
            sparsity_coeff: 0.1,
            aux_coeff: 1.0 / 32.0,
            k_aux: if matches!(arch, Arch::TopK { k: 40 }) {
                45
            } else {
                6
            },
            bandwidth: 0.05,
            matryoshka: widths.to_vec(),
            target_l0: None,
            // BatchTopK's default: ranked by relu(pre)·‖W_dec‖ (the rows' norms vary here).
            rescale_by_decoder_norm: matches!(arch, Arch::BatchTopK { .. }),
            pre_act_coeff: 0.0,
        };
        let out = step(&p, case.x(dev), &s, dead.as_ref());
        // Gradients clipped on the device (a clip small enough to be active), and one
        // optimiser update (Adam's first step is scale-free, so it cannot show the clip).
        let clipped = optim::clip_grads(&out.grads, 1e-3);
        let mut adam = Adam::new(&p);
        let updated = optim::update(p, out.grads.clone(), &mut adam, 1e-2, true, Some(1e-3));
        (
            host(out.grads.w_enc),
            host(out.grads.w_dec),
            host(out.grads.b_enc),
            host(out.grads.b_dec),
            host(out.sse),
            host(out.fires),
            (host(updated.w_enc), host(updated.w_dec)),
            (host(clipped.w_enc), host(clipped.b_dec)),
        )
    };
    let (c, g) = (on(&cpu), on(&gpu));
    assert_close("grad W_enc", &g.0, &c.0, tol);
    assert_close("grad W_dec", &g.1, &c.1, tol);
    assert_close("grad b_enc", &g.2, &c.2, tol);
    assert_close("grad b_dec", &g.3, &c.3, tol);
    assert_close("sse", &g.4, &c.4, tol / 10.0);
    assert_eq!(g.5, c.5, "fire counts");
    assert_close("updated W_enc", &g.6.0, &c.6.0, tol);
    assert_close("updated W_dec", &g.6.1, &c.6.1, tol);
    assert_close("clipped grad W_enc", &g.7.0, &c.7.0, tol);
    assert_close("clipped grad b_dec", &g.7.1, &c.7.1, tol);
}
