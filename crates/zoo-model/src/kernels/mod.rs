//! Fused CPU kernels for the training hot path, plugged into Burn as a backend extension with
//! hand-written backward passes: causal softmax attention over a key pattern (dense causal,
//! sliding window, BigBird; tiled, masked half skipped, O(n) memory; read straight from one
//! fused q/k/v projection with RoPE and log-n inside in qkv_attention.rs), chunked linear
//! attention (also from one fused projection, elu+1 inside), the RWKV-6 WKV recurrence, the
//! gated delta rule (Gated DeltaNet, and Mamba-2's scalar-decay recurrence) and the whole
//! delta-rule layer between its projections, the linear layer (bias inside the product), RoPE,
//! LayerNorm, exact GELU, the elu+1 feature map and the masked cross-entropy loss. The small
//! products of the two attentions and the linear layer's weight gradient run on the
//! register-blocked AVX-512 products of tile_gemm.rs where the CPU has them, on gemm elsewhere.
//! Each kernel file holds its mechanism and formulas, its host forward and backward, the
//! state its forward saves for the backward and its flex / autodiff glue; this file is the
//! plumbing: the extension traits, the tensor entry points, one generic autodiff registration
//! per backend (`register_op` for flex, `register_cube_op` for the CubeCL kernels) and the
//! one-line delegations of the flex, cube and autodiff implementations.
//!
//! Why: on the flex backend Burn's autodiff runs each elementwise op as its own pass with its
//! own saved tensor and falls back to materialised n×n scores for attention, which made a plain
//! Burn model 4–6× slower than PyTorch on the reference workload (docs/benchmarks.md). The
//! kernels run only on flex (with or without autodiff), and only while `set_enabled(true)` (the
//! default) — except softmax attention and chunked linear attention, which also have CubeCL
//! kernels for the GPU backends (cube_attention.rs, cube_linear_attention.rs, their own
//! extension trait `CubeAttentionOps`); every other backend, and
//! flex with the kernels disabled, takes the composed tensor-op path — which the tests use as the
//! reference the fused path must match (outputs and gradients, tests/fused_kernels.rs and
//! tests/wgpu_attention.rs).

pub mod causal_attention;
pub mod chunked_linear_attention;
pub mod cross_entropy;
pub mod cube_attention;
pub mod cube_linear_attention;
pub mod delta_layer;
pub mod elu_plus_one;
pub mod gated_delta;
pub mod gelu;
mod gemm;
pub mod layer_norm;
pub mod linear;
pub mod qkv_attention;
pub mod rotary;
mod simd;
mod tile_gemm;
pub mod wkv;

use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};

use burn::backend::TensorMetadata;
use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Autodiff, Backend, Cube, Dispatch, DispatchDevice, Flex, backend_extension};
use burn::prelude::*;
use burn_cubecl::tensor::CubeTensor;

pub use causal_attention::KeyPattern;
pub use chunked_linear_attention::QkvSettings;
pub use qkv_attention::{Positions, QkvAttention};
pub use simd::{isa_cap, isa_path};

/// Threads the kernels (and flex's GEMMs) run on: rayon's pool (`RAYON_NUM_THREADS`, else one
/// per logical core).
pub fn threads() -> usize {
    rayon::current_num_threads()
}

static ENABLED: AtomicBool = AtomicBool::new(true);

/// Switch the fused kernels on or off for the whole process (benchmarks compare both paths).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Whether tensors on `device` take the fused path.
pub fn fused_on(device: &Device) -> bool {
    ENABLED.load(Ordering::Relaxed)
        && matches!(
            device.clone().without_autodiff().as_dispatch(),
            DispatchDevice::Flex(_)
        )
}

