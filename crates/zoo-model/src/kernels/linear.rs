//! Fused linear layer for the CPU, y = x W + b (x [rows, d_in], W [d_in, d_out], b [d_out]),
//! forward and backward: dx = dy Wᵀ, dW = xᵀ dy, db = Σ_rows dy.
//!
//! Why: Burn's composed `linear` on flex runs the product into a zero-filled output, adds the
//! bias in a second pass over it, and under autodiff sums the bias gradient in a third; the
//! transposed operands of the backward products go through its general strided path. Here the
//! output starts as the bias rows and the product accumulates onto them (one pass fewer), no
//! output is zero-filled before a product overwrites it (`gemm::product_parallel`), the
//! backward reads Wᵀ and xᵀ as strided views of the saved tensors (no copies), and the bias
//! gradient is one parallel column sum. Every product is one `gemm` call split over rayon's
//! pool, as flex's own large products are.

use burn::backend::TensorMetadata;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::flex::FlexTensor;
use burn::prelude::Shape;
use rayon::prelude::*;

use super::gemm::{View, matmul_parallel, product_on, product_parallel};
use super::tile_gemm;
use super::{AutodiffFlex, SavedForBackward, contiguous, flex_tensor, register_op, values};

/// Rows per parallel task of the bias fill and the bias gradient.
const ROW_BLOCK: usize = 256;

/// [rows, d_in, d_out] of a product.
type Dims = [usize; 3];

/// y [rows, d_out] = x W (+ b).
pub fn forward(x: &[f32], w: &[f32], bias: Option<&[f32]>, [rows, d_in, d_out]: Dims) -> Vec<f32> {
    assert!(
        x.len() == rows * d_in && w.len() == d_in * d_out,
        "linear: operand sizes"
    );
    let (x_view, w_view) = (View::rows(x, rows, d_in), View::rows(w, d_in, d_out));
    let Some(b) = bias else {
        return product_parallel(x_view, w_view, 1.0);
    };
    assert_eq!(b.len(), d_out, "linear: bias size");
    // The output starts as the bias rows, written straight into fresh memory (no zero fill).
    let mut y: Vec<f32> = Vec::with_capacity(rows * d_out);
    y.spare_capacity_mut()[..rows * d_out]
        .par_chunks_mut(ROW_BLOCK * d_out.max(1))
        .for_each(|block| {
            for row in block.chunks_exact_mut(d_out) {
                row.iter_mut().zip(b).for_each(|(slot, &v)| {
                    slot.write(v);
                });
            }
        });
    // SAFETY: every one of the rows · d_out elements was written just above.
    unsafe { y.set_len(rows * d_out) };
    matmul_parallel(&mut y, d_out, x_view, w_view, 1.0, true);
    y
}

/// (dx [rows, d_in], dW [d_in, d_out], db [d_out] when there is a bias) from dy [rows, d_out].
pub fn backward(
    x: &[f32],
    w: &[f32],
    has_bias: bool,
    dy: &[f32],
    [rows, d_in, d_out]: Dims,
) -> (Vec<f32>, Vec<f32>, Option<Vec<f32>>) {
    assert_eq!(dy.len(), rows * d_out, "linear: gradient size");
    let dy_view = View::rows(dy, rows, d_out);
    // dx and dW cost the same (rows · d_in · d_out multiply-adds each) and share no output: run
    // them side by side on half of the pool each. Each product then runs on fewer threads, where
    // the GEMM scales better than across all of them (machine D: 10–22 % less time than one
    // after the other on both threads, docs/benchmarks.md).
    let half = (rayon::current_num_threads() / 2).max(1);
    let (dx, dw) = rayon::join(
        || product_on(dy_view, View::rows(w, d_in, d_out).t(), 1.0, half),
        || weight_gradient(View::rows(x, rows, d_in).t(), dy_view, half),
    );
    (dx, dw, has_bias.then(|| column_sums(dy, d_out)))
}

/// dW = xᵀ dy (given as the two views) on `threads` threads. Its inner dimension is the batch's
/// rows, thousands long against an output of d_in × d_out: on AVX-512 CPUs the register blocks
/// of tile_gemm.rs, which take that dimension in L2-sized pieces, each thread over a contiguous
/// share of the rows into a partial dW, summed in a fixed order (so the result does not depend
/// on scheduling); gemm elsewhere. Machine D, dx on gemm beside dW on one thread each at the
/// workload's four shapes: 0.88–1.05× the time with gemm for dW, 0.94× over the four
/// (docs/benchmarks.md).
fn weight_gradient(x_t: View, dy: View, threads: usize) -> Vec<f32> {
    if !tile_gemm::available() {
        return product_on(x_t, dy, 1.0, threads);
    }
    let (d_in, rows, d_out) = (x_t.rows, x_t.cols, dy.cols);
    let share = rows.div_ceil(threads.max(1)).max(1);
    let partials: Vec<Vec<f32>> = (0..rows.div_ceil(share).max(1))
        .into_par_iter()
        .map(|part| {
            let (r0, r1) = (part * share, ((part + 1) * share).min(rows));
            let mut dw = vec![0.0f32; d_in * d_out];
            let x_part = View {
                data: &x_t.data[(r0 * x_t.col_stride).min(x_t.data.len())..],
                cols: r1 - r0,
                ..x_t
            };
            let dy_part = View {
                data: &dy.data[(r0 * dy.row_stride).min(dy.data.len())..],
                rows: r1 - r0,
                ..dy
            };
            tile_gemm::matmul(&mut dw, d_out, x_part, dy_part, 1.0, false);
            dw
        })
        .collect();
    let mut partials = partials.into_iter();
    let mut dw = partials.next().expect("at least one part");
    for part in partials {
        dw.iter_mut().zip(part).for_each(|(total, p)| *total += p);
    }
    dw
}

