//! Decoder-only language model (GPT-2 / nanoGPT layout, Radford et al. 2019):
//!
//!   h₀ = E[tokens] (+ P[positions] for sinusoidal / learned),  h_ℓ = Block_ℓ(h_{ℓ−1}),
//!   logits = Norm(h_L) Eᵀ (tied) or W_head Norm(h_L)
//!
//! plus incremental decoding over per-layer mixer states (`prefill` reads a prompt and returns
//! only the last position's logits), per-layer decoding-state accounting and attention weights
//! for the diagnostics.

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Embedding};

use crate::dense::Linear;
use burn::prelude::*;
use burn::tensor::activation::log_softmax;

use crate::attention::TokenMixer;
use crate::block::{Block, BlockState, Norm};
use crate::config::{ModelConfig, PositionConfig};
use crate::error::ModelError;
use crate::init::{Init, embedding_std};
use crate::position::{LearnedPositions, sinusoidal};

#[derive(Module, Debug)]
pub struct Lm {
    pub embed: Embedding,
    pub positions: Option<LearnedPositions>,
    pub blocks: Vec<Block>,
    pub norm: Norm,
    /// Output projection when the embeddings are not tied.
    pub head: Option<Linear>,
    pub dropout: Dropout,
    #[module(skip)]
    config: ModelConfig,
}

/// Decoding state of the whole model: one block state per layer and the next position.
#[derive(Clone, Debug)]
pub struct LmState {
    pub layers: Vec<BlockState>,
    pub pos: usize,
}

/// State accounting of one layer.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerState {
    pub layer: usize,
    pub mixer: &'static str,
    pub bytes: usize,
}

