//! Fused CPU kernels for the training hot path, plugged into Burn as a backend extension with
//! hand-written backward passes: causal softmax attention over a key pattern (dense causal,
//! sliding window, BigBird; tiled, masked half skipped, O(n) memory), chunked linear attention,
//! the RWKV-6 WKV recurrence, the gated delta rule (Gated DeltaNet, and Mamba-2's scalar-decay
//! recurrence), RoPE, LayerNorm, exact GELU, the elu+1 feature map and the masked cross-entropy
//! loss. Each kernel file states its mechanism and formulas; this file is the
//! plumbing: the extension trait, its flex implementation (host slices in and out) and its
//! autodiff implementation (what each forward saves for its backward).
//!
//! Why: on the flex backend Burn's autodiff runs each elementwise op as its own pass with its
//! own saved tensor and falls back to materialised n×n scores for attention, which made a plain
//! Burn model 4–6× slower than PyTorch on the reference workload (docs/benchmarks.md). The
//! kernels run only on flex (with or without autodiff), and only while `set_enabled(true)` (the
//! default); every other backend, and flex with the kernels disabled, takes the composed
//! tensor-op path — which the tests use as the reference the fused path must match (outputs and
//! gradients, crates/zoo-model/tests/fused_kernels.rs).

pub mod causal_attention;
pub mod chunked_linear_attention;
pub mod cross_entropy;
pub mod elu_plus_one;
pub mod gated_delta;
pub mod gelu;
mod gemm;
pub mod layer_norm;
pub mod rotary;
mod simd;
pub mod wkv;

use std::sync::atomic::{AtomicBool, Ordering};

use burn::backend::TensorMetadata;
use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Autodiff, Backend, Dispatch, DispatchDevice, Flex, backend_extension};
use burn::prelude::*;

use causal_attention::AttentionShape;
pub use causal_attention::KeyPattern;
use chunked_linear_attention::{LinearShape, RowLayout, SavedRef};
use wkv::WkvShape;

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

/// Tensor-level entry points (callers check `fused_on` first).
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
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_causal_attention(
        q.into_dispatch(),
        k.into_dispatch(),
        v.into_dispatch(),
        scale,
        slopes.to_vec(),
        pattern,
    ))
}

pub fn linear_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    chunk: usize,
    normalize: bool,
    eps: f32,
) -> Tensor<4> {
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

// ---- flex: host slices in, host slices out -------------------------------------------------

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

/// Token ids of an int tensor, checked against the vocabulary.
fn target_indices(t: FlexTensor, vocab: usize) -> Vec<usize> {
    let t = t.to_contiguous();
    match t.dtype() {
        burn::tensor::DType::I64 => {
            cross_entropy::target_indices(t.storage::<i64>().iter().copied(), vocab)
        }
        burn::tensor::DType::I32 => {
            cross_entropy::target_indices(t.storage::<i32>().iter().map(|&v| v as i64), vocab)
        }
        other => panic!("targets must be i64 or i32 token ids, got {other:?}"),
    }
}

/// (loss [1], ℓ [rows], targets) for contiguous logits [rows, vocab] and weights [rows].
fn cross_entropy_forward(
    logits: &FlexTensor,
    targets: FlexTensor,
    weights: &FlexTensor,
) -> (FlexTensor, FlexTensor, Vec<usize>) {
    let [rows, vocab] = logits.shape().dims();
    let targets = target_indices(targets, vocab);
    assert!(targets.len() == rows, "one target per row of logits");
    let (loss, lse) = cross_entropy::forward(values(logits), vocab, &targets, values(weights));
    (
        flex_tensor(vec![loss], Shape::new([1])),
        flex_tensor(lse, Shape::new([rows])),
        targets,
    )
}

fn flex_tensor(values: Vec<f32>, shape: Shape) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

fn attention_shape(q: &FlexTensor) -> AttentionShape {
    let [b, h, n, d] = q.shape().dims();
    AttentionShape {
        heads_total: b * h,
        heads: h,
        seq: n,
        head_dim: d,
    }
}

/// (o, ℓ) for contiguous q, k, v.
fn attention_forward(
    q: &FlexTensor,
    k: &FlexTensor,
    v: &FlexTensor,
    scale: f32,
    slopes: &[f32],
    pattern: &KeyPattern,
) -> (FlexTensor, FlexTensor) {
    assert!(
        q.shape() == k.shape() && q.shape() == v.shape(),
        "q, k, v shapes differ"
    );
    let shape = attention_shape(q);
    let (o, lse) = causal_attention::forward(
        values(q),
        values(k),
        values(v),
        shape,
        scale,
        slopes,
        pattern,
    );
    let lse_shape = Shape::new([shape.heads_total, shape.seq]);
    (flex_tensor(o, q.shape()), flex_tensor(lse, lse_shape))
}

fn linear_shape(q: &FlexTensor, v: &FlexTensor, chunk: usize, token_major: bool) -> LinearShape {
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
        layout: if token_major {
            RowLayout::TokenMajor { heads }
        } else {
            RowLayout::HeadMajor
        },
    }
}

