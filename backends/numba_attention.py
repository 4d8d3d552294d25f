"""Causal attention on the Numba backend: BLAS for the products, Numba between them.

Imported with the kernels (backends/numba_kernels.py), never at package import.

S = q kᵀ scale + mask;  P = softmax over keys;  y = P v
The products are BLAS calls on the transpose Sᵀ[s, t] (keys x queries), which
BLAS produces as cheaply as S: a softmax over keys s is then a running max and
sum over rows, each an elementwise update of all queries t at once, which
vectorises (a sum along a row would be a chain of dependent adds). Query t sits
at position t + Tk − Tq, so key s is seen by queries t ≥ s − (Tk − Tq).

The softmax kernels run the heads over Numba's threads, and BLAS threads the
products that are large enough. Tried and not kept: splitting the batch into
one part per thread, each running its part's products and softmax on its own
(2.7 → 1.0 ms per layer at nanoGPT's CPU size in isolation, but no gain inside
a training step: OpenBLAS's worker keeps spinning on the other core after the
layer's 2-thread matmuls, bench/README.md).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .numba_math import FLAGS, exp


# -- the softmax of one head, forward and backward ----------------------------------------
@njit(**FLAGS)
def _softmax_head(P, scale):
    """P (Tk, Tq) = k qᵀ, in place -> Pᵀ: Pᵀ[s, t] = softmax_s(S[t, :] scale)[s] for the keys s
    that query t sees, else exactly 0."""
    Tk, Tq = P.shape
    f = P.dtype.type
    smax = np.full(Tq, -np.inf, dtype=P.dtype)
    total = np.zeros(Tq, dtype=P.dtype)
    for s in range(Tk):  # whole rows (no ragged ends): masked entries become -inf
        row, lo = P[s], s - (Tk - Tq)
        for t in range(Tq):
            x = row[t] * scale if t >= lo else f(-np.inf)
            row[t] = x
            smax[t] = x if x > smax[t] else smax[t]
    for s in range(Tk):  # e^(S - max), 0 where masked, and the sums over keys
        row = P[s]
        for t in range(Tq):
            row[t] = exp(row[t] - smax[t])
            total[t] += row[t]
    for t in range(Tq):
        total[t] = f(1.0) / total[t]
    for s in range(Tk):
        row = P[s]
        for t in range(Tq):
            row[t] *= total[t]


# dS = P ⊙ (dP − rowsum(dP ⊙ P)) scale, on the transposes
@njit(**FLAGS)
def _softmax_head_backward(dP, P, scale):
    """dP = v dyᵀ (Tk, Tq), in place -> dSᵀ (0 where masked, since P is)."""
    Tk, Tq = P.shape
    rowsum = np.zeros(Tq, dtype=P.dtype)
    for s in range(Tk):
        dp, p = dP[s], P[s]
        for t in range(Tq):
            rowsum[t] += dp[t] * p[t]
    for s in range(Tk):
        dp, p = dP[s], P[s]
        for t in range(Tq):
            # term 1: P dP;  term 2: −P rowsum(dP P);  final scale
            dp[t] = p[t] * (dp[t] - rowsum[t]) * scale


# -- every head, the heads over Numba's threads --------------------------------------------
@njit(parallel=True, **FLAGS)
def softmax_forward(ST, scale):
    """ST (B, H, Tk, Tq) = k qᵀ, in place -> Pᵀ, head by head."""
    H = ST.shape[1]
    for bh in prange(ST.shape[0] * H):  # each (b, h) owns ST[b, h]
        _softmax_head(ST[bh // H, bh % H], scale)


@njit(parallel=True, **FLAGS)
def softmax_backward(dST, PT, scale):
    """dST (B, H, Tk, Tq) = v dyᵀ, in place -> dSᵀ, head by head."""
    H = PT.shape[1]
    for bh in prange(PT.shape[0] * H):  # each (b, h) owns dST[b, h]
        _softmax_head_backward(dST[bh // H, bh % H], PT[bh // H, bh % H], scale)


class NumbaAttentionKernels:
    """attention_forward / attention_backward for NumbaKernels; the saved tensor is Pᵀ."""

    def attention_forward(self, q, k, v, scale):
        """q (B, H, T, D), k, v (B, H, Tk, D) -> (y (B, H, T, D), Pᵀ (B, H, Tk, T))."""
        B, H, T, D = q.shape
        dtype = np.result_type(q, k, v)
        PT = np.empty((B, H, k.shape[2], T), dtype=dtype)                # keys x queries
        # y laid out (B, T, H, D) in memory: merging the heads afterwards is then free
        y = np.empty((B, T, H, D), dtype=dtype).transpose(0, 2, 1, 3)
        np.matmul(k, q.swapaxes(-1, -2), out=PT)                        # Sᵀ = k qᵀ
        softmax_forward(PT, dtype.type(scale))                            # Pᵀ
        np.matmul(PT.swapaxes(-1, -2), v, out=y)                          # y = (Pᵀ)ᵀ v
        return y, PT

    def attention_backward(self, dy, q, k, v, PT, scale):
        B, H, T, D = q.shape
        dq = np.empty((B, T, H, D), dtype=PT.dtype).transpose(0, 2, 1, 3)  # the layout of q's heads
        dk = np.empty(k.shape, dtype=PT.dtype)
        dv = np.empty(v.shape, dtype=PT.dtype)
        np.matmul(PT, dy, out=dv)                                         # dv = Pᵀ dy
        dST = v @ dy.swapaxes(-1, -2)                                     # dPᵀ = v dyᵀ
        softmax_backward(dST, PT, PT.dtype.type(scale))                   # dSᵀ
        np.matmul(dST.swapaxes(-1, -2), k, out=dq)                        # dq = (dSᵀ)ᵀ k
        np.matmul(dST, q, out=dk)                                         # dk = dSᵀ q
        return dq, dk, dv