impl Lm {
    /// Build the model; every weight is drawn from ChaCha8(config.init_seed).
    pub fn new(config: &ModelConfig, device: &Device) -> Result<Lm, ModelError> {
        config.validate()?;
        let vocab = config.vocab()?;
        let mut init = Init::with_scheme(config.init_seed, config.init, device);
        let d = config.d_model;
        let embed = init.embedding(vocab, d);
        let positions = matches!(config.position, PositionConfig::Learned)
            .then(|| LearnedPositions::new(&mut init, config.max_seq_len, d));
        let blocks = config
            .layer_mixers()
            .iter()
            .map(|m| Block::new(m, config, &mut init))
            .collect();
        let head = (!config.tie_embeddings).then(|| init.linear(d, vocab, false));
        Ok(Lm {
            embed,
            positions,
            blocks,
            norm: Norm::new(config.norm, d, device),
            head,
            dropout: DropoutConfig::new(config.embed_dropout_p()).init(),
            config: config.clone(),
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Token embeddings plus the additive position encodings for positions start..start+n.
    fn embed_tokens(&self, tokens: Tensor<2, Int>, start: usize) -> Tensor<3> {
        let x = self.embed.forward(tokens); // [b, n, d]
        let x = match (&self.config.position, &self.positions) {
            (PositionConfig::Sinusoidal, _) => {
                sinusoidal::add(x, start, embedding_std(self.config.init))
            }
            (_, Some(learned)) => learned.add(x, start),
            _ => x,
        };
        self.dropout.forward(x)
    }

    fn logits(&self, h: Tensor<3>) -> Tensor<3> {
        let h = self.norm.forward(h);
        match &self.head {
            Some(head) => head.forward(h),
            // Tied: h Eᵀ through the linear layer's product (fused on flex: no zero-filled
            // output, the weight gradient's long product on the register blocks).
            None => crate::dense::product(h, self.embed.weight.val().transpose(), None), // [b, n, V]
        }
    }

    /// tokens: [batch, seq] → logits [batch, seq, vocab]
    pub fn forward(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        let mut h = self.embed_tokens(tokens, 0);
        for block in &self.blocks {
            h = block.forward(h);
        }
        self.logits(h)
    }

    /// Mean cross-entropy over the positions where `mask` is 1: tokens, targets [b, n], mask [b, n].
    pub fn loss(
        &self,
        tokens: Tensor<2, Int>,
        targets: Tensor<2, Int>,
        mask: Tensor<2>,
    ) -> Tensor<1> {
        let logits = self.forward(tokens);
        masked_cross_entropy(logits, targets, mask)
    }

    pub fn init_state(&self, batch: usize, device: &Device) -> LmState {
        LmState {
            layers: self
                .blocks
                .iter()
                .map(|b| b.init_state(batch, device))
                .collect(),
            pos: 0,
        }
    }

    /// Continue from `state` with tokens [batch, n] → (logits [batch, n, vocab], state).
    pub fn forward_with_state(
        &self,
        tokens: Tensor<2, Int>,
        state: LmState,
    ) -> (Tensor<3>, LmState) {
        let (h, state) = self.hidden_with_state(tokens, state);
        (self.logits(h), state)
    }

    /// Read a prompt for generation: tokens [batch, n ≥ 1] from `state` → (logits of the last
    /// position [batch, vocab], state). Only the last position goes through the final norm and
    /// the head, so a long prompt never builds its [batch, n, vocab] logits; from an empty state
    /// the attention mixers run their full forward (fused O(n) memory on flex).
    pub fn prefill(&self, tokens: Tensor<2, Int>, state: LmState) -> (Tensor<2>, LmState) {
        let n = tokens.dims()[1];
        assert!(n > 0, "Lm::prefill needs at least one token");
        let (h, state) = self.hidden_with_state(tokens, state); // [b, n, d]
        let last = self.logits(h.narrow(1, n - 1, 1)); // [b, 1, V]
        (last.squeeze_dim::<2>(1), state)
    }

    /// The blocks from `state`: tokens [batch, n] → (final hidden states [batch, n, d], state).
    fn hidden_with_state(&self, tokens: Tensor<2, Int>, state: LmState) -> (Tensor<3>, LmState) {
        let n = tokens.dims()[1];
        let mut h = self.embed_tokens(tokens, state.pos);
        let mut layers = Vec::with_capacity(self.blocks.len());
        for (block, s) in self.blocks.iter().zip(state.layers) {
            let (out, s) = block.forward_with_state(h, s);
            h = out;
            layers.push(s);
        }
        (
            h,
            LmState {
                layers,
                pos: state.pos + n,
            },
        )
    }

    /// Decode one token per sequence: tokens [batch] → (logits [batch, vocab], state).
    pub fn step(&self, tokens: Tensor<1, Int>, state: LmState) -> (Tensor<2>, LmState) {
        let (logits, state) = self.forward_with_state(tokens.unsqueeze_dim::<2>(1), state);
        (logits.squeeze_dim::<2>(1), state)
    }

    /// Decoding state per layer after `seq_len` tokens, per sequence, in bytes (f32).
    pub fn state_size_bytes(&self, seq_len: usize) -> Vec<LayerState> {
        self.blocks
            .iter()
            .enumerate()
            .map(|(layer, b)| LayerState {
                layer,
                mixer: b.mixer.kind(),
                bytes: b.state_size_bytes(seq_len),
            })
            .collect()
    }

    /// Attention weights [batch, heads, n, n] of every layer for the given tokens.
    pub fn attention_weights(&self, tokens: Tensor<2, Int>) -> Vec<Option<Tensor<4>>> {
        let mut h = self.embed_tokens(tokens, 0);
        let mut out = Vec::with_capacity(self.blocks.len());
        for block in &self.blocks {
            out.push(block.mixer.attention_weights(block.mixer_input(h.clone())));
            h = block.forward(h);
        }
        out
    }

    /// Parameter count.
    pub fn num_params(&self) -> usize {
        Module::num_params(self)
    }
}

/// Mean negative log-likelihood over masked positions: logits [b, n, V], targets [b, n], mask [b, n].
pub fn masked_cross_entropy(
    logits: Tensor<3>,
    targets: Tensor<2, Int>,
    mask: Tensor<2>,
) -> Tensor<1> {
    if crate::kernels::fused_on(&logits.device()) {
        let [b, n, v] = logits.dims();
        return crate::kernels::cross_entropy(
            logits.reshape([b * n, v]),
            targets.reshape([b * n]),
            mask.reshape([b * n]),
        );
    }
    let logp = log_softmax(logits, 2); // [b, n, V]
    let picked = logp
        .gather(2, targets.unsqueeze_dim::<3>(2))
        .squeeze_dim::<2>(2); // [b, n]
    let total = mask.clone().sum().clamp_min(1.0);
    (picked * mask).sum().neg() / total
}
