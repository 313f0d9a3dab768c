//! Pre-norm decoder block (GPT-2 / Llama layout):
//!
//!   h = x + Dropout(Mixer(Norm₁(x))),   y = h + Dropout(MLP(Norm₂(h)))
//!
//! with RMSNorm (Zhang & Sennrich 2019) or LayerNorm (Ba et al. 2016).

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, LayerNorm, LayerNormConfig, RmsNorm, RmsNormConfig};
use burn::prelude::*;

use crate::attention::{Mixer, MixerState, TokenMixer};
use crate::config::{MixerConfig, ModelConfig, NormKind};
use crate::init::Init;
use crate::kernels;
use crate::mlp::Mlp;

/// LayerNorm's ε (Burn's default, written out because the fused kernel needs it too).
const LAYER_NORM_EPS: f64 = 1e-5;

#[derive(Module, Debug)]
pub enum Norm {
    Rms(RmsNorm),
    Layer(LayerNorm),
}

impl Norm {
    pub fn new(kind: NormKind, d_model: usize, device: &Device) -> Norm {
        match kind {
            NormKind::Rms => Norm::Rms(RmsNormConfig::new(d_model).init(device)),
            NormKind::Layer => Norm::Layer(
                LayerNormConfig::new(d_model)
                    .with_epsilon(LAYER_NORM_EPS)
                    .init(device),
            ),
        }
    }

    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Norm::Rms(n) => n.forward(x),
            Norm::Layer(n) => match &n.beta {
                Some(beta) if kernels::fused_on(&x.device()) => {
                    kernels::layer_norm(x, n.gamma.val(), beta.val(), LAYER_NORM_EPS as f32)
                }
                _ => n.forward(x),
            },
        }
    }
}

#[derive(Module, Debug)]
pub struct Block {
    pub norm_mixer: Norm,
    pub mixer: Mixer,
    pub norm_mlp: Norm,
    pub mlp: Mlp,
    pub dropout: Dropout,
}

impl Block {
    pub fn new(mixer: &MixerConfig, config: &ModelConfig, init: &mut Init) -> Self {
        let device = init.device().clone();
        Block {
            norm_mixer: Norm::new(config.norm, config.d_model, &device),
            mixer: Mixer::new(mixer, config, init),
            norm_mlp: Norm::new(config.norm, config.d_model, &device),
            mlp: Mlp::new(config, init),
            dropout: DropoutConfig::new(config.dropout).init(),
        }
    }

    /// x: [batch, seq, d_model] → [batch, seq, d_model]
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let h = x.clone()
            + self
                .dropout
                .forward(self.mixer.forward(self.norm_mixer.forward(x)));
        h.clone()
            + self
                .dropout
                .forward(self.mlp.forward(self.norm_mlp.forward(h)))
    }

    pub fn forward_with_state(&self, x: Tensor<3>, state: MixerState) -> (Tensor<3>, MixerState) {
        let (mixed, state) = self
            .mixer
            .forward_with_state(self.norm_mixer.forward(x.clone()), state);
        let h = x + self.dropout.forward(mixed);
        (
            h.clone()
                + self
                    .dropout
                    .forward(self.mlp.forward(self.norm_mlp.forward(h))),
            state,
        )
    }
}
