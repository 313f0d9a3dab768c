//! Fused LayerNorm (Ba, Kiros & Hinton 2016) over the last axis, forward and backward:
//!
//!   μ = mean(x),  r = 1/√(mean((x − μ)²) + ε),  x̂ = (x − μ)·r,  y = γ∘x̂ + β
//!
//! backward, with g = dy∘γ:  dx = r·(g − mean(g) − x̂·mean(g∘x̂)),  dγ = Σ_rows dy∘x̂,  dβ = Σ_rows dy.
//!
//! Burn's autodiff composes LayerNorm from ~10 elementwise and reduction ops, each a pass over
//! the activations; here forward is one pass (saving μ and r per row) and backward one more,
//! neither zero-filling the output it then writes.

use burn::backend::TensorMetadata;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::flex::FlexTensor;
use burn::prelude::Shape;
use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::simd::{self, multiversion};
use super::{AutodiffFlex, SavedForBackward, contiguous, flex_tensor, register_op, values};

/// Rows per parallel task.
const ROWS_PER_TASK: usize = 64;

multiversion! {
    // Writes every value of y (which may be uninitialised), μ and r of each row.
    fn forward_rows(
        x: &[f32],
        y: &mut [MaybeUninit<f32>],
        mean: &mut [f32],
        rstd: &mut [f32],
        gamma: &[f32],
        beta: &[f32],
        eps: f32,
    ) {
        let d = gamma.len();
        for (((x_row, y_row), mu), r) in x
            .chunks_exact(d)
            .zip(y.chunks_exact_mut(d))
            .zip(mean.iter_mut())
            .zip(rstd.iter_mut())
        {
            let m = simd::sum(x_row) / d as f32;
            let var = simd::sum_sq_dev(x_row, m) / d as f32;
            let inv = 1.0 / (var + eps).sqrt();
            for (((out, &v), &g), &b) in y_row.iter_mut().zip(x_row).zip(gamma).zip(beta) {
                out.write((v - m) * inv * g + b);
            }
            *mu = m;
            *r = inv;
        }
    }
}

multiversion! {
    // dx for a block of rows (every value written; dx may be uninitialised); dγ, dβ partial
    // sums accumulated into the block's own buffers. The two row means go through `simd`'s
    // split accumulators (as running f32 sums they are serial chains LLVM may not vectorise),
    // over the row's g = dy∘γ and x̂ staged in `scratch` [2·d].
    #[allow(clippy::too_many_arguments)]
    fn backward_rows(
        x: &[f32],
        dy: &[f32],
        mean: &[f32],
        rstd: &[f32],
        gamma: &[f32],
        dx: &mut [MaybeUninit<f32>],
        dgamma: &mut [f32],
        dbeta: &mut [f32],
        scratch: &mut [f32],
    ) {
        let d = gamma.len();
        let (g_in, xhat) = scratch.split_at_mut(d);
        for ((((x_row, dy_row), dx_row), &m), &r) in x
            .chunks_exact(d)
            .zip(dy.chunks_exact(d))
            .zip(dx.chunks_exact_mut(d))
            .zip(mean)
            .zip(rstd)
        {
            for ((((gi, xh), &v), &g_out), &g) in
                g_in.iter_mut().zip(xhat.iter_mut()).zip(x_row).zip(dy_row).zip(gamma)
            {
                *gi = g_out * g;
                *xh = (v - m) * r;
            }
            for (((dg, db), &g_out), &xh) in
                dgamma.iter_mut().zip(dbeta.iter_mut()).zip(dy_row).zip(xhat.iter())
            {
                *dg += g_out * xh;
                *db += g_out;
            }
            let mean_g = simd::sum(g_in) / d as f32;
            let mean_gx = simd::dot(g_in, xhat) / d as f32;
            for ((out, &gi), &xh) in dx_row.iter_mut().zip(g_in.iter()).zip(xhat.iter()) {
                out.write(r * (gi - mean_g - xh * mean_gx));
            }
        }
    }
}

