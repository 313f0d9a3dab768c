"""An independent PyTorch reference for MQAR learning speed (EXPERIMENTS.md §0 and §a).

Written from the papers, not from the zoo's code: its own MQAR generator (Zoology's semantics:
keys from 1..V/2, values from V/2..V, the kv block first, each key queried once at a gap drawn
∝ a·x^(a−1) without replacement, noise elsewhere, loss and accuracy only where a value is
asked), PyTorch's module defaults (Embedding N(0,1), Linear U(±1/√fan_in) with biases,
LayerNorm), an untied head, RoPE (half-split) / ALiBi / learned positions / none, optional short causal depthwise convolution and
GELU MLP, AdamW (β 0.9/0.999, weight decay on every parameter), linear warm-up then cosine to
min_lr_ratio · lr, gradient clipping at 1.

    python3 experiments/reference/torch_mqar.py --seq-len 128 --pairs 8 --batch 32 --steps 800
"""

import argparse
import math
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def mqar_batch(rng, batch, seq_len, pairs, vocab, power_a=0.01):
    """inputs, targets [batch, seq_len]; targets are -100 except where a value is asked."""
    half = vocab // 2
    inputs = rng.integers(0, vocab, size=(batch, seq_len))
    targets = np.full((batch, seq_len), -100)
    space = (seq_len - 2 * pairs) // 2
    x = np.arange(1, space + 1, dtype=np.float64)
    p = power_a * x ** (power_a - 1)
    p /= p.sum()
    for b in range(batch):
        keys = rng.choice(np.arange(1, half), size=pairs, replace=False)
        values = rng.choice(np.arange(half, vocab), size=pairs, replace=False)
        inputs[b, 0 : 2 * pairs : 2] = keys
        inputs[b, 1 : 2 * pairs : 2] = values
        gaps = rng.choice(space, size=pairs, replace=False, p=p)
        order = rng.permutation(pairs)
        for gap, k in zip(gaps, order):
            pos = 2 * pairs + 2 * gap
            inputs[b, pos] = keys[k]
            targets[b, pos] = values[k]
    return torch.from_numpy(inputs), torch.from_numpy(targets)


