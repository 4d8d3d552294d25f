"""Causal attention on the GPU, two ways that save the same thing (y and the row log-sum-exp).

* ``flash``: attention.cu, tiles of queries and keys with an online softmax
  (cuda/flash_attention.py is its NumPy mirror); nothing of size T² exists even
  inside the op. float32 FMA; head sizes up to 128.
* ``cublas``: S = q kᵀ and y = P v as cuBLAS batched products (TF32 tensor cores
  when CuPy's matmuls use them), the masked softmax in one pass per row
  (causal_softmax.cu); the backward recomputes P from the log-sum-exp. A (T, T)
  matrix per head lives only inside the op.

Both return ``(y, SavedAttention(y, lse))``, so either backward can follow either
forward. ``CudaKernels.attention_forward`` picks one per shape.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

WARPS, TILE, MAX_D = 8, 32, 128                  # as attention.cu (and causal_softmax.cu's WARPS)
FLOAT = np.float32


class SavedAttention(NamedTuple):
    """What the fused attention_forward keeps: y (B, H, T, D) and lse (B, H, T)."""
    y: object
    lse: object


def _strides(a) -> tuple:
    """(batch, head, time) strides of a (B, H, T, D) array, in elements, as the kernels take them."""
    return tuple(np.int64(s // a.itemsize) for s in a.strides[:3])


def _same_strides(xp, q, k, v):
    """q, k, v sharing one layout with a contiguous last axis (views of one qkv are); else copies."""
    if q.strides == k.strides == v.strides and q.strides[-1] == q.itemsize:
        return q, k, v
    return tuple(xp.ascontiguousarray(a) for a in (q, k, v))


# -- flash ---------------------------------------------------------------------------------
def flash_forward(kern, q, k, v, scale):
    xp = kern.xp
    B, H, T, D = q.shape
    q, k, v = _same_strides(xp, q, k, v)
    y = xp.empty((B, T, H, D), FLOAT).transpose(0, 2, 1, 3)            # (B, H, T, D) view: heads merge free
    lse = xp.empty((B, H, T), FLOAT)
    kern._launch("attention.cu", "attention_forward", (-(-T // WARPS), B * H), (32 * WARPS,),
                 (q, k, v, y, lse, np.int32(H), np.int32(T), np.int32(D), *_strides(q), *_strides(y),
                  np.float32(scale)),
                 shared_mem=4 * (WARPS + 2 * TILE) * (D + 1))
    return y, SavedAttention(y, lse)


def flash_backward(kern, dy, q, k, v, saved, scale):
    xp = kern.xp
    B, H, T, D = q.shape
    q, k, v = _same_strides(xp, q, k, v)
    dy = dy if dy.strides[-1] == dy.itemsize else xp.ascontiguousarray(dy)
    y, lse = saved
    grid, block, dims = (-(-T // WARPS), B * H), (32 * WARPS,), (np.int32(H), np.int32(T), np.int32(D))
    delta = xp.empty((B, H, T), FLOAT)
    kern._launch("attention.cu", "attention_backward_delta", grid, block,
                 (dy, y, delta, *dims, *_strides(dy), *_strides(y)))
    dq, dk, dv = (xp.empty((B, H, T, D), FLOAT) for _ in range(3))
    tiles = 4 * (2 * WARPS + 2 * TILE) * (D + 1)
    kern._launch("attention.cu", "attention_backward_dkdv", grid, block,
                 (dy, q, k, v, lse, delta, dk, dv, *dims, *_strides(q), *_strides(dy), np.float32(scale)),
                 shared_mem=tiles + 4 * 2 * TILE)
    kern._launch("attention.cu", "attention_backward_dq", grid, block,
                 (dy, q, k, v, lse, delta, dq, *dims, *_strides(q), *_strides(dy), np.float32(scale)),
                 shared_mem=tiles)
    return dq, dk, dv


# -- cuBLAS products + fused softmax rows ----------------------------------------------------
def _softmax_rows(kern, kernel, *args, rows: int, T: int, scale: float):
    kern._launch("causal_softmax.cu", kernel, (-(-rows // WARPS),), (32 * WARPS,),
                 (*args, np.int64(rows), np.int32(T), np.float32(scale)))


# S = q kᵀ;  P = softmax(scale S + mask) in place, lse kept;  y = P v
def cublas_forward(kern, q, k, v, scale):
    xp = kern.xp
    B, H, T, _ = q.shape
    S = xp.matmul(q, k.swapaxes(-1, -2))                                # (B, H, T, T), only inside the op
    lse = xp.empty((B, H, T), FLOAT)
    _softmax_rows(kern, "causal_softmax_forward", S, lse, rows=B * H * T, T=T, scale=scale)
    y = xp.matmul(S, v)
    return y, SavedAttention(y, lse)


# P = exp(scale q kᵀ - lse);  dv = Pᵀ dy;  dS = P ⊙ (dy vᵀ - rowsum) scale;  dq = dS k;  dk = dSᵀ q
def cublas_backward(kern, dy, q, k, v, saved, scale):
    xp = kern.xp
    B, H, T, _ = q.shape
    rows = B * H * T
    P = xp.matmul(q, k.swapaxes(-1, -2))                                # (B, H, T, T)
    _softmax_rows(kern, "causal_softmax_recompute", P, saved.lse, rows=rows, T=T, scale=scale)
    dv = xp.matmul(P.swapaxes(-1, -2), dy)
    dS = xp.matmul(dy, v.swapaxes(-1, -2))                              # dP, then dS in place
    _softmax_rows(kern, "causal_softmax_backward", P, dS, rows=rows, T=T, scale=scale)
    del P
    return xp.matmul(dS, k), xp.matmul(dS.swapaxes(-1, -2), q), dv


FORWARD = {"flash": flash_forward, "cublas": cublas_forward}
BACKWARD = {"flash": flash_backward, "cublas": cublas_backward}