/// Whether attention (softmax and its sparse patterns, and chunked linear attention) on
/// `device` takes a fused kernel: the CPU kernels on flex (while the kernels are enabled), the
/// CubeCL kernels (kernels/cube_attention.rs, cube_linear_attention.rs) on a cube device
/// (wgpu). The callers take Burn's composed path otherwise.
pub fn fused_attention_on(device: &Device) -> bool {
    ENABLED.load(Ordering::Relaxed)
        && matches!(
            device.clone().without_autodiff().as_dispatch(),
            DispatchDevice::Flex(_) | DispatchDevice::Cube(_)
        )
}

/// Which fused kernels tensors on `device` take, as the memory estimates count them.
pub fn on_device(device: &Device) -> crate::memory::Kernels {
    use crate::memory::Kernels;
    if fused_on(device) {
        Kernels::Cpu
    } else if fused_attention_on(device) {
        Kernels::Attention
    } else {
        Kernels::None
    }
}

fn on_cube(device: &Device) -> bool {
    matches!(
        device.clone().without_autodiff().as_dispatch(),
        DispatchDevice::Cube(_)
    )
}

/// The GPU extension: the attention kernels for the CubeCL backends. A trait of its own (rather
/// than a `Cube` entry on `FusedOps`) so flex's CPU kernels need no cube stubs and the cube
/// backend needs none of the CPU ones.
#[backend_extension(Cube, Autodiff)]
pub trait CubeAttentionOps: Backend {
    /// Same contract as [`FusedOps::fused_causal_attention`].
    fn cube_causal_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        scale: f32,
        slopes: Vec<f32>,
        pattern: KeyPattern,
    ) -> FloatTensor<Self>;

    /// Same contract as [`FusedOps::fused_linear_attention`] on head-major tensors.
    fn cube_linear_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        chunk: usize,
        normalize: bool,
        eps: f32,
    ) -> FloatTensor<Self>;
}

impl CubeAttentionOps for Cube {
    fn cube_causal_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        scale: f32,
        slopes: Vec<f32>,
        pattern: KeyPattern,
    ) -> FloatTensor<Self> {
        cube_attention::cube([q, k, v], scale, &slopes, &pattern)
    }

    fn cube_linear_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        chunk: usize,
        normalize: bool,
        eps: f32,
    ) -> FloatTensor<Self> {
        cube_linear_attention::cube([q, k, v], chunk, normalize, eps)
    }
}

impl<C: CheckpointStrategy> CubeAttentionOps for Autodiff<Cube, C> {
    fn cube_causal_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        scale: f32,
        slopes: Vec<f32>,
        pattern: KeyPattern,
    ) -> FloatTensor<Self> {
        cube_attention::autodiff::<C>([q, k, v], scale, slopes, pattern)
    }

    fn cube_linear_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        chunk: usize,
        normalize: bool,
        eps: f32,
    ) -> FloatTensor<Self> {
        cube_linear_attention::autodiff::<C>([q, k, v], chunk, normalize, eps)
    }
}

