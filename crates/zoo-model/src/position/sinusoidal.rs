//! Sinusoidal absolute positions (Vaswani et al. 2017, "Attention Is All You Need", §3.5):
//!
//!   PE(pos, 2i) = sin(pos / 10000^(2i/d)),   PE(pos, 2i+1) = cos(pos / 10000^(2i/d))
//!
//! added to the token embeddings. Defined for every position, so evaluation past the training
//! length runs (and shows how badly the model extrapolates).
//!
//! Scale: Vaswani et al. add PE (entries of RMS 1/√2) to embeddings multiplied by √d_model, i.e.
//! to token vectors of unit entries. The table is multiplied by `amplitude` = the token
//! embeddings' init std (1 under PyTorch's scheme — exactly Vaswani's ratio; 0.02 under GPT-2's),
//! so position and token vectors start at the same ratio of norms whatever the init: unscaled
//! PE rows (norm ≈ √(d/2) ≈ 5.7 at d 64) added to N(0, 0.02) embeddings (norm ≈ 0.16) drown the
//! tokens, and such models barely trained.

use burn::prelude::*;

/// The table for positions `start..start+len`: [len, d_model], row-major.
pub fn table(start: usize, len: usize, d_model: usize) -> Vec<f32> {
    let mut out = vec![0f32; len * d_model];
    for p in 0..len {
        let pos = (start + p) as f64;
        for i in 0..d_model / 2 {
            let angle = pos / 10_000f64.powf(2.0 * i as f64 / d_model as f64);
            out[p * d_model + 2 * i] = angle.sin() as f32;
            out[p * d_model + 2 * i + 1] = angle.cos() as f32;
        }
        if d_model % 2 == 1 {
            let i = d_model / 2;
            out[p * d_model + 2 * i] =
                (pos / 10_000f64.powf(2.0 * i as f64 / d_model as f64)).sin() as f32;
        }
    }
    out
}

/// x: [batch, seq, d_model] → x + amplitude · PE[start..start+seq]
pub fn add(x: Tensor<3>, start: usize, amplitude: f64) -> Tensor<3> {
    let [_, n, d] = x.dims();
    let scaled: Vec<f32> = table(start, n, d)
        .into_iter()
        .map(|v| (v as f64 * amplitude) as f32)
        .collect();
    let pe = Tensor::<2>::from_data(TensorData::new(scaled, [n, d]), &x.device());
    x + pe.unsqueeze::<3>() // [1, n, d] broadcast over batch
}
