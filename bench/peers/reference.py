"""PyTorch peer for attention-zoo's reference training workload (CPU, or --device cuda).

Workload (see README.md beside this file): decoder-only LM, vocab 512, d_model 128, 2 layers,
4 heads (head_dim 32), pre-LayerNorm blocks, MLP 128 -> 512 -> 128 with GELU (erf), final
LayerNorm, tied input/output embedding, no dropout, fp32; batch 16 x seq 512 of uniformly random
token ids; AdamW lr 1e-3, weight decay 0. One step = forward, cross-entropy over all positions,
backward, optimiser update. Figure = median step time over --steps steps after --warmup warm-up
steps, reported as tokens/s. Threads = all cores unless --threads is given.

Mixers (--mixer):
  softmax         causal softmax attention with RoPE (SDPA, is_causal=True)
  linear          chunked causal linear attention, elu+1 features, normalised, no positions
  gated_deltanet  Gated DeltaNet (Yang, Kautz & Hatamizadeh 2024, arXiv 2412.06464), chunked
  deltanet        the same layer with log_alpha = 0 (DeltaNet, Yang et al. 2024, arXiv 2406.06484)

`--check` verifies, in float64, that the chunked delta-rule kernels equal the token-by-token
recurrence in outputs and gradients (and that the chunked linear attention equals its quadratic
form), then exits.

Everything is plain eager PyTorch (no torch.compile, no custom kernels).
"""
import argparse
import json
import math
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

CHUNK = 64


# ----------------------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------------------

def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


_ROPE_CACHE = {}


def rope(x, theta=10000.0):
    """RoPE on interleaved pairs (x[..., 0::2], x[..., 1::2]); x [b, h, n, d]."""
    n, d = x.shape[-2], x.shape[-1]
    key = (n, d, x.dtype, x.device, theta)
    if key not in _ROPE_CACHE:
        inv = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
        ang = torch.arange(n, dtype=torch.float64)[:, None] * inv[None]
        _ROPE_CACHE[key] = (ang.cos().to(x.device, x.dtype), ang.sin().to(x.device, x.dtype))
    cos, sin = _ROPE_CACHE[key]
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1).flatten(-2)


def _pad_to_chunks(x, n_pad, dim=2):
    """Right-pad dimension `dim` of x with zeros by n_pad."""
    if n_pad == 0:
        return x
    shape = list(x.shape)
    shape[dim] = n_pad
    return torch.cat([x, x.new_zeros(shape)], dim)


# ----------------------------------------------------------------------------------------------
# Linear attention (elu+1, normalised), chunked
# ----------------------------------------------------------------------------------------------

def chunked_linear_attention(q, k, v, chunk=CHUNK, eps=1e-6):
    """Causal linear attention, q/k/v [b, h, n, d] (raw; the elu+1 map is applied here).

    o_t = φ(q_t)ᵀ Σ_{i≤t} φ(k_i) v_iᵀ / max(φ(q_t)·Σ_{i≤t} φ(k_i), eps).
    Intra-chunk part as a masked [C, C] product, inter-chunk part from the exclusive prefix sum
    of per-chunk states (all chunks at once, no Python loop).
    """
    q, k = F.elu(q) + 1, F.elu(k) + 1
    b, h, n, dk = q.shape
    dv = v.shape[-1]
    nc = (n + chunk - 1) // chunk
    pad = nc * chunk - n
    q, k, v = (_pad_to_chunks(t, pad).view(b, h, nc, chunk, -1) for t in (q, k, v))
    mask = torch.ones(chunk, chunk, dtype=torch.bool, device=q.device).tril()
    att = (q @ k.transpose(-1, -2)).masked_fill(~mask, 0.0)          # [b,h,nc,C,C]
    kv = k.transpose(-1, -2) @ v                                      # [b,h,nc,dk,dv]
    ksum = k.sum(-2)                                                  # [b,h,nc,dk]
    # exclusive prefix over chunks
    S = torch.cumsum(kv, 2) - kv
    z = torch.cumsum(ksum, 2) - ksum
    num = att @ v + q @ S
    den = att.sum(-1) + (q * z.unsqueeze(-2)).sum(-1)
    out = num / den.unsqueeze(-1).clamp_min(eps)
    return out.reshape(b, h, nc * chunk, dv)[:, :, :n]


