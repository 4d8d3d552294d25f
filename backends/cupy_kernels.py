"""The cupy backend's fused kernels: the CUDA C of backends/cuda/, launched through CuPy.

Each method has the name and the contract of its reference in
backends/numpy_backend.py and runs the kernel of the same name in
``backends/cuda/<family>.cu``. The sources are compiled once, when the backend
is created (``cupy.RawModule``, i.e. CuPy's NVRTC); a family that does not
compile is listed in ``fallbacks`` with the reason. A method runs the reference
on CuPy arrays (``CupyKernels``) when its family did not compile, for dtypes
other than float32 (float64 gradient checks) and for empty inputs; attention
chooses between two fused paths by shape (``attention_path``).

What a forward saves differs from the reference's where that saves memory:
cross-entropy keeps the per-row log-sum-exp instead of an (N, V) probability
tensor, attention keeps y and the per-row log-sum-exp instead of (T, T) P
(cupy_attention.py, flash tiles or cuBLAS products).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from . import cupy_attention
from .cuda import expanded_source, philox, source_names
from .numpy_backend import NumpyKernels

THREADS = 256
MAX_GRID = 8192                  # grid-stride kernels: enough blocks to fill an H100 several times
NORM_BLOCKS = 64                 # blocks per tensor in the global-norm reduction (fixed: same sum order)
LAYERNORM_BLOCKS = 512           # rows are strided over at most this many blocks in layernorm_backward
CUBLAS_ATTENTION_BYTES = 2**30   # the cuBLAS attention path while its (B, H, T, T) matrix fits in this
FLOAT = np.float32
CUDA_OPTIONS = ("-std=c++17",)


class CupyKernels(NumpyKernels):
    """Reference kernels on CuPy arrays, with GPU-safe replacements where NumPy idioms differ."""

    def embedding_backward(self, dy, idx, vocab_size):
        import cupyx
        dW = self.xp.zeros((vocab_size, dy.shape[1]), dtype=dy.dtype)
        cupyx.scatter_add(dW, idx, dy)
        return dW


class SavedLogits(NamedTuple):
    """What the fused softmax_xent_forward keeps: the logits (N, V) and lse (N,)."""
    logits: object
    lse: object


def compile_modules(cupy) -> tuple[dict, dict[str, str]]:
    """({family.cu: RawModule}, {family.cu: why it did not compile}) for every CUDA source."""
    modules, failures = {}, {}
    for name in source_names():
        try:
            module = cupy.RawModule(code=expanded_source(name), options=CUDA_OPTIONS)
            module.compile()
            modules[name] = module
        except Exception as exc:  # noqa: BLE001 - CuPy raises CompileException, CUDADriverError...
            failures[name] = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return modules, failures


def embedding_segments(xp, idx, vocab_size: int):
    """(order, start): token positions sorted by (index, position), and where each index's run starts.

    The rows i of index v are order[start[v]:start[v + 1]], in increasing i; sorting the
    unique keys idx * N + i makes the order the same on every run, whatever the sort.
    """
    n = idx.shape[0]
    order = xp.argsort(idx * n + xp.arange(n, dtype=xp.int64))
    start = xp.searchsorted(idx[order], xp.arange(vocab_size + 1, dtype=xp.int64))
    return order.astype(xp.int64), start.astype(xp.int64)


def blocks_for(n: int, threads: int = THREADS) -> int:
    """Blocks of a grid-stride loop over n elements."""
    return max(1, min(MAX_GRID, -(-n // threads)))


def row_threads(C: int) -> int:
    """Threads for one block per row of C values: a multiple of 32, at most THREADS."""
    return min(THREADS, 32 * -(-C // 32))


class CudaKernels(CupyKernels):
    """The fused float32 kernels; the reference on CuPy arrays wherever they do not apply."""

    def __init__(self, xp, modules: dict, fallbacks: dict[str, str]):
        super().__init__(xp)
        self.modules, self.fallbacks = modules, fallbacks
        # None: attention_path chooses by shape; "flash", "cublas" or "reference" force one
        # (bench/gpu_attention.py times the three)
        self.attention: str | None = None
        self._small_arrays: dict = {}             # _on_device's cache

    def _fused(self, family: str, *arrays) -> bool:
        return family in self.modules and all(a.dtype == FLOAT and a.size for a in arrays)

    def _launch(self, family, kernel, grid, block, args, shared_mem=0):
        self.modules[family].get_function(kernel)(grid, block, args, shared_mem=shared_mem)

    def _c(self, a):
        return self.xp.ascontiguousarray(a)

    # -- cross-entropy: rows of logits, lse kept instead of probs --------------------------
    def softmax_xent_forward(self, logits, targets, ignore_index):
        if not self._fused("softmax_xent.cu", logits):
            return super().softmax_xent_forward(logits, targets, ignore_index)
        xp = self.xp
        z, t = self._c(logits), self._c(targets.astype(xp.int64, copy=False))
        N, V = z.shape
        lse, row_loss = xp.empty(N, FLOAT), xp.empty(N, FLOAT)
        self._launch("softmax_xent.cu", "softmax_xent_forward", (N,), (row_threads(V),),
                     (z, t, lse, row_loss, np.int32(V), np.int64(ignore_index)))
        n_valid = (t != ignore_index).sum()                            # stays on the device
        loss = row_loss.sum() / xp.maximum(n_valid, 1).astype(FLOAT)
        return loss.astype(FLOAT), SavedLogits(z, lse), n_valid

    def softmax_xent_backward(self, dloss, probs, targets, ignore_index, n_valid):
        if not isinstance(probs, SavedLogits):
            return super().softmax_xent_backward(dloss, probs, targets, ignore_index, n_valid)
        xp = self.xp
        z, lse = probs
        N, V = z.shape
        t = self._c(targets.astype(xp.int64, copy=False))
        dlogits = xp.empty_like(z)
        self._launch("softmax_xent.cu", "softmax_xent_backward", (blocks_for(N * V),), (THREADS,),
                     (z, lse, t, xp.asarray(dloss, dtype=FLOAT).reshape(1),
                      xp.asarray(n_valid, dtype=xp.int64).reshape(1), dlogits,
                      np.int64(N * V), np.int32(V), np.int64(ignore_index)))
        return dlogits

    # -- layer norm: one block per row; dw, db through per-block partial sums ----------------
    def layernorm_forward(self, x, w, b, eps):
        if not self._fused("layernorm.cu", x, w, b):
            return super().layernorm_forward(x, w, b, eps)
        xp = self.xp
        C = x.shape[-1]
        x = self._c(x)
        y = xp.empty_like(x)
        mean, rstd = (xp.empty((*x.shape[:-1], 1), FLOAT) for _ in range(2))
        self._launch("layernorm.cu", "layernorm_forward", (x.size // C,), (row_threads(C),),
                     (x, self._c(w), self._c(b), y, mean, rstd, np.int32(C), np.float32(eps)))
        return y, mean, rstd

    def layernorm_backward(self, dy, x, w, mean, rstd):
        if not self._fused("layernorm.cu", dy, x, w, mean, rstd):
            return super().layernorm_backward(dy, x, w, mean, rstd)
        xp = self.xp
        C = x.shape[-1]
        rows = x.size // C
        G = min(rows, LAYERNORM_BLOCKS)
        dy, x = self._c(dy), self._c(x)
        dx = xp.empty_like(x)
        dw_part, db_part = xp.empty((G, C), FLOAT), xp.empty((G, C), FLOAT)
        self._launch("layernorm.cu", "layernorm_backward", (G,), (row_threads(C),),
                     (dy, x, self._c(w), self._c(mean), self._c(rstd), dx, dw_part, db_part,
                      np.int32(rows), np.int32(C)))
        dw, db = xp.empty(C, FLOAT), xp.empty(C, FLOAT)
        for part, out in ((dw_part, dw), (db_part, db)):
            self._launch("layernorm.cu", "sum_partial_rows", (blocks_for(C),), (THREADS,),
                         (part, out, np.int32(G), np.int32(C)))
        return dx, dw, db

    # -- GELU: elementwise ----------------------------------------------------------------
    def gelu_forward(self, x):
        if not self._fused("gelu.cu", x):
            return super().gelu_forward(x)
        x = self._c(x)
        y = self.xp.empty_like(x)
        self._launch("gelu.cu", "gelu_forward", (blocks_for(x.size),), (THREADS,), (x, y, np.int64(x.size)))
        return y

    def gelu_backward(self, dy, x):
        if not self._fused("gelu.cu", dy, x):
            return super().gelu_backward(dy, x)
        dy, x = self._c(dy), self._c(x)
        dx = self.xp.empty_like(x)
        self._launch("gelu.cu", "gelu_backward", (blocks_for(x.size),), (THREADS,),
                     (dy, x, dx, np.int64(x.size)))
        return dx

    # -- embedding: sorted runs, no atomics -------------------------------------------------
    def embedding_backward(self, dy, idx, vocab_size):
        if not self._fused("embedding.cu", dy) or vocab_size > 65535:           # gridDim.y limit
            return super().embedding_backward(dy, idx, vocab_size)
        xp = self.xp
        C = dy.shape[1]
        order, start = embedding_segments(xp, idx.astype(xp.int64, copy=False).ravel(), vocab_size)
        dW = xp.empty((vocab_size, C), FLOAT)
        self._launch("embedding.cu", "embedding_backward", (-(-C // 128), vocab_size), (128,),
                     (self._c(dy), order, start, dW, np.int32(vocab_size), np.int32(C)))
        return dW

    # -- AdamW and clipping: one tensor, or every tensor in one launch ---------------------
    def adamw_update(self, p, g, m, v, lr, beta1, beta2, eps, weight_decay, step):
        contiguous = all(a.flags.c_contiguous for a in (p, m, v))
        if not (self._fused("adamw.cu", p, g, m, v) and contiguous):
            return super().adamw_update(p, g, m, v, lr, beta1, beta2, eps, weight_decay, step)
        self._launch("adamw.cu", "adamw_update", (blocks_for(p.size),), (THREADS,),
                     (p, self._c(g), m, v, np.int64(p.size), *_adamw_scalars(lr, beta1, beta2, eps, step,
                                                                              weight_decay)))

    def adamw_update_many(self, params, grads, ms, vs, weight_decays, lr, beta1, beta2, eps, step):
        """adamw_update on every (p, g, m, v, weight decay): one launch when all are fused, else
        the reference's loop over them."""
        tensors = [a for group in (params, grads, ms, vs) for a in group]
        if not (params and self._fused("adamw.cu", *tensors)
                and all(a.flags.c_contiguous for a in (*params, *ms, *vs))):
            return super().adamw_update_many(params, grads, ms, vs, weight_decays, lr, beta1, beta2,
                                             eps, step)
        xp = self.xp
        grads = [self._c(g) for g in grads]
        sizes = self._on_device(tuple(p.size for p in params), xp.int64)
        wds = self._on_device(tuple(weight_decays), FLOAT)
        scalars = _adamw_scalars(lr, beta1, beta2, eps, step, 0.0)
        lr_, b1, b2, eps_, _, bias1, sqrt_bias2 = scalars
        self._launch("adamw.cu", "adamw_update_many",
                     (blocks_for(max(p.size for p in params)), len(params)), (THREADS,),
                     (*(self._pointers(group) for group in (params, grads, ms, vs)), sizes, wds,
                      lr_, b1, b2, eps_, bias1, sqrt_bias2))

    def clip_grad_norm_many(self, grads, max_norm: float):
        """(clipped gradients, norm): g_k * min(1, max_norm / (norm + 1e-6)), norm = sqrt(Σ_k |g_k|²).

        The norm stays on the device; the sum runs in a fixed order (the same bits every run).
        The reference where the kernels do not apply (not float32).
        """
        if not (grads and self._fused("adamw.cu", *grads)):
            return super().clip_grad_norm_many(grads, max_norm)
        xp = self.xp
        grads = [self._c(g) for g in grads]
        sizes = self._on_device(tuple(g.size for g in grads), xp.int64)
        part = xp.empty(len(grads) * NORM_BLOCKS, FLOAT)
        self._launch("adamw.cu", "sum_of_squares_many", (NORM_BLOCKS, len(grads)), (THREADS,),
                     (self._pointers(grads), sizes, part))
        norm2 = xp.empty(1, FLOAT)
        self._launch("adamw.cu", "sum_partial_rows", (1,), (THREADS,),
                     (part, norm2, np.int32(part.size), np.int32(1)))
        if max_norm <= 0:
            return grads, xp.sqrt(norm2[0])
        out = [xp.empty_like(g) for g in grads]
        self._launch("adamw.cu", "scale_many", (blocks_for(max(g.size for g in grads)), len(grads)),
                     (THREADS,), (self._pointers(grads), self._pointers(out), sizes, norm2,
                                  np.float32(max_norm)))
        return out, xp.sqrt(norm2[0])

    def _pointers(self, arrays):
        """A device array of the arrays' addresses, for a multi-tensor kernel's ``float**``."""
        return self._on_device(tuple(a.data.ptr for a in arrays), self.xp.uint64)

    def _on_device(self, values: tuple, dtype):
        """``values`` as a device array, kept for the next call with the same values: parameters
        and moments keep their addresses, and CuPy's pool mostly hands gradients the same ones."""
        key = (values, np.dtype(dtype).str)
        if key not in self._small_arrays:
            if len(self._small_arrays) >= 64:
                self._small_arrays.pop(next(iter(self._small_arrays)))        # the oldest
            self._small_arrays[key] = self.xp.asarray(values, dtype=dtype)
        return self._small_arrays[key]

    # -- dropout's uniforms: Philox4x32-10, the same bits as cuda/philox.py -----------------
    def philox_uniform(self, n: int, seed: int, draw: int):
        """(n,) float32 uniforms of draw ``draw`` under ``seed`` (the NumPy mirror's, uploaded, if
        philox.cu did not compile: the same numbers, slower)."""
        if "philox.cu" not in self.modules or n == 0:
            return self.xp.asarray(philox.uniform(n, seed, draw))
        out = self.xp.empty(n, FLOAT)
        self._launch("philox.cu", "philox_uniform", (blocks_for(-(-n // 4)),), (THREADS,),
                     (out, np.int64(n), *(np.uint32(w) for w in (seed & 0xFFFFFFFF, seed >> 32 & 0xFFFFFFFF,
                                                               draw & 0xFFFFFFFF, draw >> 32 & 0xFFFFFFFF))))
        return out

    # -- attention: flash tiles, or cuBLAS products + fused softmax rows (cupy_attention.py) --
    def attention_path(self, q) -> str:
        """"flash", "cublas" or "reference" for q (B, H, T, D): ``self.attention`` if it applies,
        else cuBLAS while a (B, H, T, T) float32 matrix stays under CUBLAS_ATTENTION_BYTES, else flash."""
        B, H, T, D = q.shape
        usable = [path for path, family in (("cublas", "causal_softmax.cu"), ("flash", "attention.cu"))
                  if self._fused(family, q) and (path == "cublas" or D <= cupy_attention.MAX_D)]
        if self.attention in usable or self.attention == "reference":
            return self.attention
        if "cublas" in usable and 4 * B * H * T * T <= CUBLAS_ATTENTION_BYTES:
            return "cublas"
        return usable[-1] if usable else "reference"

    def attention_forward(self, q, k, v, scale):
        # the fused paths take a full causal square; queries after cached keys (KV cache) do not
        path = self.attention_path(q) if q.shape[2] == k.shape[2] else "reference"
        if path == "reference":
            return super().attention_forward(q, k, v, scale)
        return cupy_attention.FORWARD[path](self, q, k, v, scale)

    def attention_backward(self, dy, q, k, v, saved, scale):
        if not isinstance(saved, cupy_attention.SavedAttention):
            return super().attention_backward(dy, q, k, v, saved, scale)
        path = self.attention_path(q)
        path = path if path != "reference" else ("cublas" if "causal_softmax.cu" in self.modules else "flash")
        return cupy_attention.BACKWARD[path](self, dy, q, k, v, saved, scale)


def _adamw_scalars(lr, beta1, beta2, eps, step, weight_decay):
    """The kernel's float arguments: lr, b1, b2, eps, wd, bias1 = 1 - b1^step, sqrt(1 - b2^step)."""
    return tuple(np.float32(x) for x in (lr, beta1, beta2, eps, weight_decay, 1 - beta1 ** step,
                                         math.sqrt(1 - beta2 ** step)))
