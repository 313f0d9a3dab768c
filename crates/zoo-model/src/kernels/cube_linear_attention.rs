//! Fused chunked causal linear attention for the CubeCL backends (wgpu; any cubecl runtime the
//! build compiles in), forward and hand-written backward: the operator of the CPU kernel
//! (chunked_linear_attention.rs; Katharopoulos et al. 2020, the chunked form of Yang et al. 2024
//! "Gated Linear Attention" without the gate) on already feature-mapped q = φ(q), k = φ(k), from
//! a zero state:
//!
//!   chunk c of C rows:  A = tril(Q_c K_cᵀ),  num = A V_c + Q_c S_c,  den = A·1 + Q_c z_c,
//!   o = num / max(den, ε)  (or o = num unnormalised),  S_{c+1} = S_c + K_cᵀ V_c,  z_{c+1} = z_c + K_cᵀ·1.
//!
//! The normaliser rides along as one more value column: with V̂ = [V | 1] (width e = d_v + 1)
//! and Ŝ = [S | z], num and den are the columns of one product, num̂ = A V̂ + Q_c Ŝ_c. The
//! backward does the same with dnum̂ = [dnum | dden] (dnum = dO / den', dden = −(dO·o)/den'
//! where den > ε, else 0), so dA = tril(dnum̂ V̂ᵀ) and, with dŜ_c = Σ_{c' > c} Q_{c'}ᵀ dnum̂_{c'}:
//!
//!   dQ_c = dA K_c + dnum̂ Ŝ_cᵀ,   dK_c = dAᵀ Q_c + V̂_c dŜ_cᵀ,   dV_c = Aᵀ dnum + K_c dS_c
//!
//! (dV keeps the first d_v columns: the ones column has no gradient). Every product above is an
//! instance of one row operation over a chunk,
//!
//!   out_i = Σ_{j in chunk(i), j ≤ i (or j ≥ i)} (L_i · R_j) W_j  +  L_i · State_{chunk(i)}
//!
//! (forward: L, R, W = Q, K, V̂ with Ŝ; dQ: dnum̂, V̂, K with Ŝᵀ; dK: V̂, dnum̂, Q with dŜᵀ, keys
//! after the row; dV: K, Q, dnum̂ with dŜ, keys after the row), so one row kernel (one
//! launch in the forward, three in the backward) and one state scan each way make up the whole
//! op. The scan is two launches: the per-chunk products X_cᵀ Y_c in parallel over (chunks ×
//! heads), then an in-place exclusive prefix (forward: K_cᵀV̂_c) or suffix (backward:
//! Q_cᵀ dnum̂_c) sum over the chunks, n / C steps in sequence. Each output row and each state
//! element is owned by one thread: no atomics (wgpu has no float atomics), deterministic.
//!
//! Memory: the forward keeps q, k, V̂, o, den and the per-chunk states Ŝ (n/C · f · e per head,
//! linear in n, as on the CPU); Burn's composed chunked form keeps every per-chunk product as a
//! separate autodiff node (the [·, C, C] scores, their mask, numerator and denominator, the
//! cumulated states) — the kernel's point on the GPU, with 5 launches forward and 6 backward
//! against the composed form's few dozen. The row kernel gives each thread one row and keeps
//! that row's L and output in registers (see `chunk_rows_kernel`).
//!
//! Layout: q, k [b·h, n, f], v, o, dO [b·h, n, d_v], contiguous f32 (head-major: the mixer's
//! composed feature maps produce that layout); states [b·h, chunks, f, e].

// The kernels are written in CubeCL's Rust subset, which has no `div_ceil` and evaluates both
// sides of `&&` (so a bounds check must stay an `if` of its own around the access it guards);
// compound assignment into tensor elements is spelled out for the same reason.
#![allow(
    clippy::collapsible_if,
    clippy::assign_op_pattern,
    clippy::manual_div_ceil
)]

use super::cube_attention::{empty, f32_contiguous};
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Cube, TensorMetadata};
use burn::prelude::Shape;
use burn_cubecl::tensor::CubeTensor;
use cubecl::calculate_cube_count_elemwise;
use cubecl::prelude::*;

/// Threads of the one-dimensional launches (the state scan, the per-row kernels).
const THREADS: u32 = 256;

