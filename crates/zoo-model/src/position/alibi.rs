//! ALiBi (Press et al. 2022, "Train Short, Test Long"): no position embedding; the logit of
//! query i for key j gets the bias −m_h·(i − j), with geometric head slopes
//! m_h = 2^(−8(h+1)/H) for H a power of two, and for other H the slopes of the closest power of
//! two 2^k followed by every other slope of 2^(k+1) (the paper's reference code).

use burn::prelude::*;

#[derive(Clone, Debug)]
pub struct Alibi {
    pub slopes: Vec<f32>,
}

fn power_of_two_slopes(n: usize) -> Vec<f64> {
    let start = 2f64.powf(-8.0 / n as f64);
    (0..n).map(|i| start.powi(i as i32 + 1)).collect()
}

impl Alibi {
    pub fn new(n_heads: usize) -> Alibi {
        let slopes = if n_heads.is_power_of_two() {
            power_of_two_slopes(n_heads)
        } else {
            let closest = 1usize << (usize::BITS - 1 - n_heads.leading_zeros());
            let mut s = power_of_two_slopes(closest);
            s.extend(
                power_of_two_slopes(2 * closest)
                    .into_iter()
                    .step_by(2)
                    .take(n_heads - closest),
            );
            s
        };
        Alibi {
            slopes: slopes.into_iter().map(|s| s as f32).collect(),
        }
    }

    /// Bias for queries at positions `q_start..q_start+n_q` against keys `k_start..k_start+n_k`:
    /// [1, heads, n_q, n_k], −m_h·(i − j) (the future part is masked elsewhere).
    pub fn bias(
        &self,
        q_start: usize,
        n_q: usize,
        k_start: usize,
        n_k: usize,
        device: &Device,
    ) -> Tensor<4> {
        let h = self.slopes.len();
        let mut v = Vec::with_capacity(h * n_q * n_k);
        for m in &self.slopes {
            for i in q_start..q_start + n_q {
                for j in k_start..k_start + n_k {
                    v.push(-m * (i as f32 - j as f32));
                }
            }
        }
        Tensor::from_data(TensorData::new(v, [1, h, n_q, n_k]), device)
    }

    /// Bias for arbitrary (query, key) position pairs given as a distance table [.., n_q, n_k]
    /// of i − j values: [1, heads, ..] with the leading 1 for the batch.
    pub fn bias_from_distances<const D: usize>(&self, distances: Tensor<D>) -> Tensor<D> {
        let h = self.slopes.len();
        let device = distances.device();
        let slopes = Tensor::<1>::from_data(TensorData::new(self.slopes.clone(), [h]), &device);
        let mut shape = [1usize; D];
        shape[1] = h;
        distances.mul(slopes.reshape(shape)).neg()
    }
}
