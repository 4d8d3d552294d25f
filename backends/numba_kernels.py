"""The fused kernels compiled by Numba: one ``@njit(parallel=True)`` loop nest per kernel.

Imported by ``numba_backend.create()`` only, never at package import: defining
the kernels imports Numba (compilation itself happens on first call, or is
loaded from the on-disk cache). Each kernel computes what the NumPy reference
of the same name computes (backends/numpy_backend.py), in one pass over memory
where NumPy makes several. Matrix products stay in BLAS, called from NumPy in
the Python wrappers of :class:`NumbaKernels`.

Every ``prange`` loop says which outputs each iteration owns: Numba runs the
iterations on different threads and does not guard shared writes, so no two
iterations may write the same element (sums across iterations go through
per-chunk partials that are added up afterwards, in a fixed order).
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import numba
import numpy as np
from numba import njit, prange

from .numba_attention import NumbaAttentionKernels
from .numba_blas import find_openblas
from .numba_math import FLAGS, exp, row_dot, row_sum
from .numba_lstm import NumbaLSTMKernels
from .numpy_backend import NumpyKernels

_JIT = dict(parallel=True, **FLAGS)
_SERIAL_JIT = FLAGS
# Reductions over rows are split into this many chunks whatever the thread
# count, so that results do not depend on how many threads ran them.
_N_CHUNKS = 16


# -- cross-entropy --------------------------------------------------------------
# loss_i = logsumexp(z_i) - z_i[t_i];  probs_i = softmax(z_i)
@njit(**_JIT)
def softmax_xent_forward(logits, targets, ignore_index, probs, losses):
    N, V = logits.shape
    for i in prange(N):  # each row i owns probs[i] and losses[i]
        z, p = logits[i], probs[i]
        zmax = z[0]
        for j in range(1, V):
            zmax = max(zmax, z[j])
        for j in range(V):
            p[j] = exp(z[j] - zmax)
        sumexp = row_sum(p)
        inv = probs.dtype.type(1.0 / sumexp)
        for j in range(V):
            p[j] *= inv
        t = targets[i]
        losses[i] = 0.0 if t == ignore_index else math.log(sumexp) - (z[t] - zmax)


# dz_i = (probs_i - onehot(t_i)) * scale, and 0 for ignored rows
@njit(**_JIT)
def softmax_xent_backward(probs, targets, ignore_index, scale, dlogits):
    N, V = probs.shape
    for i in prange(N):  # each row i owns dlogits[i]
        t = targets[i]
        if t == ignore_index:
            dlogits[i, :] = 0.0
            continue
        for j in range(V):
            dlogits[i, j] = probs[i, j] * scale
        dlogits[i, t] -= scale


# -- layer norm -------------------------------------------------------------------
# y = (x - mean) * rstd * w + b,   rstd = 1 / sqrt(var + eps)
@njit(**_JIT)
def layernorm_forward(x, w, b, eps, y, mean, rstd):
    N, C = x.shape
    f = x.dtype.type
    for i in prange(N):  # each row i owns y[i], mean[i], rstd[i]
        xc = y[i]                                                         # y[i] holds x - mean first
        m = f(row_sum(x[i]) / C)
        for c in range(C):
            xc[c] = x[i, c] - m
        s = f(1.0 / math.sqrt(row_dot(xc, xc) / C + eps))
        for c in range(C):
            y[i, c] = xc[c] * s * w[c] + b[c]
        mean[i], rstd[i] = m, s


@njit(**_JIT)
def layernorm_backward(dy, x, w, mean, rstd, dx, dw_part, db_part):
    N, C = x.shape
    f = x.dtype.type
    n_chunks = dw_part.shape[0]
    rows = (N + n_chunks - 1) // n_chunks
    for j in prange(n_chunks):  # chunk j owns dx[its rows], dw_part[j], db_part[j]
        xhat = np.empty(C, dtype=x.dtype)
        dxhat = np.empty(C, dtype=x.dtype)
        dw, db = dw_part[j], db_part[j]
        for i in range(j * rows, min(N, (j + 1) * rows)):
            for c in range(C):
                xhat[c] = (x[i, c] - mean[i]) * rstd[i]
                dxhat[c] = dy[i, c] * w[c]
                db[c] += dy[i, c]
                dw[c] += dy[i, c] * xhat[c]
            mean_dxhat = f(row_sum(dxhat) / C)
            mean_dxhat_xhat = f(row_dot(dxhat, xhat) / C)
            for c in range(C):
                # term 1: dxhat;  term 2: -mean(dxhat);  term 3: -xhat * mean(dxhat * xhat)
                dx[i, c] = (dxhat[c] - mean_dxhat - xhat[c] * mean_dxhat_xhat) * rstd[i]  # final scale


# -- GELU, tanh form ----------------------------------------------------------------
# y = x/2 (1 + tanh u) = x * sigmoid(2u),  u = c (x + 0.044715 x^3),  c = sqrt(2/pi)
# ((1 + tanh u)/2 = sigmoid(2u): one exp instead of a tanh)
@njit(**_JIT)
def gelu_forward(x, y):
    f = x.dtype.type
    c, a = f(math.sqrt(2.0 / math.pi)), f(0.044715)
    for i in prange(x.size):  # each i owns y[i]
        xi = x[i]
        y[i] = xi / (f(1.0) + exp(f(-2.0) * c * (xi + a * xi * xi * xi)))


# dy/dx = s + 2 x s (1 - s) du,  s = sigmoid(2u),  du = c (1 + 3*0.044715 x^2)
# (the reference's (1 + tanh u)/2 + x/2 (1 - tanh^2 u) du, with tanh u = 2s - 1)
@njit(**_JIT)
def gelu_backward(dy, x, dx):
    f = x.dtype.type
    c, a, one = f(math.sqrt(2.0 / math.pi)), f(0.044715), f(1.0)
    for i in prange(x.size):  # each i owns dx[i]
        xi = x[i]
        x2 = xi * xi
        s = one / (one + exp(f(-2.0) * c * (xi + a * x2 * xi)))
        du = c * (one + f(3.0) * a * x2)
        # term 1: s;  term 2: 2 x s (1 - s) du
        dx[i] = dy[i] * (s + f(2.0) * xi * s * (one - s) * du)


# -- embedding ------------------------------------------------------------------------
# dW[v] = Σ_{n: idx[n] = v} dy[n]   (rows in order, as np.add.at)
@njit(**_JIT)
def embedding_backward(dy, idx, dW, block):
    N, C = dy.shape
    n_blocks = (C + block - 1) // block
    for j in prange(n_blocks):  # column block j owns dW[:, j*block:(j+1)*block]
        lo, hi = j * block, min(C, (j + 1) * block)
        for n in range(N):
            row = idx[n]
            for c in range(lo, hi):
                dW[row, c] += dy[n, c]


# -- AdamW ------------------------------------------------------------------------------
# m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  p = p (1 - lr wd) - lr m̂ / (sqrt(v̂) + eps)
@njit(**_SERIAL_JIT)
def _adamw_element(p, g, m, v, beta1, one_minus_beta1, beta2, one_minus_beta2, eps, decay,
                   step_size, rsqrt_bias2):
    """One AdamW update of a scalar parameter: returns (p, m, v)."""
    m = beta1 * m + one_minus_beta1 * g
    v = beta2 * v + one_minus_beta2 * g * g
    return p * decay - step_size * m / (math.sqrt(v) * rsqrt_bias2 + eps), m, v


@njit(**_JIT)
def adamw_update_parallel(p, g, m, v, *hyper):
    for i in prange(p.size):  # each i owns p[i], m[i], v[i]
        p[i], m[i], v[i] = _adamw_element(p[i], g[i], m[i], v[i], *hyper)


# From how many elements AdamW runs on every thread (measured: while the pool sleeps
# between kernels, ~1M; while it is awake, numba_blas.py, 16k: 65k elements 22 -> 13 us).
ADAMW_PARALLEL_MIN = {"sleeping": 1 << 20, "awake": 1 << 14}


@njit(**_SERIAL_JIT)
def adamw_update_serial(p, g, m, v, *hyper):
    for i in range(p.size):
        p[i], m[i], v[i] = _adamw_element(p[i], g[i], m[i], v[i], *hyper)


# Below how many elements layer norm and GELU run on one thread. Waking a sleeping pool
# costs tens of microseconds: while BLAS has its own threads, Numba's sleep between
# kernels and one thread is sooner up to ~200k elements (measured: layer norm on
# 768 x 128, 43 us on one thread, 72 us on two). When BLAS runs on Numba's threads
# (numba_blas.py) they are awake, and two win from a few thousand elements (42 -> 25 us).
PARALLEL_MIN = {"sleeping": 1 << 17, "awake": 1 << 12}


@contextmanager
def _one_thread_if_small(size: int, parallel_min: int):
    """Run the enclosed kernel on one thread when it has fewer than ``parallel_min`` elements."""
    if size >= parallel_min:
        yield
        return
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(threads)


def _rows(a, ncols: int):
    """``a`` as a C-contiguous (N, ncols) array (a view when it already is one)."""
    return np.ascontiguousarray(a).reshape(-1, ncols)


class NumbaKernels(NumbaAttentionKernels, NumbaLSTMKernels, NumpyKernels):
    """The reference kernels with the elementwise and row-wise work compiled by Numba.

    Scalars are cast to the arrays' dtype before a call, so float32 arrays get
    float32 kernels (and each dtype compiles its own specialisation once).
    """

    def __init__(self):
        super().__init__(np)
        self.blas = find_openblas()
        self.pool = "sleeping"   # between kernels; create() says "awake" when BLAS shares the pool

    def softmax_xent_forward(self, logits, targets, ignore_index):
        z = _rows(logits, logits.shape[-1])                                # (N, V)
        t = np.ascontiguousarray(targets, dtype=np.int64)
        if t.size and t.max() >= z.shape[1]:  # the kernel does not check its reads
            raise IndexError(f"target {t.max()} is out of bounds for {z.shape[1]} classes")
        probs = np.empty_like(z)
        losses = np.empty(len(t), dtype=np.float64)
        softmax_xent_forward(z, t, ignore_index, probs, losses)
        n_valid = int((t != ignore_index).sum())
        loss = np.asarray(losses.sum() / max(n_valid, 1), dtype=logits.dtype)
        return loss, probs, n_valid

    def softmax_xent_backward(self, dloss, probs, targets, ignore_index, n_valid):
        scale = probs.dtype.type(float(dloss) / max(n_valid, 1))
        t = np.ascontiguousarray(targets, dtype=np.int64)
        dlogits = np.empty_like(probs)
        softmax_xent_backward(probs, t, ignore_index, scale, dlogits)
        return dlogits

    def layernorm_forward(self, x, w, b, eps):
        C = x.shape[-1]
        x2 = _rows(x, C)                                                   # (N, C)
        y = np.empty_like(x2)
        mean = np.empty(len(x2), dtype=x.dtype)
        rstd = np.empty(len(x2), dtype=x.dtype)
        with _one_thread_if_small(x2.size, PARALLEL_MIN[self.pool]):
            layernorm_forward(x2, np.ascontiguousarray(w), np.ascontiguousarray(b),
                              x.dtype.type(eps), y, mean, rstd)
        lead = x.shape[:-1]
        return y.reshape(x.shape), mean.reshape(*lead, 1), rstd.reshape(*lead, 1)

    def layernorm_backward(self, dy, x, w, mean, rstd):
        C = x.shape[-1]
        x2, dy2 = _rows(x, C), _rows(dy, C)                                 # (N, C)
        dx = np.empty_like(x2)
        n_chunks = max(1, min(_N_CHUNKS, len(x2)))
        dw_part = np.zeros((n_chunks, C), dtype=np.float64)
        db_part = np.zeros((n_chunks, C), dtype=np.float64)
        with _one_thread_if_small(x2.size, PARALLEL_MIN[self.pool]):
            layernorm_backward(dy2, x2, np.ascontiguousarray(w), _rows(mean, 1)[:, 0],
                               _rows(rstd, 1)[:, 0], dx, dw_part, db_part)
        dtype = dy.dtype
        return dx.reshape(x.shape), dw_part.sum(0).astype(dtype), db_part.sum(0).astype(dtype)

    def gelu_forward(self, x):
        x1 = np.ascontiguousarray(x).reshape(-1)
        y = np.empty_like(x1)
        with _one_thread_if_small(x1.size, PARALLEL_MIN[self.pool]):
            gelu_forward(x1, y)
        return y.reshape(x.shape)

    def gelu_backward(self, dy, x):
        x1 = np.ascontiguousarray(x).reshape(-1)
        dy1 = np.ascontiguousarray(dy, dtype=x.dtype).reshape(-1)
        dx = np.empty_like(x1)
        with _one_thread_if_small(x1.size, PARALLEL_MIN[self.pool]):
            gelu_backward(dy1, x1, dx)
        return dx.reshape(x.shape)

    def embedding_backward(self, dy, idx, vocab_size):
        dy2 = _rows(dy, dy.shape[-1])                                      # (N, C)
        dW = np.zeros((vocab_size, dy2.shape[1]), dtype=dy.dtype)
        embedding_backward(dy2, np.ascontiguousarray(idx, dtype=np.int64).reshape(-1), dW, 16)
        return dW

    def adamw_update(self, p, g, m, v, lr, beta1, beta2, eps, weight_decay, step):
        self.adamw_update_many([p], [g], [m], [v], [weight_decay], lr, beta1, beta2, eps, step)

    def adamw_update_many(self, params, grads, ms, vs, weight_decays, lr, beta1, beta2, eps, step):
        """The hyperparameters cast once per dtype, then one kernel call per tensor."""
        step_size = lr / (1 - beta1 ** step)
        rsqrt_bias2 = 1 / math.sqrt(1 - beta2 ** step)
        hyper = {}
        for p, g, m, v, wd in zip(params, grads, ms, vs, weight_decays, strict=True):
            if not (p.flags.c_contiguous and m.flags.c_contiguous and v.flags.c_contiguous):
                super().adamw_update(p, g, m, v, lr, beta1, beta2, eps, wd, step)
                continue
            f = p.dtype.type
            if (f, wd) not in hyper:
                hyper[f, wd] = (f(beta1), f(1 - beta1), f(beta2), f(1 - beta2), f(eps),
                                f(1 - lr * wd), f(step_size), f(rsqrt_bias2))
            parallel = p.size >= ADAMW_PARALLEL_MIN[self.pool]
            update = adamw_update_parallel if parallel else adamw_update_serial
            update(p.reshape(-1), np.ascontiguousarray(g, dtype=p.dtype).reshape(-1), m.reshape(-1),
                   v.reshape(-1), *hyper[f, wd])
