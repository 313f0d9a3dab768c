//! Fused chunked causal linear attention for the CPU, forward and backward (Katharopoulos et al.
//! 2020; the chunked form of Yang et al. 2024, "Gated Linear Attention", without the gate):
//!
//!   chunk c of C rows:  A = tril(Q_c K_cᵀ),  num = A V_c + Q_c S_c,  den = A·1 + Q_c z_c,
//!   o = num / max(den, ε)  (or o = num unnormalised),  S_{c+1} = S_c + K_cᵀ V_c,  z_{c+1} = z_c + K_cᵀ·1
//!
//! on already feature-mapped q = φ(q), k = φ(k) (any map), from a zero state. Backward walks the
//! chunks in reverse with the running gradient of the state, dS = Σ_{later chunks} Q_cᵀ dnum
//! (and dz likewise):
//!
//!   dnum = dO / den',  dden = −(dO·o)/den' where den > ε (else 0),  dA = tril(dnum V_cᵀ + dden 1ᵀ)
//!   dQ_c = dA K_c + dnum S_cᵀ + dden z_cᵀ,   dK_c = dAᵀ Q_c + V_c dSᵀ + 1 dzᵀ,   dV_c = Aᵀ dnum + K_c dS
//!
//! The per-chunk states S_c, z_c are kept from the forward (n/C · f · d_v per head: linear in n).
//! Burn's composed version materialises every per-chunk product as a separate autodiff node.
//!
//! Layout: q, k [heads_total, n, f], v and o [heads_total, n, d_v].

use rayon::prelude::*;

use super::gemm::{View, matmul};

#[derive(Clone, Copy, Debug)]
pub struct LinearShape {
    pub heads_total: usize,
    pub seq: usize,
    pub feature_dim: usize,
    pub value_dim: usize,
    pub chunk: usize,
}

impl LinearShape {
    fn chunks(&self) -> usize {
        self.seq.div_ceil(self.chunk)
    }
}

/// What the backward pass needs from the forward besides q, k, v, o.
pub struct Saved {
    /// The normaliser before clamping, [heads_total, n] (zeros when unnormalised).
    pub den: Vec<f32>,
    /// State before each chunk, [heads_total, chunks, f, d_v].
    pub s_prev: Vec<f32>,
    /// Normaliser state before each chunk, [heads_total, chunks, f].
    pub z_prev: Vec<f32>,
}

/// [`Saved`] borrowed (the autodiff state keeps it in tensors).
#[derive(Clone, Copy)]
pub struct SavedRef<'a> {
    pub den: &'a [f32],
    pub s_prev: &'a [f32],
    pub z_prev: &'a [f32],
}

/// A ← tril(A) for a rows × rows block (row i keeps columns 0..=i).
fn keep_lower(a: &mut [f32], rows: usize) {
    for (i, row) in a.chunks_exact_mut(rows).enumerate() {
        row[i + 1..].fill(0.0);
    }
}