/// Σ over the rows of m [rows, cols] (the bias gradient).
fn column_sums(m: &[f32], cols: usize) -> Vec<f32> {
    let partials: Vec<Vec<f32>> = m
        .par_chunks(ROW_BLOCK * cols.max(1))
        .map(|block| {
            let mut sum = vec![0.0f32; cols];
            for row in block.chunks_exact(cols) {
                sum.iter_mut().zip(row).for_each(|(s, g)| *s += g);
            }
            sum
        })
        .collect();
    let mut total = vec![0.0f32; cols];
    for part in partials {
        total.iter_mut().zip(part).for_each(|(s, p)| *s += p);
    }
    total
}

// ---- Burn plumbing: flex tensors in and out, and the autodiff registration -----------------

/// The product's sizes and the output shape (x's leading axes, then d_out).
fn dims(x: &FlexTensor, w: &FlexTensor) -> (Dims, Shape) {
    let mut out = x.shape().to_vec();
    let [d_in, d_out] = w.shape().dims();
    let last = out.last_mut().expect("linear: x has at least one axis");
    assert_eq!(
        *last, d_in,
        "linear: x's last axis must equal the weight's rows"
    );
    *last = d_out;
    let rows = out[..out.len() - 1].iter().product();
    ([rows, d_in, d_out], Shape::from(out))
}

fn flex_forward(x: &FlexTensor, w: &FlexTensor, b: Option<&FlexTensor>) -> FlexTensor {
    let (dims, out) = dims(x, w);
    flex_tensor(forward(values(x), values(w), b.map(values), dims), out)
}

/// The plain flex op.
pub(super) fn flex(x: FlexTensor, w: FlexTensor, b: Option<FlexTensor>) -> FlexTensor {
    flex_forward(&contiguous(x), &contiguous(w), b.map(contiguous).as_ref())
}

#[derive(Clone, Debug)]
struct LinearSaved {
    x: FlexTensor,
    w: FlexTensor,
    /// The bias's shape, when there is one.
    bias: Option<Shape>,
}

impl LinearSaved {
    fn gradients(&self, grad_out: &[f32]) -> (Vec<f32>, Vec<f32>, Option<Vec<f32>>) {
        let (dims, _) = dims(&self.x, &self.w);
        backward(
            values(&self.x),
            values(&self.w),
            self.bias.is_some(),
            grad_out,
            dims,
        )
    }
}

impl SavedForBackward<3> for LinearSaved {
    fn gradients(self, grad_out: &[f32]) -> [(Vec<f32>, Shape); 3] {
        let (dx, dw, db) = LinearSaved::gradients(&self, grad_out);
        let bias = self.bias.expect("a linear op with a bias");
        [
            (dx, self.x.shape()),
            (dw, self.w.shape()),
            (db.expect("bias gradient"), bias),
        ]
    }
}

impl SavedForBackward<2> for LinearSaved {
    fn gradients(self, grad_out: &[f32]) -> [(Vec<f32>, Shape); 2] {
        let (dx, dw, _) = LinearSaved::gradients(&self, grad_out);
        [(dx, self.x.shape()), (dw, self.w.shape())]
    }
}

/// The op with a bias under autodiff on flex: saves x and W.
pub(super) fn autodiff<C: CheckpointStrategy>(inputs: [AutodiffFlex<C>; 3]) -> AutodiffFlex<C> {
    register_op::<C, _, _>(inputs, |[x, w, b]| {
        let out = flex_forward(&x, &w, Some(&b));
        let bias = Some(b.shape());
        (out, LinearSaved { x, w, bias })
    })
}

/// The op without a bias under autodiff on flex.
pub(super) fn autodiff_no_bias<C: CheckpointStrategy>(
    inputs: [AutodiffFlex<C>; 2],
) -> AutodiffFlex<C> {
    register_op::<C, _, _>(inputs, |[x, w]| {
        let out = flex_forward(&x, &w, None);
        (out, LinearSaved { x, w, bias: None })
    })
}
