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
//! Layout (`RowLayout`, one per tensor): head-major q, k [heads_total, n, f], v and o
//! [heads_total, n, d_v]; or token-major, head h's values at columns col0 + h·width of
//! [batch, n, row] rows — the layout the projections produce, so the mixer needs no head split /
//! merge copies (forward or backward) around the kernel. With `col0` the three can be column
//! blocks of one fused projection [b, n, h·(2f + d_v)] (`forward_qkv`): the elu+1 feature map
//! is then applied here too, chunk by chunk into a small staging buffer (the features are
//! never stored: the backward remakes them the same way), and its derivative folded into the
//! gradient as it is written, φ'(x) = min(φ(x), 1) for φ = elu + 1 (1 where x > 0, eˣ = φ(x)
//! elsewhere).

use burn::backend::TensorMetadata;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::flex::FlexTensor;
use burn::prelude::Shape;
use rayon::prelude::*;

use super::elu_plus_one;
use super::gemm::View;
use super::simd::{self, multiversion};
use super::tile_gemm::{self, Lhs, Transposed, matmul, matmul_lower_part, matmul_shaped};
use super::{
    AutodiffFlex, DisjointColumns, SavedForBackward, contiguous, flex_tensor, register_op, values,
};

#[derive(Clone, Copy, Debug)]
pub struct LinearShape {
    pub heads_total: usize,
    pub seq: usize,
    pub feature_dim: usize,
    pub value_dim: usize,
    pub chunk: usize,
    pub layouts: Layouts,
}

/// Where each tensor's heads live.
#[derive(Clone, Copy, Debug)]
pub struct Layouts {
    pub q: RowLayout,
    pub k: RowLayout,
    pub v: RowLayout,
    /// The output and its gradient.
    pub out: RowLayout,
}

/// Where the rows of head bh (= batch · heads + head) live in q, k, v, o and their gradients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowLayout {
    /// [heads_total, n, width]
    HeadMajor,
    /// Rows [batch, n, row], head h at columns col0 + h·width ([batch, n, heads, width] for a
    /// tensor of its own: row = heads·width, col0 = 0).
    TokenMajor {
        heads: usize,
        row: usize,
        col0: usize,
    },
}

impl RowLayout {
    /// (offset of row 0, row stride) of head bh in a buffer of n rows of `width` per head.
    fn head(self, bh: usize, n: usize, width: usize) -> (usize, usize) {
        match self {
            RowLayout::HeadMajor => (bh * n * width, width),
            RowLayout::TokenMajor { heads, row, col0 } => {
                ((bh / heads) * n * row + col0 + (bh % heads) * width, row)
            }
        }
    }
}

/// Read access to one head's rows.
#[derive(Clone, Copy)]
struct Rows<'a> {
    data: &'a [f32],
    base: usize,
    stride: usize,
    width: usize,
}

impl<'a> Rows<'a> {
    fn of(data: &'a [f32], layout: RowLayout, bh: usize, n: usize, width: usize) -> Self {
        let (base, stride) = layout.head(bh, n, width);
        Rows {
            data,
            base,
            stride,
            width,
        }
    }

    fn row(&self, t: usize) -> &'a [f32] {
        &self.data[self.base + t * self.stride..][..self.width]
    }

    /// Rows r0..r0+rows as a matrix view.
    fn view(&self, r0: usize, rows: usize) -> View<'a> {
        View {
            data: &self.data[self.base + r0 * self.stride..],
            rows,
            cols: self.width,
            row_stride: self.stride,
            col_stride: 1,
        }
    }
}

/// The element offset of row t of a head at (base, stride) (`RowLayout::head`).
fn row_at((base, stride): (usize, usize), t: usize) -> usize {
    base + t * stride
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

/// `m` transposed, through `scratch` on CPUs whose register blocks read B by contiguous rows,
/// as a strided view for gemm elsewhere (the small states S, dS).
fn transposed<'a>(scratch: &'a mut Transposed, m: View<'a>) -> View<'a> {
    if !tile_gemm::available() {
        return m.t();
    }
    scratch.fill(m);
    scratch.columns(0, m.rows)
}

/// Rows r0..r0 + rows of a head's q or k as the products read them. With `map` (the kernel from
/// one fused projection) the stored rows are raw and φ = elu + 1 of them is staged contiguous in
/// `buf`, chunk by chunk while the rows are in cache — no [b, n, 2·h·f] feature tensor is
/// written, read back or kept for the backward, which remakes φ the same way. Without `map`
/// the stored rows are the features, read in place. `FUSED`: the calling copy's `simd::FUSED`.
#[inline(always)]
fn features<'a, const FUSED: bool>(
    head: &Rows<'a>,
    r0: usize,
    rows: usize,
    map: bool,
    buf: &'a mut Vec<f32>,
) -> View<'a> {
    if !map {
        return head.view(r0, rows);
    }
    let f = head.width;
    buf.clear();
    buf.reserve(rows * f);
    for i in 0..rows {
        buf.extend(
            head.row(r0 + i)
                .iter()
                .map(|&x| elu_plus_one::phi::<FUSED>(x)),
        );
    }
    View::rows(buf, rows, f)
}

