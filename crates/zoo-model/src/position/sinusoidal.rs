//! Sinusoidal absolute positions (Vaswani et al. 2017, "Attention Is All You Need", §3.5):
//!
//!   PE(pos, 2i) = sin(pos / 10000^(2i/d)),   PE(pos, 2i+1) = cos(pos / 10000^(2i/d))
//!
//! added to the token embeddings. Defined for every position, so evaluation past the training
//! length runs (and shows how badly the model extrapolates).

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

/// x: [batch, seq, d_model] → x + PE[start..start+seq]
pub fn add(x: Tensor<3>, start: usize) -> Tensor<3> {
    let [_, n, d] = x.dims();
    let pe = Tensor::<2>::from_data(TensorData::new(table(start, n, d), [n, d]), &x.device());
    x + pe.unsqueeze::<3>() // [1, n, d] broadcast over batch
}