/// (o, normaliser, per-chunk S, per-chunk z) for contiguous q, k, v.
fn linear_forward(
    q: &FlexTensor,
    k: &FlexTensor,
    v: &FlexTensor,
    chunk: usize,
    normalize: bool,
    eps: f32,
    token_major: bool,
) -> (FlexTensor, [FlexTensor; 3]) {
    assert!(q.shape() == k.shape(), "q and k shapes differ");
    let shape = linear_shape(q, v, chunk, token_major);
    let (out, saved) =
        chunked_linear_attention::forward(values(q), values(k), values(v), shape, normalize, eps);
    let flat = |t: Vec<f32>| {
        let len = t.len();
        flex_tensor(t, Shape::new([len]))
    };
    (
        flex_tensor(out, v.shape()),
        [flat(saved.den), flat(saved.s_prev), flat(saved.z_prev)],
    )
}

fn wkv_shape(r: &FlexTensor, v: &FlexTensor) -> WkvShape {
    let [b, h, n, dk] = r.shape().dims();
    let dv = v.shape().dims::<4>()[3];
    WkvShape {
        heads_total: b * h,
        heads: h,
        seq: n,
        key_dim: dk,
        value_dim: dv,
    }
}

/// (o, states at chunk starts) for contiguous inputs.
fn wkv_forward(inputs: &[FlexTensor; 5]) -> (FlexTensor, FlexTensor) {
    let [r, k, v, log_w, u] = inputs;
    assert!(
        r.shape() == k.shape() && r.shape() == log_w.shape(),
        "r, k, log w shapes differ"
    );
    let shape = wkv_shape(r, v);
    let (o, states) = wkv::forward(
        values(r),
        values(k),
        values(v),
        values(log_w),
        values(u),
        shape,
    );
    let len = states.len();
    (
        flex_tensor(o, v.shape()),
        flex_tensor(states, Shape::new([len])),
    )
}

fn layer_norm_forward(
    x: &FlexTensor,
    gamma: &FlexTensor,
    beta: &FlexTensor,
    eps: f32,
) -> (FlexTensor, FlexTensor, FlexTensor) {
    let (y, mean, rstd) = layer_norm::forward(values(x), values(gamma), values(beta), eps);
    let rows = Shape::new([mean.len()]);
    (
        flex_tensor(y, x.shape()),
        flex_tensor(mean, rows.clone()),
        flex_tensor(rstd, rows),
    )
}

impl FusedOps for Flex {
    fn fused_causal_attention(
        q: FlexTensor,
        k: FlexTensor,
        v: FlexTensor,
        scale: f32,
        slopes: Vec<f32>,
        pattern: KeyPattern,
    ) -> FlexTensor {
        let (q, k, v) = (contiguous(q), contiguous(k), contiguous(v));
        attention_forward(&q, &k, &v, scale, &slopes, &pattern).0
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
        let (q, k, v) = (contiguous(q), contiguous(k), contiguous(v));
        linear_forward(&q, &k, &v, chunk, normalize, eps, token_major).0
    }

