"""Causal attention on the Numba backend: BLAS for the products, Numba between them.

Imported with the kernels (backends/numba_kernels.py), never at package import.

S = q kᵀ scale + mask;  P = softmax over keys;  y = P v
The products are BLAS calls on the transpose Sᵀ[s, t] (keys x queries), which
BLAS produces as cheaply as S: a softmax over keys s is then a running max and
sum over rows, each an elementwise update of all queries t at once, which
vectorises (a sum along a row would be a chain of dependent adds). Query t sits
at position t + Tk − Tq, so key s is seen by queries t ≥ s − (Tk − Tq).

Each head runs whole on one thread, products, softmax and all, the heads spread
over Numba's threads, with OpenBLAS held to one thread meanwhile (it then does
every gemm on the thread that calls it). A head's Sᵀ stays in that core's cache,
and nanoGPT's CPU heads (64 x 64 x 32), too small for BLAS to thread, no longer
run one after another on one core as they do in a batched call. Measured on 2
cores, one layer's forward + backward: 1.05 → 0.57 ms at nanoGPT's CPU size,
22.6 → 16.4 ms at the mid size (8 x 6 heads of 256 x 256 x 64). The batched path
(one NumPy call per product, the softmax over all heads between) remains for
where NumPy's OpenBLAS was not found.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .numba_blas import NO_TRANS, TRANS, gemm
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


# -- one head per thread, its products by BLAS on that thread ------------------------------
@njit(**FLAGS)
def _ld(a):
    """Leading dimension of a 2-D view with unit column stride, in elements."""
    return a.strides[0] // a.itemsize


@njit(parallel=True, **FLAGS)
def heads_forward(fn, int_like, q, k, v, scale, PT, y):
    """As ``attention_forward`` below, each (b, h) whole on one thread; ``fn`` is cblas_?gemm."""
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    one, zero = PT.dtype.type(1.0), PT.dtype.type(0.0)
    for bh in prange(B * H):  # each (b, h) owns PT[b, h] and y[b, h]
        b, h = bh // H, bh % H
        qh, kh, vh, P, yh = q[b, h], k[b, h], v[b, h], PT[b, h], y[b, h]
        gemm(fn, int_like, NO_TRANS, TRANS, Tk, Tq, D, one, kh.ctypes.data, _ld(kh),   # Sᵀ = k qᵀ
             qh.ctypes.data, _ld(qh), zero, P.ctypes.data, Tq)
        _softmax_head(P, scale)                                                     # Pᵀ
        gemm(fn, int_like, TRANS, NO_TRANS, Tq, D, Tk, one, P.ctypes.data, Tq,         # y = (Pᵀ)ᵀ v
             vh.ctypes.data, _ld(vh), zero, yh.ctypes.data, _ld(yh))


@njit(parallel=True, **FLAGS)
def heads_backward(fn, int_like, dy, q, k, v, PT, scale, dST, dq, dk, dv):
    """As ``attention_backward`` below, each (b, h) whole on one thread; dST is scratch."""
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    one, zero = PT.dtype.type(1.0), PT.dtype.type(0.0)
    for bh in prange(B * H):  # each (b, h) owns dST, dq, dk, dv [b, h]
        b, h = bh // H, bh % H
        g, qh, kh, vh, P, dS = dy[b, h], q[b, h], k[b, h], v[b, h], PT[b, h], dST[b, h]
        dqh, dkh, dvh = dq[b, h], dk[b, h], dv[b, h]
        gemm(fn, int_like, NO_TRANS, NO_TRANS, Tk, D, Tq, one, P.ctypes.data, Tq,      # dv = Pᵀ dy
             g.ctypes.data, _ld(g), zero, dvh.ctypes.data, _ld(dvh))
        gemm(fn, int_like, NO_TRANS, TRANS, Tk, Tq, D, one, vh.ctypes.data, _ld(vh),   # dPᵀ = v dyᵀ
             g.ctypes.data, _ld(g), zero, dS.ctypes.data, Tq)
        _softmax_head_backward(dS, P, scale)                                        # dSᵀ
        gemm(fn, int_like, TRANS, NO_TRANS, Tq, D, Tk, one, dS.ctypes.data, Tq,        # dq = (dSᵀ)ᵀ k
             kh.ctypes.data, _ld(kh), zero, dqh.ctypes.data, _ld(dqh))
        gemm(fn, int_like, NO_TRANS, NO_TRANS, Tk, D, Tq, one, dS.ctypes.data, Tq,     # dk = dSᵀ q
             qh.ctypes.data, _ld(qh), zero, dkh.ctypes.data, _ld(dkh))


class NumbaAttentionKernels:
    """attention_forward / attention_backward for NumbaKernels; the saved tensor is Pᵀ.

    ``self.blas`` is NumPy's OpenBLAS (numba_blas.OpenBLAS), or None where it was not found.
    """

    blas = None

    def _heads_gemm(self, Tq, Tk, D, *arrays):
        """(gemm address, an int of the library's width) when the heads can run one per thread:
        OpenBLAS found, one float dtype, rows that BLAS can read."""
        dtype = arrays[0].dtype
        if (self.blas is None or dtype not in (np.float32, np.float64)
                or any(a.dtype != dtype or a.strides[-1] != a.itemsize
                       or a.strides[-2] < a.shape[-1] * a.itemsize for a in arrays)):
            return None
        fn = self.blas.sgemm if dtype == np.float32 else self.blas.dgemm
        return fn, (np.int64(0) if self.blas.int_bits == 64 else np.int32(0))

    def attention_forward(self, q, k, v, scale):
        """q (B, H, T, D), k, v (B, H, Tk, D) -> (y (B, H, T, D), Pᵀ (B, H, Tk, T))."""
        B, H, T, D = q.shape
        dtype = np.result_type(q, k, v)
        PT = np.empty((B, H, k.shape[2], T), dtype=dtype)                # keys x queries
        # y laid out (B, T, H, D) in memory: merging the heads afterwards is then free
        y = np.empty((B, T, H, D), dtype=dtype).transpose(0, 2, 1, 3)
        heads = self._heads_gemm(T, k.shape[2], D, q, k, v)
        if heads is not None:
            with self.blas.one_thread():
                heads_forward(*heads, q, k, v, dtype.type(scale), PT, y)
            return y, PT
        np.matmul(k, q.swapaxes(-1, -2), out=PT)                        # Sᵀ = k qᵀ
        softmax_forward(PT, dtype.type(scale))                            # Pᵀ
        np.matmul(PT.swapaxes(-1, -2), v, out=y)                          # y = (Pᵀ)ᵀ v
        return y, PT

    def attention_backward(self, dy, q, k, v, PT, scale):
        B, H, T, D = q.shape
        dq = np.empty((B, T, H, D), dtype=PT.dtype).transpose(0, 2, 1, 3)  # the layout of q's heads
        dk = np.empty(k.shape, dtype=PT.dtype)
        dv = np.empty(v.shape, dtype=PT.dtype)
        heads = self._heads_gemm(T, k.shape[2], D, dy, q, k, v)
        if heads is not None:
            dST = np.empty_like(PT)
            with self.blas.one_thread():
                heads_backward(*heads, dy, q, k, v, PT, PT.dtype.type(scale), dST, dq, dk, dv)
            return dq, dk, dv
        np.matmul(PT, dy, out=dv)                                         # dv = Pᵀ dy
        dST = v @ dy.swapaxes(-1, -2)                                     # dPᵀ = v dyᵀ
        softmax_backward(dST, PT, PT.dtype.type(scale))                   # dSᵀ
        np.matmul(dST.swapaxes(-1, -2), k, out=dq)                        # dq = (dSᵀ)ᵀ k
        np.matmul(dST, q, out=dk)                                         # dk = dSᵀ q
        return dq, dk, dv