/// Returns (y, μ, r) for x viewed as [rows, gamma.len()].
pub fn forward(x: &[f32], gamma: &[f32], beta: &[f32], eps: f32) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let d = gamma.len();
    assert!(d > 0 && x.len().is_multiple_of(d) && beta.len() == d);
    let rows = x.len() / d;
    let (mut y, mut mean, mut rstd) = (
        Vec::with_capacity(x.len()),
        vec![0.0f32; rows],
        vec![0.0f32; rows],
    );
    y.spare_capacity_mut()[..x.len()]
        .par_chunks_mut(ROWS_PER_TASK * d)
        .zip(x.par_chunks(ROWS_PER_TASK * d))
        .zip(
            mean.par_chunks_mut(ROWS_PER_TASK)
                .zip(rstd.par_chunks_mut(ROWS_PER_TASK)),
        )
        .for_each(|((y, x), (mean, rstd))| forward_rows(x, y, mean, rstd, gamma, beta, eps));
    // SAFETY: forward_rows wrote every row of every block, all x.len() values.
    unsafe { y.set_len(x.len()) };
    (y, mean, rstd)
}

/// Returns (dx, dγ, dβ).
pub fn backward(
    x: &[f32],
    gamma: &[f32],
    mean: &[f32],
    rstd: &[f32],
    dy: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let d = gamma.len();
    assert!(x.len() == dy.len() && x.len() == mean.len() * d && mean.len() == rstd.len());
    let mut dx = Vec::with_capacity(x.len());
    let partials: Vec<(Vec<f32>, Vec<f32>)> = dx.spare_capacity_mut()[..x.len()]
        .par_chunks_mut(ROWS_PER_TASK * d)
        .zip(
            x.par_chunks(ROWS_PER_TASK * d)
                .zip(dy.par_chunks(ROWS_PER_TASK * d)),
        )
        .zip(
            mean.par_chunks(ROWS_PER_TASK)
                .zip(rstd.par_chunks(ROWS_PER_TASK)),
        )
        .map(|((dx, (x, dy)), (mean, rstd))| {
            let (mut dgamma, mut dbeta) = (vec![0.0f32; d], vec![0.0f32; d]);
            let mut scratch = vec![0.0f32; 2 * d];
            backward_rows(
                x,
                dy,
                mean,
                rstd,
                gamma,
                dx,
                &mut dgamma,
                &mut dbeta,
                &mut scratch,
            );
            (dgamma, dbeta)
        })
        .collect();
    // SAFETY: backward_rows wrote every row of every block, all x.len() values.
    unsafe { dx.set_len(x.len()) };
    // Summed in task order, so the result does not depend on thread scheduling.
    let (mut dgamma, mut dbeta) = (vec![0.0f32; d], vec![0.0f32; d]);
    for (pg, pb) in partials {
        dgamma.iter_mut().zip(pg).for_each(|(a, b)| *a += b);
        dbeta.iter_mut().zip(pb).for_each(|(a, b)| *a += b);
    }
    (dx, dgamma, dbeta)
}

// ---- Burn plumbing: flex tensors in and out, and the autodiff registration -----------------

/// (y, μ, r) for contiguous x, γ, β.
fn flex_forward([x, gamma, beta]: &[FlexTensor; 3], eps: f32) -> (FlexTensor, [FlexTensor; 2]) {
    let (y, mean, rstd) = forward(values(x), values(gamma), values(beta), eps);
    let rows = Shape::new([mean.len()]);
    (
        flex_tensor(y, x.shape()),
        [flex_tensor(mean, rows.clone()), flex_tensor(rstd, rows)],
    )
}

/// The plain flex op.
pub(super) fn flex(inputs: [FlexTensor; 3], eps: f32) -> FlexTensor {
    flex_forward(&inputs.map(contiguous), eps).0
}

#[derive(Clone, Debug)]
struct LayerNormSaved {
    x: FlexTensor,
    gamma: FlexTensor,
    /// Per-row μ and r = 1/σ.
    stats: [FlexTensor; 2],
}

impl SavedForBackward<3> for LayerNormSaved {
    fn gradients(self, grad_out: &[f32]) -> [(Vec<f32>, Shape); 3] {
        let [mean, rstd] = &self.stats;
        let (dx, dgamma, dbeta) = backward(
            values(&self.x),
            values(&self.gamma),
            values(mean),
            values(rstd),
            grad_out,
        );
        let d = self.gamma.shape();
        [(dx, self.x.shape()), (dgamma, d.clone()), (dbeta, d)]
    }
}

/// The op under autodiff on flex: the forward saves x, γ and the row statistics.
pub(super) fn autodiff<C: CheckpointStrategy>(
    inputs: [AutodiffFlex<C>; 3],
    eps: f32,
) -> AutodiffFlex<C> {
    register_op::<C, _, _>(inputs, |inputs| {
        let (y, stats) = flex_forward(&inputs, eps);
        let [x, gamma, _] = inputs;
        (y, LayerNormSaved { x, gamma, stats })
    })
}