def naive_linear_attention(q, k, v, eps=1e-6):
    """Quadratic reference for chunked_linear_attention (used by --check)."""
    q, k = F.elu(q) + 1, F.elu(k) + 1
    n = q.shape[-2]
    mask = torch.ones(n, n, dtype=torch.bool).tril()
    att = (q @ k.transpose(-1, -2)).masked_fill(~mask, 0.0)
    return (att @ v) / att.sum(-1, keepdim=True).clamp_min(eps)


# ----------------------------------------------------------------------------------------------
# (Gated) delta rule: token recurrence and chunked (WY / UT transform) form
# ----------------------------------------------------------------------------------------------

def recurrent_gated_delta(q, k, v, beta, log_alpha=None, s0=None):
    """Token-by-token reference. q, k [b, h, n, dk]; v [b, h, n, dv]; beta, log_alpha [b, h, n].

    S_t = α_t (I − β_t k_t k_tᵀ) S_{t−1} + β_t k_t v_tᵀ,  o_t = S_tᵀ q_t,  α_t = exp(log_alpha_t)
    (log_alpha None ⇒ α = 1, plain DeltaNet). Returns (o [b, h, n, dv], S_n [b, h, dk, dv]).
    """
    b, h, n, dk = q.shape
    dv = v.shape[-1]
    S = q.new_zeros(b, h, dk, dv) if s0 is None else s0
    outs = []
    for t in range(n):
        if log_alpha is not None:
            S = S * log_alpha[:, :, t].exp()[..., None, None]
        kt, vt, bt = k[:, :, t], v[:, :, t], beta[:, :, t]
        recalled = (S * kt.unsqueeze(-1)).sum(-2)                     # Sᵀ k_t  [b,h,dv]
        S = S + (bt.unsqueeze(-1) * kt).unsqueeze(-1) * (vt - recalled).unsqueeze(-2)
        outs.append((S * q[:, :, t].unsqueeze(-1)).sum(-2))           # Sᵀ q_t
    if n == 0:
        return q.new_zeros(b, h, 0, dv), S
    return torch.stack(outs, 2), S


