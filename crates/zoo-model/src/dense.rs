//! The linear layer y = x W + b of every projection and MLP, W [d_in, d_out] (Burn's layout:
//! the same parameter names and shapes as `burn::nn::Linear`, so checkpoints load unchanged).
//! On flex it runs the fused kernel (`crate::kernels::linear`: the bias added inside the
//! product, transposes read as strided views); elsewhere Burn's composed `linear`.

use burn::module::{Module, Param};
use burn::prelude::*;

use crate::kernels;

#[derive(Module, Debug)]
pub struct Linear {
    /// [d_in, d_out]
    pub weight: Param<Tensor<2>>,
    /// [d_out]
    pub bias: Option<Param<Tensor<1>>>,
}

impl Linear {
    /// x [.., d_in] → [.., d_out].
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let bias = self.bias.as_ref().map(|b| b.val());
        product(x, self.weight.val(), bias)
    }

    /// x [.., d_in] → [.., Σ d_out]: the layers' outputs side by side from one product with
    /// their weights (and biases) concatenated, so x is read once and the input gradient comes
    /// out of one product instead of a sum of several. The layers must agree on having a bias.
    pub fn forward_side_by_side<const D: usize>(layers: &[&Linear], x: Tensor<D>) -> Tensor<D> {
        let weight = Tensor::cat(layers.iter().map(|l| l.weight.val()).collect(), 1);
        let biases: Vec<Tensor<1>> = layers
            .iter()
            .filter_map(|l| l.bias.as_ref().map(|b| b.val()))
            .collect();
        assert!(
            biases.is_empty() || biases.len() == layers.len(),
            "side-by-side layers must all have a bias or none"
        );
        let bias = (!biases.is_empty()).then(|| Tensor::cat(biases, 0));
        product(x, weight, bias)
    }
}

/// x W (+ b): the fused kernel on flex, Burn's composed `linear` elsewhere (also the tied output
/// head's h Eᵀ, `Lm::logits`).
pub(crate) fn product<const D: usize>(
    x: Tensor<D>,
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
) -> Tensor<D> {
    if kernels::fused_on(&x.device()) {
        kernels::linear(x, weight, bias)
    } else {
        burn::tensor::module::linear(x, weight, bias)
    }
}