/// The extension: one primitive per fused kernel.
#[backend_extension(Flex, Autodiff)]
pub trait FusedOps: Backend {
    /// Causal softmax attention of q, k, v [b, h, n, d] with logit scale, per-head ALiBi
    /// slopes (empty for none) and a key pattern → [b, h, n, d].
    fn fused_causal_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        scale: f32,
        slopes: Vec<f32>,
        pattern: KeyPattern,
    ) -> FloatTensor<Self>;

    /// Causal attention read from one fused projection qkv [b, n, (h + 2·h_kv)·d] (the query
    /// heads, then the key and the value heads) → [b, n, h·d], with RoPE, log-n factors, logit
    /// scale, ALiBi slopes and key pattern from `spec` (kernels/qkv_attention.rs).
    fn fused_qkv_attention(qkv: FloatTensor<Self>, spec: QkvAttention) -> FloatTensor<Self>;

    /// Chunked causal linear attention of feature-mapped q, k [b, h, n, f] and v [b, h, n, dv]
    /// from a zero state → [b, h, n, dv]; with `token_major`, every tensor is [b, n, h, ·].
    fn fused_linear_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        chunk: usize,
        normalize: bool,
        eps: f32,
        token_major: bool,
    ) -> FloatTensor<Self>;

    /// Chunked causal linear attention with the elu + 1 feature map from one fused projection
    /// qkv [b, n, h·(2f + d_v)] (raw q heads, raw k heads, v heads) from a zero state →
    /// [b, n, h·d_v] (kernels/chunked_linear_attention.rs, `forward_qkv`).
    fn fused_linear_attention_qkv(qkv: FloatTensor<Self>, set: QkvSettings) -> FloatTensor<Self>;

    /// RWKV-6 WKV recurrence from a zero state: r, k, log w [b, h, n, dk], v [b, h, n, dv],
    /// u [h, dk] → o [b, h, n, dv].
    fn fused_wkv(
        r: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        log_w: FloatTensor<Self>,
        u: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    /// Gated delta rule (or, without `delta`, Mamba-2's scalar-decay recurrence) from a zero
    /// state: q, k [b, h, n, dk], v [b, h, n, dv], beta and log_alpha [b, h, n] → o [b, h, n, dv].
    fn fused_gated_delta(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        log_alpha: FloatTensor<Self>,
        delta: bool,
    ) -> FloatTensor<Self>;

    /// The delta-rule layer between its projections (kernels/delta_layer.rs): P [b, n, 4d],
    /// convolution taps [K, 3d] and bias [3d], raw β and ln α [b, n, heads], RMSNorm weight
    /// [head_dim] → the gated, normalised output [b, n, d].
    fn fused_delta_layer(
        projected: FloatTensor<Self>,
        taps: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        log_alpha: FloatTensor<Self>,
        norm: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    /// x [.., d_in] · W [d_in, d_out] + b [d_out].
    fn fused_linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    /// x [.., d_in] · W [d_in, d_out].
    fn fused_linear_no_bias(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self>;

    /// LayerNorm over the last axis.
    fn fused_layer_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f32,
    ) -> FloatTensor<Self>;

    /// Rotary embedding of x [b, h, n, dh] with cos/sin tables [n · dh/2] for its positions.
    fn fused_rope(x: FloatTensor<Self>, cos: Vec<f32>, sin: Vec<f32>) -> FloatTensor<Self>;

    /// Exact (erf) GELU.
    fn fused_gelu(x: FloatTensor<Self>) -> FloatTensor<Self>;

    /// elu(x) + 1, the linear-attention feature map.
    fn fused_elu_plus_one(x: FloatTensor<Self>) -> FloatTensor<Self>;

    /// Weighted mean cross-entropy of logits [rows, vocab] against targets [rows] with
    /// weights [rows] (the loss mask) → [1]. Differentiable in the logits only.
    fn fused_cross_entropy(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        weights: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
}

/// Tensor-level entry points (callers check `fused_on` first; `fused_attention_on` for
/// attention, which also runs on cube devices).
pub fn causal_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    scale: f32,
    slopes: &[f32],
) -> Tensor<4> {
    sparse_attention(q, k, v, scale, slopes, KeyPattern::Causal)
}

/// Causal attention restricted to a key pattern (sliding window, BigBird).
pub fn sparse_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    scale: f32,
    slopes: &[f32],
    pattern: KeyPattern,
) -> Tensor<4> {
    if on_cube(&q.device()) {
        return Tensor::from_dispatch(<Dispatch as CubeAttentionOps>::cube_causal_attention(
            q.into_dispatch(),
            k.into_dispatch(),
            v.into_dispatch(),
            scale,
            slopes.to_vec(),
            pattern,
        ));
    }
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_causal_attention(
        q.into_dispatch(),
        k.into_dispatch(),
        v.into_dispatch(),
        scale,
        slopes.to_vec(),
        pattern,
    ))
}

