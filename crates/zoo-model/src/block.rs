//! Pre-norm decoder block (GPT-2 / Llama layout):
//!
//!   h = x + Dropout(Mixer(Conv(Norm₁(x)))),   y = h + Dropout(MLP(Norm₂(h)))
//!
//! with RMSNorm (Zhang & Sennrich 2019) or LayerNorm (Ba et al. 2016), the optional short causal
//! convolution `Conv` (`model.short_conv`, crate::short_conv) and the MLP left out entirely
//! with `model.mlp = "none"` (Zoology's mixer-only blocks: y = h).

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, LayerNorm, LayerNormConfig, RmsNorm, RmsNormConfig};
use burn::prelude::*;

use crate::attention::{Mixer, MixerState, TokenMixer};
use crate::config::{MixerConfig, MlpKind, ModelConfig, NormKind};
use crate::init::Init;
use crate::kernels;
use crate::mlp::Mlp;
use crate::short_conv::ShortConv;

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

/// What one block carries between calls when decoding: its mixer's state and the short
/// convolution's last K−1 inputs.
#[derive(Clone, Debug)]
pub struct BlockState {
    pub mixer: MixerState,
    /// [batch, K−1, d_model]; None before the first token or without a convolution.
    pub conv: Option<Tensor<3>>,
}

#[derive(Module, Debug)]
pub struct Block {
    pub norm_mixer: Norm,
    pub conv: Option<ShortConv>,
    pub mixer: Mixer,
    /// Absent with `model.mlp = "none"`.
    pub norm_mlp: Option<Norm>,
    pub mlp: Option<Mlp>,
    pub dropout: Dropout,
}

impl Block {
    pub fn new(mixer: &MixerConfig, config: &ModelConfig, init: &mut Init) -> Self {
        let device = init.device().clone();
        let conv = (config.short_conv > 0)
            .then(|| ShortConv::new(config.short_conv, config.d_model, init));
        let has_mlp = config.mlp != MlpKind::None;
        Block {
            norm_mixer: Norm::new(config.norm, config.d_model, &device),
            conv,
            mixer: Mixer::new(mixer, config, init),
            norm_mlp: has_mlp.then(|| Norm::new(config.norm, config.d_model, &device)),
            mlp: has_mlp.then(|| Mlp::new(config, init)),
            dropout: DropoutConfig::new(config.dropout).init(),
        }
    }

    /// The mixer's input: Norm₁(x), convolved when the block has a short convolution.
    /// x: [batch, seq, d_model] → [batch, seq, d_model]
    pub fn mixer_input(&self, x: Tensor<3>) -> Tensor<3> {
        let u = self.norm_mixer.forward(x);
        match &self.conv {
            Some(conv) => conv.forward(u),
            None => u,
        }
    }

    /// h + Dropout(MLP(Norm₂(h))), or h without an MLP.
    fn feed_forward(&self, h: Tensor<3>) -> Tensor<3> {
        match (&self.mlp, &self.norm_mlp) {
            (Some(mlp), Some(norm)) => {
                h.clone() + self.dropout.forward(mlp.forward(norm.forward(h)))
            }
            _ => h,
        }
    }

    /// x: [batch, seq, d_model] → [batch, seq, d_model]
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let h = x.clone()
            + self
                .dropout
                .forward(self.mixer.forward(self.mixer_input(x)));
        self.feed_forward(h)
    }

    pub fn init_state(&self, batch: usize, device: &Device) -> BlockState {
        BlockState {
            mixer: self.mixer.init_state(batch, device),
            conv: None,
        }
    }

    pub fn forward_with_state(&self, x: Tensor<3>, state: BlockState) -> (Tensor<3>, BlockState) {
        let u = self.norm_mixer.forward(x.clone());
        let (u, conv) = match &self.conv {
            Some(c) => c.forward_with_state(u, state.conv),
            None => (u, None),
        };
        let (mixed, mixer) = self.mixer.forward_with_state(u, state.mixer);
        let h = x + self.dropout.forward(mixed);
        (self.feed_forward(h), BlockState { mixer, conv })
    }

    /// Decoding state after `seq_len` tokens, per sequence, in bytes (f32).
    pub fn state_size_bytes(&self, seq_len: usize) -> usize {
        let conv = self.conv.as_ref().map_or(0, |c| {
            let [k, d] = c.weight.dims();
            (k - 1) * d * 4
        });
        self.mixer.state_size_bytes(seq_len) + conv
    }
}