    fn fused_wkv(
        r: FlexTensor,
        k: FlexTensor,
        v: FlexTensor,
        log_w: FlexTensor,
        u: FlexTensor,
    ) -> FlexTensor {
        let inputs = [r, k, v, log_w, u].map(contiguous);
        wkv_forward(&inputs).0
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

    fn fused_layer_norm(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        eps: f32,
    ) -> FlexTensor {
        let (x, gamma, beta) = (contiguous(x), contiguous(gamma), contiguous(beta));
        layer_norm_forward(&x, &gamma, &beta, eps).0
    }

    fn fused_rope(x: FlexTensor, cos: Vec<f32>, sin: Vec<f32>) -> FlexTensor {
        let x = contiguous(x);
        let seq = x.shape().dims::<4>()[2];
        flex_tensor(rotary::rotate(values(&x), seq, &cos, &sin, 1.0), x.shape())
    }

    fn fused_gelu(x: FlexTensor) -> FlexTensor {
        let x = contiguous(x);
        flex_tensor(gelu::forward(values(&x)), x.shape())
    }

    fn fused_elu_plus_one(x: FlexTensor) -> FlexTensor {
        let x = contiguous(x);
        flex_tensor(elu_plus_one::forward(values(&x)), x.shape())
    }

    fn fused_cross_entropy(
        logits: FlexTensor,
        targets: FlexTensor,
        weights: FlexTensor,
    ) -> FlexTensor {
        let (logits, weights) = (contiguous(logits), contiguous(weights));
        cross_entropy_forward(&logits, targets, &weights).0
    }
}

// ---- autodiff on flex: forward saves what the hand-written backward needs ------------------

/// Register each input's gradient (host values in the input's shape) where the input is tracked.
fn register_grads<const N: usize>(
    grads: &mut Gradients,
    parents: [Option<NodeId>; N],
    computed: [(Vec<f32>, Shape); N],
) {
    for (parent, (values, shape)) in parents.into_iter().zip(computed) {
        if let Some(id) = parent {
            grads.register::<Flex>(id, flex_tensor(values, shape));
        }
    }
}

#[derive(Debug)]
struct AttentionBackward;

#[derive(Clone, Debug)]
struct AttentionSaved {
    q: FlexTensor,
    k: FlexTensor,
    v: FlexTensor,
    out: FlexTensor,
    lse: FlexTensor,
    scale: f32,
    slopes: Vec<f32>,
    pattern: KeyPattern,
}

impl Backward<Flex, 3> for AttentionBackward {
    type State = AttentionSaved;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let s = ops.state;
        let grad_out = contiguous(grads.consume::<Flex>(&ops.node));
        let shape = attention_shape(&s.q);
        let (dq, dk, dv) = causal_attention::backward(
            values(&s.q),
            values(&s.k),
            values(&s.v),
            values(&s.out),
            values(&s.lse),
            values(&grad_out),
            shape,
            s.scale,
            &s.slopes,
            &s.pattern,
        );
        let shape = s.q.shape();
        let computed = [(dq, shape.clone()), (dk, shape.clone()), (dv, shape)];
        register_grads(grads, ops.parents.map(|p| p.map(|node| node.id)), computed);
    }
}

#[derive(Debug)]
struct LinearBackward;

#[derive(Clone, Debug)]
struct LinearSaved {
    q: FlexTensor,
    k: FlexTensor,
    v: FlexTensor,
    out: FlexTensor,
    /// Normaliser, per-chunk S and per-chunk z (flat).
    chunk_state: [FlexTensor; 3],
    chunk: usize,
    normalize: bool,
    eps: f32,
    token_major: bool,
}

impl Backward<Flex, 3> for LinearBackward {
    type State = LinearSaved;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let s = ops.state;
        let grad_out = contiguous(grads.consume::<Flex>(&ops.node));
        let [den, s_prev, z_prev] = &s.chunk_state;
        let (dq, dk, dv) = chunked_linear_attention::backward(
            values(&s.q),
            values(&s.k),
            values(&s.v),
            values(&s.out),
            SavedRef {
                den: values(den),
                s_prev: values(s_prev),
                z_prev: values(z_prev),
            },
            values(&grad_out),
            linear_shape(&s.q, &s.v, s.chunk, s.token_major),
            s.normalize,
            s.eps,
        );
        let computed = [(dq, s.q.shape()), (dk, s.k.shape()), (dv, s.v.shape())];
        register_grads(grads, ops.parents.map(|p| p.map(|node| node.id)), computed);
    }
}

#[derive(Debug)]
struct WkvBackward;

#[derive(Clone, Debug)]
struct WkvSaved {
    /// r, k, v, log w, u (contiguous).
    inputs: [FlexTensor; 5],
    states: FlexTensor,
}

