//! The TopK step with the f16 encoder GEMM (`LANTERN_ENCODER_F16=1`) on wgpu against the f32
//! CPU step. A file of its own because the switch is a process-wide variable. Rounding the
//! GEMM's operands can swap near-equal activations at the k-th place, which moves whole
//! gradient columns, so what is compared is the loss (to 1 %) and the number of active
//! latents; the f32 paths are compared exactly in `wgpu.rs`.

mod wgpu_common;

use burn::tensor::{Device, FloatDType};
use lantern_sae::Arch;
use lantern_sae::params::download;
use lantern_sae::step::{StepSettings, step};
use wgpu_common::{HostCase, wgpu};

#[test]
fn topk_step_with_the_f16_encoder_matches_cpu_to_half_precision() {
    let Some(gpu) = wgpu() else { return };
    eprintln!(
        "wgpu adapter supports f16: {}",
        gpu.supports_dtype(FloatDType::F16)
    );
    // SAFETY: the only test of this binary, so no other thread reads the environment.
    unsafe { std::env::set_var("LANTERN_ENCODER_F16", "1") };
    let cpu = Device::flex();
    let k = 8;
    let case = HostCase::random(48, 256, 128);
    let settings = StepSettings {
        arch: Arch::TopK { k },
        apply_b_dec_to_input: true,
        sparsity_coeff: 0.0,
        aux_coeff: 0.0,
        k_aux: 0,
        bandwidth: 0.05,
        matryoshka: Vec::new(),
        target_l0: None,
        rescale_by_decoder_norm: false,
        pre_act_coeff: 0.0,
    };
    let on = |dev: &Device| {
        let p = case.params(dev, None);
        let out = step(&p, case.x(dev), &settings, None);
        (
            download(out.sse).unwrap()[0],
            download(out.active).unwrap()[0],
        )
    };
    let ((sse_c, active_c), (sse_g, active_g)) = (on(&cpu), on(&gpu));
    assert!(
        (sse_g - sse_c).abs() <= 1e-2 * sse_c,
        "loss: f16 encoder on wgpu {sse_g}, f32 on cpu {sse_c}"
    );
    assert_eq!(active_g, active_c, "active latents");
}