pub fn forward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    shape: LinearShape,
    normalize: bool,
    eps: f32,
) -> (Vec<f32>, Saved) {
    let LinearShape {
        heads_total,
        seq: n,
        feature_dim: f,
        value_dim: dv,
        chunk,
    } = shape;
    assert!(chunk > 0);
    assert!(
        q.len() == heads_total * n * f && k.len() == q.len() && v.len() == heads_total * n * dv
    );
    let nc = shape.chunks();
    let mut out = vec![0.0f32; heads_total * n * dv];
    let mut den = vec![0.0f32; heads_total * n]; // stays 0 when unnormalised
    let mut s_prev = vec![0.0f32; heads_total * nc * f * dv];
    let mut z_prev = vec![0.0f32; heads_total * nc * f];
    if out.is_empty() {
        return (
            out,
            Saved {
                den,
                s_prev,
                z_prev,
            },
        );
    }
    out.par_chunks_mut(n * dv)
        .zip(den.par_chunks_mut(n))
        .zip(s_prev.par_chunks_mut(nc * f * dv))
        .zip(z_prev.par_chunks_mut(nc * f))
        .enumerate()
        .for_each(|(bh, (((out_h, den_h), s_h), z_h))| {
            let q_h = &q[bh * n * f..][..n * f];
            let k_h = &k[bh * n * f..][..n * f];
            let v_h = &v[bh * n * dv..][..n * dv];
            let mut state = vec![0.0f32; f * dv]; // S [f, dv]
            let mut z = vec![0.0f32; f];
            let mut att = vec![0.0f32; chunk * chunk];
            for c in 0..nc {
                let r0 = c * chunk;
                let rows = chunk.min(n - r0);
                s_h[c * f * dv..][..f * dv].copy_from_slice(&state);
                z_h[c * f..][..f].copy_from_slice(&z);
                let q_c = View::rows(&q_h[r0 * f..], rows, f);
                let k_c = View::rows(&k_h[r0 * f..], rows, f);
                let v_c = View::rows(&v_h[r0 * dv..], rows, dv);
                let a = &mut att[..rows * rows];
                matmul(a, rows, q_c, k_c.t(), 1.0, false); // [rows, rows]
                keep_lower(a, rows);
                let o_c = &mut out_h[r0 * dv..][..rows * dv];
                matmul(o_c, dv, View::rows(a, rows, rows), v_c, 1.0, false); // A V
                matmul(o_c, dv, q_c, View::rows(&state, f, dv), 1.0, true); // + Q S
                if normalize {
                    for i in 0..rows {
                        let q_i = &q_h[(r0 + i) * f..][..f];
                        let d: f32 = a[i * rows..][..=i].iter().sum::<f32>()
                            + q_i.iter().zip(&z).map(|(a, b)| a * b).sum::<f32>();
                        den_h[r0 + i] = d;
                        let inv = 1.0 / d.max(eps);
                        o_c[i * dv..][..dv].iter_mut().for_each(|o| *o *= inv);
                    }
                }
                matmul(&mut state, dv, k_c.t(), v_c, 1.0, true); // S += Kᵀ V
                for k_i in k_h[r0 * f..][..rows * f].chunks_exact(f) {
                    z.iter_mut().zip(k_i).for_each(|(z, k)| *z += k);
                }
            }
        });
    (
        out,
        Saved {
            den,
            s_prev,
            z_prev,
        },
    )
}

