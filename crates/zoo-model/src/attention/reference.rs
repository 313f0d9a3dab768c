//! Slow, obviously-correct reference implementations in f64 on host vectors, token by token.
//! The tensor forms (fused, chunked, banded, gathered) are tested against these.
//!
//! Layouts: one (batch, head) slice at a time, row-major [seq, dim].

/// Dense masked softmax attention: out_i = Σ_j softmax_j(scale·q_i·k_j + bias(i,j) | allowed(i,j)) v_j.
/// Returns (out [n_q, dv], weights [n_q, n_k]).
#[allow(clippy::too_many_arguments)]
pub fn masked_softmax_attention(
    q: &[f64],
    k: &[f64],
    v: &[f64],
    n_q: usize,
    n_k: usize,
    dk: usize,
    dv: usize,
    scale: f64,
    allowed: impl Fn(usize, usize) -> bool,
    bias: impl Fn(usize, usize) -> f64,
) -> (Vec<f64>, Vec<f64>) {
    let mut out = vec![0.0; n_q * dv];
    let mut weights = vec![0.0; n_q * n_k];
    for i in 0..n_q {
        let mut logits = vec![f64::NEG_INFINITY; n_k];
        for j in 0..n_k {
            if allowed(i, j) {
                let dot: f64 = (0..dk).map(|c| q[i * dk + c] * k[j * dk + c]).sum();
                logits[j] = scale * dot + bias(i, j);
            }
        }
        let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let exps: Vec<f64> = logits
            .iter()
            .map(|l| if l.is_finite() { (l - max).exp() } else { 0.0 })
            .collect();
        let total: f64 = exps.iter().sum();
        for j in 0..n_k {
            let w = exps[j] / total;
            weights[i * n_k + j] = w;
            for c in 0..dv {
                out[i * dv + c] += w * v[j * dv + c];
            }
        }
    }
    (out, weights)
}

/// Causal linear attention recurrence on feature-mapped inputs φq, φk [n, f] and v [n, dv]:
///   S_t = S_{t−1} + φk_tᵀ v_t,  z_t = z_{t−1} + φk_t,
///   o_t = φq_t S_t / (φq_t·z_t)  (normalised; clamped below by `eps`)  or  φq_t S_t.
/// `s0` [f, dv] and `z0` [f] are the initial state; returns (out [n, dv], S [f, dv], z [f]).
#[allow(clippy::too_many_arguments)]
pub fn linear_attention_recurrent(
    phi_q: &[f64],
    phi_k: &[f64],
    v: &[f64],
    n: usize,
    f: usize,
    dv: usize,
    s0: &[f64],
    z0: &[f64],
    normalize: bool,
    eps: f64,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut s = s0.to_vec();
    let mut z = z0.to_vec();
    let mut out = vec![0.0; n * dv];
    for t in 0..n {
        for a in 0..f {
            z[a] += phi_k[t * f + a];
            for c in 0..dv {
                s[a * dv + c] += phi_k[t * f + a] * v[t * dv + c];
            }
        }
        let den: f64 = (0..f).map(|a| phi_q[t * f + a] * z[a]).sum();
        for c in 0..dv {
            let num: f64 = (0..f).map(|a| phi_q[t * f + a] * s[a * dv + c]).sum();
            out[t * dv + c] = if normalize { num / den.max(eps) } else { num };
        }
    }
    (out, s, z)
}

/// RWKV-6 WKV recurrence for one head with per-channel log-decays lw [n, dk] (w = exp(lw)),
/// bonus u [dk], r, k [n, dk], v [n, dv]:
///   o_t = r_t (S_{t−1} + diag(u) k_tᵀ v_t),   S_t = diag(w_t) S_{t−1} + k_tᵀ v_t.
/// Returns (out [n, dv], S [dk, dv]).
#[allow(clippy::too_many_arguments)]
pub fn wkv_recurrent(
    r: &[f64],
    k: &[f64],
    v: &[f64],
    lw: &[f64],
    u: &[f64],
    n: usize,
    dk: usize,
    dv: usize,
    s0: &[f64],
) -> (Vec<f64>, Vec<f64>) {
    let mut s = s0.to_vec();
    let mut out = vec![0.0; n * dv];
    for t in 0..n {
        for c in 0..dv {
            let mut acc = 0.0;
            for a in 0..dk {
                acc += r[t * dk + a] * (s[a * dv + c] + u[a] * k[t * dk + a] * v[t * dv + c]);
            }
            out[t * dv + c] = acc;
        }
        for a in 0..dk {
            let w = lw[t * dk + a].exp();
            for c in 0..dv {
                s[a * dv + c] = w * s[a * dv + c] + k[t * dk + a] * v[t * dv + c];
            }
        }
    }
    (out, s)
}

/// The gated delta rule (DeltaNet, Yang et al. 2024; Gated DeltaNet, Yang, Kautz & Hatamizadeh
/// 2024) and, with `delta = false`, Mamba-2's scalar-decay recurrence (Dao & Gu 2024), for one
/// head, token by token. State S [dk, dv] (o_t = S_tᵀ q_t), α_t = exp(log_alpha[t]):
///
///   delta:     S_t = α_t (I − β_t k_t k_tᵀ) S_{t−1} + β_t k_t v_tᵀ
///   no delta:  S_t = α_t S_{t−1} + β_t k_t v_tᵀ
///
/// q, k [n, dk], v [n, dv], beta and log_alpha [n], s0 [dk, dv]. Returns (out [n, dv], S).
#[allow(clippy::too_many_arguments)]
pub fn gated_delta_recurrent(
    q: &[f64],
    k: &[f64],
    v: &[f64],
    beta: &[f64],
    log_alpha: &[f64],
    n: usize,
    dk: usize,
    dv: usize,
    s0: &[f64],
    delta: bool,
) -> (Vec<f64>, Vec<f64>) {
    let mut s = s0.to_vec();
    let mut out = vec![0.0; n * dv];
    for t in 0..n {
        let alpha = log_alpha[t].exp();
        let k_t = &k[t * dk..(t + 1) * dk];
        // What the decayed memory currently returns for k_t: (α S)ᵀ k_t.
        let recalled: Vec<f64> = (0..dv)
            .map(|c| (0..dk).map(|a| alpha * s[a * dv + c] * k_t[a]).sum())
            .collect();
        for a in 0..dk {
            for c in 0..dv {
                let correction = if delta { recalled[c] } else { 0.0 };
                s[a * dv + c] =
                    alpha * s[a * dv + c] + beta[t] * k_t[a] * (v[t * dv + c] - correction);
            }
        }
        for c in 0..dv {
            out[t * dv + c] = (0..dk).map(|a| q[t * dk + a] * s[a * dv + c]).sum();
        }
    }
    (out, s)
}
