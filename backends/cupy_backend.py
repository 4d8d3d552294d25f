"""The CuPy backend: the same model and loop with arrays on an NVIDIA GPU.

For now every kernel is the reference (backends/numpy_backend.py) running on
CuPy arrays; fused GPU kernels replace them one by one, each checked against
the reference by tests/test_backends.py (marked ``gpu``).
"""

from __future__ import annotations

import importlib.util

import numpy as np

from .base import Backend
from .numpy_backend import NumpyKernels

NAME = "cupy"
INSTALL_HINT = "pip install 'tinylm[gpu]' (CUDA 12) or 'tinylm[gpu-cuda13]' (CUDA 13)"


def available() -> tuple[bool, str]:
    if importlib.util.find_spec("cupy") is None:
        return False, f"CuPy is not installed; {INSTALL_HINT}"
    try:
        import cupy
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDA driver or runtime missing: CuPy raises several kinds
        return False, f"CuPy cannot reach a CUDA device: {str(exc).splitlines()[0]}"
    if count < 1:
        return False, "no CUDA device found"
    return True, ""


def describe() -> str:
    import cupy
    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    return f"CuPy {cupy.__version__} on {name}"


class CupyKernels(NumpyKernels):
    """Reference kernels on CuPy arrays, with GPU-safe replacements where NumPy idioms differ."""

    def embedding_backward(self, dy, idx, vocab_size):
        import cupyx
        dW = self.xp.zeros((vocab_size, dy.shape[1]), dtype=dy.dtype)
        cupyx.scatter_add(dW, idx, dy)
        return dW


class CupyBackend(Backend):
    name = NAME

    def from_host(self, a, dtype=None):
        return self.xp.asarray(np.asarray(a), dtype=dtype)

    def to_host(self, a) -> np.ndarray:
        return self.xp.asnumpy(a)

    def synchronize(self) -> None:
        self.xp.cuda.Device().synchronize()

    def describe(self) -> str:
        return describe()

    # CuPy's generators do not expose their state: a resumed run restarts the
    # dropout stream from its seed (not bitwise-exact; documented in docs/reliability.md).
    def seed(self, seed: int) -> None:
        self._seed = seed
        self.rng = self.xp.random.default_rng(seed)

    def rng_state(self) -> dict:
        return {"cupy_seed": getattr(self, "_seed", 0)}

    def set_rng_state(self, state: dict) -> None:
        self.seed(int(state.get("cupy_seed", 0)))


def create() -> Backend:
    import cupy
    return CupyBackend(cupy, CupyKernels(cupy))