def rope(x, base=10_000.0):
    """x [b, h, n, d], half-split rotation by position."""
    n, d = x.shape[-2], x.shape[-1]
    inv = base ** (-torch.arange(0, d // 2, dtype=torch.float64) * 2 / d)
    ang = torch.arange(n, dtype=torch.float64)[:, None] * inv[None, :]
    cos, sin = ang.cos().float(), ang.sin().float()
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def alibi_bias(heads, n):
    """[heads, n, n]: −m_h·(i − j) below the diagonal, −inf above (Press et al. 2022 slopes)."""
    slopes = torch.tensor([2 ** (-8 * (h + 1) / heads) for h in range(heads)])
    i = torch.arange(n)[:, None]
    j = torch.arange(n)[None, :]
    bias = -slopes[:, None, None] * (i - j).float()
    return bias.masked_fill(j > i, float("-inf"))


class DeltaRule(nn.Module):
    """DeltaNet (Yang et al. 2024) / Gated DeltaNet (Yang, Kautz & Hatamizadeh 2024), written
    from the papers as plainly as possible: q, k, v, gate projections; a causal depthwise
    convolution of width 4 and SiLU on q, k, v; q and k L2-normalised (q also by 1/√d_head);
    β = σ(W_β x); α = exp(−e^{A_log}·softplus(W_α x + dt_bias)) (gated) or 1; the token
    recurrence S_t = α_t (S_{t−1} − β_t k_t (k_tᵀ S_{t−1})) + β_t k_t v_tᵀ, o_t = S_tᵀ q_t;
    per-head RMSNorm, SiLU gate, output projection."""

    def __init__(self, d, heads, gated):
        super().__init__()
        self.heads, self.gated = heads, gated
        self.proj = nn.Linear(d, 4 * d)
        self.conv = nn.Conv1d(3 * d, 3 * d, 4, groups=3 * d, padding=3)
        self.beta = nn.Linear(d, heads, bias=False)
        if gated:
            self.a = nn.Linear(d, heads, bias=False)
            self.a_log = nn.Parameter(torch.empty(heads).uniform_(1, 16).log())
            dt = torch.exp(torch.empty(heads).uniform_(math.log(1e-3), math.log(1e-1)))
            self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        self.norm = nn.Parameter(torch.ones(d // heads))
        self.out = nn.Linear(d, d)

    def forward(self, x):
        b, n, d = x.shape
        h, dh = self.heads, d // self.heads
        p = self.proj(x)
        qkv = F.silu(self.conv(p[..., : 3 * d].transpose(1, 2))[..., :n].transpose(1, 2))
        q, k, v = (t.reshape(b, n, h, dh).transpose(1, 2) for t in qkv.split(d, -1))
        q = F.normalize(q, dim=-1, eps=1e-6) / math.sqrt(dh)
        k = F.normalize(k, dim=-1, eps=1e-6)
        beta = torch.sigmoid(self.beta(x)).transpose(1, 2)  # [b, h, n]
        if self.gated:
            alpha = torch.exp(-self.a_log.exp() * F.softplus(self.a(x) + self.dt_bias)).transpose(1, 2)
        else:
            alpha = torch.ones_like(beta)
        s = x.new_zeros(b, h, dh, dh)
        outs = []
        for t in range(n):
            kt, vt = k[:, :, t], v[:, :, t]  # [b, h, dh]
            s = alpha[:, :, t, None, None] * s
            recalled = torch.einsum("bhkv,bhk->bhv", s, kt)
            s = s + beta[:, :, t, None, None] * kt[..., :, None] * (vt - recalled)[..., None, :]
            outs.append(torch.einsum("bhkv,bhk->bhv", s, q[:, :, t]))
        o = torch.stack(outs, 2).transpose(1, 2)  # [b, n, h, dh]
        o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + 1e-5) * self.norm
        return self.out(o.reshape(b, n, d) * F.silu(p[..., 3 * d :]))


class Block(nn.Module):
    def __init__(self, d, heads, conv, mlp, position, mixer="softmax"):
        super().__init__()
        self.heads = heads
        self.position = position
        self.norm1 = nn.LayerNorm(d)
        self.conv = nn.Conv1d(d, d, conv, groups=d, padding=conv - 1) if conv else None
        self.delta = DeltaRule(d, heads, mixer == "gated_deltanet") if mixer != "softmax" else None
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.mlp = (
            nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
            if mlp
            else None
        )

    def forward(self, x):
        b, n, d = x.shape
        u = self.norm1(x)
        if self.conv is not None:
            u = self.conv(u.transpose(1, 2))[..., :n].transpose(1, 2)
        if self.delta is not None:
            x = x + self.delta(u)
            return x + self.mlp(x) if self.mlp is not None else x
        q, k, v = self.qkv(u).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if self.position == "rope":
            o = F.scaled_dot_product_attention(rope(q), rope(k), v, is_causal=True)
        elif self.position == "alibi":
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=alibi_bias(self.heads, n))
        else:
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.out(o.transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(x) if self.mlp is not None else x


class Model(nn.Module):
    def __init__(self, vocab, d, layers, heads, conv, mlp, position, max_len, mixer="softmax"):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.positions = nn.Embedding(max_len, d) if position == "learned" else None
        self.blocks = nn.ModuleList(
            Block(d, heads, conv, mlp, position, mixer) for _ in range(layers)
        )
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)

    def forward(self, tokens):
        x = self.embed(tokens)
        if self.positions is not None:
            x = x + self.positions(torch.arange(tokens.shape[1]))
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.norm(x))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=1)
    ap.add_argument("--conv", type=int, default=0)
    ap.add_argument("--mlp", action="store_true")
    ap.add_argument("--position", choices=["rope", "alibi", "learned", "none"], default="rope")
    ap.add_argument("--mixer", choices=["softmax", "deltanet", "gated_deltanet"], default="softmax")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--warmup", type=int, default=60)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--min-lr-ratio", type=float, default=0.1)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    train_rng = np.random.default_rng(a.seed)
    model = Model(
        a.vocab, a.d_model, a.layers, a.heads, a.conv, a.mlp, a.position, a.seq_len, a.mixer
    )
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.1)

    def lr_at(step):
        if step < a.warmup:
            return a.lr * (step + 1) / a.warmup
        t = (step - a.warmup) / max(1, a.steps - a.warmup)
        return a.lr * (a.min_lr_ratio + (1 - a.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))

    held_out = [mqar_batch(np.random.default_rng(10_000 + a.seed + i), 64, a.seq_len, a.pairs, a.vocab) for i in range(4)]
    start = time.time()
    for step in range(a.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        x, y = mqar_batch(train_rng, a.batch, a.seq_len, a.pairs, a.vocab)
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten(), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if (step + 1) % a.eval_every == 0:
            with torch.no_grad():
                ok = total = 0
                for hx, hy in held_out:
                    pred = model(hx).argmax(-1)
                    mask = hy != -100
                    ok += (pred[mask] == hy[mask]).sum().item()
                    total += mask.sum().item()
            print(f"step {step + 1} loss {loss.item():.3f} acc {ok / total:.3f} ({time.time() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
