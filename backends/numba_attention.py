"""Causal attention on the Numba backend: BLAS for the products, Numba between them,
and the batch split across the cores.

Imported with the kernels (backends/numba_kernels.py), never at package import.
The heads of a batch are independent. At nanoGPT's CPU size (48 heads of 64
positions x 32 channels per layer) every product is too small for BLAS to use a
second thread, and every softmax too short to be worth waking a thread pool:
measured on 2 cores, letting both BLAS and Numba thread each call made the op
slower than one thread (2.7 against 1.9 ms per layer, forward and backward).
So the op splits the batch into one part per thread up front and each thread
runs its part's whole forward (or backward) single-threaded: one hand-off per
call instead of one per kernel. BLAS and the kernels below release the GIL.

S = q kᵀ scale + mask;  P = softmax over keys;  y = P v
The products are BLAS calls on the transpose Sᵀ[s, t] (keys x queries), which
BLAS produces as cheaply as S: a softmax over keys s is then a running max and
sum over rows, each an elementwise update of all queries t at once, which
vectorises (a sum along a row would be a chain of dependent adds). Query t sits
at position t + Tk − Tq, so key s is seen by queries t ≥ s − (Tk − Tq).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial

import numba
import numpy as np
from numba import njit

from .numba_math import FLAGS, exp

_SERIAL_JIT = dict(nogil=True, **FLAGS)
# Below this many multiply-adds per product (B H Tq Tk D) a part is not worth a thread
# hand-off (tens of microseconds): generation's one new query, say.
SPLIT_MIN = 1 << 20


@njit(**_SERIAL_JIT)
def softmax_forward(ST, scale):
    """ST (B, H, Tk, Tq) = k qᵀ, in place -> Pᵀ: Pᵀ[s, t] = softmax_s(S[t, :] scale)[s] for the
    keys s that query t sees, else exactly 0."""
    B, H, Tk, Tq = ST.shape
    f = ST.dtype.type
    for b in range(B):
        for h in range(H):
            P = ST[b, h]
            smax = np.full(Tq, -np.inf, dtype=ST.dtype)
            total = np.zeros(Tq, dtype=ST.dtype)
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
@njit(**_SERIAL_JIT)
def softmax_backward(dPT, PT, scale):
    """dPT = v dyᵀ (B, H, Tk, Tq), in place -> dSᵀ (0 where masked, since P is)."""
    B, H, Tk, Tq = PT.shape
    for b in range(B):
        for h in range(H):
            rowsum = np.zeros(Tq, dtype=PT.dtype)
            for s in range(Tk):
                dp, p = dPT[b, h, s], PT[b, h, s]
                for t in range(Tq):
                    rowsum[t] += dp[t] * p[t]
            for s in range(Tk):
                dp, p = dPT[b, h, s], PT[b, h, s]
                for t in range(Tq):
                    # term 1: P dP;  term 2: −P rowsum(dP P);  final scale
                    dp[t] = p[t] * (dp[t] - rowsum[t]) * scale


# Sᵀ = k qᵀ;  Pᵀ = softmax (kernel);  y = (Pᵀ)ᵀ v
def _forward_part(scale, q, k, v, y, PT):
    np.matmul(k, q.swapaxes(-1, -2), out=PT)
    softmax_forward(PT, scale)
    np.matmul(PT.swapaxes(-1, -2), v, out=y)


# dv = Pᵀ dy;  dPᵀ = v dyᵀ;  dSᵀ (kernel);  dq = (dSᵀ)ᵀ k;  dk = dSᵀ q
def _backward_part(scale, dy, q, k, v, PT, dq, dk, dv, dST):
    np.matmul(PT, dy, out=dv)
    np.matmul(v, dy.swapaxes(-1, -2), out=dST)
    softmax_backward(dST, PT, scale)
    np.matmul(dST.swapaxes(-1, -2), k, out=dq)
    np.matmul(dST, q, out=dk)


_pool: ThreadPoolExecutor | None = None
_blas: list | None = None


def _blas_libraries() -> list:
    """threadpoolctl's handles on the BLAS libraries NumPy loaded ([] without threadpoolctl)."""
    global _blas
    if _blas is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            _blas = []
        else:
            _blas = ThreadpoolController().select(user_api="blas").lib_controllers
    return _blas


@contextmanager
def _blas_on_one_thread(libraries):
    before = [lib.num_threads for lib in libraries]
    for lib in libraries:
        lib.set_num_threads(1)
    try:
        yield
    finally:
        for lib, n in zip(libraries, before):
            lib.set_num_threads(n)


def _in_parts(run, shape, work: int, *arrays) -> None:
    """``run(*parts)`` on every part of ``arrays`` (all (B, H, ...)), one part per Numba
    thread: split along B when there are enough batch rows, else along the heads."""
    global _pool
    B, H = shape[:2]
    libraries = _blas_libraries()
    n = numba.get_num_threads() if work >= SPLIT_MIN and libraries else 1
    axis = 0 if B >= n else 1
    n = min(n, shape[axis])
    if n == 1:
        run(*arrays)
        return
    edges = [shape[axis] * i // n for i in range(n + 1)]
    keys = [(slice(None),) * axis + (slice(a, b),) for a, b in zip(edges, edges[1:])]
    if _pool is None or _pool._max_workers < n - 1:
        _pool = ThreadPoolExecutor(n - 1, thread_name_prefix="tinylm-attention")
    parts = [[a[key] for a in arrays] for key in keys]
    with _blas_on_one_thread(libraries):
        futures = [_pool.submit(run, *part) for part in parts[1:]]
        run(*parts[0])
        for future in futures:
            future.result()


class NumbaAttentionKernels:
    """attention_forward / attention_backward for NumbaKernels; the saved tensor is Pᵀ."""

    def attention_forward(self, q, k, v, scale):
        """q (B, H, T, D), k, v (B, H, Tk, D) -> (y (B, H, T, D), Pᵀ (B, H, Tk, T))."""
        B, H, T, D = q.shape
        dtype = np.result_type(q, k, v)
        PT = np.empty((B, H, k.shape[2], T), dtype=dtype)                # keys x queries
        # y laid out (B, T, H, D) in memory: merging the heads afterwards is then free
        y = np.empty((B, T, H, D), dtype=dtype).transpose(0, 2, 1, 3)
        _in_parts(partial(_forward_part, dtype.type(scale)), q.shape, B * H * T * k.shape[2] * D,
                  q, k, v, y, PT)
        return y, PT

    def attention_backward(self, dy, q, k, v, PT, scale):
        B, H, T, D = q.shape
        dq = np.empty((B, T, H, D), dtype=PT.dtype).transpose(0, 2, 1, 3)  # the layout of q's heads
        dk, dv = np.empty(k.shape, dtype=PT.dtype), np.empty(v.shape, dtype=PT.dtype)
        dST = np.empty_like(PT)
        _in_parts(partial(_backward_part, PT.dtype.type(scale)), q.shape, PT.size * D,
                  dy, q, k, v, PT, dq, dk, dv, dST)
        return dq, dk, dv
