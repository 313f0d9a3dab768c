//! Diagnostics on models whose attention is known in closed form: a softmax layer with zero
//! queries attends uniformly (entropy ln n, S = 1, needle mass = needle length / n), and with
//! ALiBi its weights become the exponential decay λ^{i−j}, λ = e^{−m}, whose sparsity S has a
//! closed form. This checks the model → weights → diagnostics path, not just the formulas.

use burn::module::Param;
use burn::prelude::*;
use zoo_eval::diagnostics::{entropy, exp_decay_sparsity_closed_form, needle_mass, sparsity};
use zoo_model::attention::{SoftmaxAttention, TokenMixer};
use zoo_model::init::Init;
use zoo_model::position::Alibi;
use zoo_model::{MixerConfig, ModelConfig, PositionConfig};

fn zero_query_attention(position: PositionConfig, heads: usize) -> SoftmaxAttention {
    let device = Device::flex();
    let softmax = zoo_model::SoftmaxConfig::default();
    let mixer = MixerConfig::Softmax(softmax.clone());
    let cfg = ModelConfig {
        vocab_size: Some(8),
        d_model: 8 * heads,
        n_heads: heads,
        mixer: mixer.clone(),
        position,
        // Zero query weights give uniform attention only without a query bias.
        bias: false,
        ..ModelConfig::default()
    };
    let mut attn = SoftmaxAttention::new(&softmax, &cfg, &mut Init::new(1, &device));
    attn.query.weight = Param::from_tensor(Tensor::zeros([8 * heads, 8 * heads], &device));
    attn
}

fn weights(attn: &SoftmaxAttention, n: usize, d: usize) -> (Vec<f32>, usize) {
    let x = Tensor::<3>::random(
        [1, n, d],
        burn::tensor::Distribution::Normal(0.0, 1.0),
        &Device::flex(),
    );
    let w = attn.attention_weights(x).expect("softmax has weights");
    let heads = w.dims()[1];
    (w.into_data().try_into_vec_as::<f32>().unwrap(), heads)
}

#[test]
fn uniform_attention_gives_closed_form_diagnostics() {
    let attn = zero_query_attention(PositionConfig::None, 2);
    let n = 40;
    let (w, heads) = weights(&attn, n, 16);
    let needle: Vec<std::ops::Range<usize>> = (10..14).step_by(4).map(|s| s..s + 4).collect();
    for h in 0..heads {
        for i in [0usize, 13, 39] {
            let row = &w[(h * n + i) * n..(h * n + i) * n + i + 1];
            let len = (i + 1) as f64;
            assert!(
                (entropy(row) - len.ln()).abs() < 1e-5,
                "entropy at row {i}: {} vs ln {len}",
                entropy(row)
            );
            assert!(
                (sparsity(row) - 1.0).abs() < 1e-5,
                "S at row {i}: {}",
                sparsity(row)
            );
            let expected = (i + 1).saturating_sub(10).min(4) as f64 / len;
            assert!(
                (needle_mass(row, &needle) - expected).abs() < 1e-5,
                "needle mass at row {i}: {} vs {expected}",
                needle_mass(row, &needle)
            );
        }
    }
}

#[test]
fn alibi_with_zero_queries_is_exponential_decay() {
    let attn = zero_query_attention(PositionConfig::Alibi, 2);
    let slopes = Alibi::new(2).slopes;
    let n = 64;
    let (w, heads) = weights(&attn, n, 16);
    for (h, slope) in slopes.iter().enumerate().take(heads) {
        let lambda = (-(*slope as f64)).exp();
        for i in [7usize, 31, 63] {
            let row = &w[(h * n + i) * n..(h * n + i) * n + i + 1];
            let expected = exp_decay_sparsity_closed_form(lambda, i + 1);
            let got = sparsity(row);
            let rel = (got - expected).abs() / expected;
            assert!(
                rel < 1e-4,
                "head {h} row {i}: S = {got}, closed form {expected} (λ = {lambda}), relative error {rel:.2e}"
            );
        }
    }
}