impl Backward<Flex, 5> for WkvBackward {
    type State = WkvSaved;

    fn backward(self, ops: Ops<Self::State, 5>, grads: &mut Gradients, _: &mut Checkpointer) {
        let s = ops.state;
        let grad_out = contiguous(grads.consume::<Flex>(&ops.node));
        let [r, k, v, log_w, u] = &s.inputs;
        let (dr, dk, dv, dlw, du) = wkv::backward(
            values(r),
            values(k),
            values(v),
            values(log_w),
            values(u),
            values(&s.states),
            values(&grad_out),
            wkv_shape(r, v),
        );
        let shapes = s.inputs.each_ref().map(|t| t.shape());
        let [sr, sk, sv, slw, su] = shapes;
        let computed = [(dr, sr), (dk, sk), (dv, sv), (dlw, slw), (du, su)];
        register_grads(grads, ops.parents.map(|p| p.map(|node| node.id)), computed);
    }
}

#[derive(Debug)]
struct LayerNormBackward;

#[derive(Clone, Debug)]
struct LayerNormSaved {
    x: FlexTensor,
    gamma: FlexTensor,
    mean: FlexTensor,
    rstd: FlexTensor,
}

impl Backward<Flex, 3> for LayerNormBackward {
    type State = LayerNormSaved;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let s = ops.state;
        let dy = contiguous(grads.consume::<Flex>(&ops.node));
        let (dx, dgamma, dbeta) = layer_norm::backward(
            values(&s.x),
            values(&s.gamma),
            values(&s.mean),
            values(&s.rstd),
            values(&dy),
        );
        let d = s.gamma.shape();
        let computed = [(dx, s.x.shape()), (dgamma, d.clone()), (dbeta, d)];
        register_grads(grads, ops.parents.map(|p| p.map(|node| node.id)), computed);
    }
}

#[derive(Debug)]
struct RopeBackward;

#[derive(Clone, Debug)]
struct RopeSaved {
    shape: Shape,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl Backward<Flex, 1> for RopeBackward {
    type State = RopeSaved;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let s = ops.state;
        let dy = contiguous(grads.consume::<Flex>(&ops.node));
        let [node_x] = ops.parents;
        if let Some(node) = node_x {
            let seq = s.shape.dims::<4>()[2];
            let dx = rotary::rotate(values(&dy), seq, &s.cos, &s.sin, -1.0);
            grads.register::<Flex>(node.id, flex_tensor(dx, s.shape));
        }
    }
}

#[derive(Debug)]
struct CrossEntropyBackward;

#[derive(Clone, Debug)]
struct CrossEntropySaved {
    logits: FlexTensor,
    weights: FlexTensor,
    lse: FlexTensor,
    targets: Vec<usize>,
}

impl Backward<Flex, 1> for CrossEntropyBackward {
    type State = CrossEntropySaved;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let s = ops.state;
        let grad = contiguous(grads.consume::<Flex>(&ops.node));
        let [node_logits] = ops.parents;
        if let Some(node) = node_logits {
            let [_, vocab] = s.logits.shape().dims();
            let dx = cross_entropy::backward(
                values(&s.logits),
                vocab,
                &s.targets,
                values(&s.weights),
                values(&s.lse),
                values(&grad)[0],
            );
            grads.register::<Flex>(node.id, flex_tensor(dx, s.logits.shape()));
        }
    }
}

/// Backward of an elementwise map y = f(x): dx = kernel(x, dy).
#[derive(Debug)]
struct ElementwiseBackward {
    kernel: fn(&[f32], &[f32]) -> Vec<f32>,
}

impl Backward<Flex, 1> for ElementwiseBackward {
    type State = FlexTensor;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let x = ops.state;
        let dy = contiguous(grads.consume::<Flex>(&ops.node));
        let [node_x] = ops.parents;
        if let Some(node) = node_x {
            let dx = (self.kernel)(values(&x), values(&dy));
            grads.register::<Flex>(node.id, flex_tensor(dx, x.shape()));
        }
    }
}