/// Causal attention from one fused projection (see [`FusedOps::fused_qkv_attention`]):
/// qkv [b, n, (h + 2·h_kv)·d] → [b, n, h·d]. Flex only: callers check `fused_on`.
pub fn qkv_attention(qkv: Tensor<3>, spec: QkvAttention) -> Tensor<3> {
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_qkv_attention(
        qkv.into_dispatch(),
        spec,
    ))
}

/// Chunked causal linear attention of feature-mapped q, k [b, h, n, f] and v [b, h, n, d_v]
/// from a zero state → [b, h, n, d_v]: the CPU kernel on flex, the CubeCL kernel
/// (kernels/cube_linear_attention.rs) on a cube device. Callers check [`fused_attention_on`].
pub fn linear_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    chunk: usize,
    normalize: bool,
    eps: f32,
) -> Tensor<4> {
    if on_cube(&q.device()) {
        return Tensor::from_dispatch(<Dispatch as CubeAttentionOps>::cube_linear_attention(
            q.into_dispatch(),
            k.into_dispatch(),
            v.into_dispatch(),
            chunk,
            normalize,
            eps,
        ));
    }
    linear_attention_in(q, k, v, chunk, normalize, eps, false)
}

/// [`linear_attention`] on token-major q, k [b, n, h, f] and v [b, n, h, dv] → [b, n, h, dv]:
/// the projections' own layout, so no head split / merge copies are needed around it.
pub fn linear_attention_token_major(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    chunk: usize,
    normalize: bool,
    eps: f32,
) -> Tensor<4> {
    linear_attention_in(q, k, v, chunk, normalize, eps, true)
}

fn linear_attention_in(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    chunk: usize,
    normalize: bool,
    eps: f32,
    token_major: bool,
) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_linear_attention(
        q.into_dispatch(),
        k.into_dispatch(),
        v.into_dispatch(),
        chunk,
        normalize,
        eps,
        token_major,
    ))
}

/// Elu + 1 linear attention from one fused projection (see
/// [`FusedOps::fused_linear_attention_qkv`]): qkv [b, n, h·(2f + d_v)] → [b, n, h·d_v].
pub fn linear_attention_qkv(qkv: Tensor<3>, set: QkvSettings) -> Tensor<3> {
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_linear_attention_qkv(
        qkv.into_dispatch(),
        set,
    ))
}

pub fn wkv(r: Tensor<4>, k: Tensor<4>, v: Tensor<4>, log_w: Tensor<4>, u: Tensor<2>) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_wkv(
        r.into_dispatch(),
        k.into_dispatch(),
        v.into_dispatch(),
        log_w.into_dispatch(),
        u.into_dispatch(),
    ))
}

/// q, k [b, h, n, dk], v [b, h, n, dv], beta and log_alpha [b, h, n] → o [b, h, n, dv] (zero initial state).
pub fn gated_delta(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    beta: Tensor<3>,
    log_alpha: Tensor<3>,
    delta: bool,
) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_gated_delta(
        q.into_dispatch(),
        k.into_dispatch(),
        v.into_dispatch(),
        beta.into_dispatch(),
        log_alpha.into_dispatch(),
        delta,
    ))
}

/// The delta-rule layer's core on token-major inputs (see [`FusedOps::fused_delta_layer`]).
pub fn delta_layer(
    projected: Tensor<3>,
    taps: Tensor<2>,
    bias: Tensor<1>,
    beta: Tensor<3>,
    log_alpha: Tensor<3>,
    norm: Tensor<1>,
) -> Tensor<3> {
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_delta_layer(
        projected.into_dispatch(),
        taps.into_dispatch(),
        bias.into_dispatch(),
        beta.into_dispatch(),
        log_alpha.into_dispatch(),
        norm.into_dispatch(),
    ))
}

