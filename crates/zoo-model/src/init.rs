//! Seeded parameter initialisation from the project's own ChaCha RNG.
//!
//! Burn's CPU RNG is process-global and initialises parameters lazily, so its values depend on
//! access order and on whatever else drew from it. Drawing every initial weight here from
//! ChaCha8(seed) makes a model a pure function of (config, seed) — identical on every backend,
//! which the cross-backend tests rely on.
//!
//! Two schemes (`model.init`, [`InitScheme`]):
//! - `pytorch` (default): what `nn.Embedding` / `nn.Linear` draw — embeddings N(0, 1), every
//!   linear layer U(±1/√fan_in). Small recall models learn several times faster from it than from
//!   GPT-2's scheme (MQAR, 600 steps: docs/model-definition.md, EXPERIMENTS.md).
//! - `gpt2` (Radford et al. 2019; nanoGPT, Zoology): embeddings N(0, 0.02), residual output
//!   projections N(0, 0.02/√(2·n_layers)), other linear layers U(±1/√fan_in).
//!
//! Absolute position encodings are drawn (learned) or scaled (sinusoidal) to the token
//! embeddings' scale, [`embedding_std`], so that neither drowns the other.

use crate::dense::Linear;
use burn::module::Param;
use burn::nn::Embedding;
use burn::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::InitScheme;

/// Standard deviation of the token embeddings under `scheme`.
pub fn embedding_std(scheme: InitScheme) -> f64 {
    match scheme {
        InitScheme::Pytorch => 1.0,
        InitScheme::Gpt2 => 0.02,
    }
}

pub struct Init {
    rng: ChaCha8Rng,
    scheme: InitScheme,
    device: Device,
}

impl Init {
    /// PyTorch's defaults ([`InitScheme::Pytorch`]).
    pub fn new(seed: u64, device: &Device) -> Self {
        Self::with_scheme(seed, InitScheme::Pytorch, device)
    }

    pub fn with_scheme(seed: u64, scheme: InitScheme, device: &Device) -> Self {
        Init {
            rng: ChaCha8Rng::seed_from_u64(seed),
            scheme,
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

    /// A linear layer whose output is added to the residual stream: GPT-2 scales it down to
    /// std 0.02/√(2·n_layers); PyTorch's scheme draws it like any other linear layer.
    pub fn linear_out(&mut self, d_in: usize, d_out: usize, bias: bool, n_layers: usize) -> Linear {
        if self.scheme == InitScheme::Pytorch {
            return self.linear(d_in, d_out, bias);
        }
        let std = 0.02 / (2.0 * n_layers as f64).sqrt();
        Linear {
            weight: self.normal([d_in, d_out], std),
            bias: bias.then(|| self.constant([d_out], 0.0)),
        }
    }

    /// A table of `rows` embeddings, N(0, embedding_std(scheme)).
    pub fn embedding(&mut self, rows: usize, d_model: usize) -> Embedding {
        Embedding {
            weight: self.normal([rows, d_model], embedding_std(self.scheme)),
        }
    }

    pub fn scheme(&self) -> InitScheme {
        self.scheme
    }
}
