//! Helpers shared by `wgpu.rs` and `wgpu_kernels.rs`: a wgpu device, and one SAE step plus
//! optimiser update on wgpu and on the CPU, compared.
#![allow(dead_code)]

use burn::tensor::{Device, Distribution, Tensor, TensorData};
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

pub fn compare(arch: Arch, with_dead: bool) {
    compare_matryoshka(arch, with_dead, &[]);
}

pub fn compare_matryoshka(arch: Arch, with_dead: bool, widths: &[usize]) {
    let tol = 1e-4;
    let Some(gpu) = wgpu() else { return };
    let cpu = Device::flex();
    let (d, m, b) = (24, 96, 64);
    let w_dec = host(Tensor::<2>::random(
        [m, d],
        Distribution::Normal(0.0, 0.3),
        &cpu,
    ));
    let w_enc = host(Tensor::<2>::random(
        [d, m],
        Distribution::Normal(0.0, 0.3),
        &cpu,
    ));
    let b_enc = host(Tensor::<1>::random(
        [m],
        Distribution::Normal(0.0, 0.1),
        &cpu,
    ));
    let b_dec = host(Tensor::<1>::random(
        [d],
        Distribution::Normal(0.0, 0.1),
        &cpu,
    ));
    let x = host(Tensor::<2>::random(
        [b, d],
        Distribution::Normal(0.0, 1.0),
        &cpu,
    ));
    let on = |dev: &Device| {
        let p = Params {
            w_enc: upload(w_enc.clone(), [d, m], dev),
            b_enc: upload(b_enc.clone(), [m], dev),
            w_dec: upload(w_dec.clone(), [m, d], dev),
            b_dec: upload(b_dec.clone(), [d], dev),
            log_threshold: matches!(arch, Arch::JumpRelu)
                .then(|| upload(vec![(0.2f32).ln(); m], [m], dev)),
        };
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
        };
        let out = step(&p, upload(x.clone(), [b, d], dev), &s, dead.as_ref());
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
