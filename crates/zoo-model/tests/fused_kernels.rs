//! The fused flex kernels (causal attention, LayerNorm, GELU) against slow, obviously correct
//! references: an f64 host evaluation of the definition for outputs, f64 central differences of
//! a scalar loss for gradients, and Burn's composed tensor ops under autodiff for both.
//! Sequence lengths straddle the 64-row query tiles (1, 63, 64, 65, 130).

mod common;

use burn::prelude::*;
use burn::tensor::activation::gelu;
use common::{assert_close, composed_attention, randn_vec, tensor, to_f64, values};
use zoo_model::attention::pattern::{BigBirdPattern, WindowPattern};
use zoo_model::kernels::{self, KeyPattern};

fn flex_grad() -> Device {
    Device::flex().autodiff()
}

/// Central differences of `loss` in input `which` at the probed coordinates, in f64.
fn central_differences<const N: usize>(
    base: &[Vec<f64>; N],
    which: usize,
    probes: &[usize],
    step: f64,
    loss: impl Fn(&[Vec<f64>; N]) -> f64,
) -> Vec<f64> {
    probes
        .iter()
        .map(|&i| {
            let (mut plus, mut minus) = (base.clone(), base.clone());
            plus[which][i] += step;
            minus[which][i] -= step;
            (loss(&plus) - loss(&minus)) / (2.0 * step)
        })
        .collect()
}

/// d qkv of the loss Σ output(qkv) · w (the fused kernel's gradient `dqkv`) against f64 central
/// differences of `output`, the f64 definition, at the `probes` coordinates of qkv.
fn assert_dqkv_matches_differences(
    dqkv: &[f32],
    qkv: &[f32],
    w: &[f32],
    probes: &[usize],
    output: impl Fn(&[f64]) -> Vec<f64>,
    what: &str,
) {
    let loss = |x: &[f64]| -> f64 { output(x).iter().zip(w).map(|(o, &w)| o * w as f64).sum() };
    let numeric = central_differences(&[to_f64(qkv)], 0, probes, 1e-5, |x| loss(&x[0]));
    let analytic: Vec<f32> = probes.iter().map(|&i| dqkv[i]).collect();
    assert_close(
        &analytic,
        &numeric,
        5e-5,
        2e-4,
        &format!("dqkv vs f64 differences, {what}"),
    );
}

// ---- causal attention ---------------------------------------------------------------------

struct Case {
    b: usize,
    h: usize,
    n: usize,
    d: usize,
    scale: f64,
    slopes: Vec<f32>,
    pattern: KeyPattern,
}

impl Case {
    /// Whether query i sees key j under the case's pattern (pattern.rs is the ground truth).
    fn allowed(&self, i: usize, j: usize) -> bool {
        match &self.pattern {
            KeyPattern::Causal => j <= i,
            KeyPattern::Window(p) => p.allowed(i, j),
            KeyPattern::BigBird(p) => p.allowed(i, j),
        }
    }
    fn len(&self) -> usize {
        self.b * self.h * self.n * self.d
    }
    fn shape(&self) -> [usize; 4] {
        [self.b, self.h, self.n, self.d]
    }
}

/// Σ (o ∘ w) with o = causal softmax attention, evaluated in f64 from the definition.
fn attention_f64(c: &Case, q: &[f64], k: &[f64], v: &[f64]) -> Vec<f64> {
    let (n, d) = (c.n, c.d);
    let mut out = vec![0.0; c.len()];
    for bh in 0..c.b * c.h {
        let slope = c.slopes.get(bh % c.h).map_or(0.0, |&m| m as f64);
        let at = |t: &[f64], i: usize, x: usize| t[(bh * n + i) * d + x];
        for i in 0..n {
            let keys: Vec<usize> = (0..=i).filter(|&j| c.allowed(i, j)).collect();
            let scores: Vec<f64> = keys
                .iter()
                .map(|&j| {
                    c.scale * (0..d).map(|x| at(q, i, x) * at(k, j, x)).sum::<f64>()
                        - slope * (i - j) as f64
                })
                .collect();
            let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
            let total: f64 = weights.iter().sum();
            for x in 0..d {
                out[(bh * n + i) * d + x] = keys
                    .iter()
                    .zip(&weights)
                    .map(|(&j, w)| w * at(v, j, x))
                    .sum::<f64>()
                    / total;
            }
        }
    }
    out
}

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for &n in &[1usize, 63, 64, 65, 130] {
        cases.push(Case {
            b: 2,
            h: 3,
            n,
            d: 8,
            scale: 0.35,
            slopes: vec![],
            pattern: KeyPattern::Causal,
        });
    }
    cases.push(Case {
        b: 1,
        h: 2,
        n: 97,
        d: 16,
        scale: 0.25,
        slopes: vec![0.5, 0.0625],
        pattern: KeyPattern::Causal,
    });
    // Sliding windows shorter and longer than a 64-row tile, with dilation and globals.
    for (window, dilation, global_tokens, slopes) in [
        (5, 1, 3, vec![]),
        (40, 2, 0, vec![]),
        (70, 1, 2, vec![0.25, 0.5]),
    ] {
        cases.push(Case {
            b: 1,
            h: 2,
            n: 150,
            d: 8,
            scale: 0.35,
            slopes,
            pattern: KeyPattern::Window(WindowPattern {
                window,
                dilation,
                global_tokens,
            }),
        });
    }
    // BigBird with random blocks; the last query block is partial.
    for (block_size, slopes) in [(16, vec![]), (8, vec![0.125, 0.5])] {
        cases.push(Case {
            b: 2,
            h: 2,
            n: 130,
            d: 8,
            scale: 0.35,
            slopes,
            pattern: KeyPattern::BigBird(BigBirdPattern {
                block_size,
                window_blocks: 2,
                global_blocks: 1,
                random_blocks: 2,
                seed: 7,
            }),
        });
    }
    cases
}

#[test]
fn fused_attention_matches_the_definition_and_the_composed_path() {
    for (ci, c) in cases().iter().enumerate() {
        let seed = 100 + ci as u64 * 10;
        let (q, k, v, w) = (
            randn_vec(c.len(), seed, 1.0),
            randn_vec(c.len(), seed + 1, 1.0),
            randn_vec(c.len(), seed + 2, 1.0),
            randn_vec(c.len(), seed + 3, 1.0),
        );
        let what = format!("n={} slopes={:?} {:?}", c.n, c.slopes, c.pattern);
        let want = attention_f64(c, &to_f64(&q), &to_f64(&k), &to_f64(&v));

        // Plain flex (no autodiff) and flex under autodiff share the kernel; check both.
        for device in [Device::flex(), flex_grad()] {
            let o = kernels::sparse_attention(
                tensor(&q, c.shape(), &device),
                tensor(&k, c.shape(), &device),
                tensor(&v, c.shape(), &device),
                c.scale as f32,
                &c.slopes,
                c.pattern.clone(),
            );
            assert_close(&values(o), &want, 2e-5, 1e-4, &format!("output, {what}"));
        }

        // Gradients of Σ o∘w: fused vs composed, both on flex autodiff.
        let grads_of = |fused: bool| -> Vec<Vec<f32>> {
            let device = flex_grad();
            let leaves: Vec<Tensor<4>> = [&q, &k, &v]
                .iter()
                .map(|x| tensor(x, c.shape(), &device).require_grad())
                .collect();
            let (tq, tk, tv) = (leaves[0].clone(), leaves[1].clone(), leaves[2].clone());
            let o = if fused {
                kernels::sparse_attention(tq, tk, tv, c.scale as f32, &c.slopes, c.pattern.clone())
            } else {
                composed_attention(tq, tk, tv, c.scale, &c.slopes, |i, j| c.allowed(i, j))
            };
            let grads = (o * tensor(&w, c.shape(), &device)).sum().backward();
            leaves
                .iter()
                .map(|t| values(t.grad(&grads).unwrap()))
                .collect()
        };
        let (fused, composed) = (grads_of(true), grads_of(false));
        for (name, (f, r)) in ["dq", "dk", "dv"].iter().zip(fused.iter().zip(&composed)) {
            assert_close(
                f,
                &to_f64(r),
                2e-5,
                1e-4,
                &format!("{name} vs composed, {what}"),
            );
        }

        // Gradients against f64 central differences, on the smaller cases (cost n²·d per probe).
        if c.n <= 65 || !matches!(c.pattern, KeyPattern::Causal) {
            let loss = |q: &[f64], k: &[f64], v: &[f64]| -> f64 {
                attention_f64(c, q, k, v)
                    .iter()
                    .zip(&w)
                    .map(|(o, &w)| o * w as f64)
                    .sum()
            };
            let base = [to_f64(&q), to_f64(&k), to_f64(&v)];
            let step = 1e-5;
            for (which, name) in ["dq", "dk", "dv"].iter().enumerate() {
                // A sparse set of coordinates keeps the test fast while touching every row and
                // column (step coprime with d) and every head.
                let stride = if c.n <= 65 { 7 } else { 41 };
                let probes: Vec<usize> = (0..c.len()).step_by(stride).collect();
                let numeric =
                    central_differences(&base, which, &probes, step, |x| loss(&x[0], &x[1], &x[2]));
                let analytic: Vec<f32> = probes.iter().map(|&i| fused[which][i]).collect();
                assert_close(
                    &analytic,
                    &numeric,
                    5e-5,
                    2e-4,
                    &format!("{name} vs f64 differences, {what}"),
                );
            }
        }
    }
}

// ---- causal attention from one fused projection (token-major, RoPE and log-n inside) -------

