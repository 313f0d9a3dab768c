//! Learned absolute positions (GPT-2): a trainable table P ∈ ℝ^{max_seq_len × d} added to the
//! token embeddings. Positions past the table cannot be encoded; `ModelConfig::check_length`
//! refuses them with an error before any forward reaches this module.

use burn::module::Param;
use burn::prelude::*;

use crate::init::Init;

#[derive(Module, Debug)]
pub struct LearnedPositions {
    pub table: Param<Tensor<2>>, // [max_seq_len, d_model]
}

impl LearnedPositions {
    pub fn new(init: &mut Init, max_seq_len: usize, d_model: usize) -> Self {
        LearnedPositions {
            // At the token embeddings' scale (an embedding table of positions).
            table: init.embedding(max_seq_len, d_model).weight,
        }
    }

    /// x: [batch, seq, d_model] → x + P[start..start+seq]
    pub fn add(&self, x: Tensor<3>, start: usize) -> Tensor<3> {
        let [_, n, _] = x.dims();
        let rows = self.table.val().narrow(0, start, n); // [n, d]
        x + rows.unsqueeze::<3>()
    }
}