/// x [.., d_in] · W [d_in, d_out] (+ b [d_out]).
pub fn linear<const D: usize>(
    x: Tensor<D>,
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
) -> Tensor<D> {
    Tensor::from_dispatch(match bias {
        Some(b) => <Dispatch as FusedOps>::fused_linear(
            x.into_dispatch(),
            weight.into_dispatch(),
            b.into_dispatch(),
        ),
        None => {
            <Dispatch as FusedOps>::fused_linear_no_bias(x.into_dispatch(), weight.into_dispatch())
        }
    })
}

pub fn layer_norm<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    eps: f32,
) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_layer_norm(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        eps,
    ))
}

pub fn rope(x: Tensor<4>, cos: Vec<f32>, sin: Vec<f32>) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_rope(
        x.into_dispatch(),
        cos,
        sin,
    ))
}

pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_gelu(x.into_dispatch()))
}

pub fn cross_entropy(logits: Tensor<2>, targets: Tensor<1, Int>, weights: Tensor<1>) -> Tensor<1> {
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_cross_entropy(
        logits.into_dispatch(),
        targets.into_dispatch(),
        weights.into_dispatch(),
    ))
}

pub fn elu_plus_one<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_elu_plus_one(
        x.into_dispatch(),
    ))
}

// ---- plumbing shared by the kernel files ---------------------------------------------------

/// A float tensor of flex under autodiff.
type AutodiffFlex<C> = FloatTensor<Autodiff<Flex, C>>;

/// A contiguous f32 copy-or-view of a flex tensor.
fn contiguous(t: FlexTensor) -> FlexTensor {
    assert_eq!(
        t.dtype(),
        burn::tensor::DType::F32,
        "the fused kernels take f32 tensors"
    );
    t.to_contiguous()
}

fn values(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>()
        .expect("contiguous f32 tensor (made so by `contiguous`)")
}

fn flex_tensor(values: Vec<f32>, shape: Shape) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// A buffer that parallel tasks write at disjoint index sets: each (sequence, head) task owns its
/// head's columns (or rows) of every token-major row, which interleave, so `chunks_mut` cannot
/// hand them out (delta_layer.rs, qkv_attention.rs, chunked_linear_attention.rs). The writer
/// holds the buffer's exclusive borrow for its lifetime, so nothing else touches it meanwhile.
#[derive(Clone, Copy)]
pub struct DisjointColumns<'a> {
    ptr: *mut f32,
    len: usize,
    _buffer: PhantomData<&'a ()>,
}

// SAFETY: tasks only write through `at` / `write` at index sets no other task touches (their
// own head's columns, by construction in the kernels that make one).
unsafe impl Send for DisjointColumns<'_> {}
unsafe impl Sync for DisjointColumns<'_> {}

impl<'a> DisjointColumns<'a> {
    fn new(buffer: &'a mut [f32]) -> Self {
        DisjointColumns {
            ptr: buffer.as_mut_ptr(),
            len: buffer.len(),
            _buffer: PhantomData,
        }
    }

    /// Over the first `len` slots of an empty vector's spare capacity, which the tasks fill
    /// with `write` before the owner sets the length (no zero fill of an output that every
    /// element of is written anyway).
    fn spare(buffer: &'a mut Vec<f32>, len: usize) -> Self {
        assert!(buffer.is_empty(), "spare capacity of an empty vector");
        buffer.reserve_exact(len);
        DisjointColumns {
            ptr: buffer.as_mut_ptr(),
            len,
            _buffer: PhantomData,
        }
    }

    /// `len` values from `start` (of an initialised buffer).
    ///
    /// # Safety
    /// No other live slice of this buffer may overlap `start..start + len`, and the buffer the
    /// writer was made from must outlive the slice.
    #[allow(clippy::mut_from_ref)]
    unsafe fn at(&self, start: usize, len: usize) -> &mut [f32] {
        assert!(start + len <= self.len, "column slice out of bounds");
        // SAFETY: in bounds (asserted); exclusivity is the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), len) }
    }