/// Asks for rows r0..r0 + rows of a head (their 64-byte lines) to be brought into L2: the next
/// chunk's, while this chunk's products run. A head's rows are short pieces of long token-major
/// rows, which the hardware prefetchers follow poorly: without this the loads of the staged
/// features wait on memory (`perf annotate`: a third of the backward head loop's samples on
/// them). Into L2, not L1: five tensors' chunk rows are 40 KiB.
#[inline(always)]
fn prefetch_rows(head: &Rows, r0: usize, rows: usize) {
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (head, r0, rows);
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T1, _mm_prefetch};
        let end = (r0 + rows).min(head.data.len().saturating_sub(head.base) / head.stride.max(1));
        for t in r0..end {
            let row = head.row(t);
            for piece in row.chunks(16) {
                // SAFETY: a prefetch of an address inside the row; it neither reads nor faults.
                unsafe { _mm_prefetch::<_MM_HINT_T1>(piece.as_ptr().cast()) };
            }
        }
    }
}

/// Row i of a view with contiguous columns.
#[inline(always)]
fn row_of<'a>(m: &View<'a>, i: usize) -> &'a [f32] {
    &m.data[i * m.row_stride..][..m.cols]
}

/// One head's saved values in the forward pass: normalisers [n], states before each chunk
/// [chunks, f, d_v] and [chunks, f].
pub struct HeadSaved<'a> {
    den: &'a mut [f32],
    s: &'a mut [f32],
    z: &'a mut [f32],
}

/// What a head carries from one chunk to the next: the state S [f, d_v] and z [f] in the forward
/// pass, their gradients dS and dz (of the state after the chunk) in the backward pass. (This and
/// the scratch types are `pub`, fields private, only because `multiversion!` makes the head
/// functions that take them public.)
pub struct Carried {
    s: Vec<f32>,
    z: Vec<f32>,
}

impl Carried {
    fn new(f: usize, dv: usize) -> Self {
        Carried {
            s: vec![0.0; f * dv],
            z: vec![0.0; f],
        }
    }
}

/// A forward task's per-chunk buffers, shared by the heads it walks.
pub struct ForwardScratch {
    att: Vec<f32>,
    o_chunk: Vec<f32>,
    q_buf: Vec<f32>,
    k_buf: Vec<f32>,
    k_t: Transposed,
}

impl ForwardScratch {
    fn new(chunk: usize, dv: usize) -> Self {
        ForwardScratch {
            att: vec![0.0; chunk * chunk],
            o_chunk: vec![0.0; chunk * dv],
            q_buf: Vec::new(),
            k_buf: Vec::new(),
            k_t: Transposed::default(),
        }
    }
}

/// Heads per parallel task: all heads of a sequence where the tensors are token-major and there
/// are at least as many sequences as threads, one head otherwise. A task walking every head of
/// a sequence chunk by chunk reads each chunk's token rows as one contiguous block (q, k and v
/// of all heads side by side), which the hardware prefetchers stream; one head at a time reads
/// 128-byte pieces of rows 1.5 KiB apart (at the reference workload), and its loads waited on
/// memory (`perf annotate`: 40–50 % of the head loops' own samples on the first load of the
/// staged features, with software prefetches of the next chunk in place).
fn heads_per_task(shape: &LinearShape) -> usize {
    match shape.layouts.q {
        RowLayout::TokenMajor { heads, .. }
            if heads > 0
                && shape.heads_total.is_multiple_of(heads)
                && shape.heads_total / heads >= rayon::current_num_threads() =>
        {
            heads
        }
        _ => 1,
    }
}

/// The chunk ranges a task hands its heads per call: all chunks in one call with one head, chunk
/// by chunk across the heads with several (in reverse for the backward pass).
fn chunk_steps(chunks: usize, group: usize, reverse: bool) -> Vec<std::ops::Range<usize>> {
    if group == 1 {
        return std::iter::once(0..chunks).collect();
    }
    let mut steps: Vec<_> = (0..chunks).map(|c| c..c + 1).collect();
    if reverse {
        steps.reverse();
    }
    steps
}

