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
        if kernels::fused_on(&x.device()) {
            kernels::linear(x, self.weight.val(), bias)
        } else {
            burn::tensor::module::linear(x, self.weight.val(), bias)
        }
    }
}