// LOOP_NOTE: Mesa's lavapipe (the software Vulkan driver CI and GPU-less machines run wgpu on)
// ends a shader loop after about 65,535 iterations per invocation: the scan over 66,000
// one-token chunks came out wrong from chunk 65,535 on, and from 65,409 on with the walk split
// into nested loops of 1,024 (the inner loop's count carried over its re-entries). The long
// runtime loops (chunks, a chunk's rows, a row's keys) therefore take 16 (or 4) unrolled steps
// per iteration: a chunk of up to 65,536 rows (the config limit) and up to a million chunks stay
// inside it there. GPU drivers have no such limit.

// ---- kernels -------------------------------------------------------------------------------

/// Per-chunk products X_cᵀ Y_c [bh, chunks, wx, wy]: thread (CUBE_POS_X, UNIT_POS_X) of the
/// (head, chunk) pair numbered by (CUBE_POS_Z, CUBE_POS_Y) (see `spread`) owns element (a, b)
/// and sums it over the chunk's rows.
#[cube(launch_unchecked)]
fn chunk_products_kernel(
    x: &Tensor<f32>,            // [bh, n, wx]
    y: &Tensor<f32>,            // [bh, n, wy]
    products: &mut Tensor<f32>, // [bh, chunks, wx, wy]
    n: u32,
    chunk: u32,
    heads: u32,
    #[comptime] wx: usize,
    #[comptime] wy: usize,
) {
    let n = n as usize;
    let chunk = chunk as usize;
    let chunks = (n + chunk - 1) / chunk;
    let flat = CUBE_POS_Z as usize * CUBE_COUNT_Y as usize + CUBE_POS_Y as usize;
    let c = flat % chunks;
    let bh = flat / chunks;
    let element = CUBE_POS_X as usize * CUBE_DIM_X as usize + UNIT_POS_X as usize;
    if element < wx * wy && bh < heads as usize {
        let a = element / wy;
        let b = element % wy;
        let r0 = c * chunk;
        let mut r1 = r0 + chunk;
        if r1 > n {
            r1 = n;
        }
        let mut sum = 0.0f32;
        // Steps of 16 unrolled rows (see LOOP_NOTE).
        let groups = (r1 - r0 + 15) / 16;
        for group in 0..groups {
            #[unroll]
            for u in 0..16 {
                let r = r0 + group * 16 + u;
                if r < r1 {
                    sum += x[(bh * n + r) * wx + a] * y[(bh * n + r) * wy + b];
                }
            }
        }
        products[((bh * chunks + c) * wx + a) * wy + b] = sum;
    }
}

/// In place, per head and state element: the per-chunk products become the sums over the chunks
/// before each one in walk order (forward: exclusive prefix sums, the state each chunk starts
/// from; `reverse`: exclusive suffix sums, the state gradient each chunk receives from the later
/// ones). Only n / C steps in sequence per thread: the rows were summed in parallel before.
#[cube(launch_unchecked)]
fn exclusive_scan_kernel(
    states: &mut Tensor<f32>, // [bh, chunks, size]
    chunks: u32,
    heads: u32,
    #[comptime] size: usize,
    #[comptime] reverse: bool,
) {
    let chunks = chunks as usize;
    let bh = CUBE_POS_Z as usize * CUBE_COUNT_Y as usize + CUBE_POS_Y as usize;
    let element = CUBE_POS_X as usize * CUBE_DIM_X as usize + UNIT_POS_X as usize;
    if element < size && bh < heads as usize {
        let mut running = 0.0f32;
        // Steps of 16 unrolled chunks (see LOOP_NOTE).
        let groups = (chunks + 15) / 16;
        for group in 0..groups {
            #[unroll]
            for u in 0..16 {
                let step = group * 16 + u;
                if step < chunks {
                    let mut c = step;
                    if comptime!(reverse) {
                        c = chunks - 1 - step;
                    }
                    let at = (bh * chunks + c) * size + element;
                    let product = states[at];
                    states[at] = running;
                    running += product;
                }
            }
        }
    }
}