def chunk_gated_delta(q, k, v, beta, log_alpha=None, chunk=CHUNK, s0=None):
    """Chunked gated delta rule (Gated DeltaNet §3 / DeltaNet's WY representation + UT transform).

    Shapes as recurrent_gated_delta. Per chunk of C tokens with state S (entering the chunk):
      g   = cumsum(log_alpha)                                (within the chunk, inclusive)
      A   = strictly-lower( β_t exp(g_t − g_i) k_t·k_i )     [C, C]
      T   = (I + A)^{-1}                                     (unit-lower triangular solve)
      W   = T diag(β·exp(g)) K,   U = T diag(β) V − W S
      O   = diag(exp(g)) Q S + (Q Kᵀ ⊙ exp(g_t − g_i) ⊙ causal-incl) U
      S  ←  exp(g_C) S + (K ⊙ exp(g_C − g))ᵀ U
    Everything except the (S-dependent) U / S update is computed for all chunks at once; the state
    recurrence is a Python loop over chunks. Sequences are zero-padded to a multiple of C
    (padded tokens have k = v = q = 0, β = 0, log_alpha = 0: they neither write nor decay).
    """
    b, h, n, dk = q.shape
    dv = v.shape[-1]
    nc = max(1, (n + chunk - 1) // chunk)
    pad = nc * chunk - n
    C = chunk
    q = _pad_to_chunks(q, pad).view(b, h, nc, C, dk)
    k = _pad_to_chunks(k, pad).view(b, h, nc, C, dk)
    v = _pad_to_chunks(v, pad).view(b, h, nc, C, dv)
    beta = _pad_to_chunks(beta, pad).view(b, h, nc, C)

    incl = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    if log_alpha is not None:
        g = torch.cumsum(_pad_to_chunks(log_alpha, pad).view(b, h, nc, C), -1)
        # decay[t, i] = exp(g_t − g_i) for i ≤ t, 0 above the diagonal (masked before exp, so
        # no overflow and no NaN gradients from the upper triangle).
        decay = (g.unsqueeze(-1) - g.unsqueeze(-2)).masked_fill(~incl, float("-inf")).exp()
        eg = g.exp()                                                   # exp(g_t)
        g_last = g[..., -1:]                                           # [b,h,nc,1]
        k_to_end = k * (g_last - g).exp().unsqueeze(-1)                # K ⊙ exp(g_C − g)
        chunk_decay = g_last.squeeze(-1).exp()                         # exp(g_C) [b,h,nc]
        qk = (q @ k.transpose(-1, -2)) * decay                          # causal-incl, decayed
        kk = (k @ k.transpose(-1, -2)) * decay
        k_w = k * (beta * eg).unsqueeze(-1)                             # diag(β exp(g)) K
        q_s = q * eg.unsqueeze(-1)                                      # diag(exp(g)) Q
    else:
        qk = (q @ k.transpose(-1, -2)).masked_fill(~incl, 0.0)
        kk = k @ k.transpose(-1, -2)
        k_w = k * beta.unsqueeze(-1)
        q_s = q
        k_to_end = k
        chunk_decay = None
    A = (kk * beta.unsqueeze(-1)).tril(-1)                              # strictly lower
    rhs = torch.cat([k_w, v * beta.unsqueeze(-1)], -1)                  # [.., C, dk + dv]
    # (I + A) X = rhs, unit-lower-triangular: forward substitution (exact; no Neumann series).
    X = torch.linalg.solve_triangular(A, rhs, upper=False, unitriangular=True)
    W, U0 = X[..., :dk], X[..., dk:]

    S = q.new_zeros(b, h, dk, dv) if s0 is None else s0
    states, us = [], []
    # unbind (not per-chunk indexing): its backward is one stack instead of nc zero-filled copies
    W_c, U0_c, K_c = W.unbind(2), U0.unbind(2), k_to_end.transpose(-1, -2).unbind(2)
    D_c = None if chunk_decay is None else chunk_decay[..., None, None].unbind(2)
    for c in range(nc):
        states.append(S)
        u = U0_c[c] - W_c[c] @ S
        us.append(u)
        upd = K_c[c] @ u
        S = S + upd if D_c is None else S * D_c[c] + upd
    S_in = torch.stack(states, 2)                                       # [b,h,nc,dk,dv]
    U = torch.stack(us, 2)                                              # [b,h,nc,C,dv]
    o = q_s @ S_in + qk @ U
    return o.reshape(b, h, nc * C, dv)[:, :, :n], S


# ----------------------------------------------------------------------------------------------
# Mixers
# ----------------------------------------------------------------------------------------------

class QkvMixer(nn.Module):
    """Fused q/k/v projection, a causal attention `attend(q, k, v)` over [b, h, n, dh] heads,
    output projection: softmax (SDPA with RoPE) and chunked linear attention."""

    def __init__(self, d, heads, attend):
        super().__init__()
        self.heads = heads
        self.attend = attend
        self.qkv = nn.Linear(d, 3 * d)
        self.o = nn.Linear(d, d)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        y = self.attend(q, k, v)
        return self.o(y.transpose(1, 2).reshape(b, n, d))


def softmax_attention(q, k, v):
    return F.scaled_dot_product_attention(rope(q), rope(k), v, is_causal=True)


def l2norm(x, eps=1e-6):
    return x * torch.rsqrt((x * x).sum(-1, keepdim=True) + eps)


class GatedDeltaNetMixer(nn.Module):
    """Gated DeltaNet / DeltaNet token mixer (see README.md for the exact definition).

    Mathematically identical fusions for speed: W_q, W_k, W_v, W_g (each Linear(d, d, bias)) are
    one Linear(d, 4d, bias); conv_q, conv_k, conv_v (depthwise causal width-4 convs, no bias) are
    one depthwise Conv1d over 3d channels; W_beta and W_a (Linear(d, heads, no bias)) are one
    Linear(d, 2·heads, no bias). Each slice has PyTorch's default init for its own layer shape.
    """

    def __init__(self, d, heads, gated=True, conv_width=4, mode="chunk"):
        super().__init__()
        self.d, self.heads, self.hd = d, heads, d // heads
        self.gated, self.mode = gated, mode
        self.conv_width = conv_width
        self.proj = nn.Linear(d, 4 * d, bias=True)                   # [W_q; W_k; W_v; W_g]
        self.conv = nn.Conv1d(3 * d, 3 * d, conv_width, groups=3 * d, bias=False)
        self.gate_proj = nn.Linear(d, (2 if gated else 1) * heads, bias=False)  # [W_beta; W_a]
        if gated:
            A = torch.empty(heads).uniform_(1.0, 16.0)
            self.A_log = nn.Parameter(A.log())
            dt = torch.exp(torch.empty(heads).uniform_(math.log(1e-3), math.log(1e-1)))
            self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # softplus⁻¹(dt)
        self.w_norm = nn.Parameter(torch.ones(self.hd))
        self.o = nn.Linear(d, d, bias=True)

    def prepare(self, x):
        """x [b, n, d] -> q, k [b, h, n, dk], v [b, h, n, dv], beta, log_alpha [b, h, n], gate."""
        b, n, d = x.shape
        h, hd = self.heads, self.hd
        p = self.proj(x)
        qkv, gate = p[..., : 3 * d], p[..., 3 * d:]
        # depthwise causal conv: left-pad width-1 zeros, no bias
        qkv = F.conv1d(F.pad(qkv.transpose(1, 2), (self.conv_width - 1, 0)), self.conv.weight,
                       groups=3 * d)
        qkv = F.silu(qkv).view(b, 3, h, hd, n)
        q, k, v = qkv.permute(1, 0, 2, 4, 3)                          # each [b, h, n, hd]
        q = l2norm(q) * hd ** -0.5
        k = l2norm(k)
        ab = self.gate_proj(x)                                         # [b, n, h or 2h]
        beta = torch.sigmoid(ab[..., :h]).transpose(1, 2)              # [b, h, n]
        if self.gated:
            log_alpha = (-self.A_log.exp() * F.softplus(ab[..., h:] + self.dt_bias)).transpose(1, 2)
        else:
            log_alpha = None
        return q, k, v, beta, log_alpha, gate

    def forward(self, x):
        b, n, d = x.shape
        q, k, v, beta, log_alpha, gate = self.prepare(x)
        if self.mode == "chunk":
            o, _ = chunk_gated_delta(q, k, v, beta, log_alpha)
        else:
            o, _ = recurrent_gated_delta(q, k, v, beta, log_alpha)
        # per-head RMSNorm over dv, shared weight w_norm[dv], then output gate
        o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + 1e-5) * self.w_norm
        o = o.transpose(1, 2).reshape(b, n, d) * F.silu(gate)
        return self.o(o)


