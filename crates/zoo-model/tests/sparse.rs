//! Sliding window (banded) and BigBird (block-gathered) ≡ the f64 dense masked-softmax reference
//! fed the mask from the same pattern function; and the patterns' own properties.

mod common;

use common::*;
use zoo_model::attention::pattern::{BigBirdPattern, WindowPattern, dense_allowed};
use zoo_model::attention::{BigBirdAttention, SlidingWindowAttention, reference};
use zoo_model::init::Init;
use zoo_model::position::Alibi;
use zoo_model::{MixerConfig, ModelConfig, PositionConfig};

const B: usize = 2;
const H: usize = 2;
const DH: usize = 4;

fn model_config(mixer: MixerConfig, position: PositionConfig) -> ModelConfig {
    ModelConfig {
        vocab_size: Some(8),
        d_model: H * DH,
        n_heads: H,
        mixer,
        position,
        ..ModelConfig::default()
    }
}

fn dense_reference(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    n: usize,
    allowed: &dyn Fn(usize, usize) -> bool,
    alibi: Option<&Alibi>,
) -> Vec<f64> {
    let scale = 1.0 / (DH as f64).sqrt();
    let mut out = Vec::new();
    for bh in 0..B * H {
        let h = bh % H;
        let sl = |x: &[f32]| to_f64(&x[bh * n * DH..(bh + 1) * n * DH]);
        let slope = alibi.map_or(0.0, |a| a.slopes[h] as f64);
        let (o, _) = reference::masked_softmax_attention(
            &sl(q),
            &sl(k),
            &sl(v),
            n,
            n,
            DH,
            DH,
            scale,
            allowed,
            |i, j| -slope * (i as f64 - j as f64),
        );
        out.extend(o);
    }
    out
}

#[test]
fn sliding_window_banded_equals_dense_reference() {
    let device = device();
    for (window, dilation, globals) in [(1, 1, 0), (4, 1, 0), (5, 2, 3), (3, 3, 1), (40, 1, 2)] {
        for position in [PositionConfig::None, PositionConfig::Alibi] {
            let config = zoo_model::SlidingWindowConfig {
                window,
                dilation,
                global_tokens: globals,
            };
            let cfg = model_config(MixerConfig::SlidingWindow(config.clone()), position.clone());
            let attn = SlidingWindowAttention::new(&config, &cfg, &mut Init::new(0, &device));
            let alibi = matches!(position, PositionConfig::Alibi).then(|| Alibi::new(H));
            for n in [1, 7, 37, 67] {
                let (q, k, v) = (
                    randn([B, H, n, DH], 1, &device),
                    randn([B, H, n, DH], 2, &device),
                    randn([B, H, n, DH], 3, &device),
                );
                let fast = values(attn.banded(q.clone(), k.clone(), v.clone()));
                let pattern = attn.pattern().clone();
                let expected = dense_reference(
                    &values(q),
                    &values(k),
                    &values(v),
                    n,
                    &|i, j| pattern.allowed(i, j),
                    alibi.as_ref(),
                );
                assert_close(
                    &fast,
                    &expected,
                    1e-5,
                    1e-4,
                    &format!(
                        "window={window} dilation={dilation} globals={globals} n={n} {}",
                        position.kind()
                    ),
                );
            }
        }
    }
}

#[test]
fn bigbird_gathered_equals_dense_reference() {
    let device = device();
    for (block, wb, gb, rb, seed) in [
        (4, 2, 1, 1, 0),
        (3, 1, 2, 2, 5),
        (8, 3, 0, 0, 1),
        (5, 2, 1, 3, 9),
    ] {
        for position in [PositionConfig::None, PositionConfig::Alibi] {
            let bigbird = zoo_model::BigBirdConfig {
                block_size: block,
                window_blocks: wb,
                global_blocks: gb,
                random_blocks: rb,
                seed,
            };
            let cfg = model_config(MixerConfig::Bigbird(bigbird.clone()), position.clone());
            let attn = BigBirdAttention::new(&bigbird, &cfg, &mut Init::new(0, &device));
            let alibi = matches!(position, PositionConfig::Alibi).then(|| Alibi::new(H));
            for n in [1, 9, 40, 67] {
                let (q, k, v) = (
                    randn([B, H, n, DH], 4, &device),
                    randn([B, H, n, DH], 5, &device),
                    randn([B, H, n, DH], 6, &device),
                );
                let fast = values(attn.gathered(q.clone(), k.clone(), v.clone()));
                let pattern = attn.pattern().clone();
                let expected = dense_reference(
                    &values(q),
                    &values(k),
                    &values(v),
                    n,
                    &|i, j| pattern.allowed(i, j),
                    alibi.as_ref(),
                );
                assert_close(
                    &fast,
                    &expected,
                    1e-5,
                    1e-4,
                    &format!(
                        "bigbird b={block} w={wb} g={gb} r={rb} n={n} {}",
                        position.kind()
                    ),
                );
            }
        }
    }
}

#[test]
fn window_pattern_properties() {
    for (window, dilation, globals) in [(1, 1, 0), (4, 2, 3), (7, 1, 1)] {
        let p = WindowPattern {
            window,
            dilation,
            global_tokens: globals,
        };
        let n = 50;
        let m = dense_allowed(n, |i, j| p.allowed(i, j));
        for i in 0..n {
            assert!(m[i * n + i], "self visible at {i}");
            for j in i + 1..n {
                assert!(!p.allowed(i, j), "future key {j} visible from {i}");
            }
            for j in 0..globals.min(i + 1) {
                assert!(m[i * n + j], "global {j} hidden from {i}");
            }
            if i < globals {
                assert!(
                    (0..=i).all(|j| m[i * n + j]),
                    "global query {i} must see every earlier token"
                );
            }
            let visible = (0..=i).filter(|&j| m[i * n + j]).count();
            assert!(visible <= window + globals, "query {i} sees {visible} keys");
        }
    }
}

#[test]
fn bigbird_pattern_properties() {
    let p = BigBirdPattern {
        block_size: 4,
        window_blocks: 2,
        global_blocks: 1,
        random_blocks: 2,
        seed: 3,
    };
    let n = 80;
    for i in 0..n {
        assert!(p.allowed(i, i));
        assert!(
            !(i + 1..n).any(|j| p.allowed(i, j)),
            "future visible from {i}"
        );
        assert!(p.allowed(i, 0), "global block hidden from {i}");
        let blocks = p.key_blocks(i / 4);
        assert!(blocks.len() <= p.max_key_blocks());
    }
    // A pure function of (seed, block): the same after "reload", different for another seed.
    let again = p.clone();
    assert!((0..20).all(|q| p.key_blocks(q) == again.key_blocks(q)));
    let other = BigBirdPattern {
        seed: 4,
        ..p.clone()
    };
    assert!(
        (0..20).any(|q| p.key_blocks(q) != other.key_blocks(q)),
        "seed has no effect"
    );
    // Later blocks draw random blocks from before their window.
    let with_random = (5..20)
        .filter(|&q| p.key_blocks(q).len() == 1 + 2 + 2)
        .count();
    assert!(with_random > 10, "random blocks missing");
}