/// The row operation of the module docs,
///
///   out_i = Σ_m L_i[m] State_{chunk(i)}(m, ·) + Σ_{j in chunk(i), j ≤ i (`later`: j ≥ i)} (L_i · R_j) W_j,
///
/// State(m, col) = states[chunk(i)][m · state_row + col · state_col]: thread ABSOLUTE_POS owns
/// row g of [bh · n] and keeps L_g and its output row in registers (the unrolled loops index
/// them with constants). Neighbouring threads are neighbouring rows of one chunk, so their
/// state reads are the same addresses (broadcasts), and so are their R and W reads where they
/// walk the keys from the chunk's start (not `later`, whose walks start at the row itself); no
/// shared memory, no barriers. A workgroup-tiled version (B × B score blocks in shared memory, as in
/// cube_attention.rs) was 2.5–3× slower on lavapipe.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
fn chunk_rows_kernel(
    left: &Tensor<f32>,    // [bh, n, wl]
    right: &Tensor<f32>,   // [bh, n, wl]
    weights: &Tensor<f32>, // [bh, n, ww]
    states: &Tensor<f32>,  // [bh, chunks, state_size]
    out: &mut Tensor<f32>, // [bh, n, wout]
    n: u32,
    chunk: u32,
    state_row: u32,
    state_col: u32,
    state_size: u32,
    rows: u32,
    #[comptime] wl: usize,
    #[comptime] ww: usize,
    #[comptime] wout: usize,
    #[comptime] later: bool,
) {
    let g = ABSOLUTE_POS;
    if g < rows as usize {
        let n = n as usize;
        let chunk = chunk as usize;
        let state_row = state_row as usize;
        let state_col = state_col as usize;
        let chunks = (n + chunk - 1) / chunk;
        let bh = g / n;
        let i = g % n;
        let ci = i / chunk;
        let mut row = Array::<f32>::new(wl);
        #[unroll]
        for m in 0..wl {
            row[m] = left[g * wl + m];
        }
        let mut acc = Array::<f32>::new(wout);
        let state_base = (bh * chunks + ci) * state_size as usize;
        for m in 0..wl {
            let l = row[m];
            #[unroll]
            for col in 0..wout {
                acc[col] += l * states[state_base + m * state_row + col * state_col];
            }
        }
        let c0 = ci * chunk;
        let mut c1 = c0 + chunk;
        if c1 > n {
            c1 = n;
        }
        let mut j_lo = c0;
        let mut j_end = i + 1;
        if comptime!(later) {
            j_lo = i;
            j_end = c1;
        }
        // Steps of 4 unrolled keys (see LOOP_NOTE).
        let groups = (j_end - j_lo + 3) / 4;
        for group in 0..groups {
            #[unroll]
            for u in 0..4 {
                let j = j_lo + group * 4 + u;
                if j < j_end {
                    let jr = bh * n + j;
                    let mut score = 0.0f32;
                    #[unroll]
                    for m in 0..wl {
                        score += row[m] * right[jr * wl + m];
                    }
                    #[unroll]
                    for col in 0..wout {
                        acc[col] += score * weights[jr * ww + col];
                    }
                }
            }
        }
        #[unroll]
        for col in 0..wout {
            out[g * wout + col] = acc[col];
        }
    }
}

/// V̂ = [V | 1], one thread per row.
#[cube(launch_unchecked)]
fn ones_column_kernel(
    v: &Tensor<f32>,         // [rows, dv]
    v_hat: &mut Tensor<f32>, // [rows, dv + 1]
    rows: u32,
    #[comptime] dv: usize,
) {
    let r = ABSOLUTE_POS;
    if r < rows as usize {
        for c in 0..dv {
            v_hat[r * (dv + 1) + c] = v[r * dv + c];
        }
        v_hat[r * (dv + 1) + dv] = 1.0f32;
    }
}

/// o = num / max(den, ε) from num̂ = [num | den]; den kept for the backward. One thread per row.
#[cube(launch_unchecked)]
fn normalize_kernel(
    num_hat: &Tensor<f32>, // [rows, dv + 1]
    out: &mut Tensor<f32>, // [rows, dv]
    den: &mut Tensor<f32>, // [rows]
    rows: u32,
    eps: f32,
    #[comptime] dv: usize,
) {
    let r = ABSOLUTE_POS;
    if r < rows as usize {
        let d = num_hat[r * (dv + 1) + dv];
        let mut clamped = d;
        if clamped < eps {
            clamped = eps;
        }
        for c in 0..dv {
            out[r * dv + c] = num_hat[r * (dv + 1) + c] / clamped;
        }
        den[r] = d;
    }
}