struct QkvCase {
    /// Batch, query heads, length, head dim, scale, slopes and pattern of the attention.
    attention: Case,
    kv_heads: usize,
    rope: bool,
    log_n_train: Option<usize>,
}

impl QkvCase {
    fn width(&self) -> usize {
        (self.attention.h + 2 * self.kv_heads) * self.attention.d
    }
    fn qkv_shape(&self) -> [usize; 3] {
        [self.attention.b, self.attention.n, self.width()]
    }
    fn out_shape(&self) -> [usize; 3] {
        let c = &self.attention;
        [c.b, c.n, c.h * c.d]
    }
    /// The log-n factor of query i (1 without log-n scaling), from its definition.
    fn factor(&self, i: usize) -> f64 {
        self.log_n_train.map_or(1.0, |train| {
            ((i as f64 + 1.0).ln() / (train as f64).ln()).max(1.0)
        })
    }
    fn spec(&self) -> kernels::QkvAttention {
        let c = &self.attention;
        let (cos, sin) = if self.rope {
            zoo_model::position::Rope::new(c.d, 10_000.0, 1.0, 1.0).host_tables(0, c.n)
        } else {
            (vec![], vec![])
        };
        let query_factors = self
            .log_n_train
            .map(|train| zoo_model::attention::log_n_values(0, c.n, train))
            .unwrap_or_default();
        kernels::QkvAttention {
            heads: c.h,
            kv_heads: self.kv_heads,
            scale: c.scale as f32,
            slopes: c.slopes.clone(),
            positions: kernels::Positions {
                cos,
                sin,
                query_factors,
            },
            pattern: c.pattern.clone(),
        }
    }
}

/// RoPE's rotation of head vector x at position p, in f64 from its definition (half-split,
/// ω_t = 10000^(−2t/d)).
fn rotate_f64(x: &[f64], p: usize) -> Vec<f64> {
    let half = x.len() / 2;
    let mut y = x.to_vec();
    for t in 0..half {
        let angle = p as f64 * 10_000f64.powf(-2.0 * t as f64 / x.len() as f64);
        let (s, c) = angle.sin_cos();
        y[t] = x[t] * c - x[t + half] * s;
        y[t + half] = x[t] * s + x[t + half] * c;
    }
    y
}

/// The definition on qkv [b, n, (h + 2·h_kv)·d]: q̃ = f·R q, k̃ = R k and v per query head
/// (head-major), attended by `attention_f64`, then merged back to token-major [b, n, h·d].
fn qkv_attention_f64(c: &QkvCase, qkv: &[f64]) -> Vec<f64> {
    let a = &c.attention;
    let (n, d, h, width) = (a.n, a.d, a.h, c.width());
    let groups = h / c.kv_heads;
    let (mut q, mut k, mut v) = (vec![0.0; a.len()], vec![0.0; a.len()], vec![0.0; a.len()]);
    for b in 0..a.b {
        for head in 0..h {
            let kv = head / groups;
            for i in 0..n {
                let row = &qkv[(b * n + i) * width..][..width];
                let at = ((b * h + head) * n + i) * d;
                let part = |col: usize| &row[col * d..][..d];
                let (mut qi, mut ki) = (part(head).to_vec(), part(h + kv).to_vec());
                if c.rope {
                    qi = rotate_f64(&qi, i);
                    ki = rotate_f64(&ki, i);
                }
                qi.iter_mut().for_each(|x| *x *= c.factor(i));
                q[at..at + d].copy_from_slice(&qi);
                k[at..at + d].copy_from_slice(&ki);
                v[at..at + d].copy_from_slice(part(h + c.kv_heads + kv));
            }
        }
    }
    let heads = attention_f64(a, &q, &k, &v); // [b, h, n, d]
    permute_heads(&heads, [a.b, h, n, d])
}

/// The same computation in Burn's composed tensor ops: split, rotate, scale, repeat the kv
/// heads, attend (`composed_attention`), merge.
fn qkv_attention_composed(c: &QkvCase, qkv: Tensor<3>) -> Tensor<3> {
    let a = &c.attention;
    let (b, n, h, d, hk) = (a.b, a.n, a.h, a.d, c.kv_heads);
    let device = qkv.device();
    let part = |col: usize, heads: usize| {
        qkv.clone()
            .narrow(2, col * d, heads * d)
            .reshape([b, n, heads, d])
            .swap_dims(1, 2)
    };
    let spec = c.spec();
    let rotate = |x: Tensor<4>| {
        if !c.rope {
            return x;
        }
        let half = d / 2;
        let cos = tensor(&spec.positions.cos, [1, 1, n, half], &device);
        let sin = tensor(&spec.positions.sin, [1, 1, n, half], &device);
        let (x1, x2) = (x.clone().narrow(3, 0, half), x.narrow(3, half, half));
        Tensor::cat(
            vec![
                x1.clone() * cos.clone() - x2.clone() * sin.clone(),
                x1 * sin + x2 * cos,
            ],
            3,
        )
    };
    let factors: Vec<f32> = (0..n).map(|i| c.factor(i) as f32).collect();
    let q = rotate(part(0, h)) * tensor(&factors, [1, 1, n, 1], &device);
    let k = zoo_model::attention::repeat_kv(rotate(part(h, hk)), h / hk);
    let v = zoo_model::attention::repeat_kv(part(h + hk, hk), h / hk);
    composed_attention(q, k, v, a.scale, &a.slopes, |i, j| a.allowed(i, j))
        .swap_dims(1, 2)
        .reshape([b, n, h * d])
}

fn qkv_cases() -> Vec<QkvCase> {
    let case = |b, h, n, d, slopes: Vec<f32>, pattern| Case {
        b,
        h,
        n,
        d,
        scale: 0.35,
        slopes,
        pattern,
    };
    vec![
        // RoPE across the 64-row tiles; a single token.
        QkvCase {
            attention: case(2, 2, 65, 8, vec![], KeyPattern::Causal),
            kv_heads: 2,
            rope: true,
            log_n_train: None,
        },
        QkvCase {
            attention: case(1, 2, 1, 8, vec![], KeyPattern::Causal),
            kv_heads: 1,
            rope: true,
            log_n_train: Some(4),
        },
        // Grouped-query heads (4 query heads on 2 kv heads), RoPE and log-n past its train length.
        QkvCase {
            attention: case(2, 4, 130, 16, vec![], KeyPattern::Causal),
            kv_heads: 2,
            rope: true,
            log_n_train: Some(32),
        },
        // ALiBi with log-n and one kv head.
        QkvCase {
            attention: case(1, 2, 97, 8, vec![0.5, 0.0625], KeyPattern::Causal),
            kv_heads: 1,
            rope: false,
            log_n_train: Some(16),
        },
        // The sparse patterns through the same entry.
        QkvCase {
            attention: case(
                1,
                2,
                150,
                8,
                vec![],
                KeyPattern::Window(WindowPattern {
                    window: 40,
                    dilation: 2,
                    global_tokens: 3,
                }),
            ),
            kv_heads: 2,
            rope: true,
            log_n_train: None,
        },
        QkvCase {
            attention: case(
                2,
                2,
                130,
                8,
                vec![0.125, 0.5],
                KeyPattern::BigBird(BigBirdPattern {
                    block_size: 16,
                    window_blocks: 2,
                    global_blocks: 1,
                    random_blocks: 2,
                    seed: 7,
                }),
            ),
            kv_heads: 1,
            rope: true,
            log_n_train: None,
        },
    ]
}

#[test]
fn fused_qkv_attention_matches_the_definition_and_the_composed_path() {
    for (ci, c) in qkv_cases().iter().enumerate() {
        let a = &c.attention;
        let seed = 700 + ci as u64 * 10;
        let qkv = randn_vec(a.b * a.n * c.width(), seed, 1.0);
        let w = randn_vec(a.len(), seed + 1, 1.0);
        let what = format!(
            "n={} heads {}/{} rope {} log-n {:?} slopes {:?} {:?}",
            a.n, a.h, c.kv_heads, c.rope, c.log_n_train, a.slopes, a.pattern
        );
        let want = qkv_attention_f64(c, &to_f64(&qkv));
        for device in [Device::flex(), flex_grad()] {
            let o = kernels::qkv_attention(tensor(&qkv, c.qkv_shape(), &device), c.spec());
            assert_eq!(o.dims(), c.out_shape());
            assert_close(&values(o), &want, 2e-5, 1e-4, &format!("output, {what}"));
        }

        // d qkv of Σ o∘w: fused vs composed, both on flex autodiff.
        let grad_of = |fused: bool| -> Vec<f32> {
            let device = flex_grad();
            let leaf = tensor(&qkv, c.qkv_shape(), &device).require_grad();
            let o = if fused {
                kernels::qkv_attention(leaf.clone(), c.spec())
            } else {
                qkv_attention_composed(c, leaf.clone())
            };
            let grads = (o * tensor(&w, c.out_shape(), &device)).sum().backward();
            values(leaf.grad(&grads).unwrap())
        };
        let (fused, composed) = (grad_of(true), grad_of(false));
        assert_close(
            &fused,
            &to_f64(&composed),
            2e-5,
            1e-4,
            &format!("dqkv vs composed, {what}"),
        );

        // Against f64 central differences at coordinates that touch every row, head and part.
        let probes: Vec<usize> = (0..qkv.len())
            .step_by(if a.n <= 65 { 7 } else { 43 })
            .collect();
        let output = |x: &[f64]| qkv_attention_f64(c, x);
        assert_dqkv_matches_differences(&fused, &qkv, &w, &probes, output, &what);
    }
}