def make_mixer(name, d, heads):
    if name == "softmax":
        return QkvMixer(d, heads, softmax_attention)
    if name == "linear":
        return QkvMixer(d, heads, chunked_linear_attention)
    if name == "gated_deltanet":
        return GatedDeltaNetMixer(d, heads, gated=True)
    if name == "deltanet":
        return GatedDeltaNetMixer(d, heads, gated=False)
    raise ValueError(f"unknown mixer {name!r}")


# ----------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------

class Block(nn.Module):
    def __init__(self, mixer, d, heads):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.mixer = make_mixer(mixer, d, heads)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))  # erf GELU

    def forward(self, x):
        x = x + self.mixer(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class LM(nn.Module):
    def __init__(self, mixer, vocab, d, layers, heads):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(Block(mixer, d, heads) for _ in range(layers))
        self.ln = nn.LayerNorm(d)

    def forward(self, tokens):
        x = self.emb(tokens)
        for blk in self.blocks:
            x = blk(x)
        return F.linear(self.ln(x), self.emb.weight)                   # tied output embedding


# ----------------------------------------------------------------------------------------------
# --check
# ----------------------------------------------------------------------------------------------

def _err(a, b):
    mx = (a - b).abs().max().item() if a.numel() else 0.0
    scale = b.abs().max().item() if b.numel() else 0.0
    return mx, mx / max(scale, 1e-300)


def run_check(rel_tol=1e-9):
    torch.manual_seed(1234)
    dt = torch.float64
    worst = 0.0
    worst_abs = 0.0
    failures = []

    def report(tag, pairs):
        nonlocal worst, worst_abs
        for name, got, ref in pairs:
            mx, rel = _err(got, ref)
            worst_abs = max(worst_abs, mx)
            if ref.numel() and ref.abs().max().item() > 1e-12:
                worst = max(worst, rel)
                ok = rel <= rel_tol
                rel_s = f"rel={rel:.3e}"
            else:   # the exact gradient is zero (e.g. n=1: o_1 does not depend on log_alpha_1)
                ok = mx <= 1e-12
                rel_s = "rel=n/a (reference is 0)"
            print(f"  {tag:<36} {name:<18} max_abs={mx:.3e} {rel_s} {'ok' if ok else 'FAIL'}")
            if not ok:
                failures.append(f"{tag} {name}")

    # 1) kernel: chunked vs recurrence, outputs, final state and all input gradients
    b, h, dk, dv = 2, 2, 8, 6
    lengths = [1, 5, 63, 64, 65, 130]
    kinds = ["random", "realistic", "strong_decay"]
    print("kernel: chunk_gated_delta (C=64) vs recurrent_gated_delta, float64")
    for gated in (True, False):
        for kind in kinds:
            if kind == "strong_decay" and not gated:
                continue
            for n in lengths:
                if kind == "random":
                    q = torch.randn(b, h, n, dk, dtype=dt)
                    k = torch.randn(b, h, n, dk, dtype=dt) / math.sqrt(dk)
                    v = torch.randn(b, h, n, dv, dtype=dt)
                    beta = torch.rand(b, h, n, dtype=dt)
                    la = -torch.rand(b, h, n, dtype=dt) * 0.5
                else:
                    q = l2norm(F.silu(torch.randn(b, h, n, dk, dtype=dt))) * dk ** -0.5
                    k = l2norm(F.silu(torch.randn(b, h, n, dk, dtype=dt)))
                    v = F.silu(torch.randn(b, h, n, dv, dtype=dt))
                    beta = torch.sigmoid(torch.randn(b, h, n, dtype=dt))
                    A = torch.empty(h, dtype=dt).uniform_(1, 16)
                    dtv = torch.exp(torch.empty(h, dtype=dt).uniform_(math.log(1e-3), math.log(1e-1)))
                    dt_bias = dtv + torch.log(-torch.expm1(-dtv))
                    pre = torch.randn(b, h, n, dtype=dt) * (4.0 if kind == "strong_decay" else 1.0)
                    if kind == "strong_decay":
                        pre = pre + 3.0   # softplus ≈ 3+: log_alpha down to ≈ −100 per token
                    la = -A[None, :, None] * F.softplus(pre + dt_bias[None, :, None])
                inputs = [q, k, v, beta] + ([la] if gated else [])
                inputs = [t.clone().requires_grad_(True) for t in inputs]
                go = torch.randn(b, h, n, dv, dtype=dt)
                gs = torch.randn(b, h, dk, dv, dtype=dt)
                res = {}
                for mode in ("chunk", "rec"):
                    fn = chunk_gated_delta if mode == "chunk" else recurrent_gated_delta
                    o, S = fn(*inputs[:4], inputs[4] if gated else None)
                    grads = torch.autograd.grad((o * go).sum() + (S * gs).sum(), inputs)
                    res[mode] = (o.detach(), S.detach(), grads)
                names = ["o", "S_final", "dq", "dk", "dv", "dbeta"] + (["dlog_alpha"] if gated else [])
                pairs = [(nm, g, r) for nm, g, r in zip(
                    names,
                    [res["chunk"][0], res["chunk"][1], *res["chunk"][2]],
                    [res["rec"][0], res["rec"][1], *res["rec"][2]])]
                tag = f"{'gated' if gated else 'delta'} {kind} n={n}"
                report(tag, pairs)

    # 2) torch.autograd.gradcheck of the chunked kernel (finite differences) on a tiny case,
    #    with a small chunk so several chunks and a partial chunk are exercised.
    print("gradcheck: chunk_gated_delta (C=4), n=10, float64")
    for gated in (True, False):
        q = torch.randn(1, 1, 10, 3, dtype=dt)
        k = l2norm(torch.randn(1, 1, 10, 3, dtype=dt))
        v = torch.randn(1, 1, 10, 2, dtype=dt)
        beta = torch.rand(1, 1, 10, dtype=dt)
        la = -torch.rand(1, 1, 10, dtype=dt)
        ins = [t.requires_grad_(True) for t in ([q, k, v, beta] + ([la] if gated else []))]
        f = (lambda *t: chunk_gated_delta(*t[:4], t[4], chunk=4)) if gated else \
            (lambda *t: chunk_gated_delta(*t, None, chunk=4))
        ok = torch.autograd.gradcheck(f, ins, eps=1e-6, atol=1e-7, rtol=1e-6)
        print(f"  {'gated' if gated else 'delta'} gradcheck {'ok' if ok else 'FAIL'}")
        if not ok:
            failures.append("gradcheck")

    # 3) full layer (d=128, 4 heads, conv, norms, gates) chunked vs recurrence: output, input
    #    gradient and every parameter gradient.
    print("layer: GatedDeltaNetMixer(d=128, heads=4) chunk vs recurrence, float64")
    for gated in (True, False):
        for n in [1, 63, 64, 65, 130]:
            torch.manual_seed(n + 7 * gated)
            layer = GatedDeltaNetMixer(128, 4, gated=gated).to(dt)
            x = torch.randn(2, n, 128, dtype=dt, requires_grad=True)
            gy = torch.randn(2, n, 128, dtype=dt)
            params = [p for _, p in layer.named_parameters()]
            pnames = [nm for nm, _ in layer.named_parameters()]
            res = {}
            for mode in ("chunk", "recurrent"):
                layer.mode = mode
                y = layer(x)
                grads = torch.autograd.grad((y * gy).sum(), [x] + params)
                res[mode] = (y.detach(), grads)
            pairs = [("y", res["chunk"][0], res["recurrent"][0]), ("dx", res["chunk"][1][0], res["recurrent"][1][0])]
            pairs += [("d" + nm, g, r) for nm, g, r in zip(pnames, res["chunk"][1][1:], res["recurrent"][1][1:])]
            report(f"{'gated' if gated else 'delta'} layer n={n}", pairs)

    # 4) chunked linear attention vs its quadratic form
    print("linear: chunked_linear_attention (C=64) vs quadratic form, float64")
    for n in [1, 63, 64, 65, 130]:
        ins = [torch.randn(2, 2, n, 8, dtype=dt, requires_grad=True) for _ in range(3)]
        go = torch.randn(2, 2, n, 8, dtype=dt)
        res = {}
        for mode, fn in (("chunk", chunked_linear_attention), ("naive", naive_linear_attention)):
            o = fn(*ins)
            res[mode] = (o.detach(), torch.autograd.grad((o * go).sum(), ins))
        report(f"linear n={n}", [("o", res["chunk"][0], res["naive"][0])] +
               [(nm, g, r) for nm, g, r in zip(["dq", "dk", "dv"], res["chunk"][1], res["naive"][1])])

    # 5) the float32 training path at the workload's shape against a float64 recurrence
    #    (not part of the tight tolerance above; shows the chunked form is stable in fp32).
    print("fp32: chunk_gated_delta in float32 vs recurrence in float64, n=512, realistic inputs")
    for gated in (True, False):
        torch.manual_seed(99)
        layer = GatedDeltaNetMixer(128, 4, gated=gated).to(dt)
        x = torch.randn(2, 512, 128, dtype=dt)
        with torch.no_grad():
            q, k, v, beta, la, _ = layer.prepare(x)
            ref, _ = recurrent_gated_delta(q, k, v, beta, la)
            f32 = [None if t is None else t.float() for t in (q, k, v, beta, la)]
            got, _ = chunk_gated_delta(*f32)
        mx, rel = _err(got.double(), ref)
        ok = rel <= 1e-4
        print(f"  {('gated' if gated else 'delta') + ' fp32 n=512':<36} {'o':<18} max_abs={mx:.3e} rel={rel:.3e} {'ok' if ok else 'FAIL'}")
        if not ok:
            failures.append(f"{'gated' if gated else 'delta'} fp32")

    print(f"check: worst relative error {worst:.3e} (tolerance {rel_tol:.0e}), "
          f"worst max-abs error {worst_abs:.3e}")
    if failures:
        more = f" ... and {len(failures) - 10} more" if len(failures) > 10 else ""
        print(f"CHECK FAILED ({len(failures)}):", ", ".join(failures[:10]) + more)
        return 1
    print("CHECK PASSED")
    return 0


# ----------------------------------------------------------------------------------------------
# Benchmark
# ----------------------------------------------------------------------------------------------

def sync(device):
    """Waits for the device's queued work, so that wall-clock phases are the device's time."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def run_bench(a):
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("reference.py: --device cuda, but this PyTorch sees no CUDA device; use --device cpu")
    torch.manual_seed(0)
    model = LM(a.mixer, a.vocab, a.d, a.layers, a.heads).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    n_params = sum(p.numel() for p in model.parameters())
    gen = torch.Generator().manual_seed(1)
    steps, fwd, bwd, upd, losses = [], [], [], [], []
    for i in range(a.warmup + a.steps):
        # Drawn on the CPU (the same tokens on every device), moved before the clock starts.
        t = torch.randint(0, a.vocab, (a.batch, a.seq + 1), generator=gen).to(device)
        inp, tgt = t[:, :-1], t[:, 1:]
        sync(device)
        t0 = time.perf_counter()
        logits = model(inp)
        loss = F.cross_entropy(logits.reshape(-1, a.vocab), tgt.reshape(-1))
        sync(device)
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        sync(device)
        t2 = time.perf_counter()
        opt.step()
        sync(device)
        t3 = time.perf_counter()
        losses.append(loss.item())
        if i >= a.warmup:
            steps.append(t3 - t0)
            fwd.append(t1 - t0)
            bwd.append(t2 - t1)
            upd.append(t3 - t2)
    med = statistics.median(steps)
    tokens = a.batch * a.seq
    res = dict(
        torch=torch.__version__, mixer=a.mixer, threads=torch.get_num_threads(),
        step_s=med, forward_s=statistics.median(fwd), backward_s=statistics.median(bwd),
        optim_s=statistics.median(upd), tokens_per_s=tokens / med,
        batch=a.batch, seq=a.seq, d_model=a.d, layers=a.layers, heads=a.heads, vocab=a.vocab,
        params=n_params, steps=a.steps, warmup=a.warmup, final_loss=losses[-1],
        cpu=cpu_model(), python=platform.python_version(), device=str(device),
    )
    if device.type == "cuda":
        res["gpu"] = torch.cuda.get_device_name(device)
        res["peak_allocated_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    if a.json:
        print(json.dumps(res))
    else:
        print(f"torch {res['torch']} mixer={a.mixer} threads={res['threads']} step_s={med:.4f} "
              f"forward_s={res['forward_s']:.4f} backward_s={res['backward_s']:.4f} "
              f"tokens_per_s={res['tokens_per_s']:.0f}")
        print(f"cpu: {res['cpu']}" + (f", gpu: {res['gpu']}" if "gpu" in res else ""))
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mixer", default="softmax",
                   choices=["softmax", "linear", "gated_deltanet", "deltanet"])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--d", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=512)
    p.add_argument("--device", default="cpu",
                   help="cpu (the default, the peer of `zoo bench reference` on flex), cuda, mps")
    p.add_argument("--json", action="store_true", help="print one JSON line instead of text")
    p.add_argument("--check", action="store_true",
                   help="float64 correctness check of the chunked kernels, then exit")
    a = p.parse_args(argv)
    torch.set_num_threads(max(1, a.threads))
    if a.check:
        return run_check()
    return run_bench(a)


if __name__ == "__main__":
    sys.exit(main())