/// dnum̂ = [dO / den' | −(dO·o)/den' where den > ε, else 0], den' = max(den, ε). One thread per
/// row.
#[cube(launch_unchecked)]
fn output_grad_kernel(
    grad_out: &Tensor<f32>,     // [rows, dv]
    out: &Tensor<f32>,          // [rows, dv]
    den: &Tensor<f32>,          // [rows]
    dnum_hat: &mut Tensor<f32>, // [rows, dv + 1]
    rows: u32,
    eps: f32,
    #[comptime] dv: usize,
) {
    let r = ABSOLUTE_POS;
    if r < rows as usize {
        let d = den[r];
        let mut clamped = d;
        if clamped < eps {
            clamped = eps;
        }
        let mut dot = 0.0f32;
        for c in 0..dv {
            let g = grad_out[r * dv + c];
            dnum_hat[r * (dv + 1) + c] = g / clamped;
            dot += g * out[r * dv + c];
        }
        let mut dden = 0.0f32;
        if d > eps {
            dden = -dot / clamped;
        }
        dnum_hat[r * (dv + 1) + dv] = dden;
    }
}

// ---- host side -----------------------------------------------------------------------------

/// The sizes of one call.
#[derive(Clone, Copy, Debug)]
struct Sizes {
    /// Heads over the batch (b · h).
    bh: usize,
    n: usize,
    /// Feature width f of q and k.
    f: usize,
    dv: usize,
    /// Width of V̂ and the states: d_v + 1 with the normaliser, d_v without.
    e: usize,
    chunk: usize,
    chunks: usize,
}

impl Sizes {
    fn new(q: &CubeTensor, v: &CubeTensor, chunk: usize, normalize: bool) -> Self {
        let [b, h, n, f] = q.shape().dims();
        let [vb, vh, vn, dv] = v.shape().dims();
        assert!(
            [vb, vh, vn] == [b, h, n],
            "q and v shapes differ outside the last axis"
        );
        assert!(chunk > 0, "the chunk size must be positive");
        assert!(f > 0 && dv > 0, "empty feature or value width");
        Sizes {
            bh: b * h,
            n,
            f,
            dv,
            e: dv + usize::from(normalize),
            chunk,
            chunks: n.div_ceil(chunk),
        }
    }

    fn rows(&self) -> usize {
        self.bh * self.n
    }
}

/// One thread per row of the [rows, ·] per-row kernels (ABSOLUTE_POS; cubecl spreads the
/// workgroups over the grid's axes past its per-axis limit).
fn per_row(like: &CubeTensor, rows: usize) -> (CubeCount, CubeDim) {
    let dim = CubeDim::new_1d(THREADS);
    (calculate_cube_count_elemwise(&like.client, rows, dim), dim)
}

/// Workgroups for `groups` element groups of each of `items` (head or (head, chunk)) items:
/// (groups, Y, Z) with Y · Z ≥ items and Y within the per-axis limit of 65,535 that every
/// backend has; the kernel numbers the items Z · CUBE_COUNT_Y + Y and skips those past `items`.
fn spread(groups: u32, items: usize) -> CubeCount {
    const AXIS: usize = 65_535;
    let z = items.div_ceil(AXIS).max(1);
    let y = items.div_ceil(z);
    CubeCount::Static(groups, y as u32, z as u32)
}

/// The chunk states of X [bh, n, wx] and Y [bh, n, wy]: [bh, chunks, wx, wy], exclusive prefix
/// (or `reverse`: suffix) sums over the chunks of X_cᵀ Y_c.
fn state_scan(x: &CubeTensor, y: &CubeTensor, s: Sizes, reverse: bool) -> CubeTensor {
    let (wx, wy) = (x.shape()[3], y.shape()[3]);
    let states = empty(x, Shape::new([s.bh, s.chunks, wx, wy]));
    let element_groups = ((wx * wy) as u32).div_ceil(THREADS);
    // SAFETY: element indices are checked against wx·wy, rows stay below n, chunks below
    // ceil(n / chunk); every buffer is sized from the same sizes.
    unsafe {
        chunk_products_kernel::launch_unchecked(
            &x.client,
            spread(element_groups, s.chunks * s.bh),
            CubeDim::new_1d(THREADS),
            x.clone().into_tensor_arg(),
            y.clone().into_tensor_arg(),
            states.clone().into_tensor_arg(),
            s.n as u32,
            s.chunk as u32,
            s.bh as u32,
            wx,
            wy,
        );
        exclusive_scan_kernel::launch_unchecked(
            &x.client,
            spread(element_groups, s.bh),
            CubeDim::new_1d(THREADS),
            states.clone().into_tensor_arg(),
            s.chunks as u32,
            s.bh as u32,
            wx * wy,
            reverse,
        );
    }
    states
}

