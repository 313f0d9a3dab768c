//! Position-wise feed-forward networks:
//! - GELU (Hendrycks & Gimpel 2016; GPT-2): W₂ GELU(W₁x + b₁) + b₂, hidden = mlp_ratio·d;
//! - SwiGLU (Shazeer 2020, "GLU Variants Improve Transformer"): W₂ (SiLU(W₁x) ⊙ W₃x), with the
//!   hidden width scaled by 2/3 so its parameter count matches the GELU MLP's.

use crate::dense::Linear;
use burn::module::Module;
use burn::prelude::*;
use burn::tensor::activation::{gelu, silu};

use crate::config::{MlpKind, ModelConfig};
use crate::init::Init;
use crate::kernels;

#[derive(Module, Debug)]
pub struct Mlp {
    pub up: Linear,
    /// The gate projection of SwiGLU.
    pub gate: Option<Linear>,
    pub down: Linear,
}

impl Mlp {
    pub fn new(config: &ModelConfig, init: &mut Init) -> Self {
        let d = config.d_model;
        let hidden = (config.mlp_ratio * d as f64).round() as usize;
        match config.mlp {
            MlpKind::Gelu => Mlp {
                up: init.linear(d, hidden, config.bias),
                gate: None,
                down: init.linear_out(hidden, d, config.bias, config.n_layers),
            },
            MlpKind::Swiglu => {
                let hidden = (2 * hidden).div_ceil(3);
                Mlp {
                    up: init.linear(d, hidden, config.bias),
                    gate: Some(init.linear(d, hidden, config.bias)),
                    down: init.linear_out(hidden, d, config.bias, config.n_layers),
                }
            }
            MlpKind::None => unreachable!("a block without an MLP builds none"),
        }
    }

    /// x: [batch, seq, d_model] → [batch, seq, d_model]
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let hidden = match &self.gate {
            Some(gate) => silu(gate.forward(x.clone())) * self.up.forward(x),
            None if kernels::fused_on(&x.device()) => kernels::gelu(self.up.forward(x)),
            None => gelu(self.up.forward(x)),
        };
        self.down.forward(hidden)
    }
}
