//! Feature maps φ of kernelised attention, sim(q, k) = φ(q)·φ(k):
//! - elu+1 (Katharopoulos et al. 2020, "Transformers are RNNs"): φ(x) = elu(x) + 1 > 0;
//! - relu: φ(x) = max(x, 0);
//! - identity: φ(x) = x (unnormalised linear attention);
//! - Taylor-2 (Arora et al. 2024, "Based"): φ(x) = [1, x', vec(x'x'ᵀ)/√2] with x' = x/d^¼, so
//!   φ(q)·φ(k) = 1 + q·k/√d + (q·k/√d)²/2, the second-order expansion of exp(q·k/√d).

use burn::prelude::*;

use crate::config::FeatureMap;

/// Output width of φ for an input of width `dim`.
pub fn output_dim(map: FeatureMap, dim: usize) -> usize {
    match map {
        FeatureMap::Taylor2 => 1 + dim + dim * dim,
        _ => dim,
    }
}

/// x: [batch, heads, seq, dim] → [batch, heads, seq, output_dim]; φ acts on the last axis only,
/// so the token-major [batch, seq, heads, dim] layout works the same.
pub fn apply(map: FeatureMap, x: Tensor<4>) -> Tensor<4> {
    match map {
        // elu(x) + 1 = x + 1 for x > 0 and eˣ otherwise, written without a branch.
        FeatureMap::Elu if crate::kernels::fused_on(&x.device()) => crate::kernels::elu_plus_one(x),
        FeatureMap::Elu => x.clone().clamp_min(0.0) + x.clamp_max(0.0).exp(),
        FeatureMap::Relu => x.clamp_min(0.0),
        FeatureMap::Identity => x,
        FeatureMap::Taylor2 => {
            let [b, h, n, d] = x.dims();
            let x = x.div_scalar((d as f64).powf(0.25));
            let outer = x.clone().unsqueeze_dim::<5>(4) * x.clone().unsqueeze_dim::<5>(3); // [b, h, n, d, d]
            let second = outer
                .reshape([b, h, n, d * d])
                .div_scalar(std::f64::consts::SQRT_2);
            let ones = Tensor::<4>::ones([b, h, n, 1], &x.device());
            Tensor::cat(vec![ones, x, second], 3)
        }
    }
}
