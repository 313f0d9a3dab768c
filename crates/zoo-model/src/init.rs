//! Seeded parameter initialisation from the project's own ChaCha RNG.
//!
//! Burn's CPU RNG is process-global and initialises parameters lazily, so its values depend on
//! access order and on whatever else drew from it. Drawing every initial weight here from
//! ChaCha8(seed) makes a model a pure function of (config, seed) — identical on every backend,
//! which the cross-backend tests rely on.

use burn::module::Param;
use burn::nn::{Embedding, Linear};
use burn::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub struct Init {
    rng: ChaCha8Rng,
    device: Device,
}

impl Init {
    pub fn new(seed: u64, device: &Device) -> Self {
        Init {
            rng: ChaCha8Rng::seed_from_u64(seed),
            device: device.clone(),
        }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Standard normal samples by Box–Muller (deterministic, backend independent).
    pub fn normal_vec(&mut self, n: usize, std: f64) -> Vec<f32> {
        (0..n)
            .map(|_| {
                let u1: f64 = self.rng.r#gen::<f64>().max(1e-12);
                let u2: f64 = self.rng.r#gen::<f64>();
                ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos() * std) as f32
            })
            .collect()
    }

    pub fn uniform_vec(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f32> {
        (0..n).map(|_| self.rng.gen_range(lo..hi) as f32).collect()
    }

    pub fn tensor<const D: usize>(&self, values: Vec<f32>, shape: [usize; D]) -> Tensor<D> {
        Tensor::from_data(TensorData::new(values, shape), &self.device)
    }

    pub fn normal<const D: usize>(&mut self, shape: [usize; D], std: f64) -> Param<Tensor<D>> {
        let n = shape.iter().product();
        let values = self.normal_vec(n, std);
        Param::from_tensor(self.tensor(values, shape))
    }

    pub fn uniform<const D: usize>(
        &mut self,
        shape: [usize; D],
        lo: f64,
        hi: f64,
    ) -> Param<Tensor<D>> {
        let n = shape.iter().product();
        let values = self.uniform_vec(n, lo, hi);
        Param::from_tensor(self.tensor(values, shape))
    }

    pub fn constant<const D: usize>(&self, shape: [usize; D], value: f32) -> Param<Tensor<D>> {
        Param::from_tensor(Tensor::full(shape, value, &self.device))
    }

    /// A linear layer with weight [d_in, d_out] ~ U(−1/√d_in, 1/√d_in) (PyTorch's default).
    pub fn linear(&mut self, d_in: usize, d_out: usize, bias: bool) -> Linear {
        let bound = 1.0 / (d_in as f64).sqrt();
        Linear {
            weight: self.uniform([d_in, d_out], -bound, bound),
            bias: bias.then(|| self.uniform([d_out], -bound, bound)),
        }
    }

    /// A linear layer scaled for a residual output (GPT-2: std 0.02/√(2·n_layers)).
    pub fn linear_out(&mut self, d_in: usize, d_out: usize, bias: bool, n_layers: usize) -> Linear {
        let std = 0.02 / (2.0 * n_layers as f64).sqrt();
        Linear {
            weight: self.normal([d_in, d_out], std),
            bias: bias.then(|| self.constant([d_out], 0.0)),
        }
    }

    pub fn embedding(&mut self, vocab: usize, d_model: usize) -> Embedding {
        Embedding {
            weight: self.normal([vocab, d_model], 0.02),
        }
    }
}