/// How the row kernel reads a state: State(m, col) = state[m · row + col · col_stride].
#[derive(Clone, Copy)]
struct StateView {
    row: usize,
    col: usize,
}

/// The row operation (module docs) with `left`, `right` [bh, n, wl], `weights` [bh, n, ww] and
/// chunk states [bh, chunks, ·] read through `view`, into the first `wout` columns: [b, h, n,
/// wout] in `out_shape`.
#[allow(clippy::too_many_arguments)]
fn chunk_rows(
    [left, right, weights]: [&CubeTensor; 3],
    states: &CubeTensor,
    view: StateView,
    wout: usize,
    out_shape: Shape,
    s: Sizes,
    later: bool,
) -> CubeTensor {
    let (wl, ww) = (left.shape()[3], weights.shape()[3]);
    let state_size = states.shape()[2] * states.shape()[3];
    let out = empty(left, out_shape);
    let (count, dim) = per_row(left, s.rows());
    // SAFETY: rows are checked against bh·n; keys stay inside the row's chunk and below n;
    // state indices stay below the state's size; the register arrays are indexed by unrolled
    // constants below their comptime lengths.
    unsafe {
        chunk_rows_kernel::launch_unchecked(
            &left.client,
            count,
            dim,
            left.clone().into_tensor_arg(),
            right.clone().into_tensor_arg(),
            weights.clone().into_tensor_arg(),
            states.clone().into_tensor_arg(),
            out.clone().into_tensor_arg(),
            s.n as u32,
            s.chunk as u32,
            view.row as u32,
            view.col as u32,
            state_size as u32,
            s.rows() as u32,
            wl,
            ww,
            wout,
            later,
        );
    }
    out
}

/// What the forward computes and the backward needs besides q and k.
struct Forward {
    out: CubeTensor,
    /// V̂ = [V | 1] (V itself without the normaliser).
    v_hat: CubeTensor,
    /// Ŝ before each chunk [bh, chunks, f, e].
    states: CubeTensor,
    /// The normaliser den per row [bh, n] (None without it).
    den: Option<CubeTensor>,
}

/// Forward on contiguous f32 φ(q), φ(k) [b, h, n, f] and v [b, h, n, d_v] → o [b, h, n, d_v].
fn forward(q: &CubeTensor, k: &CubeTensor, v: CubeTensor, s: Sizes, eps: f32) -> Forward {
    let [b, h] = [q.shape()[0], q.shape()[1]];
    let shape = |w: usize| Shape::new([b, h, s.n, w]);
    let normalize = s.e > s.dv;
    if s.rows() == 0 {
        return Forward {
            out: empty(q, shape(s.dv)),
            v_hat: v,
            states: empty(q, Shape::new([s.bh, s.chunks, s.f, s.e])),
            den: None,
        };
    }
    let v_hat = if normalize {
        let v_hat = empty(&v, shape(s.e));
        let (count, dim) = per_row(&v, s.rows());
        // SAFETY: rows are checked against `rows`; both buffers hold rows × their width.
        unsafe {
            ones_column_kernel::launch_unchecked(
                &v_hat.client.clone(),
                count,
                dim,
                v.into_tensor_arg(),
                v_hat.clone().into_tensor_arg(),
                s.rows() as u32,
                s.dv,
            );
        }
        v_hat
    } else {
        v
    };
    let states = state_scan(k, &v_hat, s, false);
    // Ŝ[a, b] at a·e + b: rows of the state are q's features.
    let view = StateView { row: s.e, col: 1 };
    let num_hat = chunk_rows([q, k, &v_hat], &states, view, s.e, shape(s.e), s, false);
    if !normalize {
        return Forward {
            out: num_hat,
            v_hat,
            states,
            den: None,
        };
    }
    let out = empty(q, shape(s.dv));
    let den = empty(q, Shape::new([s.bh, s.n]));
    let (count, dim) = per_row(q, s.rows());
    // SAFETY: rows are checked against `rows`; the buffers hold rows × their width.
    unsafe {
        normalize_kernel::launch_unchecked(
            &q.client,
            count,
            dim,
            num_hat.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            den.clone().into_tensor_arg(),
            s.rows() as u32,
            eps,
            s.dv,
        );
    }
    Forward {
        out,
        v_hat,
        states,
        den: Some(den),
    }
}

