"""The two layers LLaMA uses in place of GPT-2's: RMS normalisation and rotary positions.

Each op is written as docs/testing.md teaches a new layer, forward with the VJP
as a closure beside it and the equation in one comment, and its Module follows
it. The GPT takes them with ``--norm rmsnorm`` and ``--pos-encoding rope``
(tinylm/models/gpt.py); the KV-cache path calls the array-level forwards
(``rms_norm_forward``, ``rotate``).
"""

from __future__ import annotations

import numpy as np

from tinylm import backends
from tinylm.nn import Buffer, Module, Parameter
from tinylm.tensor import Tensor, xp


# -- RMSNorm (Zhang & Sennrich 2019) --------------------------------------------------------------
def rms_norm_forward(x, weight, eps: float):
    """Arrays: x (..., C), weight (C,) -> (y, xhat, r), r = sqrt(mean(x²) + eps) of shape (..., 1)."""
    r = xp().sqrt((x * x).mean(axis=-1, keepdims=True) + x.dtype.type(eps))  # (..., 1)
    xhat = x / r
    return xhat * weight, xhat, r


# y = x̂ w,  x̂ = x / r,  r = sqrt(mean(x²) + eps);  dx = (g w − x̂ mean(g w x̂)) / r,  dw = Σ_rows g x̂
def rms_norm(x: Tensor, weight: Tensor, eps: float = 1e-5) -> Tensor:
    y, xhat, r = rms_norm_forward(x.data, weight.data, eps)

    def vjp(g):
        gw = g * weight.data
        dx = (gw - xhat * (gw * xhat).mean(axis=-1, keepdims=True)) / r
        dw = (g * xhat).reshape(-1, x.shape[-1]).sum(axis=0)               # (C,)
        return dx, dw
    return Tensor.from_op(y, (x, weight), vjp, "rms_norm")


class RMSNorm(Module):
    """Scale each row of the last axis to unit root mean square, then by a learned gain (no shift)."""

    def __init__(self, dim: int, eps: float = 1e-5):
        self.weight = Parameter(backends.current().xp.ones((dim,)))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return rms_norm(x, self.weight, self.eps)


# -- rotary position embedding (Su et al. 2021, RoFormer) ---------------------------------------
def rotary_tables(block_size: int, head_dim: int, base: float = 10000.0):
    """Host arrays cos, sin (block_size, head_dim / 2): angle[t, j] = t · base^(−2j / head_dim)."""
    if head_dim % 2:
        raise ValueError(f"rotary positions rotate pairs of channels: head_dim must be even, got {head_dim}")
    inv_freq = base ** (-np.arange(0, head_dim, 2) / head_dim)            # (D/2,)
    angle = np.arange(block_size)[:, None] * inv_freq[None, :]           # (T, D/2)
    return np.cos(angle), np.sin(angle)


def rotate(x, cos, sin):
    """Arrays: x (..., D) with cos, sin broadcasting against (..., D/2): each pair (x_j, x_{j+D/2})
    turned by its angle. y_1 = x_1 cos − x_2 sin;  y_2 = x_2 cos + x_1 sin (GPT-NeoX's halves)."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return xp().concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


# q_t, k_t <- R(t) q_t, R(t) k_t per head, v unchanged;  dq_t = R(t)ᵀ dq_t = R(−t) dq_t (a rotation's inverse)
def rotary_qk(qkv: Tensor, n_head: int, cos, sin) -> Tensor:
    """qkv (B, T, 3C) = [q | k | v] -> the same with every head of q and k rotated by position.

    cos, sin: backend arrays (≥ T, D/2) (``rotary_tables``); row t turns position t.
    Then q_m · k_n depends on m − n only: attention sees relative positions.
    """
    B, T, C3 = qkv.shape
    D = C3 // (3 * n_head)
    c, s = cos[:T, None, :], sin[:T, None, :]                             # (T, 1, D/2)
    heads = qkv.data.reshape(B, T, 3, n_head, D)                          # (B, T, 3, H, D), a view

    def turn(a, sign):
        out = a.copy()
        out[:, :, :2] = rotate(a[:, :, :2], c[:, None], sign * s[:, None])  # q, k: (B, T, 2, H, D)
        return out.reshape(B, T, C3)
    return Tensor.from_op(turn(heads, 1), (qkv,),
                          lambda g: (turn(g.reshape(B, T, 3, n_head, D), -1),), "rotary_qk")


class Rotary(Module):
    """Rotary position embedding: q and k of every head turned by an angle per position.

    No parameters: the cos/sin tables are Buffers rebuilt from the sizes
    (persistent=False, so checkpoints do not store them).
    """

    def __init__(self, head_dim: int, block_size: int, base: float = 10000.0):
        cos, sin = rotary_tables(block_size, head_dim, base)              # (block_size, D/2)
        backend = backends.current()
        self.cos = Buffer(backend.from_host(cos), persistent=False)
        self.sin = Buffer(backend.from_host(sin), persistent=False)

    def forward(self, qkv: Tensor, n_head: int) -> Tensor:
        """qkv (B, T, 3C) = [q | k | v] -> the same, q and k rotated by position 0..T-1."""
        return rotary_qk(qkv, n_head, self.cos.data, self.sin.data)
