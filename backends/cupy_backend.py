"""The CuPy backend: the same model and loop with arrays on an NVIDIA GPU.

The fused kernels are CUDA C (backends/cuda/*.cu), compiled by CuPy's NVRTC
when the backend is created and launched by ``cupy_kernels.CudaKernels``; each
falls back to the reference (backends/numpy_backend.py) run on CuPy arrays
(``CupyKernels``) where it does not apply. tests/test_backends.py and
tests/test_gpu_kernels.py check them against the reference on a GPU.
"""

from __future__ import annotations

import importlib.util
import time

import numpy as np

from .base import Backend
from .cupy_random import PhiloxGenerator

NAME = "cupy"
INSTALL_HINT = "pip install 'tinylm[gpu]' (CUDA 12) or 'tinylm[gpu-cuda13]' (CUDA 13)"

# cudaError_t codes (CUDA runtime API); CuPy's CUDARuntimeError carries one as ``status``.
CUDA_ERROR_INSUFFICIENT_DRIVER = 35
CUDA_ERROR_NO_DEVICE = 100


def available() -> tuple[bool, str]:
    if importlib.util.find_spec("cupy") is None:
        return False, f"CuPy is not installed; {INSTALL_HINT}"
    try:
        import cupy
    except Exception as exc:  # noqa: BLE001 - a broken install raises ImportError or OSError
        return False, f"CuPy is installed but cannot be imported: {_first_line(exc)}"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDA driver or runtime missing: CuPy raises several kinds
        return False, _why_no_device(exc, cupy.cuda.runtime)
    if count < 1:
        return False, "no NVIDIA GPU on this machine: the driver reports 0 CUDA devices"
    return True, ""


def _cuda_version(code: int) -> str:
    """CUDA's integer version (12040) as people write it (12.4)."""
    return f"{code // 1000}.{code % 1000 // 10}"


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__


def _why_no_device(exc: Exception, runtime) -> str:
    """Why getDeviceCount failed, in the user's terms.

    Without a driver the CUDA runtime reports "insufficient driver" (35) and a
    driver version of 0, which would send people to upgrade a driver they do not
    have; only a driver that exists and is older than CuPy's runtime is "too old".
    """
    status = getattr(exc, "status", None)
    driver, runtime_version = _versions(runtime)
    if driver == 0 or (driver is None and not _libcuda_found()):
        return ("no NVIDIA GPU or driver on this machine: CuPy is installed, but the NVIDIA "
                "driver (libcuda) is not; the cupy backend needs an NVIDIA GPU")
    if status == CUDA_ERROR_NO_DEVICE:
        return (f"no NVIDIA GPU on this machine: the NVIDIA driver (CUDA {_cuda_version(driver)}) "
                "is installed but sees no device")
    if status == CUDA_ERROR_INSUFFICIENT_DRIVER and driver and runtime_version:
        return (f"the NVIDIA driver supports CUDA up to {_cuda_version(driver)}, but this CuPy "
                f"needs CUDA {_cuda_version(runtime_version)}: upgrade the driver, or install the CuPy "
                f"for your CUDA ({INSTALL_HINT})")
    return f"CuPy cannot reach a CUDA device: {_first_line(exc)}"


def _versions(runtime) -> tuple[int | None, int | None]:
    """(driver, runtime) CUDA versions from CuPy's ``cupy.cuda.runtime``; None where it cannot say.

    The driver version is 0 when no NVIDIA driver is installed.
    """
    versions = []
    for query in ("driverGetVersion", "runtimeGetVersion"):
        try:
            versions.append(int(getattr(runtime, query)()))
        except Exception:  # noqa: BLE001 - a CuPy without a driver may raise on either query
            versions.append(None)
    return versions[0], versions[1]


def _libcuda_found() -> bool:
    """Whether the NVIDIA driver's library is on the loader's path (asked only after a failure)."""
    import ctypes.util
    return ctypes.util.find_library("cuda") is not None


def describe() -> str:
    import cupy
    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    return f"CuPy {cupy.__version__} on {name}"


class CupyBackend(Backend):
    name = NAME

    def __init__(self, xp, kernels):
        super().__init__(xp, kernels)
        self.seed(0)

    def from_host(self, a, dtype=None):
        return self.xp.asarray(np.asarray(a), dtype=dtype)

    def to_host(self, a) -> np.ndarray:
        return self.xp.asnumpy(a)

    def synchronize(self) -> None:
        self.xp.cuda.Device().synchronize()

    def describe(self) -> str:
        fallbacks = getattr(self.kernels, "fallbacks", None)
        if fallbacks is None:
            return f"{describe()}, reference kernels"
        if not fallbacks:
            return f"{describe()}, fused CUDA kernels"
        reasons = "; ".join(f"{name}: {why}" for name, why in fallbacks.items())
        return f"{describe()}, reference kernels for {', '.join(fallbacks)} ({reasons})"

    # Dropout's generator: Philox4x32-10 on the device when the kernels offer it, whose
    # state (seed, draws) makes a resumed run exact; else CuPy's own, which cannot export
    # its state, so a resumed run restarts the dropout stream from its seed.
    def seed(self, seed: int) -> None:
        self._seed = seed
        uniform = getattr(self.kernels, "philox_uniform", None)
        self.rng = PhiloxGenerator(uniform, seed) if uniform else self.xp.random.default_rng(seed)

    def rng_state(self) -> dict:
        if isinstance(self.rng, PhiloxGenerator):
            return self.rng.state()
        return {"cupy_seed": getattr(self, "_seed", 0)}

    def set_rng_state(self, state: dict) -> None:
        uniform = getattr(self.kernels, "philox_uniform", None)
        if uniform and "philox4x32_draws" in state:
            self.rng = PhiloxGenerator.from_state(uniform, state)
        else:  # a checkpoint from CuPy's generator (or for it): restart from the seed
            self.seed(int(state.get("cupy_seed", state.get("philox4x32_seed", 0))))


def create() -> Backend:
    """The backend with the fused kernels (compiled here, once per process; CuPy caches them on disk)."""
    import cupy

    from .cupy_kernels import CudaKernels, compile_modules
    t0 = time.perf_counter()
    modules, failures = compile_modules(cupy)
    backend = CupyBackend(cupy, CudaKernels(cupy, modules, failures))
    backend.compile_seconds = time.perf_counter() - t0       # reported apart from training time
    return backend


def create_reference() -> Backend:
    """The backend running the reference kernels on CuPy arrays (what bench/gpu.py compares against)."""
    import cupy
    from .cupy_kernels import CupyKernels

    return CupyBackend(cupy, CupyKernels(cupy))
