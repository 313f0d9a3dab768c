//! Criterion micro-benchmarks of the mixers' hot paths on the flex backend (batch 1, d 128,
//! 4 heads): forward of every mixer at 1k and 4k tokens, the linear-attention forms against each
//! other, and one decoding step at 2k context. `cargo bench -p zoo-bench`.
//! Speed is measured here and by `zoo bench`, never by timed tests.

use burn::prelude::*;
use burn::tensor::Distribution;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use zoo_bench::{layer_model, mixers};
use zoo_model::attention::{Mixer, linear};
use zoo_model::init::Init;
use zoo_model::{MixerConfig, TokenMixer};

fn forward(c: &mut Criterion) {
    let device = Device::flex();
    let mut group = c.benchmark_group("mixer_forward");
    group.sample_size(10);
    for cfg in mixers() {
        let mixer = Mixer::new(&cfg, &layer_model(cfg.clone()), &mut Init::new(0, &device));
        for n in [1024usize, 4096] {
            let x = Tensor::<3>::random([1, n, 128], Distribution::Normal(0.0, 1.0), &device);
            group.bench_with_input(BenchmarkId::new(cfg.kind(), n), &n, |b, _| {
                b.iter(|| mixer.forward(x.clone()).into_data());
            });
        }
    }
    group.finish();
}

fn linear_forms(c: &mut Criterion) {
    let device = Device::flex();
    let mut group = c.benchmark_group("linear_forms");
    group.sample_size(10);
    let n = 1024;
    let q = Tensor::<4>::random([1, 4, n, 32], Distribution::Uniform(0.0, 1.0), &device);
    let k = Tensor::<4>::random([1, 4, n, 32], Distribution::Uniform(0.0, 1.0), &device);
    let v = Tensor::<4>::random([1, 4, n, 32], Distribution::Normal(0.0, 1.0), &device);
    let s = Tensor::<4>::zeros([1, 4, 32, 32], &device);
    let z = Tensor::<3>::zeros([1, 4, 32], &device);
    group.bench_function("parallel", |b| {
        b.iter(|| {
            linear::parallel(q.clone(), k.clone(), v.clone(), s.clone(), z.clone(), true)
                .0
                .into_data()
        })
    });
    group.bench_function("chunked64", |b| {
        b.iter(|| {
            linear::chunked(
                q.clone(),
                k.clone(),
                v.clone(),
                s.clone(),
                z.clone(),
                64,
                true,
            )
            .0
            .into_data()
        })
    });
    group.finish();
}

fn decode_step(c: &mut Criterion) {
    let device = Device::flex();
    let mut group = c.benchmark_group("decode_step_2k");
    group.sample_size(20);
    for cfg in mixers() {
        let mixer = Mixer::new(&cfg, &layer_model(cfg.clone()), &mut Init::new(0, &device));
        let n = 2048;
        let prefix = Tensor::<3>::random([1, n, 128], Distribution::Normal(0.0, 1.0), &device);
        let (_, state) = if matches!(cfg, MixerConfig::SlidingWindow(_) | MixerConfig::Bigbird(_)) {
            // Sparse mixers prefill token by token; a shorter prefix keeps the setup quick.
            mixer.forward_with_state(prefix.narrow(1, 0, 256), mixer.init_state(1, &device))
        } else {
            mixer.forward_with_state(prefix, mixer.init_state(1, &device))
        };
        let x = Tensor::<2>::random([1, 128], Distribution::Normal(0.0, 1.0), &device);
        group.bench_function(cfg.kind(), |b| {
            b.iter(|| mixer.step(x.clone(), state.clone()).0.into_data())
        });
    }
    group.finish();
}

criterion_group!(benches, forward, linear_forms, decode_step);
criterion_main!(benches);
