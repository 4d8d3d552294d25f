"""The Numba backend: NumPy arrays, with the fused kernels compiled for all CPU cores.

The model, the ops and the training loop are the NumPy backend's; only the
kernels differ (backends/numba_kernels.py). Matrix products stay in BLAS.
Importing this module imports neither Numba nor the kernels: ``available()``
checks that Numba imports, and ``create()`` loads the kernels and runs each
once (compiling it, or loading it from Numba's on-disk cache), timing that in
``compile_seconds`` so it can be reported apart from training time.

Threads: Numba's pool has ``NUMBA_NUM_THREADS`` threads (default: all cores),
fixed when Numba is first imported; ``set_threads(n)`` uses n of them. Where
NumPy's OpenBLAS allows it, ``create()`` makes it run its products on that same
pool (backends/numba_blas.py), so that a step has one set of threads.
"""

from __future__ import annotations

import os
import time

import numpy as np

from tinylm.errors import ConfigError

from .base import Backend
from .host_memory import keep_freed_memory

NAME = "numba"
_INSTALL_HINT = "pip install 'tinylm[numba]'"


def available() -> tuple[bool, str]:
    try:
        import numba  # noqa: F401  (importing compiles nothing)
    except ImportError as exc:
        missing = getattr(exc, "name", None) == "numba"
        reason = "numba is not installed" if missing else f"numba cannot be imported ({exc})"
        return False, f"{reason}: {_INSTALL_HINT}"
    return True, ""


def describe() -> str:
    """What the backend runs on, without starting it (``tinylm backends``)."""
    ok, reason = available()
    if not ok:
        return f"Numba: {reason}"
    import numba

    threads = numba.config.NUMBA_NUM_THREADS
    return (f"Numba {numba.__version__} on the CPU, {threads} threads for the fused kernels "
            f"and, where NumPy's OpenBLAS allows, for NumPy {np.__version__}'s matmuls")


class NumbaBackend(Backend):
    """NumPy arrays on the host; kernels from :class:`numba_kernels.NumbaKernels`."""

    name = NAME

    def __init__(self, kernels):
        super().__init__(np, kernels)
        self.compile_seconds: float | None = None

    @property
    def blas_on_numba_threads(self) -> bool:
        """Whether NumPy's OpenBLAS runs its jobs on Numba's pool (numba_blas.share_threads)."""
        return self.kernels.pool == "awake"

    def set_threads(self, n: int) -> None:
        import numba

        most = numba.config.NUMBA_NUM_THREADS
        if not isinstance(n, int) or not 1 <= n <= most:
            raise ConfigError(f"threads must be between 1 and {most} (NUMBA_NUM_THREADS), "
                              f"got {n!r}; set NUMBA_NUM_THREADS before starting to allow more")
        numba.set_num_threads(n)
        if self.blas_on_numba_threads:
            self.kernels.blas.set_num_threads(n)   # as many BLAS jobs as threads to run them

    def threads(self) -> int:
        import numba

        return numba.get_num_threads()

    def warmup(self) -> float:
        """Run every kernel once on tiny float32 inputs; returns (and keeps) the seconds taken.

        The first run on a machine compiles (tens of seconds); later runs load
        the compiled code from Numba's cache (``NUMBA_CACHE_DIR``, by default
        ``__pycache__`` beside the kernels or a per-user directory).
        """
        t0 = time.perf_counter()
        _exercise(self.kernels, np.float32)
        self.compile_seconds = time.perf_counter() - t0
        return self.compile_seconds

    def describe(self) -> str:
        import numba

        blas = "on the same threads" if self.blas_on_numba_threads else "on its own threads"
        return (f"Numba {numba.__version__} on the CPU, {self.threads()} thread(s) for the fused "
                f"kernels ({numba.threading_layer()} layer), NumPy {np.__version__} BLAS for "
                f"matmuls {blas}")


def _exercise(k, dtype) -> None:
    """Call every kernel once with ``dtype`` inputs of the types training passes
    (tests/test_numba_backend.py checks that a training step then compiles nothing)."""
    from .numba_kernels import ADAMW_PARALLEL_MIN

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 8)).astype(dtype)                     # (B, T, C)
    w, b = np.ones(8, dtype), np.zeros(8, dtype)
    y, mean, rstd = k.layernorm_forward(x, w, b, 1e-5)
    k.layernorm_backward(y, x, w, mean, rstd)
    k.gelu_backward(k.gelu_forward(x), x)
    targets = np.array([1, 2, -100, 0, 7, 3], dtype=np.int64)
    loss, probs, n_valid = k.softmax_xent_forward(x.reshape(6, 8), targets, -100)
    k.softmax_xent_backward(np.asarray(1.0, dtype), probs, targets, -100, n_valid)
    q = x.reshape(2, 3, 2, 4).transpose(0, 2, 1, 3)                        # (B, H, T, D)
    att, P = k.attention_forward(q, q, q, 0.5)
    k.attention_backward(att, q, q, q, P, 0.5)
    k.embedding_backward(x.reshape(6, 8), targets.clip(0), 8)
    h, c, gates = k.lstm_forward(x.repeat(4, axis=-1), x[:, 0], x[:, 0], np.ones((8, 32), dtype))
    k.lstm_backward(h, c, x[:, 0], x[:, 0], np.ones((8, 32), dtype), h, c, gates)
    # the serial AdamW below ADAMW_PARALLEL_MIN elements, the parallel one from there
    # (a 4 MB float32 buffer, once): each compiles on its first call
    for size in (8, max(ADAMW_PARALLEL_MIN.values())):
        p = np.zeros(size, dtype)
        k.adamw_update(p, p + 1, np.zeros_like(p), np.zeros_like(p), 1e-3, 0.9, 0.99, 1e-8, 0.1, 1)


def create() -> Backend:
    from .numba_blas import share_threads
    from .numba_kernels import NumbaKernels

    kernels = NumbaKernels()
    if kernels.blas is None or not kernels.blas.takes_threads_callback:
        # BLAS keeps its own pool: OpenMP threads that spin-wait after a kernel would steal
        # the cores the next BLAS call needs (measured: steps 5x slower), so they sleep
        # (~10 us per kernel). Read when Numba starts its OpenMP pool, at the first kernel.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    keep_freed_memory()
    backend = NumbaBackend(kernels)
    backend.warmup()
    if kernels.blas is not None:
        t0 = time.perf_counter()   # the callback compiles too (0.07 s; its loop is cached)
        if share_threads(kernels.blas, backend.threads()):
            kernels.pool = "awake"   # one pool for the step: its threads spin between kernels
        backend.compile_seconds += time.perf_counter() - t0
    return backend
