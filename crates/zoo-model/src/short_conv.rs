//! Short causal depthwise convolution on a mixer's input (H3's shift SSM, Fu et al. 2023; the
//! short convolution of Zoology / Based, Arora et al. 2023–24, "Hybrid(BaseConv k=3, mixer)";
//! Mamba's conv1d):
//!
//!   y_t[c] = b[c] + Σ_{j=0}^{K−1} w[j, c] · x_{t−(K−1)+j}[c],   x_{<0} = 0
//!
//! Each channel mixes only its own last K inputs, so a token can see its neighbours before the
//! mixer runs — what lets a single attention or recurrent layer form the "previous token"
//! features that associative recall needs (induction heads otherwise need two layers).
//! Incremental decoding carries the last K−1 inputs as state, so stepping equals the full
//! forward. Initialised like PyTorch's `nn.Conv1d(d, d, K, groups=d)`: weight and bias
//! U(±1/√K) (fan_in = K), under either `model.init` scheme (Zoology leaves convolutions at
//! PyTorch's default too).

use burn::module::{Module, Param};
use burn::prelude::*;

use crate::init::Init;

#[derive(Module, Debug)]
pub struct ShortConv {
    /// Taps, oldest first: w[K−1] weighs the current position. [K, d]
    pub weight: Param<Tensor<2>>,
    pub bias: Param<Tensor<1>>, // [d]
}

impl ShortConv {
    pub fn new(width: usize, d_model: usize, init: &mut Init) -> Self {
        let bound = 1.0 / (width as f64).sqrt();
        ShortConv {
            weight: init.uniform([width, d_model], -bound, bound),
            bias: init.uniform([d_model], -bound, bound),
        }
    }

    pub fn width(&self) -> usize {
        self.weight.dims()[0]
    }

    /// x [batch, n, d] from position 0 → [batch, n, d].
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.forward_with_state(x, None).0
    }

    /// Continue from `state` (the K−1 inputs before x, [batch, K−1, d]; None = zeros):
    /// x [batch, n, d] → (y [batch, n, d], the last K−1 inputs [batch, K−1, d]; None when K = 1).
    pub fn forward_with_state(
        &self,
        x: Tensor<3>,
        state: Option<Tensor<3>>,
    ) -> (Tensor<3>, Option<Tensor<3>>) {
        let [b, n, d] = x.dims();
        let k = self.width();
        let history = k - 1;
        let padded = if history == 0 {
            x
        } else {
            let before = state.unwrap_or_else(|| Tensor::zeros([b, history, d], &x.device()));
            Tensor::cat(vec![before, x], 1) // [b, K−1+n, d]
        };
        let taps = self.weight.val(); // [K, d]
        let mut y = self.bias.val().reshape([1, 1, d]).expand([b, n, d]);
        for j in 0..k {
            let w = taps.clone().narrow(0, j, 1).reshape([1, 1, d]);
            y = y + padded.clone().narrow(1, j, n) * w; // [b, n, d]
        }
        let next = (history > 0).then(|| padded.narrow(1, n, history)); // [b, K−1, d]
        (y, next)
    }
}