/// Backward from the forward's saved state and dO [b, h, n, d_v]: (dq, dk, dv).
fn backward(saved: &LinearSaved, grad_out: CubeTensor) -> [CubeTensor; 3] {
    let (s, q, k) = (saved.sizes, &saved.q, &saved.k);
    let [b, h] = [q.shape()[0], q.shape()[1]];
    let shape = |w: usize| Shape::new([b, h, s.n, w]);
    if s.rows() == 0 {
        return [shape(s.f), shape(s.f), shape(s.dv)].map(|sh| empty(q, sh));
    }
    let grad_out = f32_contiguous(grad_out);
    let dnum_hat = match &saved.den {
        Some(den) => {
            let dnum_hat = empty(q, shape(s.e));
            let (count, dim) = per_row(q, s.rows());
            // SAFETY: rows are checked against `rows`; the buffers hold rows × their width.
            unsafe {
                output_grad_kernel::launch_unchecked(
                    &q.client,
                    count,
                    dim,
                    grad_out.into_tensor_arg(),
                    saved.out.clone().into_tensor_arg(),
                    den.clone().into_tensor_arg(),
                    dnum_hat.clone().into_tensor_arg(),
                    s.rows() as u32,
                    saved.eps,
                    s.dv,
                );
            }
            dnum_hat
        }
        None => grad_out,
    };
    let grad_states = state_scan(q, &dnum_hat, s, true); // dŜ after each chunk [bh, chunks, f, e]
    let (plain, transposed) = (
        StateView { row: s.e, col: 1 },
        StateView { row: 1, col: s.e },
    );
    let v_hat = &saved.v_hat;
    let dq = chunk_rows(
        [&dnum_hat, v_hat, k],
        &saved.states,
        transposed,
        s.f,
        shape(s.f),
        s,
        false,
    );
    let dk = chunk_rows(
        [v_hat, &dnum_hat, q],
        &grad_states,
        transposed,
        s.f,
        shape(s.f),
        s,
        true,
    );
    let dv = chunk_rows(
        [k, q, &dnum_hat],
        &grad_states,
        plain,
        s.dv,
        shape(s.dv),
        s,
        true,
    );
    [dq, dk, dv]
}

// ---- Burn plumbing: the plain cube op and its autodiff node --------------------------------

/// The plain op on a cube device: φ(q), φ(k) [b, h, n, f], v [b, h, n, d_v] → [b, h, n, d_v].
pub(super) fn cube(
    [q, k, v]: [CubeTensor; 3],
    chunk: usize,
    normalize: bool,
    eps: f32,
) -> CubeTensor {
    let s = Sizes::new(&q, &v, chunk, normalize);
    let [q, k, v] = [q, k, v].map(f32_contiguous);
    forward(&q, &k, v, s, eps).out
}

/// What the forward keeps for the backward (O(n·(f + d_v)) plus the chunk states).
#[derive(Clone, Debug)]
struct LinearSaved {
    q: CubeTensor,
    k: CubeTensor,
    v_hat: CubeTensor,
    states: CubeTensor,
    out: CubeTensor,
    den: Option<CubeTensor>,
    sizes: Sizes,
    eps: f32,
}

impl super::CubeSavedForBackward<3> for LinearSaved {
    /// The reverse scan and the three row launches on dO.
    fn gradients(self, grad_out: CubeTensor) -> [CubeTensor; 3] {
        backward(&self, grad_out)
    }
}

/// The op under autodiff on a cube device: the forward saves q, k, V̂, the states, o and den.
pub(super) fn autodiff<C: CheckpointStrategy>(
    inputs: [FloatTensor<Autodiff<Cube, C>>; 3],
    chunk: usize,
    normalize: bool,
    eps: f32,
) -> FloatTensor<Autodiff<Cube, C>> {
    super::register_cube_op::<C, _, 3>(inputs, |[q, k, v]| {
        let s = Sizes::new(&q, &v, chunk, normalize);
        let fwd = forward(&q, &k, v, s, eps);
        let saved = LinearSaved {
            q,
            k,
            v_hat: fwd.v_hat,
            states: fwd.states,
            out: fwd.out.clone(),
            den: fwd.den,
            sizes: s,
            eps,
        };
        (fwd.out, saved)
    })
}