multiversion! {
    // Head bh of the forward pass, chunk after chunk (compiled per instruction set: the row
    // sums, dot products and row scalings between the products vectorise with it). With
    // `map`, q and k are raw and φ = elu + 1 is applied here (`features`).
    #[allow(clippy::too_many_arguments)]
    fn forward_head(
        inputs: [&[f32]; 3],
        bh: usize,
        saved: HeadSaved,
        out_rows: &DisjointColumns,
        shape: LinearShape,
        normalize: bool,
        eps: f32,
        map: bool,
        chunks: std::ops::Range<usize>,
        carried: &mut Carried,
        scratch: &mut ForwardScratch,
    ) {
        let LinearShape { seq: n, feature_dim: f, value_dim: dv, chunk, layouts, .. } = shape;
        let HeadSaved { den: den_h, s: s_h, z: z_h } = saved;
        let [q, k, v] = inputs;
        let q_h = Rows::of(q, layouts.q, bh, n, f);
        let k_h = Rows::of(k, layouts.k, bh, n, f);
        let v_h = Rows::of(v, layouts.v, bh, n, dv);
        let out_head = layouts.out.head(bh, n, dv);
        let Carried { s: state, z } = carried;
        let ForwardScratch { att, o_chunk, q_buf, k_buf, k_t } = scratch;
        for c in chunks {
            let r0 = c * chunk;
            let rows = chunk.min(n - r0);
            s_h[c * f * dv..][..f * dv].copy_from_slice(state);
            z_h[c * f..][..f].copy_from_slice(z);
            let q_c = features::<{ simd::FUSED }>(&q_h, r0, rows, map, q_buf);
            let k_c = features::<{ simd::FUSED }>(&k_h, r0, rows, map, k_buf);
            let v_c = v_h.view(r0, rows);
            if r0 + rows < n {
                for head in [&q_h, &k_h, &v_h] {
                    prefetch_rows(head, r0 + rows, chunk.min(n - r0 - rows));
                }
            }
            let a = &mut att[..rows * rows];
            matmul_lower_part(a, rows, q_c, transposed(k_t, k_c), 1.0); // [rows, rows]
            keep_lower(a, rows);
            let o_c = &mut o_chunk[..rows * dv];
            let a_view = View::rows(a, rows, rows);
            matmul_shaped(o_c, dv, a_view, v_c, 1.0, false, Lhs::Lower); // A V
            matmul(o_c, dv, q_c, View::rows(state, f, dv), 1.0, true); // + Q S
            if normalize {
                for i in 0..rows {
                    let d = simd::sum(&a[i * rows..][..=i]) + simd::dot(row_of(&q_c, i), z);
                    den_h[r0 + i] = d;
                    let inv = 1.0 / d.max(eps);
                    o_c[i * dv..][..dv].iter_mut().for_each(|o| *o *= inv);
                }
            }
            for (i, o_i) in o_c.chunks_exact(dv).enumerate() {
                // SAFETY: this task owns head bh, whose rows no other task writes.
                unsafe { out_rows.write(row_at(out_head, r0 + i), o_i) };
            }
            matmul(state, dv, k_c.t(), v_c, 1.0, true); // S += Kᵀ V
            for i in 0..rows {
                z.iter_mut().zip(row_of(&k_c, i)).for_each(|(z, k)| *z += k);
            }
        }
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
    forward_mapped([q, k, v], shape, normalize, eps, false)
}

/// [`forward`], with `map`: q and k raw, φ = elu + 1 applied in the kernel.
fn forward_mapped(
    [q, k, v]: [&[f32]; 3],
    shape: LinearShape,
    normalize: bool,
    eps: f32,
    map: bool,
) -> (Vec<f32>, Saved) {
    let LinearShape {
        heads_total,
        seq: n,
        feature_dim: f,
        value_dim: dv,
        chunk,
        ..
    } = shape;
    assert!(chunk > 0);
    let nc = shape.chunks();
    let len = heads_total * n * dv;
    let mut out = Vec::with_capacity(len);
    let mut den = vec![0.0f32; heads_total * n]; // stays 0 when unnormalised
    let mut s_prev = vec![0.0f32; heads_total * nc * f * dv];
    let mut z_prev = vec![0.0f32; heads_total * nc * f];
    if len == 0 {
        let saved = Saved {
            den,
            s_prev,
            z_prev,
        };
        return (vec![0.0; len], saved);
    }
    {
        // The output is written row by row by the heads, straight into fresh memory.
        let out_rows = DisjointColumns::spare(&mut out, len);
        let inputs = [q, k, v];
        let group = heads_per_task(&shape);
        den.par_chunks_mut(group * n)
            .zip(s_prev.par_chunks_mut(group * nc * f * dv))
            .zip(z_prev.par_chunks_mut(group * nc * f))
            .enumerate()
            .for_each(|(task, ((den_g, s_g), z_g))| {
                let mut heads: Vec<_> = den_g
                    .chunks_mut(n)
                    .zip(s_g.chunks_mut(nc * f * dv))
                    .zip(z_g.chunks_mut(nc * f))
                    .map(|((den, s), z)| (HeadSaved { den, s, z }, Carried::new(f, dv)))
                    .collect();
                let mut scratch = ForwardScratch::new(chunk, dv);
                for chunks in chunk_steps(nc, group, false) {
                    for (j, (saved, carried)) in heads.iter_mut().enumerate() {
                        let saved = HeadSaved {
                            den: &mut *saved.den,
                            s: &mut *saved.s,
                            z: &mut *saved.z,
                        };
                        forward_head(
                            inputs,
                            task * group + j,
                            saved,
                            &out_rows,
                            shape,
                            normalize,
                            eps,
                            map,
                            chunks.clone(),
                            carried,
                            &mut scratch,
                        );
                    }
                }
            });
    }
    // SAFETY: each of the heads_total heads wrote its n rows of dv values, together all `len`.
    unsafe { out.set_len(len) };
    (
        out,
        Saved {
            den,
            s_prev,
            z_prev,
        },
    )
}

/// Returns (dq, dk, dv) in the inputs' layout (each input a tensor of its own).
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
    let mut dq = vec![0.0f32; q.len()];
    let mut dk = vec![0.0f32; k.len()];
    let mut dvv = vec![0.0f32; v.len()];
    let targets = [
        DisjointColumns::new(&mut dq),
        DisjointColumns::new(&mut dk),
        DisjointColumns::new(&mut dvv),
    ];
    backward_into(
        [q, k, v, out, grad_out],
        saved,
        shape,
        normalize,
        eps,
        ([&targets[0], &targets[1], &targets[2]], shape.layouts),
        false,
    );
    (dq, dk, dvv)
}

