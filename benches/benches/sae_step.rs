//! Criterion benchmark of one full TopK training step (forward, hand-written backward, Adam,
//! decoder renormalisation) on the CPU at a size that fits a CI machine. The issue's
//! reference shapes (768×24576, k = 32 and 4096×65536, k = 64) are measured with
//! `lantern bench sae`, whose numbers go in BENCHMARKS.md.

use burn::tensor::Device;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lantern_sae::optim::{self, Adam};
use lantern_sae::params::download;
use lantern_sae::step::{random_topk_setup, step};

fn topk_step(c: &mut Criterion) {
    let device = Device::flex();
    let (d, m, k, batch) = (256, 4096, 16, 1024);
    let (mut params, x, settings) = random_topk_setup(&device, d, m, k, batch);
    let mut adam = Adam::new(&params);
    let mut group = c.benchmark_group("sae");
    group.throughput(Throughput::Elements(batch as u64));
    group.sample_size(10);
    group.bench_function("topk_step_cpu_256x4096_k16_b1024", |b| {
        b.iter(|| {
            let out = step(&params, x.clone(), &settings, None);
            params = optim::update(params.clone(), out.grads, &mut adam, 1e-4, true, Some(1.0));
            let _ = download(params.b_dec.clone());
        })
    });
    group.finish();
}

criterion_group!(benches, topk_step);
criterion_main!(benches);