    /// Copies `values` to `start..start + values.len()` (which may be uninitialised).
    ///
    /// # Safety
    /// No other task may read or write that range, and the buffer must outlive the call.
    unsafe fn write(&self, start: usize, values: &[f32]) {
        assert!(
            start + values.len() <= self.len,
            "column slice out of bounds"
        );
        // SAFETY: in bounds (asserted); `values` is another allocation; exclusivity is the
        // caller's contract.
        unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), self.ptr.add(start), values.len()) }
    }
}

/// What a fused op's forward keeps for its backward under autodiff, and that backward: dO in,
/// the gradient of each of the op's N differentiable inputs out (host values, input's shape).
trait SavedForBackward<const N: usize>: Clone + Send + std::fmt::Debug + 'static {
    fn gradients(self, grad_out: &[f32]) -> [(Vec<f32>, Shape); N];
}

/// The autodiff node of every fused op: runs the saved state's backward on dO and registers the
/// gradients of the inputs that are tracked.
#[derive(Debug)]
struct FusedBackward<S>(PhantomData<S>);

impl<S: SavedForBackward<N>, const N: usize> Backward<Flex, N> for FusedBackward<S> {
    type State = S;

    fn backward(self, ops: Ops<S, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad_out = contiguous(grads.consume::<Flex>(&ops.node));
        let computed = ops.state.gradients(values(&grad_out));
        for (parent, (values, shape)) in ops.parents.into_iter().zip(computed) {
            if let Some(node) = parent {
                grads.register::<Flex>(node.id, flex_tensor(values, shape));
            }
        }
    }
}

/// A fused op under autodiff on flex: `forward` maps the contiguous differentiable inputs to the
/// output and the state its backward needs (dropped when no input is tracked). `C` is named at
/// the call (`register_op::<C, _, _>`): the tensor type does not carry it.
fn register_op<C: CheckpointStrategy, S: SavedForBackward<N>, const N: usize>(
    inputs: [AutodiffFlex<C>; N],
    forward: impl FnOnce([FlexTensor; N]) -> (FlexTensor, S),
) -> AutodiffFlex<C> {
    let prep = FusedBackward::<S>(PhantomData)
        .prepare::<C>(inputs.each_ref().map(|t| t.node()))
        .compute_bound()
        .stateful();
    let (out, saved) = forward(inputs.map(|t| contiguous(t.into_primitive())));
    match prep {
        OpsKind::Tracked(prep) => prep.finish(saved, out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    }
}

/// The cube twin of [`SavedForBackward`]: what a CubeCL kernel's forward keeps under autodiff,
/// and its backward — dO in, the gradient of each of the op's N inputs out, on the device.
trait CubeSavedForBackward<const N: usize>: Clone + Send + std::fmt::Debug + 'static {
    fn gradients(self, grad_out: CubeTensor) -> [CubeTensor; N];
}

/// The autodiff node of every CubeCL kernel: runs the saved state's backward on dO and registers
/// the gradients of the inputs that are tracked.
#[derive(Debug)]
struct CubeFusedBackward<S>(PhantomData<S>);

impl<S: CubeSavedForBackward<N>, const N: usize> Backward<Cube, N> for CubeFusedBackward<S> {
    type State = S;

    fn backward(self, ops: Ops<S, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad_out = grads.consume::<Cube>(&ops.node);
        let computed = ops.state.gradients(grad_out);
        for (parent, grad) in ops.parents.into_iter().zip(computed) {
            if let Some(node) = parent {
                grads.register::<Cube>(node.id, grad);
            }
        }
    }
}

