//! Rotary position embedding (Su et al. 2021, "RoFormer"), half-split layout (GPT-NeoX):
//!
//!   for pair i of a head vector x = [x₁ | x₂] (halves of size d/2):
//!   out = [x₁·cos(p·ω_i) − x₂·sin(p·ω_i) | x₁·sin(p·ω_i) + x₂·cos(p·ω_i)],   ω_i = θ^(−2i/d)
//!
//! so q_m·k_n depends on m − n only. Length-extension knobs, chosen at evaluation time:
//! position interpolation (Chen et al. 2023) uses p/s instead of p; NTK-aware scaling
//! (bloc97, 2023) keeps p and raises the base to θ·s^(d/(d−2)).

use burn::prelude::*;

use crate::config::PositionConfig;

#[derive(Clone, Debug)]
pub struct Rope {
    /// ω_i for i in 0..head_dim/2.
    inv_freq: Vec<f64>,
    /// 1 / interpolation factor.
    position_scale: f64,
}

impl Rope {
    pub fn from_config(position: &PositionConfig, head_dim: usize) -> Option<Rope> {
        let PositionConfig::Rope {
            theta,
            interpolation,
            ntk_factor,
        } = position
        else {
            return None;
        };
        Some(Rope::new(head_dim, *theta, *interpolation, *ntk_factor))
    }

    pub fn new(head_dim: usize, theta: f64, interpolation: f64, ntk_factor: f64) -> Rope {
        let d = head_dim as f64;
        let base = if ntk_factor > 1.0 {
            theta * ntk_factor.powf(d / (d - 2.0))
        } else {
            theta
        };
        let inv_freq = (0..head_dim / 2)
            .map(|i| base.powf(-2.0 * i as f64 / d))
            .collect();
        Rope {
            inv_freq,
            position_scale: 1.0 / interpolation,
        }
    }

    /// cos and sin of positions start..start+len, row-major [len, head_dim/2] each.
    pub fn host_tables(&self, start: usize, len: usize) -> (Vec<f32>, Vec<f32>) {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(len * half);
        let mut sin = Vec::with_capacity(len * half);
        for p in start..start + len {
            let pos = p as f64 * self.position_scale;
            for w in &self.inv_freq {
                let (s, c) = (pos * w).sin_cos();
                cos.push(c as f32);
                sin.push(s as f32);
            }
        }
        (cos, sin)
    }

    /// cos and sin tables for positions start..start+len: [len, head_dim/2] each.
    fn tables(&self, start: usize, len: usize, device: &Device) -> (Tensor<2>, Tensor<2>) {
        let half = self.inv_freq.len();
        let (cos, sin) = self.host_tables(start, len);
        (
            Tensor::from_data(TensorData::new(cos, [len, half]), device),
            Tensor::from_data(TensorData::new(sin, [len, half]), device),
        )
    }

    /// x: [batch, heads, seq, head_dim], rotated as positions start..start+seq.
    pub fn apply(&self, x: Tensor<4>, start: usize) -> Tensor<4> {
        let [_, _, n, dh] = x.dims();
        if crate::kernels::fused_on(&x.device()) {
            let (cos, sin) = self.host_tables(start, n);
            return crate::kernels::rope(x, cos, sin);
        }
        let half = dh / 2;
        let (cos, sin) = self.tables(start, n, &x.device());
        let cos = cos.unsqueeze::<4>(); // [1, 1, n, half]
        let sin = sin.unsqueeze::<4>();
        let x1 = x.clone().narrow(3, 0, half); // [b, h, n, half]
        let x2 = x.narrow(3, half, half);
        Tensor::cat(
            vec![
                x1.clone() * cos.clone() - x2.clone() * sin.clone(),
                x1 * sin + x2 * cos,
            ],
            3,
        )
    }
}