/// The backward pass writing dq, dk, dv through `targets` at the q, k and v layouts given with
/// them (which may be column blocks of one buffer, laid out unlike the inputs). With `map`, q
/// and k are raw, the kernel's features φ = elu + 1 of them (`features`), and the written
/// gradients are those of the raw inputs, dφ · min(φ, 1).
#[allow(clippy::too_many_arguments)]
fn backward_into(
    [q, k, v, out, grad_out]: [&[f32]; 5],
    saved: SavedRef,
    shape: LinearShape,
    normalize: bool,
    eps: f32,
    ([dq_rows, dk_rows, dv_rows], written): ([&DisjointColumns<'_>; 3], Layouts),
    map: bool,
) {
    let LinearShape {
        heads_total,
        seq: n,
        feature_dim: f,
        value_dim: dv,
        ..
    } = shape;
    let nc = shape.chunks();
    assert!(saved.den.len() == heads_total * n && saved.z_prev.len() == heads_total * nc * f);
    assert_eq!(saved.s_prev.len(), heads_total * nc * f * dv);
    assert!(grad_out.len() == out.len());
    if out.is_empty() {
        return;
    }
    let inputs = [q, k, v, out, grad_out];
    let targets = ([dq_rows, dk_rows, dv_rows], written);
    let group = heads_per_task(&shape);
    (0..heads_total / group).into_par_iter().for_each(|task| {
        let mut carried: Vec<_> = (0..group).map(|_| Carried::new(f, dv)).collect();
        let mut scratch = BackwardScratch::new(shape.chunk, f, dv);
        for chunks in chunk_steps(nc, group, true) {
            for (j, carried) in carried.iter_mut().enumerate() {
                backward_head(
                    inputs,
                    task * group + j,
                    saved,
                    shape,
                    normalize,
                    eps,
                    targets,
                    map,
                    chunks.clone(),
                    carried,
                    &mut scratch,
                );
            }
        }
    });
}

/// A backward task's per-chunk buffers, shared by the heads it walks.
pub struct BackwardScratch {
    k_t: Transposed,
    v_t: Transposed,
    s_t: Transposed,
    ds_t: Transposed,
    q_buf: Vec<f32>,
    k_buf: Vec<f32>,
    att: Vec<f32>,
    datt: Vec<f32>,
    dnum: Vec<f32>,
    dden: Vec<f32>,
    dq_chunk: Vec<f32>,
    dk_chunk: Vec<f32>,
    dv_chunk: Vec<f32>,
}

impl BackwardScratch {
    fn new(chunk: usize, f: usize, dv: usize) -> Self {
        BackwardScratch {
            k_t: Transposed::default(),
            v_t: Transposed::default(),
            s_t: Transposed::default(),
            ds_t: Transposed::default(),
            q_buf: Vec::new(),
            k_buf: Vec::new(),
            att: vec![0.0; chunk * chunk],
            datt: vec![0.0; chunk * chunk],
            dnum: vec![0.0; chunk * dv],
            dden: vec![0.0; chunk],
            dq_chunk: vec![0.0; chunk * f],
            dk_chunk: vec![0.0; chunk * f],
            dv_chunk: vec![0.0; chunk * dv],
        }
    }
}

multiversion! {
    // Head bh of the backward pass, chunks in reverse (compiled per instruction set, as
    // `forward_head`).
    #[allow(clippy::too_many_arguments)]
    fn backward_head(
        inputs: [&[f32]; 5],
        bh: usize,
        saved: SavedRef,
        shape: LinearShape,
        normalize: bool,
        eps: f32,
        targets: ([&DisjointColumns<'_>; 3], Layouts),
        map: bool,
        chunks: std::ops::Range<usize>,
        carried: &mut Carried,
        scratch: &mut BackwardScratch,
    ) {
        let [q, k, v, out, grad_out] = inputs;
        let ([dq_rows, dk_rows, dv_rows], written) = targets;
        let LinearShape { seq: n, feature_dim: f, value_dim: dv, chunk, layouts, .. } = shape;
        let nc = shape.chunks();
        let q_h = Rows::of(q, layouts.q, bh, n, f);
        let k_h = Rows::of(k, layouts.k, bh, n, f);
        let v_h = Rows::of(v, layouts.v, bh, n, dv);
        let o_h = Rows::of(out, layouts.out, bh, n, dv);
        let do_h = Rows::of(grad_out, layouts.out, bh, n, dv);
        let BackwardScratch {
            k_t, v_t, s_t, ds_t, q_buf, k_buf, att, datt, dnum, dden, dq_chunk, dk_chunk, dv_chunk,
        } = scratch;
        let (q_head, k_head, v_head) = (
            written.q.head(bh, n, f),
            written.k.head(bh, n, f),
            written.v.head(bh, n, dv),
        );
        let Carried { s: ds, z: dz } = carried;
        for c in chunks.rev() {
            let r0 = c * chunk;
            let rows = chunk.min(n - r0);
            let s_c = View::rows(&saved.s_prev[(bh * nc + c) * f * dv..], f, dv);
            let z_c = &saved.z_prev[(bh * nc + c) * f..][..f];
            let q_c = features::<{ simd::FUSED }>(&q_h, r0, rows, map, q_buf);
            let k_c = features::<{ simd::FUSED }>(&k_h, r0, rows, map, k_buf);
            let v_c = v_h.view(r0, rows);
            if c > 0 {
                // The chunk before this one is next (the walk is in reverse).
                for head in [&q_h, &k_h, &v_h, &o_h, &do_h] {
                    prefetch_rows(head, r0 - chunk, chunk);
                }
            }
            let a = &mut att[..rows * rows];
            matmul_lower_part(a, rows, q_c, transposed(k_t, k_c), 1.0);
            keep_lower(a, rows);

            let g = &mut dnum[..rows * dv];
            let gd = &mut dden[..rows];
            for (i, row) in g.chunks_exact_mut(dv).enumerate() {
                row.copy_from_slice(do_h.row(r0 + i));
            }
            gd.fill(0.0);
            if normalize {
                let den_h = &saved.den[bh * n..][..n];
                for i in 0..rows {
                    let d = den_h[r0 + i];
                    let inv = 1.0 / d.max(eps);
                    let row = &mut g[i * dv..][..dv];
                    if d > eps {
                        let o = o_h.row(r0 + i);
                        gd[i] = -inv * simd::dot(row, o);
                    }
                    row.iter_mut().for_each(|x| *x *= inv);
                }
            }
            let g_view = View::rows(g, rows, dv);

            // dA = tril(dnum Vᵀ + dden 1ᵀ)
            let da = &mut datt[..rows * rows];
            matmul_lower_part(da, rows, g_view, transposed(v_t, v_c), 1.0);
            for (i, row) in da.chunks_exact_mut(rows).enumerate() {
                row[..=i].iter_mut().for_each(|x| *x += gd[i]);
                row[i + 1..].fill(0.0);
            }
            let da_view = View::rows(da, rows, rows);
            let a_view = View::rows(a, rows, rows);

            let dq_c = &mut dq_chunk[..rows * f];
            matmul_shaped(dq_c, f, da_view, k_c, 1.0, false, Lhs::Lower); // dA K
            matmul(dq_c, f, g_view, transposed(s_t, s_c), 1.0, true); // + dnum Sᵀ
            let dk_c = &mut dk_chunk[..rows * f];
            matmul_shaped(dk_c, f, da_view.t(), q_c, 1.0, false, Lhs::Upper); // dAᵀ Q
            let ds_view = transposed(ds_t, View::rows(ds, f, dv));
            matmul(dk_c, f, v_c, ds_view, 1.0, true); // + V dSᵀ
            let dv_c = &mut dv_chunk[..rows * dv];
            matmul_shaped(dv_c, dv, a_view.t(), g_view, 1.0, false, Lhs::Upper); // Aᵀ dnum
            matmul(dv_c, dv, k_c, View::rows(ds, f, dv), 1.0, true); // + K dS
            if normalize {
                for i in 0..rows {
                    let dq_i = &mut dq_c[i * f..][..f];
                    dq_i.iter_mut().zip(z_c).for_each(|(x, z)| *x += gd[i] * z);
                    let dk_i = &mut dk_c[i * f..][..f];
                    dk_i.iter_mut().zip(&*dz).for_each(|(x, z)| *x += z);
                }
            }
            if map {
                for i in 0..rows {
                    let (dq_i, dk_i) = (&mut dq_c[i * f..][..f], &mut dk_c[i * f..][..f]);
                    dq_i.iter_mut().zip(row_of(&q_c, i)).for_each(|(g, &p)| *g *= p.min(1.0));
                    dk_i.iter_mut().zip(row_of(&k_c, i)).for_each(|(g, &p)| *g *= p.min(1.0));
                }
            }
            for i in 0..rows {
                // SAFETY: this task owns head bh, whose rows no other task writes.
                unsafe {
                    dq_rows.write(row_at(q_head, r0 + i), &dq_c[i * f..][..f]);
                    dk_rows.write(row_at(k_head, r0 + i), &dk_c[i * f..][..f]);
                    dv_rows.write(row_at(v_head, r0 + i), &dv_c[i * dv..][..dv]);
                }
            }
            // This chunk's state S_c, z_c came from all earlier chunks: pass its gradient on.
            matmul(ds, dv, q_c.t(), g_view, 1.0, true); // dS += Qᵀ dnum
            if normalize {
                for (i, &gd_i) in gd.iter().enumerate() {
                    dz.iter_mut()
                        .zip(row_of(&q_c, i))
                        .for_each(|(x, q)| *x += gd_i * q);
                }
            }
        }
    }
}

// ---- from one fused projection -------------------------------------------------------------

/// Sizes of a fused projection qkv [batch, n, heads·(2f + d_v)]: the q heads, the k heads (f
/// raw features each, mapped by elu + 1 here), then the v heads (d_v each).
#[derive(Clone, Copy, Debug)]
pub struct QkvSizes {
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    pub feature_dim: usize,
    pub value_dim: usize,
    pub chunk: usize,
}

impl QkvSizes {
    fn row(&self) -> usize {
        self.heads * (2 * self.feature_dim + self.value_dim)
    }
    /// The kernel's shape: q, k and v (and their gradients) are column blocks of the
    /// projection's rows, o is [b, n, h·d_v].
    fn shape(&self) -> LinearShape {
        let (h, f, dv) = (self.heads, self.feature_dim, self.value_dim);
        let at = |row, col0| RowLayout::TokenMajor {
            heads: h,
            row,
            col0,
        };
        LinearShape {
            heads_total: self.batch * h,
            seq: self.seq,
            feature_dim: f,
            value_dim: dv,
            chunk: self.chunk,
            layouts: Layouts {
                q: at(self.row(), 0),
                k: at(self.row(), h * f),
                v: at(self.row(), 2 * h * f),
                out: at(h * dv, 0),
            },
        }
    }
    fn check(&self, qkv: &[f32]) {
        assert!(
            self.chunk > 0 && self.heads > 0,
            "chunk and heads must be positive"
        );
        assert_eq!(
            qkv.len(),
            self.batch * self.seq * self.row(),
            "qkv must be [b, n, heads·(2f + d_v)]"
        );
    }
}

/// Forward from a fused projection: (o [b, n, h·d_v], saved state); φ = elu + 1 of the q and
/// k columns is made chunk by chunk inside the kernel.
pub fn forward_qkv(qkv: &[f32], sizes: QkvSizes, normalize: bool, eps: f32) -> (Vec<f32>, Saved) {
    sizes.check(qkv);
    forward_mapped([qkv; 3], sizes.shape(), normalize, eps, true)
}

/// Backward from a fused projection: d qkv [b, n, h·(2f + d_v)].
pub fn backward_qkv(
    qkv: &[f32],
    out: &[f32],
    saved: SavedRef,
    grad_out: &[f32],
    sizes: QkvSizes,
    normalize: bool,
    eps: f32,
) -> Vec<f32> {
    sizes.check(qkv);
    let len = qkv.len();
    let shape = sizes.shape();
    let mut dqkv: Vec<f32> = Vec::with_capacity(len);
    {
        let target = DisjointColumns::spare(&mut dqkv, len);
        backward_into(
            [qkv, qkv, qkv, out, grad_out],
            saved,
            shape,
            normalize,
            eps,
            ([&target; 3], shape.layouts),
            true,
        );
    }
    // SAFETY: every (sequence, head) task wrote its head's q, k and v columns of all n rows,
    // which together are all `len` values (and `out` was not empty, or len is 0).
    unsafe { dqkv.set_len(len) };
    dqkv
}

// ---- Burn plumbing: flex tensors in and out, and the autodiff registration -----------------

/// The op's settings besides its tensors.
#[derive(Clone, Copy, Debug)]
struct Settings {
    chunk: usize,
    normalize: bool,
    eps: f32,
    token_major: bool,
}

fn tensor_shape(q: &FlexTensor, v: &FlexTensor, chunk: usize, token_major: bool) -> LinearShape {
    let [b, h, n, f] = q.shape().dims();
    let [vb, vh, vn, dv] = v.shape().dims();
    assert!((b, h, n) == (vb, vh, vn), "q and v shapes differ");
    // Token-major tensors are [b, n, h, ·]: the second and third axes swap meaning.
    let (heads, seq) = if token_major { (n, h) } else { (h, n) };
    LinearShape {
        heads_total: b * heads,
        seq,
        feature_dim: f,
        value_dim: dv,
        chunk,
        layouts: if token_major {
            let own = |width| RowLayout::TokenMajor {
                heads,
                row: heads * width,
                col0: 0,
            };
            Layouts {
                q: own(f),
                k: own(f),
                v: own(dv),
                out: own(dv),
            }
        } else {
            Layouts {
                q: RowLayout::HeadMajor,
                k: RowLayout::HeadMajor,
                v: RowLayout::HeadMajor,
                out: RowLayout::HeadMajor,
            }
        },
    }
}

/// (o, [normaliser, per-chunk S, per-chunk z]) for contiguous q, k, v.
fn flex_forward([q, k, v]: &[FlexTensor; 3], set: Settings) -> (FlexTensor, [FlexTensor; 3]) {
    assert!(q.shape() == k.shape(), "q and k shapes differ");
    let shape = tensor_shape(q, v, set.chunk, set.token_major);
    let (out, saved) = forward(
        values(q),
        values(k),
        values(v),
        shape,
        set.normalize,
        set.eps,
    );
    let flat = |t: Vec<f32>| {
        let len = t.len();
        flex_tensor(t, Shape::new([len]))
    };
    (
        flex_tensor(out, v.shape()),
        [flat(saved.den), flat(saved.s_prev), flat(saved.z_prev)],
    )
}

/// The plain flex op.
pub(super) fn flex(
    inputs: [FlexTensor; 3],
    chunk: usize,
    normalize: bool,
    eps: f32,
    token_major: bool,
) -> FlexTensor {
    let set = Settings {
        chunk,
        normalize,
        eps,
        token_major,
    };
    flex_forward(&inputs.map(contiguous), set).0
}

#[derive(Clone, Debug)]
struct LinearSaved {
    /// q, k, v (contiguous).
    inputs: [FlexTensor; 3],
    out: FlexTensor,
    /// Normaliser, per-chunk S and per-chunk z (flat).
    chunk_state: [FlexTensor; 3],
    set: Settings,
}

impl SavedForBackward<3> for LinearSaved {
    fn gradients(self, grad_out: &[f32]) -> [(Vec<f32>, Shape); 3] {
        let [q, k, v] = &self.inputs;
        let [den, s_prev, z_prev] = &self.chunk_state;
        let (dq, dk, dv) = backward(
            values(q),
            values(k),
            values(v),
            values(&self.out),
            SavedRef {
                den: values(den),
                s_prev: values(s_prev),
                z_prev: values(z_prev),
            },
            grad_out,
            tensor_shape(q, v, self.set.chunk, self.set.token_major),
            self.set.normalize,
            self.set.eps,
        );
        [(dq, q.shape()), (dk, k.shape()), (dv, v.shape())]
    }
}

/// The op under autodiff on flex: the forward saves q, k, v, o and the per-chunk state.
pub(super) fn autodiff<C: CheckpointStrategy>(
    inputs: [AutodiffFlex<C>; 3],
    chunk: usize,
    normalize: bool,
    eps: f32,
    token_major: bool,
) -> AutodiffFlex<C> {
    let set = Settings {
        chunk,
        normalize,
        eps,
        token_major,
    };
    register_op::<C, _, _>(inputs, |inputs| {
        let (out, chunk_state) = flex_forward(&inputs, set);
        let saved = LinearSaved {
            inputs,
            out: out.clone(),
            chunk_state,
            set,
        };
        (out, saved)
    })
}

/// The settings of the op from a fused projection.
#[derive(Clone, Copy, Debug)]
pub struct QkvSettings {
    pub heads: usize,
    pub feature_dim: usize,
    pub chunk: usize,
    pub normalize: bool,
    pub eps: f32,
}

impl QkvSettings {
    fn sizes(&self, qkv: &FlexTensor) -> QkvSizes {
        let [batch, seq, row] = qkv.shape().dims();
        let (h, f) = (self.heads, self.feature_dim);
        assert!(
            h > 0 && row.is_multiple_of(h) && row / h > 2 * f,
            "linear attention: the projection's width {row} is not heads·(2·{f} + d_v)"
        );
        QkvSizes {
            batch,
            seq,
            heads: h,
            feature_dim: f,
            value_dim: row / h - 2 * f,
            chunk: self.chunk,
        }
    }
}

/// (o [b, n, h·d_v], normaliser / per-chunk S / per-chunk z) for a contiguous projection.
fn flex_forward_qkv(qkv: &FlexTensor, set: QkvSettings) -> (FlexTensor, Saved) {
    let sizes = set.sizes(qkv);
    let (out, saved) = forward_qkv(values(qkv), sizes, set.normalize, set.eps);
    let shape = Shape::new([sizes.batch, sizes.seq, sizes.heads * sizes.value_dim]);
    (flex_tensor(out, shape), saved)
}

/// The plain flex op from a fused projection.
pub(super) fn flex_qkv(qkv: FlexTensor, set: QkvSettings) -> FlexTensor {
    flex_forward_qkv(&contiguous(qkv), set).0
}

#[derive(Clone, Debug)]
struct QkvSaved {
    qkv: FlexTensor,
    out: FlexTensor,
    den: Vec<f32>,
    s_prev: Vec<f32>,
    z_prev: Vec<f32>,
    set: QkvSettings,
}

impl SavedForBackward<1> for QkvSaved {
    fn gradients(self, grad_out: &[f32]) -> [(Vec<f32>, Shape); 1] {
        let saved = SavedRef {
            den: &self.den,
            s_prev: &self.s_prev,
            z_prev: &self.z_prev,
        };
        let dqkv = backward_qkv(
            values(&self.qkv),
            values(&self.out),
            saved,
            grad_out,
            self.set.sizes(&self.qkv),
            self.set.normalize,
            self.set.eps,
        );
        [(dqkv, self.qkv.shape())]
    }
}

/// The op from a fused projection under autodiff on flex: saves the projection, o and the
/// per-chunk state.
pub(super) fn autodiff_qkv<C: CheckpointStrategy>(
    qkv: AutodiffFlex<C>,
    set: QkvSettings,
) -> AutodiffFlex<C> {
    register_op::<C, _, _>([qkv], |[qkv]| {
        let (out, saved) = flex_forward_qkv(&qkv, set);
        let saved = QkvSaved {
            qkv,
            out: out.clone(),
            den: saved.den,
            s_prev: saved.s_prev,
            z_prev: saved.z_prev,
            set,
        };
        (out, saved)
    })
}