/// A CubeCL kernel under autodiff: `forward` maps the contiguous f32 inputs to the output and
/// the state its backward needs (dropped when no input is tracked) — [`register_op`] for cube
/// devices.
fn register_cube_op<C: CheckpointStrategy, S: CubeSavedForBackward<N>, const N: usize>(
    inputs: [FloatTensor<Autodiff<Cube, C>>; N],
    forward: impl FnOnce([CubeTensor; N]) -> (CubeTensor, S),
) -> FloatTensor<Autodiff<Cube, C>> {
    let prep = CubeFusedBackward::<S>(PhantomData)
        .prepare::<C>(inputs.each_ref().map(|t| t.node()))
        .compute_bound()
        .stateful();
    let (out, saved) = forward(inputs.map(|t| cube_attention::f32_contiguous(t.into_primitive())));
    match prep {
        OpsKind::Tracked(prep) => prep.finish(saved, out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    }
}

/// An elementwise map y = f(x) on flex.
fn elementwise_flex(x: FlexTensor, forward: fn(&[f32]) -> Vec<f32>) -> FlexTensor {
    let x = contiguous(x);
    flex_tensor(forward(values(&x)), x.shape())
}

/// An elementwise map's saved input, and its backward dx = backward(x, dy).
#[derive(Clone, Debug)]
struct ElementwiseSaved {
    x: FlexTensor,
    backward: fn(&[f32], &[f32]) -> Vec<f32>,
}

impl SavedForBackward<1> for ElementwiseSaved {
    fn gradients(self, grad_out: &[f32]) -> [(Vec<f32>, Shape); 1] {
        [((self.backward)(values(&self.x), grad_out), self.x.shape())]
    }
}

/// An elementwise map under autodiff: forward kernel, and the saved input for the backward one.
fn elementwise<C: CheckpointStrategy>(
    x: AutodiffFlex<C>,
    forward: fn(&[f32]) -> Vec<f32>,
    backward: fn(&[f32], &[f32]) -> Vec<f32>,
) -> AutodiffFlex<C> {
    register_op::<C, _, _>([x], |[x]| {
        let y = flex_tensor(forward(values(&x)), x.shape());
        (y, ElementwiseSaved { x, backward })
    })
}

// ---- the extension on flex and on flex under autodiff: delegations to the kernel files -----

impl FusedOps for Flex {
    fn fused_causal_attention(
        q: FlexTensor,
        k: FlexTensor,
        v: FlexTensor,
        scale: f32,
        slopes: Vec<f32>,
        pattern: KeyPattern,
    ) -> FlexTensor {
        causal_attention::flex([q, k, v], scale, &slopes, &pattern)
    }

    fn fused_qkv_attention(qkv: FlexTensor, spec: QkvAttention) -> FlexTensor {
        qkv_attention::flex(qkv, &spec)
    }

    fn fused_linear_attention(
        q: FlexTensor,
        k: FlexTensor,
        v: FlexTensor,
        chunk: usize,
        normalize: bool,
        eps: f32,
        token_major: bool,
    ) -> FlexTensor {
        chunked_linear_attention::flex([q, k, v], chunk, normalize, eps, token_major)
    }

    fn fused_linear_attention_qkv(qkv: FlexTensor, set: QkvSettings) -> FlexTensor {
        chunked_linear_attention::flex_qkv(qkv, set)
    }

    fn fused_wkv(
        r: FlexTensor,
        k: FlexTensor,
        v: FlexTensor,
        log_w: FlexTensor,
        u: FlexTensor,
    ) -> FlexTensor {
        wkv::flex([r, k, v, log_w, u])
    }

    fn fused_gated_delta(
        q: FlexTensor,
        k: FlexTensor,
        v: FlexTensor,
        beta: FlexTensor,
        log_alpha: FlexTensor,
        delta: bool,
    ) -> FlexTensor {
        gated_delta::flex([q, k, v, beta, log_alpha], delta)
    }

    fn fused_delta_layer(
        projected: FlexTensor,
        taps: FlexTensor,
        bias: FlexTensor,
        beta: FlexTensor,
        log_alpha: FlexTensor,
        norm: FlexTensor,
    ) -> FlexTensor {
        delta_layer::flex([projected, taps, bias, beta, log_alpha, norm])
    }

    fn fused_linear(x: FlexTensor, weight: FlexTensor, bias: FlexTensor) -> FlexTensor {
        linear::flex(x, weight, Some(bias))
    }

    fn fused_linear_no_bias(x: FlexTensor, weight: FlexTensor) -> FlexTensor {
        linear::flex(x, weight, None)
    }

    fn fused_layer_norm(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        eps: f32,
    ) -> FlexTensor {
        layer_norm::flex([x, gamma, beta], eps)
    }

    fn fused_rope(x: FlexTensor, cos: Vec<f32>, sin: Vec<f32>) -> FlexTensor {
        rotary::flex(x, &cos, &sin)
    }

    fn fused_gelu(x: FlexTensor) -> FlexTensor {
        elementwise_flex(x, gelu::forward)
    }

    fn fused_elu_plus_one(x: FlexTensor) -> FlexTensor {
        elementwise_flex(x, elu_plus_one::forward)
    }

    fn fused_cross_entropy(
        logits: FlexTensor,
        targets: FlexTensor,
        weights: FlexTensor,
    ) -> FlexTensor {
        cross_entropy::flex(logits, targets, weights)
    }
}

impl<C: CheckpointStrategy> FusedOps for Autodiff<Flex, C> {
    fn fused_causal_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        scale: f32,
        slopes: Vec<f32>,
        pattern: KeyPattern,
    ) -> FloatTensor<Self> {
        causal_attention::autodiff::<C>([q, k, v], scale, slopes, pattern)
    }

    fn fused_qkv_attention(qkv: FloatTensor<Self>, spec: QkvAttention) -> FloatTensor<Self> {
        qkv_attention::autodiff::<C>(qkv, spec)
    }

    fn fused_linear_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        chunk: usize,
        normalize: bool,
        eps: f32,
        token_major: bool,
    ) -> FloatTensor<Self> {
        chunked_linear_attention::autodiff::<C>([q, k, v], chunk, normalize, eps, token_major)
    }

    fn fused_linear_attention_qkv(qkv: FloatTensor<Self>, set: QkvSettings) -> FloatTensor<Self> {
        chunked_linear_attention::autodiff_qkv::<C>(qkv, set)
    }

    fn fused_wkv(
        r: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        log_w: FloatTensor<Self>,
        u: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        wkv::autodiff::<C>([r, k, v, log_w, u])
    }

    fn fused_gated_delta(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        log_alpha: FloatTensor<Self>,
        delta: bool,
    ) -> FloatTensor<Self> {
        gated_delta::autodiff::<C>([q, k, v, beta, log_alpha], delta)
    }

    fn fused_delta_layer(
        projected: FloatTensor<Self>,
        taps: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        log_alpha: FloatTensor<Self>,
        norm: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        delta_layer::autodiff::<C>([projected, taps, bias, beta, log_alpha, norm])
    }

    fn fused_linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        linear::autodiff::<C>([x, weight, bias])
    }

    fn fused_linear_no_bias(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        linear::autodiff_no_bias::<C>([x, weight])
    }

    fn fused_layer_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f32,
    ) -> FloatTensor<Self> {
        layer_norm::autodiff::<C>([x, gamma, beta], eps)
    }

    fn fused_rope(x: FloatTensor<Self>, cos: Vec<f32>, sin: Vec<f32>) -> FloatTensor<Self> {
        rotary::autodiff::<C>(x, cos, sin)
    }

    fn fused_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        elementwise::<C>(x, gelu::forward, gelu::backward)
    }

    fn fused_elu_plus_one(x: FloatTensor<Self>) -> FloatTensor<Self> {
        elementwise::<C>(x, elu_plus_one::forward, elu_plus_one::backward)
    }

    fn fused_cross_entropy(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        weights: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        cross_entropy::autodiff::<C>(logits, targets, weights)
    }
}