/// An elementwise map under autodiff: forward kernel, and the saved input for the backward one.
fn elementwise<C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<Flex, C>>,
    forward: fn(&[f32]) -> Vec<f32>,
    backward: fn(&[f32], &[f32]) -> Vec<f32>,
) -> FloatTensor<Autodiff<Flex, C>> {
    let prep = ElementwiseBackward { kernel: backward }
        .prepare::<C>([x.node()])
        .compute_bound()
        .stateful();
    let x = contiguous(x.into_primitive());
    let y = flex_tensor(forward(values(&x)), x.shape());
    match prep {
        OpsKind::Tracked(prep) => prep.finish(x, y),
        OpsKind::UnTracked(prep) => prep.finish(y),
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
        let prep = AttentionBackward
            .prepare::<C>([q.node(), k.node(), v.node()])
            .compute_bound()
            .stateful();
        let q = contiguous(q.into_primitive());
        let k = contiguous(k.into_primitive());
        let v = contiguous(v.into_primitive());
        let (out, lse) = attention_forward(&q, &k, &v, scale, &slopes, &pattern);
        match prep {
            OpsKind::Tracked(prep) => {
                let saved = AttentionSaved {
                    q,
                    k,
                    v,
                    out: out.clone(),
                    lse,
                    scale,
                    slopes,
                    pattern,
                };
                prep.finish(saved, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(out),
        }
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
        let prep = LinearBackward
            .prepare::<C>([q.node(), k.node(), v.node()])
            .compute_bound()
            .stateful();
        let q = contiguous(q.into_primitive());
        let k = contiguous(k.into_primitive());
        let v = contiguous(v.into_primitive());
        let (out, chunk_state) = linear_forward(&q, &k, &v, chunk, normalize, eps, token_major);
        match prep {
            OpsKind::Tracked(prep) => {
                let saved = LinearSaved {
                    q,
                    k,
                    v,
                    out: out.clone(),
                    chunk_state,
                    chunk,
                    normalize,
                    eps,
                    token_major,
                };
                prep.finish(saved, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(out),
        }
    }

    fn fused_wkv(
        r: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        log_w: FloatTensor<Self>,
        u: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let prep = WkvBackward
            .prepare::<C>([r.node(), k.node(), v.node(), log_w.node(), u.node()])
            .compute_bound()
            .stateful();
        let inputs = [r, k, v, log_w, u].map(|t| contiguous(t.into_primitive()));
        let (out, states) = wkv_forward(&inputs);
        match prep {
            OpsKind::Tracked(prep) => prep.finish(WkvSaved { inputs, states }, out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        }
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

    fn fused_layer_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f32,
    ) -> FloatTensor<Self> {
        let prep = LayerNormBackward
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful();
        let x = contiguous(x.into_primitive());
        let gamma = contiguous(gamma.into_primitive());
        let beta = contiguous(beta.into_primitive());
        let (y, mean, rstd) = layer_norm_forward(&x, &gamma, &beta, eps);
        match prep {
            OpsKind::Tracked(prep) => prep.finish(
                LayerNormSaved {
                    x,
                    gamma,
                    mean,
                    rstd,
                },
                y,
            ),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    fn fused_rope(x: FloatTensor<Self>, cos: Vec<f32>, sin: Vec<f32>) -> FloatTensor<Self> {
        let prep = RopeBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful();
        let x = contiguous(x.into_primitive());
        let shape = x.shape();
        let seq = shape.dims::<4>()[2];
        let y = flex_tensor(
            rotary::rotate(values(&x), seq, &cos, &sin, 1.0),
            shape.clone(),
        );
        match prep {
            // The rotation's backward needs only the angles, not the input.
            OpsKind::Tracked(prep) => prep.finish(RopeSaved { shape, cos, sin }, y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
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
        // The weights are a data mask: a constant, like the targets.
        let prep = CrossEntropyBackward
            .prepare::<C>([logits.node()])
            .compute_bound()
            .stateful();
        let logits = contiguous(logits.into_primitive());
        let weights = contiguous(weights.into_primitive());
        let (loss, lse, targets) = cross_entropy_forward(&logits, targets, &weights);
        match prep {
            OpsKind::Tracked(prep) => prep.finish(
                CrossEntropySaved {
                    logits,
                    weights,
                    lse,
                    targets,
                },
                loss,
            ),
            OpsKind::UnTracked(prep) => prep.finish(loss),
        }
    }
}
