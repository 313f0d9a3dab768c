//! Fused linear layer for the CPU, y = x W + b (x [rows, d_in], W [d_in, d_out], b [d_out]),
//! forward and backward: dx = dy Wᵀ, dW = xᵀ dy, db = Σ_rows dy.
//!
//! Why: Burn's composed `linear` on flex runs the product into a zero-filled output, adds the
//! bias in a second pass over it, and under autodiff sums the bias gradient in a third; the
//! transposed operands of the backward products go through its general strided path. Here the
//! output is made in row blocks, one thread each: a block's bias rows, then the block's product
//! accumulated onto them while they are in cache (one pass over y); no output is zero-filled
//! before a product overwrites it (`gemm::product_parallel`); the backward reads Wᵀ and xᵀ as
//! strided views of the saved tensors (no copies), runs dx and dW side by side, and sums the
//! bias gradient inside dW's product, piece by piece while each piece of dy is in cache.

use burn::backend::TensorMetadata;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::flex::FlexTensor;
use burn::prelude::Shape;
use rayon::prelude::*;

use super::gemm::{View, matmul, matmul_parallel, product_on, product_parallel};
use super::simd::multiversion;
use super::tile_gemm;
use super::{AutodiffFlex, SavedForBackward, contiguous, flex_tensor, register_op, values};

/// Rows per parallel task of the bias fill and the bias gradient.
const ROW_BLOCK: usize = 256;

/// [rows, d_in, d_out] of a product.
type Dims = [usize; 3];

/// Values per row block of the forward with a bias (256 KiB of f32), so that a block's bias
/// rows are still in the core's L2 when its product accumulates onto them.
const BLOCK_VALUES: usize = 1 << 16;

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
    let block = (BLOCK_VALUES / d_in.max(d_out).max(1)).clamp(16, 512);
    if rows * d_in * d_out == 0 || rows.div_ceil(block) < rayon::current_num_threads() {
        // A few rows (decoding): one product over the bias rows, split by gemm.
        let mut y: Vec<f32> = b.iter().copied().cycle().take(rows * d_out).collect();
        matmul_parallel(&mut y, d_out, x_view, w_view, 1.0, true);
        return y;
    }
    // Row block by row block, each on one thread: the block's bias rows are written and at once
    // accumulated onto by its product while they are in cache. A bias pass over the whole y
    // followed by one product that reads it back from memory moved every value twice more
    // (machine D, [8192, 128] × [128, 384 | 512]: 0.83–0.99× the time, docs/benchmarks.md).
    let mut y: Vec<f32> = Vec::with_capacity(rows * d_out);
    y.spare_capacity_mut()[..rows * d_out]
        .par_chunks_mut(block * d_out)
        .zip(x.par_chunks(block * d_in))
        .for_each(|(out, x_block)| {
            for row in out.chunks_exact_mut(d_out) {
                row.iter_mut().zip(b).for_each(|(slot, &v)| {
                    slot.write(v);
                });
            }
            // SAFETY: every value of the block was written just above (MaybeUninit<f32> has
            // f32's layout).
            let out: &mut [f32] =
                unsafe { std::slice::from_raw_parts_mut(out.as_mut_ptr().cast(), out.len()) };
            let x_block = View::rows(x_block, out.len() / d_out, d_in);
            matmul(out, d_out, x_block, w_view, 1.0, true);
        });
    // SAFETY: the blocks cover all rows · d_out values, each written above.
    unsafe { y.set_len(rows * d_out) };
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
    let (dx, (dw, db)) = rayon::join(
        || product_on(dy_view, View::rows(w, d_in, d_out).t(), 1.0, half),
        || weight_gradient(View::rows(x, rows, d_in).t(), dy_view, has_bias, half),
    );
    (dx, dw, db)
}

/// (dW = xᵀ dy, db = Σ_rows dy when `with_bias`) from the two views, on `threads` threads. dW's
/// inner dimension is the batch's rows, thousands long against an output of d_in × d_out: on
/// AVX-512 CPUs the register blocks of tile_gemm.rs, each thread over a contiguous share of the
/// rows into a partial dW, summed in a fixed order (so the result does not depend on
/// scheduling); gemm elsewhere. Machine D, dx on gemm beside dW on one thread each at the
/// workload's four shapes: 0.88–1.05× the time with gemm for dW, 0.94× over the four
/// (docs/benchmarks.md).
///
/// The share is taken in pieces of the rows the register blocks take per pass anyway
/// (`tile_gemm::K_BLOCK`, so dW is the same to the bit), and each piece's bias gradient is
/// summed right after its product, while the piece of dy is still in the core's cache: one
/// pass over dy fewer than a separate column sum, which read all of dy back from memory.
fn weight_gradient(
    x_t: View,
    dy: View,
    with_bias: bool,
    threads: usize,
) -> (Vec<f32>, Option<Vec<f32>>) {
    let (d_in, rows, d_out) = (x_t.rows, x_t.cols, dy.cols);
    assert!(
        !with_bias || (dy.col_stride == 1 && dy.row_stride == d_out),
        "linear: the bias gradient reads dy as contiguous rows"
    );
    if !tile_gemm::available() {
        let db = with_bias.then(|| column_sums(dy.data, d_out));
        return (product_on(x_t, dy, 1.0, threads), db);
    }
    let share = rows.div_ceil(threads.max(1)).max(1);
    let partials: Vec<(Vec<f32>, Vec<f32>)> = (0..rows.div_ceil(share).max(1))
        .into_par_iter()
        .map(|part| {
            let (r0, r1) = (part * share, ((part + 1) * share).min(rows));
            let mut dw = vec![0.0f32; d_in * d_out];
            let mut db = vec![0.0f32; if with_bias { d_out } else { 0 }];
            for p0 in (r0..r1).step_by(tile_gemm::K_BLOCK) {
                let p1 = (p0 + tile_gemm::K_BLOCK).min(r1);
                let x_piece = View {
                    data: &x_t.data[(p0 * x_t.col_stride).min(x_t.data.len())..],
                    cols: p1 - p0,
                    ..x_t
                };
                let dy_piece = View {
                    data: &dy.data[(p0 * dy.row_stride).min(dy.data.len())..],
                    rows: p1 - p0,
                    ..dy
                };
                tile_gemm::matmul(&mut dw, d_out, x_piece, dy_piece, 1.0, p0 > r0);
                if with_bias {
                    add_rows(&mut db, &dy.data[p0 * d_out..p1 * d_out]);
                }
            }
            (dw, db)
        })
        .collect();
    let mut partials = partials.into_iter();
    let (mut dw, mut db) = partials.next().expect("at least one part");
    for (part_w, part_b) in partials {
        dw.iter_mut().zip(part_w).for_each(|(total, p)| *total += p);
        db.iter_mut().zip(part_b).for_each(|(total, p)| *total += p);
    }
    (dw, with_bias.then_some(db))
}

multiversion! {
    // sum += Σ the rows of m [rows, sum.len()] (compiled per instruction set: a full-width
    // vector add per piece of a row).
    fn add_rows(sum: &mut [f32], m: &[f32]) {
        for row in m.chunks_exact(sum.len().max(1)) {
            sum.iter_mut().zip(row).for_each(|(s, g)| *s += g);
        }
    }
}

/// Σ over the rows of m [rows, cols] (the bias gradient).
fn column_sums(m: &[f32], cols: usize) -> Vec<f32> {
    let partials: Vec<Vec<f32>> = m
        .par_chunks(ROW_BLOCK * cols.max(1))
        .map(|block| {
            let mut sum = vec![0.0f32; cols];
            add_rows(&mut sum, block);
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