/// Returns (dq, dk, dv).
#[allow(clippy::too_many_arguments)]
pub fn backward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &[f32],
    saved: SavedRef,
    grad_out: &[f32],
    shape: LinearShape,
    normalize: bool,
    eps: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let LinearShape {
        heads_total,
        seq: n,
        feature_dim: f,
        value_dim: dv,
        chunk,
    } = shape;
    let nc = shape.chunks();
    assert!(saved.den.len() == heads_total * n && saved.z_prev.len() == heads_total * nc * f);
    assert_eq!(saved.s_prev.len(), heads_total * nc * f * dv);
    let mut dq = vec![0.0f32; q.len()];
    let mut dk = vec![0.0f32; k.len()];
    let mut dvv = vec![0.0f32; v.len()];
    if out.is_empty() {
        return (dq, dk, dvv);
    }
    dq.par_chunks_mut(n * f)
        .zip(dk.par_chunks_mut(n * f))
        .zip(dvv.par_chunks_mut(n * dv))
        .enumerate()
        .for_each(|(bh, ((dq_h, dk_h), dv_h))| {
            let q_h = &q[bh * n * f..][..n * f];
            let k_h = &k[bh * n * f..][..n * f];
            let v_h = &v[bh * n * dv..][..n * dv];
            let o_h = &out[bh * n * dv..][..n * dv];
            let do_h = &grad_out[bh * n * dv..][..n * dv];
            let mut ds = vec![0.0f32; f * dv]; // gradient of the state after this chunk
            let mut dz = vec![0.0f32; f];
            let mut att = vec![0.0f32; chunk * chunk];
            let mut datt = vec![0.0f32; chunk * chunk];
            let mut dnum = vec![0.0f32; chunk * dv];
            let mut dden = vec![0.0f32; chunk];
            for c in (0..nc).rev() {
                let r0 = c * chunk;
                let rows = chunk.min(n - r0);
                let s_c = View::rows(&saved.s_prev[(bh * nc + c) * f * dv..], f, dv);
                let z_c = &saved.z_prev[(bh * nc + c) * f..][..f];
                let q_c = View::rows(&q_h[r0 * f..], rows, f);
                let k_c = View::rows(&k_h[r0 * f..], rows, f);
                let v_c = View::rows(&v_h[r0 * dv..], rows, dv);
                let a = &mut att[..rows * rows];
                matmul(a, rows, q_c, k_c.t(), 1.0, false);
                keep_lower(a, rows);

                let g = &mut dnum[..rows * dv];
                let gd = &mut dden[..rows];
                g.copy_from_slice(&do_h[r0 * dv..][..rows * dv]);
                gd.fill(0.0);
                if normalize {
                    let den_h = &saved.den[bh * n..][..n];
                    for i in 0..rows {
                        let d = den_h[r0 + i];
                        let inv = 1.0 / d.max(eps);
                        let row = &mut g[i * dv..][..dv];
                        if d > eps {
                            let o = &o_h[(r0 + i) * dv..][..dv];
                            gd[i] = -inv * row.iter().zip(o).map(|(a, b)| a * b).sum::<f32>();
                        }
                        row.iter_mut().for_each(|x| *x *= inv);
                    }
                }
                let g_view = View::rows(g, rows, dv);

                // dA = tril(dnum Vᵀ + dden 1ᵀ)
                let da = &mut datt[..rows * rows];
                matmul(da, rows, g_view, v_c.t(), 1.0, false);
                for (i, row) in da.chunks_exact_mut(rows).enumerate() {
                    row[..=i].iter_mut().for_each(|x| *x += gd[i]);
                    row[i + 1..].fill(0.0);
                }
                let da_view = View::rows(da, rows, rows);
                let a_view = View::rows(a, rows, rows);

                let dq_c = &mut dq_h[r0 * f..][..rows * f];
                matmul(dq_c, f, da_view, k_c, 1.0, false); // dA K
                matmul(dq_c, f, g_view, s_c.t(), 1.0, true); // + dnum Sᵀ
                let dk_c = &mut dk_h[r0 * f..][..rows * f];
                matmul(dk_c, f, da_view.t(), q_c, 1.0, false); // dAᵀ Q
                matmul(dk_c, f, v_c, View::rows(&ds, f, dv).t(), 1.0, true); // + V dSᵀ
                let dv_c = &mut dv_h[r0 * dv..][..rows * dv];
                matmul(dv_c, dv, a_view.t(), g_view, 1.0, false); // Aᵀ dnum
                matmul(dv_c, dv, k_c, View::rows(&ds, f, dv), 1.0, true); // + K dS
                if normalize {
                    for i in 0..rows {
                        let dq_i = &mut dq_c[i * f..][..f];
                        dq_i.iter_mut().zip(z_c).for_each(|(x, z)| *x += gd[i] * z);
                        let dk_i = &mut dk_c[i * f..][..f];
                        dk_i.iter_mut().zip(&dz).for_each(|(x, z)| *x += z);
                    }
                }
                // This chunk's state S_c, z_c came from all earlier chunks: pass its gradient on.
                matmul(&mut ds, dv, q_c.t(), g_view, 1.0, true); // dS += Qᵀ dnum
                if normalize {
                    for (i, q_i) in q_h[r0 * f..][..rows * f].chunks_exact(f).enumerate() {
                        dz.iter_mut().zip(q_i).for_each(|(x, q)| *x += gd[i] * q);
                    }
                }
            }
        });
    (dq, dk, dvv)
}