#[test]
fn fused_attention_is_causal() {
    // Perturbing k/v at position t changes no output before t, and some output at or after t.
    let c = Case {
        b: 1,
        h: 2,
        n: 130,
        d: 8,
        scale: 0.35,
        slopes: vec![],
        pattern: KeyPattern::Causal,
    };
    let device = Device::flex();
    let (q, k, v) = (
        randn_vec(c.len(), 1, 1.0),
        randn_vec(c.len(), 2, 1.0),
        randn_vec(c.len(), 3, 1.0),
    );
    let run = |k: &[f32], v: &[f32]| {
        values(kernels::causal_attention(
            tensor(&q, c.shape(), &device),
            tensor(k, c.shape(), &device),
            tensor(v, c.shape(), &device),
            0.35,
            &[],
        ))
    };
    let base = run(&k, &v);
    let t = 70;
    let (mut k2, mut v2) = (k.clone(), v.clone());
    for h in 0..c.h {
        for x in 0..c.d {
            k2[(h * c.n + t) * c.d + x] += 1.0;
            v2[(h * c.n + t) * c.d + x] -= 2.0;
        }
    }
    let moved = run(&k2, &v2);
    for h in 0..c.h {
        for i in 0..c.n {
            let row = |o: &[f32]| o[(h * c.n + i) * c.d..][..c.d].to_vec();
            let changed = row(&base) != row(&moved);
            assert_eq!(changed, i >= t, "head {h} row {i}: changed = {changed}");
        }
    }
}

// ---- LayerNorm and GELU --------------------------------------------------------------------

#[test]
fn fused_layer_norm_matches_the_definition_and_burn() {
    // Rows straddle the 64-row tasks; widths with and without a tail past the 16-lane sums.
    for d in [48, 37] {
        layer_norm_case(150, d);
    }
}

fn layer_norm_case(rows: usize, d: usize) {
    let eps = 1e-5;
    let x: Vec<f32> = randn_vec(rows * d, 7, 3.0)
        .iter()
        .map(|v| v + 1.5)
        .collect();
    let gamma = randn_vec(d, 8, 1.0);
    let beta = randn_vec(d, 9, 1.0);
    let w = randn_vec(rows * d, 10, 1.0);

    let (gamma_ref, beta_ref) = (&gamma, &beta);
    let want: Vec<f64> = x
        .chunks(d)
        .flat_map(|row| {
            let m = row.iter().map(|&v| v as f64).sum::<f64>() / d as f64;
            let var = row.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / d as f64;
            let r = 1.0 / (var + eps).sqrt();
            row.iter()
                .enumerate()
                .map(move |(i, &v)| (v as f64 - m) * r * gamma_ref[i] as f64 + beta_ref[i] as f64)
                .collect::<Vec<_>>()
        })
        .collect();

    let run = |fused: bool| -> (Vec<f32>, Vec<Vec<f32>>) {
        let device = flex_grad();
        let tx = tensor(&x, [rows, d], &device).require_grad();
        let tg = tensor(&gamma, [d], &device).require_grad();
        let tb = tensor(&beta, [d], &device).require_grad();
        let y = if fused {
            kernels::layer_norm(tx.clone(), tg.clone(), tb.clone(), eps as f32)
        } else {
            let mean = tx.clone().mean_dim(1);
            let centred = tx.clone() - mean;
            let var = centred.clone().square().mean_dim(1);
            centred / (var + eps).sqrt() * tg.clone().unsqueeze::<2>() + tb.clone().unsqueeze::<2>()
        };
        let grads = (y.clone() * tensor(&w, [rows, d], &device))
            .sum()
            .backward();
        let g = vec![
            values(tx.grad(&grads).unwrap()),
            values(tg.grad(&grads).unwrap()),
            values(tb.grad(&grads).unwrap()),
        ];
        (values(y), g)
    };
    let (y, fused) = run(true);
    let (_, composed) = run(false);
    assert_close(
        &y,
        &want,
        1e-5,
        1e-5,
        &format!("layer norm output vs f64, d={d}"),
    );
    for (name, (f, r)) in ["dx", "dgamma", "dbeta"]
        .iter()
        .zip(fused.iter().zip(&composed))
    {
        assert_close(
            f,
            &to_f64(r),
            1e-4,
            1e-4,
            &format!("layer norm {name} vs composed, d={d}"),
        );
    }
    // dβ = Σ_rows w exactly, dγ = Σ_rows w∘x̂: check dβ against f64.
    let dbeta_want: Vec<f64> = (0..d)
        .map(|i| (0..rows).map(|r| w[r * d + i] as f64).sum())
        .collect();
    assert_close(
        &fused[2],
        &dbeta_want,
        1e-4,
        1e-5,
        &format!("layer norm dbeta vs f64, d={d}"),
    );
}

