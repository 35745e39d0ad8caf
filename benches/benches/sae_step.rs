//! Criterion benchmark of one full TopK training step (forward, hand-written backward, Adam,
//! decoder renormalisation) on the CPU at a size that fits a CI machine. The issue's
//! reference shapes (768×24576, k = 32 and 4096×65536, k = 64) are measured with
//! `lantern bench sae`, whose numbers go in BENCHMARKS.md.

use burn::tensor::{Device, Distribution, Tensor};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lantern_sae::Arch;
use lantern_sae::optim::{self, Adam};
use lantern_sae::params::{Params, download};
use lantern_sae::step::{StepSettings, step};

fn topk_step(c: &mut Criterion) {
    let device = Device::flex();
    let (d, m, k, batch) = (256, 4096, 16, 1024);
    let w_dec = optim::normalize_rows(Tensor::<2>::random(
        [m, d],
        Distribution::Normal(0.0, 1.0),
        &device,
    ));
    let mut params = Params {
        w_enc: w_dec.clone().transpose(),
        b_enc: Tensor::zeros([m], &device),
        w_dec,
        b_dec: Tensor::zeros([d], &device),
        log_threshold: None,
    };
    let mut adam = Adam::new(&params);
    let x = Tensor::<2>::random([batch, d], Distribution::Normal(0.0, 1.0), &device);
    let settings = StepSettings {
        arch: Arch::TopK { k },
        apply_b_dec_to_input: true,
        sparsity_coeff: 0.0,
        aux_coeff: 1.0 / 32.0,
        k_aux: d / 2,
        bandwidth: 0.001,
    };
    let mut group = c.benchmark_group("sae");
    group.throughput(Throughput::Elements(batch as u64));
    group.sample_size(10);
    group.bench_function("topk_step_cpu_256x4096_k16_b1024", |b| {
        b.iter(|| {
            let out = step(&params, x.clone(), &settings, None);
            let mut p = adam.step(params.clone(), &out.grads, 1e-4);
            p.w_dec = optim::normalize_rows(p.w_dec);
            let _ = download(p.b_dec.clone());
            params = p;
        })
    });
    group.finish();
}

criterion_group!(benches, topk_step);
criterion_main!(benches);