#[test]
fn fused_gelu_matches_the_definition_and_burn() {
    let n = 40_000; // several parallel chunks
    let x: Vec<f32> = randn_vec(n, 21, 3.0);
    let w = randn_vec(n, 22, 1.0);
    // f64 Φ from the erfc continued fraction is not in std; integrate the density instead.
    let cdf = |x: f64| {
        let steps = 4000;
        let lo = -12.0f64;
        let h = (x - lo) / steps as f64;
        let pdf = |t: f64| (-0.5 * t * t).exp() / (2.0 * std::f64::consts::PI).sqrt();
        let mut s = pdf(lo) + pdf(x);
        for i in 1..steps {
            s += pdf(lo + i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
        }
        s * h / 3.0
    };
    let probes: Vec<usize> = (0..n).step_by(97).collect();
    let want: Vec<f64> = probes
        .iter()
        .map(|&i| x[i] as f64 * cdf(x[i] as f64))
        .collect();
    let dwant: Vec<f64> = probes
        .iter()
        .map(|&i| {
            let v = x[i] as f64;
            let pdf = (-0.5 * v * v).exp() / (2.0 * std::f64::consts::PI).sqrt();
            w[i] as f64 * (cdf(v) + v * pdf)
        })
        .collect();

    let run = |fused: bool| -> (Vec<f32>, Vec<f32>) {
        let device = flex_grad();
        let tx = tensor(&x, [n], &device).require_grad();
        let y = if fused {
            kernels::gelu(tx.clone())
        } else {
            gelu(tx.clone())
        };
        let grads = (y.clone() * tensor(&w, [n], &device)).sum().backward();
        (values(y), values(tx.grad(&grads).unwrap()))
    };
    let (y, dx) = run(true);
    let (y_burn, dx_burn) = run(false);
    let pick = |v: &[f32]| probes.iter().map(|&i| v[i]).collect::<Vec<_>>();
    assert_close(&pick(&y), &want, 2e-6, 1e-6, "gelu output vs f64");
    assert_close(&pick(&dx), &dwant, 2e-6, 1e-5, "gelu gradient vs f64");
    assert_close(&y, &to_f64(&y_burn), 2e-6, 1e-6, "gelu output vs burn");
    assert_close(&dx, &to_f64(&dx_burn), 2e-6, 1e-5, "gelu gradient vs burn");
}

// ---- chunked linear attention ---------------------------------------------------------------

/// Swap the second and third axes of a row-major [a, b, c, width] host array.
fn permute_heads<T: Copy + Default>(x: &[T], [a, b, c, width]: [usize; 4]) -> Vec<T> {
    let mut out = vec![T::default(); x.len()];
    for i in 0..a {
        for j in 0..b {
            for l in 0..c {
                let from = ((i * b + j) * c + l) * width;
                let to = ((i * c + l) * b + j) * width;
                out[to..to + width].copy_from_slice(&x[from..from + width]);
            }
        }
    }
    out
}

/// o_t = Σ_{s≤t} (q_t·k_s) v_s [/ Σ_{s≤t} q_t·k_s], from the definition in f64.
fn linear_f64(
    [bh, n, f, dv]: [usize; 4],
    q: &[f64],
    k: &[f64],
    v: &[f64],
    normalize: bool,
) -> Vec<f64> {
    let mut out = vec![0.0; bh * n * dv];
    for h in 0..bh {
        for t in 0..n {
            let mut den = 0.0;
            for s in 0..=t {
                let w: f64 = (0..f)
                    .map(|x| q[(h * n + t) * f + x] * k[(h * n + s) * f + x])
                    .sum();
                den += w;
                for x in 0..dv {
                    out[(h * n + t) * dv + x] += w * v[(h * n + s) * dv + x];
                }
            }
            if normalize {
                for x in 0..dv {
                    out[(h * n + t) * dv + x] /= den.max(1e-6);
                }
            }
        }
    }
    out
}

#[test]
fn fused_linear_attention_matches_the_definition_and_the_composed_path() {
    use zoo_model::attention::linear::chunked;
    let (b, h, f, dv) = (2, 2, 6, 5); // f ≠ dv so a transposed state would not fit
    for &(n, chunk) in &[(1usize, 16usize), (16, 16), (67, 16), (130, 64)] {
        for normalize in [true, false] {
            let what = format!("n={n} chunk={chunk} normalize={normalize}");
            let seed = 500 + n as u64 + chunk as u64;
            // Normalised attention needs positive features (as φ = elu+1 gives).
            let feature = |seed| -> Vec<f32> {
                let v = randn_vec(b * h * n * f, seed, 1.0);
                if normalize {
                    v.iter().map(|x| x.abs() + 0.05).collect()
                } else {
                    v
                }
            };
            let (q, k) = (feature(seed), feature(seed + 1));
            let v = randn_vec(b * h * n * dv, seed + 2, 1.0);
            let w = randn_vec(b * h * n * dv, seed + 3, 1.0);
            let dims = [b * h, n, f, dv];
            let want = linear_f64(dims, &to_f64(&q), &to_f64(&k), &to_f64(&v), normalize);

            let run = |fused: bool| -> (Vec<f32>, Vec<Vec<f32>>) {
                let device = flex_grad();
                let tq = tensor(&q, [b, h, n, f], &device).require_grad();
                let tk = tensor(&k, [b, h, n, f], &device).require_grad();
                let tv = tensor(&v, [b, h, n, dv], &device).require_grad();
                let o = if fused {
                    kernels::linear_attention(
                        tq.clone(),
                        tk.clone(),
                        tv.clone(),
                        chunk,
                        normalize,
                        1e-6,
                    )
                } else {
                    let s0 = Tensor::zeros([b, h, f, dv], &device);
                    let z0 = Tensor::zeros([b, h, f], &device);
                    chunked(tq.clone(), tk.clone(), tv.clone(), s0, z0, chunk, normalize).0
                };
                let grads = (o.clone() * tensor(&w, [b, h, n, dv], &device))
                    .sum()
                    .backward();
                let g = [&tq, &tk, &tv]
                    .iter()
                    .map(|t| values(t.grad(&grads).unwrap()))
                    .collect();
                (values(o), g)
            };
            let (o, fused) = run(true);
            let (_, composed) = run(false);
            assert_close(
                &o,
                &want,
                1e-5,
                1e-4,
                &format!("linear output vs f64, {what}"),
            );

            // Token-major layout [b, n, h, ·]: the same numbers, permuted — on one thread (a task
            // walks both heads of a sequence) and on four (a task per head: fewer sequences than
            // threads).
            for threads in [1, 4] {
                with_threads(threads, || {
                    let to_tm = |x: &[f32], width: usize| permute_heads(x, [b, h, n, width]);
                    let device = flex_grad();
                    let tq = tensor(&to_tm(&q, f), [b, n, h, f], &device).require_grad();
                    let tk = tensor(&to_tm(&k, f), [b, n, h, f], &device).require_grad();
                    let tv = tensor(&to_tm(&v, dv), [b, n, h, dv], &device).require_grad();
                    let o_tm = kernels::linear_attention_token_major(
                        tq.clone(),
                        tk.clone(),
                        tv.clone(),
                        chunk,
                        normalize,
                        1e-6,
                    );
                    let w_tm = tensor(&to_tm(&w, dv), [b, n, h, dv], &device);
                    let grads = (o_tm.clone() * w_tm).sum().backward();
                    let back = |x: Vec<f32>, width: usize| permute_heads(&x, [b, n, h, width]);
                    let what_tm = format!("token-major, {threads} threads, {what}");
                    assert_close(&back(values(o_tm), dv), &to_f64(&o), 1e-6, 1e-6, &what_tm);
                    for (name, (t, width, head_major)) in ["dq", "dk", "dv"].iter().zip([
                        (&tq, f, &fused[0]),
                        (&tk, f, &fused[1]),
                        (&tv, dv, &fused[2]),
                    ]) {
                        let g = back(values(t.grad(&grads).unwrap()), width);
                        assert_close(
                            &g,
                            &to_f64(head_major),
                            1e-6,
                            1e-6,
                            &format!("{name} {what_tm}"),
                        );
                    }
                });
            }
            for (name, (a, r)) in ["dq", "dk", "dv"].iter().zip(fused.iter().zip(&composed)) {
                assert_close(
                    a,
                    &to_f64(r),
                    1e-4,
                    1e-4,
                    &format!("linear {name} vs composed, {what}"),
                );
            }

            if n <= 67 {
                let loss = |q: &[f64], k: &[f64], v: &[f64]| -> f64 {
                    linear_f64(dims, q, k, v, normalize)
                        .iter()
                        .zip(&w)
                        .map(|(o, &w)| o * w as f64)
                        .sum()
                };
                let base = [to_f64(&q), to_f64(&k), to_f64(&v)];
                let step = 1e-6;
                for (which, name) in ["dq", "dk", "dv"].iter().enumerate() {
                    let probes: Vec<usize> = (0..base[which].len()).step_by(5).collect();
                    let numeric = central_differences(&base, which, &probes, step, |x| {
                        loss(&x[0], &x[1], &x[2])
                    });
                    let analytic: Vec<f32> = probes.iter().map(|&i| fused[which][i]).collect();
                    assert_close(
                        &analytic,
                        &numeric,
                        1e-4,
                        5e-4,
                        &format!("linear {name} vs f64 differences, {what}"),
                    );
                }
            }
        }
    }
}

/// `run` inside a rayon pool of `threads` threads (the kernels size their parallel tasks by the
/// pool they run in).
fn with_threads<R: Send>(threads: usize, run: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("a rayon pool")
        .install(run)
}

// ---- elu + 1 and the masked cross-entropy -----------------------------------------------------

/// The definition of elu + 1 linear attention from one fused projection qkv
/// [b, n, h·(2f + dv)] in f64: φ(x) = x + 1 (x > 0) or eˣ on the q and k columns, then
/// `linear_f64` per head, merged back to [b, n, h·dv].
fn linear_qkv_f64([b, h, n, f, dv]: [usize; 5], qkv: &[f64], normalize: bool) -> Vec<f64> {
    let row = h * (2 * f + dv);
    let phi = |x: f64| if x > 0.0 { x + 1.0 } else { x.exp() };
    let (mut q, mut k, mut v) = (vec![], vec![], vec![]);
    for bi in 0..b {
        for head in 0..h {
            for t in 0..n {
                let r = &qkv[(bi * n + t) * row..][..row];
                q.extend(r[head * f..][..f].iter().map(|&x| phi(x)));
                k.extend(r[(h + head) * f..][..f].iter().map(|&x| phi(x)));
                v.extend_from_slice(&r[2 * h * f + head * dv..][..dv]);
            }
        }
    }
    let heads = linear_f64([b * h, n, f, dv], &q, &k, &v, normalize); // [b, h, n, dv]
    permute_heads(&heads, [b, h, n, dv])
}

#[test]
fn fused_linear_attention_from_one_projection_matches_the_definition_and_the_composed_path() {
    use zoo_model::attention::linear::chunked;
    // f ≠ dv, so a q/k/v column mix-up cannot pass.
    let (b, h, f, dv) = (2, 2, 8, 6);
    let row = h * (2 * f + dv);
    for (ci, (n, chunk)) in [(1usize, 16usize), (37, 16), (130, 64)]
        .into_iter()
        .enumerate()
    {
        for normalize in [true, false] {
            let what = format!("n={n} chunk={chunk} normalize={normalize}");
            let seed = 900 + ci as u64 * 10 + normalize as u64;
            let qkv = randn_vec(b * n * row, seed, 1.0);
            let w = randn_vec(b * n * h * dv, seed + 1, 1.0);
            let set = kernels::QkvSettings {
                heads: h,
                feature_dim: f,
                chunk,
                normalize,
                eps: 1e-6,
            };
            let dims = [b, h, n, f, dv];
            let want = linear_qkv_f64(dims, &to_f64(&qkv), normalize);
            // On one thread (a task walks both heads of a sequence, chunk by chunk) and on four
            // (a task per head: fewer sequences than threads).
            for threads in [1, 4] {
                with_threads(threads, || {
                    let what = format!("{what}, {threads} threads");
                    for device in [Device::flex(), flex_grad()] {
                        let o =
                            kernels::linear_attention_qkv(tensor(&qkv, [b, n, row], &device), set);
                        assert_eq!(o.dims(), [b, n, h * dv]);
                        assert_close(&values(o), &want, 1e-5, 1e-4, &format!("output, {what}"));
                    }

                    // d qkv of Σ o∘w: the kernel against Burn's composed ops (elu + 1 as
                    // max(x, 0) + e^min(x, 0), the composed chunked form), both on flex autodiff.
                    let grad_of = |fused: bool| -> Vec<f32> {
                        let device = flex_grad();
                        let leaf = tensor(&qkv, [b, n, row], &device).require_grad();
                        let o = if fused {
                            kernels::linear_attention_qkv(leaf.clone(), set)
                        } else {
                            let heads = |col: usize, width: usize| {
                                leaf.clone()
                                    .narrow(2, col, h * width)
                                    .reshape([b, n, h, width])
                                    .swap_dims(1, 2)
                            };
                            let phi =
                                |x: Tensor<4>| x.clone().clamp_min(0.0) + x.clamp_max(0.0).exp();
                            let (q, k, v) =
                                (phi(heads(0, f)), phi(heads(h * f, f)), heads(2 * h * f, dv));
                            let s0 = Tensor::zeros([b, h, f, dv], &device);
                            let z0 = Tensor::zeros([b, h, f], &device);
                            chunked(q, k, v, s0, z0, chunk, normalize)
                                .0
                                .swap_dims(1, 2)
                                .reshape([b, n, h * dv])
                        };
                        let grads = (o * tensor(&w, [b, n, h * dv], &device)).sum().backward();
                        values(leaf.grad(&grads).unwrap())
                    };
                    let fused = grad_of(true);
                    assert_close(
                        &fused,
                        &to_f64(&grad_of(false)),
                        2e-5,
                        1e-4,
                        &format!("dqkv vs composed, {what}"),
                    );
                    if n <= 37 {
                        let probes: Vec<usize> = (0..qkv.len()).step_by(5).collect();
                        let output = |x: &[f64]| linear_qkv_f64(dims, x, normalize);
                        assert_dqkv_matches_differences(&fused, &qkv, &w, &probes, output, &what);
                    }
                });
            }
        }
    }
}

#[test]
fn fused_elu_plus_one_matches_the_definition_and_burn() {
    let n = 40_000;
    let x = randn_vec(n, 31, 2.0);
    let w = randn_vec(n, 32, 1.0);
    let want: Vec<f64> = x
        .iter()
        .map(|&v| {
            if v > 0.0 {
                v as f64 + 1.0
            } else {
                (v as f64).exp()
            }
        })
        .collect();
    let dwant: Vec<f64> = x
        .iter()
        .zip(&w)
        .map(|(&v, &g)| g as f64 * if v > 0.0 { 1.0 } else { (v as f64).exp() })
        .collect();
    let run = |fused: bool| -> (Vec<f32>, Vec<f32>) {
        let device = flex_grad();
        let tx = tensor(&x, [n], &device).require_grad();
        let y = if fused {
            kernels::elu_plus_one(tx.clone())
        } else {
            tx.clone().clamp_min(0.0) + tx.clone().clamp_max(0.0).exp()
        };
        let grads = (y.clone() * tensor(&w, [n], &device)).sum().backward();
        (values(y), values(tx.grad(&grads).unwrap()))
    };
    let ((y, dx), (y_burn, dx_burn)) = (run(true), run(false));
    assert_close(&y, &want, 1e-6, 1e-6, "elu+1 output vs f64");
    assert_close(&dx, &dwant, 1e-6, 1e-6, "elu+1 gradient vs f64");
    assert_close(&y, &to_f64(&y_burn), 1e-6, 1e-6, "elu+1 output vs burn");
    assert_close(&dx, &to_f64(&dx_burn), 1e-6, 1e-6, "elu+1 gradient vs burn");
}

#[test]
fn fused_cross_entropy_matches_the_definition_and_the_composed_loss() {
    let (b, n, vocab) = (3, 50, 37); // 150 rows straddle the 32-row tasks
    let logits = randn_vec(b * n * vocab, 41, 3.0);
    let targets: Vec<i64> = (0..b * n).map(|i| ((i * 7919) % vocab) as i64).collect();
    // A loss mask with zeros (prompt positions) and a non-binary weight.
    let mask: Vec<f32> = (0..b * n)
        .map(|i| match i % 5 {
            0 => 0.0,
            1 => 0.5,
            _ => 1.0,
        })
        .collect();
    let loss_f64 = |x: &[f64]| -> f64 {
        let total: f64 = mask.iter().map(|&m| m as f64).sum::<f64>().max(1.0);
        (0..b * n)
            .map(|i| {
                let row = &x[i * vocab..][..vocab];
                let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let lse = max + row.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
                mask[i] as f64 * (lse - row[targets[i] as usize])
            })
            .sum::<f64>()
            / total
    };
    // The gradient of `loss_scale` · L (the fused backward scales the gradient its forward made
    // for 1).
    let run = |device: Device, loss_scale: f32| -> (Vec<f32>, Vec<f32>) {
        let tl = tensor(&logits, [b, n, vocab], &device).require_grad();
        let tt = Tensor::<2, Int>::from_data(TensorData::new(targets.clone(), [b, n]), &device);
        let tm = tensor(&mask, [b, n], &device);
        let loss = zoo_model::masked_cross_entropy(tl.clone(), tt, tm);
        let grads = if loss_scale == 1.0 {
            loss.clone().backward()
        } else {
            (loss.clone() * loss_scale).backward()
        };
        (values(loss), values(tl.grad(&grads).unwrap()))
    };
    // flex takes the fused kernel; ndarray the composed log-softmax path.
    #[allow(deprecated)]
    let ((loss, dx), (loss_ref, dx_ref)) = (
        run(flex_grad(), 1.0),
        run(Device::ndarray().autodiff(), 1.0),
    );
    #[allow(deprecated)]
    let (dx_scaled, dx_scaled_ref) = (
        run(flex_grad(), -2.5).1,
        run(Device::ndarray().autodiff(), -2.5).1,
    );
    assert_close(
        &dx_scaled,
        &to_f64(&dx_scaled_ref),
        1e-7,
        1e-5,
        "cross-entropy gradient of −2.5·L vs composed",
    );
    let base = to_f64(&logits);
    assert_close(
        &loss,
        &[loss_f64(&base)],
        1e-6,
        1e-6,
        "cross-entropy vs f64",
    );
    assert_close(
        &loss,
        &to_f64(&loss_ref),
        1e-6,
        1e-6,
        "cross-entropy vs composed",
    );
    assert_close(
        &dx,
        &to_f64(&dx_ref),
        1e-7,
        1e-5,
        "cross-entropy gradient vs composed",
    );
    let probes: Vec<usize> = (0..base.len()).step_by(13).collect();
    let step = 1e-6;
    let numeric = central_differences(&[base], 0, &probes, step, |x| loss_f64(&x[0]));
    let analytic: Vec<f32> = probes.iter().map(|&i| dx[i]).collect();
    assert_close(
        &analytic,
        &numeric,
        1e-7,
        1e-4,
        "cross-entropy gradient vs f64 differences",
    );
}

// ---- RWKV-6 WKV recurrence --------------------------------------------------------------------

#[test]
fn fused_wkv_matches_the_definition_and_the_composed_chunked_form() {
    use zoo_model::attention::{reference, rwkv};
    let (b, h, dk, dv) = (2, 2, 4, 5); // dk ≠ dv so a transposed state would not fit
    for &n in &[1usize, 63, 64, 65, 130] {
        // spread 0.5: moderate decays; 3: w from ≈ 1 to ≈ e^−20 (the clamp the model applies).
        for spread in [0.5f32, 3.0] {
            let what = format!("n={n} spread={spread}");
            let seed = 900 + n as u64;
            let r = randn_vec(b * h * n * dk, seed, 1.0);
            let k = randn_vec(b * h * n * dk, seed + 1, 1.0);
            let v = randn_vec(b * h * n * dv, seed + 2, 1.0);
            let lw: Vec<f32> = randn_vec(b * h * n * dk, seed + 3, spread as f64)
                .iter()
                .map(|e| (-e.exp()).max(rwkv::LOG_W_MIN as f32))
                .collect();
            let u = randn_vec(h * dk, seed + 4, 1.0);
            let w = randn_vec(b * h * n * dv, seed + 5, 1.0);

            let loss_f64 = |r: &[f64], k: &[f64], v: &[f64], lw: &[f64], u: &[f64]| -> Vec<f64> {
                let mut out = Vec::with_capacity(b * h * n * dv);
                for bh in 0..b * h {
                    let hk = |t: &[f64]| t[bh * n * dk..][..n * dk].to_vec();
                    let (o, _) = reference::wkv_recurrent(
                        &hk(r),
                        &hk(k),
                        &v[bh * n * dv..][..n * dv],
                        &hk(lw),
                        &u[(bh % h) * dk..][..dk],
                        n,
                        dk,
                        dv,
                        &vec![0.0; dk * dv],
                    );
                    out.extend(o);
                }
                out
            };
            let base = [to_f64(&r), to_f64(&k), to_f64(&v), to_f64(&lw), to_f64(&u)];
            let want = loss_f64(&base[0], &base[1], &base[2], &base[3], &base[4]);

            let run = |fused: bool| -> (Vec<f32>, Vec<Vec<f32>>) {
                let device = flex_grad();
                let leaf = |x: &[f32], shape: [usize; 4]| tensor(x, shape, &device).require_grad();
                let (tr, tk, tlw) = (
                    leaf(&r, [b, h, n, dk]),
                    leaf(&k, [b, h, n, dk]),
                    leaf(&lw, [b, h, n, dk]),
                );
                let tv = leaf(&v, [b, h, n, dv]);
                let tu = tensor(&u, [h, dk], &device).require_grad();
                let o = if fused {
                    kernels::wkv(tr.clone(), tk.clone(), tv.clone(), tlw.clone(), tu.clone())
                } else {
                    let s0 = Tensor::zeros([b, h, dk, dv], &device);
                    rwkv::wkv_chunked(
                        tr.clone(),
                        tk.clone(),
                        tv.clone(),
                        tlw.clone(),
                        tu.clone(),
                        s0,
                        16,
                    )
                    .0
                };
                let grads = (o.clone() * tensor(&w, [b, h, n, dv], &device))
                    .sum()
                    .backward();
                let mut g: Vec<Vec<f32>> = [&tr, &tk, &tv, &tlw]
                    .iter()
                    .map(|t| values(t.grad(&grads).unwrap()))
                    .collect();
                g.push(values(tu.grad(&grads).unwrap()));
                (values(o), g)
            };
            let (o, fused) = run(true);
            let (_, composed) = run(false);
            assert_close(&o, &want, 1e-5, 1e-4, &format!("wkv output vs f64, {what}"));
            for (name, (a, c)) in ["dr", "dk", "dv", "dlog_w", "du"]
                .iter()
                .zip(fused.iter().zip(&composed))
            {
                assert_close(
                    a,
                    &to_f64(c),
                    2e-4,
                    1e-3,
                    &format!("wkv {name} vs composed, {what}"),
                );
            }
            if n <= 65 {
                let loss = |x: &[Vec<f64>; 5]| -> f64 {
                    loss_f64(&x[0], &x[1], &x[2], &x[3], &x[4])
                        .iter()
                        .zip(&w)
                        .map(|(o, &w)| o * w as f64)
                        .sum()
                };
                let step = 1e-6;
                for (which, name) in ["dr", "dk", "dv", "dlog_w", "du"].iter().enumerate() {
                    let probes: Vec<usize> = (0..base[which].len()).step_by(3).collect();
                    let numeric = central_differences(&base, which, &probes, step, loss);
                    let analytic: Vec<f32> = probes.iter().map(|&i| fused[which][i]).collect();
                    assert_close(
                        &analytic,
                        &numeric,
                        1e-4,
                        5e-4,
                        &format!("wkv {name} vs f64 differences, {what}"),
                    );
                }
            }
        }
    }
}

// ---- gated delta rule (Gated DeltaNet; Mamba-2 without the delta correction) -------------------

/// Sizes of a gated-delta case: [batch, heads, seq, dk, dv].
type DeltaDims = [usize; 5];

/// Realistic inputs q, k, v, β, log α (head-major): k L2-normalised per token, β = σ(·) ∈ (0, 1),
/// log α = −2σ(·) ∈ (−2, 0).
fn gated_delta_inputs([b, h, n, dk, dv]: DeltaDims, seed: u64) -> [Vec<f32>; 5] {
    let sigmoid = |x: f32| 1.0 / (1.0 + (-x).exp());
    let q = randn_vec(b * h * n * dk, seed, 1.0);
    let mut k = randn_vec(b * h * n * dk, seed + 1, 1.0);
    for row in k.chunks_mut(dk) {
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
        row.iter_mut().for_each(|x| *x /= norm);
    }
    let v = randn_vec(b * h * n * dv, seed + 2, 1.0);
    let beta = randn_vec(b * h * n, seed + 3, 1.5)
        .into_iter()
        .map(sigmoid)
        .collect();
    let log_alpha = randn_vec(b * h * n, seed + 4, 1.5)
        .into_iter()
        .map(|x| -2.0 * sigmoid(x))
        .collect();
    [q, k, v, beta, log_alpha]
}

/// o from `reference::gated_delta_recurrent`, head by head, in f64.
fn gated_delta_f64([b, h, n, dk, dv]: DeltaDims, x: &[Vec<f64>; 5], delta: bool) -> Vec<f64> {
    use zoo_model::attention::reference;
    let [q, k, v, beta, log_alpha] = x;
    (0..b * h)
        .flat_map(|i| {
            let keys = |t: &[f64]| t[i * n * dk..][..n * dk].to_vec();
            reference::gated_delta_recurrent(
                &keys(q),
                &keys(k),
                &v[i * n * dv..][..n * dv],
                &beta[i * n..][..n],
                &log_alpha[i * n..][..n],
                n,
                dk,
                dv,
                &vec![0.0; dk * dv],
                delta,
            )
            .0
        })
        .collect()
}

/// The composed path: the recurrence token by token in Burn tensor ops, state [b, h, dk, dv].
fn gated_delta_composed(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    beta: Tensor<3>,
    log_alpha: Tensor<3>,
    delta: bool,
) -> Tensor<4> {
    let [b, h, n, dk] = q.dims();
    let dv = v.dims()[3];
    let mut s = Tensor::<4>::zeros([b, h, dk, dv], &q.device());
    let mut outs = Vec::with_capacity(n);
    for t in 0..n {
        let q_t = q.clone().narrow(2, t, 1); // [b, h, 1, dk]
        let k_t = k.clone().narrow(2, t, 1); // [b, h, 1, dk]
        let v_t = v.clone().narrow(2, t, 1); // [b, h, 1, dv]
        let beta_t: Tensor<4> = beta.clone().narrow(2, t, 1).unsqueeze_dim(3); // [b, h, 1, 1]
        let alpha_t: Tensor<4> = log_alpha.clone().narrow(2, t, 1).exp().unsqueeze_dim(3);
        // u = β (v − α Sᵀk) with the delta correction, β v without.
        let target = if delta {
            v_t - k_t.clone().matmul(s.clone()) * alpha_t.clone()
        } else {
            v_t
        };
        s = s * alpha_t + k_t.swap_dims(2, 3).matmul(target * beta_t);
        outs.push(q_t.matmul(s.clone())); // [b, h, 1, dv]
    }
    Tensor::cat(outs, 2)
}

/// The five inputs as Burn tensors: q, k [b, h, n, dk], v [b, h, n, dv], β, log α [b, h, n].
/// With `token_major`, the data is laid out [b, n, h, ·] and viewed back with a transpose (a
/// strided, non-contiguous tensor, as a mixer's head split gives).
fn gated_delta_tensors(
    [b, h, n, dk, dv]: DeltaDims,
    x: &[Vec<f32>; 5],
    device: &Device,
    token_major: bool,
) -> (Tensor<4>, Tensor<4>, Tensor<4>, Tensor<3>, Tensor<3>) {
    let four = |x: &[f32], width: usize| -> Tensor<4> {
        if token_major {
            let t = tensor(
                &permute_heads(x, [b, h, n, width]),
                [b, n, h, width],
                device,
            );
            t.swap_dims(1, 2)
        } else {
            tensor(x, [b, h, n, width], device)
        }
    };
    let three = |x: &[f32]| -> Tensor<3> { four(x, 1).reshape([b, h, n]) };
    (
        four(&x[0], dk),
        four(&x[1], dk),
        four(&x[2], dv),
        three(&x[3]),
        three(&x[4]),
    )
}

#[test]
fn fused_gated_delta_matches_the_definition_and_the_composed_recurrence() {
    const NAMES: [&str; 5] = ["dq", "dk", "dv", "dbeta", "dlog_alpha"];
    let mut cases: Vec<DeltaDims> = [1usize, 63, 64, 65, 130]
        .iter()
        .map(|&n| [2, 2, n, 8, 8])
        .collect();
    cases.push([1, 3, 70, 6, 10]); // dk ≠ dv so a transposed state would not fit
    for dims in cases {
        let [b, h, n, _, dv] = dims;
        for delta in [true, false] {
            let what = format!("dims={dims:?} delta={delta}");
            let x = gated_delta_inputs(dims, 1300 + n as u64 + dims[3] as u64);
            let w = randn_vec(b * h * n * dv, 1399 + n as u64, 1.0);
            let base = x.each_ref().map(|x| to_f64(x));
            let want = gated_delta_f64(dims, &base, delta);

            // Plain flex and flex under autodiff (untracked), from strided and contiguous tensors.
            for (device, token_major) in [(Device::flex(), true), (flex_grad(), false)] {
                let (q, k, v, beta, la) = gated_delta_tensors(dims, &x, &device, token_major);
                let o = kernels::gated_delta(q, k, v, beta, la, delta);
                assert_close(
                    &values(o),
                    &want,
                    5e-6,
                    2e-5,
                    &format!("gated delta output vs f64, {what}"),
                );
            }

            let run = |fused: bool| -> (Vec<f32>, Vec<Vec<f32>>) {
                let device = flex_grad();
                let (q, k, v, beta, la) = gated_delta_tensors(dims, &x, &device, false);
                let (q, k, v) = (q.require_grad(), k.require_grad(), v.require_grad());
                let (beta, la) = (beta.require_grad(), la.require_grad());
                let inputs = (q.clone(), k.clone(), v.clone(), beta.clone(), la.clone());
                let o = if fused {
                    kernels::gated_delta(inputs.0, inputs.1, inputs.2, inputs.3, inputs.4, delta)
                } else {
                    gated_delta_composed(inputs.0, inputs.1, inputs.2, inputs.3, inputs.4, delta)
                };
                let grads = (o.clone() * tensor(&w, [b, h, n, dv], &device))
                    .sum()
                    .backward();
                let mut g: Vec<Vec<f32>> = [&q, &k, &v]
                    .iter()
                    .map(|t| values(t.grad(&grads).unwrap()))
                    .collect();
                g.push(values(beta.grad(&grads).unwrap()));
                g.push(values(la.grad(&grads).unwrap()));
                (values(o), g)
            };
            let (o, fused) = run(true);
            let (o_composed, composed) = run(false);
            assert_close(
                &o,
                &to_f64(&o_composed),
                5e-6,
                2e-5,
                &format!("gated delta output vs composed, {what}"),
            );
            for (name, (a, c)) in NAMES.iter().zip(fused.iter().zip(&composed)) {
                assert_close(
                    a,
                    &to_f64(c),
                    2e-5,
                    1e-4,
                    &format!("gated delta {name} vs composed, {what}"),
                );
            }

            let loss = |x: &[Vec<f64>; 5]| -> f64 {
                gated_delta_f64(dims, x, delta)
                    .iter()
                    .zip(&w)
                    .map(|(o, &w)| o * w as f64)
                    .sum()
            };
            let step = 1e-6;
            for (which, name) in NAMES.iter().enumerate() {
                // Every coordinate of the short cases; a sparse set (coprime with the widths)
                // touching every head and token of the long ones.
                let stride = if n <= 65 { 1 } else { 7 };
                let probes: Vec<usize> = (0..base[which].len()).step_by(stride).collect();
                let numeric = central_differences(&base, which, &probes, step, loss);
                let analytic: Vec<f32> = probes.iter().map(|&i| fused[which][i]).collect();
                assert_close(
                    &analytic,
                    &numeric,
                    2e-5,
                    1e-4,
                    &format!("gated delta {name} vs f64 differences, {what}"),
                );
            }
        }
    }
}

#[test]
fn fused_gated_delta_is_causal() {
    // Perturbing every input at token t changes no output before t, and the output at t (later
    // ones too, until the decay has shrunk the change below f32 resolution).
    let dims = [1, 2, 130, 8, 8];
    let [_, h, n, dk, dv] = dims;
    let x = gated_delta_inputs(dims, 1500);
    let device = Device::flex();
    let t = 70;
    for delta in [true, false] {
        let run = |x: &[Vec<f32>; 5]| {
            let (q, k, v, beta, la) = gated_delta_tensors(dims, x, &device, false);
            values(kernels::gated_delta(q, k, v, beta, la, delta))
        };
        let base = run(&x);
        let mut moved = x.clone();
        for head in 0..h {
            for (which, width) in [dk, dk, dv, 1, 1].into_iter().enumerate() {
                for c in 0..width {
                    moved[which][(head * n + t) * width + c] *= 0.5;
                }
            }
        }
        let moved = run(&moved);
        for head in 0..h {
            for i in 0..n {
                let row = |o: &[f32]| o[(head * n + i) * dv..][..dv].to_vec();
                let changed = row(&base) != row(&moved);
                if i <= t {
                    assert_eq!(
                        changed,
                        i == t,
                        "delta={delta} head {head} row {i}: changed = {changed}"
                    );
                }
            }
        }
    }
}

// ---- the delta-rule layer core (convolution, SiLU, L2 norms, recurrence, RMSNorm, gate) ------

/// Sizes of a delta-layer case: [batch, seq, heads, head_dim, conv width].
type LayerDims = [usize; 5];

const LAYER_INPUTS: [&str; 6] = ["dP", "dtaps", "dconv_bias", "dbeta", "dlog_alpha", "dnorm"];

/// P [b, n, 4d], taps [K, 3d], bias [3d], raw β and ln α ∈ (−2, 0) [b, n, h], norm weight [dh].
fn delta_layer_inputs([b, n, h, dh, width]: LayerDims, seed: u64) -> [Vec<f32>; 6] {
    let d = h * dh;
    let log_alpha = randn_vec(b * n * h, seed + 4, 1.5)
        .into_iter()
        .map(|x| -2.0 / (1.0 + (-x).exp()))
        .collect();
    let norm = randn_vec(dh, seed + 5, 0.3)
        .into_iter()
        .map(|x| 1.0 + x)
        .collect();
    [
        randn_vec(b * n * 4 * d, seed, 1.0),
        randn_vec(width * 3 * d, seed + 1, 0.5),
        randn_vec(3 * d, seed + 2, 0.3),
        randn_vec(b * n * h, seed + 3, 1.5),
        log_alpha,
        norm,
    ]
}

fn silu_f64(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

/// The layer core from its definition (kernels/delta_layer.rs's header), in f64: y [b, n, d].
fn delta_layer_f64([b, n, h, dh, width]: LayerDims, x: &[Vec<f64>; 6]) -> Vec<f64> {
    use zoo_model::attention::reference;
    let [p, taps, bias, beta, log_alpha, norm] = x;
    let d = h * dh;
    let mut y = vec![0.0; b * n * d];
    for s in 0..b {
        let row = |t: usize| &p[(s * n + t) * 4 * d..][..4 * d];
        for head in 0..h {
            let (mut q, mut k, mut v) = (vec![], vec![], vec![]);
            let (mut betas, mut log_alphas) = (vec![], vec![]);
            for t in 0..n {
                for part in 0..3 {
                    let a: Vec<f64> = (0..dh)
                        .map(|c| {
                            let col = part * d + head * dh + c;
                            let mut z = bias[col];
                            for j in 0..width {
                                if t + j + 1 >= width {
                                    z += taps[j * 3 * d + col] * row(t + j + 1 - width)[col];
                                }
                            }
                            silu_f64(z)
                        })
                        .collect();
                    let norm2 = (a.iter().map(|a| a * a).sum::<f64>() + 1e-6).sqrt();
                    match part {
                        0 => q.extend(a.iter().map(|a| a / norm2 / (dh as f64).sqrt())),
                        1 => k.extend(a.iter().map(|a| a / norm2)),
                        _ => v.extend(a),
                    }
                }
                betas.push(1.0 / (1.0 + (-beta[(s * n + t) * h + head]).exp()));
                log_alphas.push(log_alpha[(s * n + t) * h + head]);
            }
            let zero = vec![0.0; dh * dh];
            let (o, _) = reference::gated_delta_recurrent(
                &q,
                &k,
                &v,
                &betas,
                &log_alphas,
                n,
                dh,
                dh,
                &zero,
                true,
            );
            for t in 0..n {
                let o_t = &o[t * dh..][..dh];
                let rms = (o_t.iter().map(|o| o * o).sum::<f64>() / dh as f64 + 1e-5).sqrt();
                for c in 0..dh {
                    let gate = silu_f64(row(t)[3 * d + head * dh + c]);
                    y[(s * n + t) * d + head * dh + c] = o_t[c] / rms * norm[c] * gate;
                }
            }
        }
    }
    y
}

/// The composed path in Burn tensor ops: a tap-by-tap convolution, SiLU, delta_rule's L2 and
/// RMS norms and its chunked (UT-transform) form.
fn delta_layer_composed(
    inputs: [Tensor<3>; 3],
    params: [Tensor<1>; 2],
    taps: Tensor<2>,
) -> Tensor<3> {
    use burn::tensor::activation::{sigmoid, silu};
    use zoo_model::attention::{delta_rule, split_heads};
    let [p, beta, log_alpha] = inputs;
    let [bias, norm] = params;
    let [b, n, row] = p.dims();
    let (d, h, width) = (row / 4, beta.dims()[2], taps.dims()[0]);
    let dh = d / h;
    let device = p.device();
    let qkv = p.clone().narrow(2, 0, 3 * d);
    let padded = Tensor::cat(vec![Tensor::zeros([b, width - 1, 3 * d], &device), qkv], 1);
    let mut z = bias.reshape([1, 1, 3 * d]);
    for j in 0..width {
        z = z + padded.clone().narrow(1, j, n)
            * taps.clone().narrow(0, j, 1).reshape([1, 1, 3 * d]);
    }
    let a = silu(z); // [b, n, 3d]
    let part = |i: usize| split_heads(a.clone().narrow(2, i * d, d), h); // [b, h, n, dh]
    let q = delta_rule::l2_normalize(part(0)) / (dh as f64).sqrt();
    let k = delta_rule::l2_normalize(part(1));
    let s0 = Tensor::zeros([b, h, dh, dh], &device);
    let beta = sigmoid(beta).swap_dims(1, 2);
    let (o, _) = delta_rule::chunked(q, k, part(2), beta, log_alpha.swap_dims(1, 2), s0, 8);
    delta_rule::head_rms_norm(o, norm) * silu(p.narrow(2, 3 * d, d))
}

/// The tensor with gradients tracked when its device is under autodiff.
fn tracked<const D: usize>(t: Tensor<D>) -> Tensor<D> {
    if t.device().is_autodiff() {
        t.require_grad()
    } else {
        t
    }
}

#[test]
fn fused_delta_layer_matches_the_definition_and_the_composed_path() {
    let mut cases: Vec<LayerDims> = [1usize, 63, 64, 65, 130]
        .iter()
        .map(|&n| [2, n, 2, 4, 4])
        .collect();
    cases.push([1, 70, 3, 6, 2]); // another head size and convolution width
    for dims in cases {
        let [b, n, h, dh, width] = dims;
        let d = h * dh;
        let shapes: [Vec<usize>; 6] = [
            vec![b, n, 4 * d],
            vec![width, 3 * d],
            vec![3 * d],
            vec![b, n, h],
            vec![b, n, h],
            vec![dh],
        ];
        let what = format!("dims={dims:?}");
        let x = delta_layer_inputs(dims, 1700 + n as u64 + width as u64);
        let w = randn_vec(b * n * d, 1799 + n as u64, 1.0);
        let base = x.each_ref().map(|x| to_f64(x));
        let want = delta_layer_f64(dims, &base);

        let run = |fused: bool, device: &Device| -> (Vec<f32>, Vec<Vec<f32>>) {
            let t3 = |i: usize| {
                tracked(tensor::<3>(
                    &x[i],
                    shapes[i].clone().try_into().unwrap(),
                    device,
                ))
            };
            let t1 = |i: usize| tracked(tensor::<1>(&x[i], [shapes[i][0]], device));
            let (p, beta, la) = (t3(0), t3(3), t3(4));
            let taps = tracked(tensor::<2>(&x[1], [width, 3 * d], device));
            let (bias, norm) = (t1(2), t1(5));
            let y = if fused {
                kernels::delta_layer(
                    p.clone(),
                    taps.clone(),
                    bias.clone(),
                    beta.clone(),
                    la.clone(),
                    norm.clone(),
                )
            } else {
                delta_layer_composed(
                    [p.clone(), beta.clone(), la.clone()],
                    [bias.clone(), norm.clone()],
                    taps.clone(),
                )
            };
            if !device.is_autodiff() {
                return (values(y), vec![]);
            }
            let grads = (y.clone() * tensor(&w, [b, n, d], device)).sum().backward();
            let g = vec![
                values(p.grad(&grads).unwrap()),
                values(taps.grad(&grads).unwrap()),
                values(bias.grad(&grads).unwrap()),
                values(beta.grad(&grads).unwrap()),
                values(la.grad(&grads).unwrap()),
                values(norm.grad(&grads).unwrap()),
            ];
            (values(y), g)
        };
        let (plain, _) = run(true, &Device::flex());
        assert_close(
            &plain,
            &want,
            5e-6,
            2e-5,
            &format!("delta layer output vs f64, {what}"),
        );
        let (y, fused) = run(true, &flex_grad());
        assert_close(
            &y,
            &want,
            5e-6,
            2e-5,
            &format!("delta layer output under autodiff, {what}"),
        );
        let (y_composed, composed) = run(false, &flex_grad());
        assert_close(
            &y,
            &to_f64(&y_composed),
            5e-6,
            2e-5,
            &format!("delta layer output vs composed, {what}"),
        );
        for (name, (a, c)) in LAYER_INPUTS.iter().zip(fused.iter().zip(&composed)) {
            assert_close(
                a,
                &to_f64(c),
                5e-5,
                2e-4,
                &format!("delta layer {name} vs composed, {what}"),
            );
        }

        let loss = |x: &[Vec<f64>; 6]| -> f64 {
            delta_layer_f64(dims, x)
                .iter()
                .zip(&w)
                .map(|(y, &w)| y * w as f64)
                .sum()
        };
        for (which, name) in LAYER_INPUTS.iter().enumerate() {
            // Every coordinate of the short cases; a sparse set (coprime with the widths)
            // touching every head, channel and token of the long ones.
            let stride = if n <= 65 { 1 } else { 7 };
            let probes: Vec<usize> = (0..base[which].len()).step_by(stride).collect();
            let numeric = central_differences(&base, which, &probes, 1e-6, loss);
            let analytic: Vec<f32> = probes.iter().map(|&i| fused[which][i]).collect();
            // Parameter gradients sum over every token and head: the composed path's own
            // f32 error against these differences reaches 3.5e-5 abs / 3e-4 rel.
            assert_close(
                &analytic,
                &numeric,
                5e-5,
                2e-4,
                &format!("delta layer {name} vs f64 differences, {what}"),
            );
        }
    }
}

// ---- the linear layer ---------------------------------------------------------------------

/// y = x W + b and its gradients for Σ y ⊙ w, from the definition in f64:
/// (y, dx = (w) Wᵀ, dW = xᵀ (w), db = Σ_rows w).
fn dense_f64(
    x: &[f64],
    weight: &[f64],
    bias: Option<&[f64]>,
    w: &[f64],
    [rows, d_in, d_out]: [usize; 3],
) -> [Vec<f64>; 4] {
    let mut y = vec![0.0; rows * d_out];
    let mut dx = vec![0.0; rows * d_in];
    let mut dw = vec![0.0; d_in * d_out];
    let mut db = vec![0.0; d_out];
    for r in 0..rows {
        for o in 0..d_out {
            let g = w[r * d_out + o];
            y[r * d_out + o] = bias.map_or(0.0, |b| b[o])
                + (0..d_in)
                    .map(|i| x[r * d_in + i] * weight[i * d_out + o])
                    .sum::<f64>();
            db[o] += g;
            for i in 0..d_in {
                dx[r * d_in + i] += g * weight[i * d_out + o];
                dw[i * d_out + o] += x[r * d_in + i] * g;
            }
        }
    }
    [y, dx, dw, db]
}

/// The fused or Burn's linear of x, and the gradients of Σ y ⊙ w.
fn linear_and_grads<const D: usize>(
    fused: bool,
    x: Tensor<D>,
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
    w: Tensor<D>,
) -> (Vec<f32>, burn::tensor::Gradients) {
    let y = if fused {
        kernels::linear(x, weight, bias)
    } else {
        burn::tensor::module::linear(x, weight, bias)
    };
    let grads = (y.clone() * w).sum().backward();
    (values(y), grads)
}

/// The forward in row blocks (a block's bias rows, then its product onto them, on one thread):
/// 128 rows per block at d_out = 512, so 600 rows are four blocks and a ragged one — at least
/// one per thread on machines of up to 4 threads, where the row blocks run.
#[test]
fn fused_linear_forward_in_row_blocks_matches_the_definition() {
    let (rows, d_in, d_out) = (600, 24, 512);
    let x = randn_vec(rows * d_in, 2190, 1.0);
    let weight = randn_vec(d_in * d_out, 2191, 0.3);
    let bias = randn_vec(d_out, 2192, 0.5);
    for with_bias in [true, false] {
        let got = zoo_model::kernels::linear::forward(
            &x,
            &weight,
            with_bias.then_some(&bias[..]),
            [rows, d_in, d_out],
        );
        let mut want = vec![0.0f64; rows * d_out];
        for r in 0..rows {
            for c in 0..d_out {
                let start = if with_bias { bias[c] as f64 } else { 0.0 };
                want[r * d_out + c] = start
                    + (0..d_in)
                        .map(|i| x[r * d_in + i] as f64 * weight[i * d_out + c] as f64)
                        .sum::<f64>();
            }
        }
        assert_close(
            &got,
            &want,
            1e-5,
            1e-5,
            &format!("linear y in row blocks, bias={with_bias}"),
        );
    }
}

/// The backward's dW and db over more rows than one piece of the weight gradient (256 rows: db
/// is summed piece by piece inside dW's product): 700 rows on one thread (three pieces, the last
/// ragged) and on two (two shares of 350 rows, two pieces each), against f64.
#[test]
fn fused_linear_backward_in_pieces_matches_the_definition() {
    let (rows, d_in, d_out) = (700, 20, 70);
    let x = randn_vec(rows * d_in, 2290, 1.0);
    let weight = randn_vec(d_in * d_out, 2291, 0.3);
    let dy = randn_vec(rows * d_out, 2292, 1.0);
    let mut want_dw = vec![0.0f64; d_in * d_out];
    let mut want_db = vec![0.0f64; d_out];
    for r in 0..rows {
        for c in 0..d_out {
            let g = dy[r * d_out + c] as f64;
            want_db[c] += g;
            for i in 0..d_in {
                want_dw[i * d_out + c] += x[r * d_in + i] as f64 * g;
            }
        }
    }
    for threads in [1, 2] {
        let (_, dw, db) = with_threads(threads, || {
            zoo_model::kernels::linear::backward(&x, &weight, true, &dy, [rows, d_in, d_out])
        });
        let what = format!("{threads} threads");
        // Sums of 700 f32 terms of size ~1 (totals ~26): rounding ~1e-5 to 5e-5 in absolute
        // terms; a lost, doubled or misplaced piece moves a total by ~1.
        assert_close(
            &dw,
            &want_dw,
            1e-4,
            1e-5,
            &format!("linear dW in pieces, {what}"),
        );
        let db = db.expect("a bias gradient");
        assert_close(
            &db,
            &want_db,
            1e-4,
            1e-5,
            &format!("linear db in pieces, {what}"),
        );
    }
}

#[test]
fn fused_linear_matches_the_definition_and_burn() {
    // Small; wider than gemm's register blocks and with ragged edges; one row; rank 2.
    for (lead, d_in, d_out) in [
        (vec![2usize, 5], 7usize, 3usize),
        (vec![3, 70], 33, 130),
        (vec![1, 1], 16, 8),
        (vec![9], 12, 20),
    ] {
        let rows: usize = lead.iter().product();
        for with_bias in [true, false] {
            let what = format!("rows={rows} d_in={d_in} d_out={d_out} bias={with_bias}");
            let seed = 2100 + rows as u64 + d_out as u64;
            let x = randn_vec(rows * d_in, seed, 1.0);
            let weight = randn_vec(d_in * d_out, seed + 1, 0.3);
            let bias = randn_vec(d_out, seed + 2, 0.5);
            let w = randn_vec(rows * d_out, seed + 3, 1.0);
            let want = dense_f64(
                &to_f64(&x),
                &to_f64(&weight),
                with_bias.then(|| to_f64(&bias)).as_deref(),
                &to_f64(&w),
                [rows, d_in, d_out],
            );
            let run = |fused: bool| -> Vec<Vec<f32>> {
                let device = flex_grad();
                let xt = tensor::<2>(&x, [rows, d_in], &device).require_grad();
                let wt = tensor::<2>(&weight, [d_in, d_out], &device).require_grad();
                let bt = tensor::<1>(&bias, [d_out], &device).require_grad();
                let b = with_bias.then(|| bt.clone());
                // Rank 3 where the case has two leading axes, as the model calls it.
                let (y, grads) = if lead.len() == 2 {
                    let x3 = xt.clone().reshape([lead[0], lead[1], d_in]);
                    let w3 = tensor(&w, [lead[0], lead[1], d_out], &device);
                    linear_and_grads(fused, x3, wt.clone(), b, w3)
                } else {
                    let w2 = tensor(&w, [rows, d_out], &device);
                    linear_and_grads(fused, xt.clone(), wt.clone(), b, w2)
                };
                let mut out = vec![
                    y,
                    values(xt.grad(&grads).unwrap()),
                    values(wt.grad(&grads).unwrap()),
                ];
                if with_bias {
                    out.push(values(bt.grad(&grads).unwrap()));
                }
                out
            };
            let fused = run(true);
            let composed = run(false);
            for (i, name) in ["y", "dx", "dW", "db"].iter().enumerate().take(fused.len()) {
                assert_close(
                    &fused[i],
                    &want[i],
                    1e-5,
                    1e-5,
                    &format!("linear {name} vs f64, {what}"),
                );
                assert_close(
                    &fused[i],
                    &to_f64(&composed[i]),
                    1e-5,
                    1e-5,
                    &format!("linear {name} vs Burn's linear, {what}"),
                );
            }
            // The plain (non-autodiff) op gives the same output.
            let plain = Device::flex();
            let y = kernels::linear(
                tensor::<2>(&x, [rows, d_in], &plain),
                tensor::<2>(&weight, [d_in, d_out], &plain),
                with_bias.then(|| tensor::<1>(&bias, [d_out], &plain)),
            );
            assert_close(
                &values(y),
                &want[0],
                1e-5,
                1e-5,
                &format!("plain linear y, {what}"),
            );
        }
    }
}
