"""CUDA C sources of the cupy backend's fused kernels, one ``.cu`` file per kernel family.

Each file translates its NumPy reference (backends/numpy_backend.py) line by
line, with the math in comments; ``cupy_backend.create()`` compiles them with
CuPy's NVRTC, and tests/test_cuda_sources.py compiles them on any machine
(no GPU needed) with ``nvrtc.py``. Importing this package reads nothing.
"""

from __future__ import annotations

from importlib import resources


def source_names() -> list[str]:
    """The ``.cu`` files shipped with the package, sorted: ``["adamw.cu", ...]``."""
    return sorted(p.name for p in resources.files(__name__).iterdir() if p.name.endswith(".cu"))


def header_names() -> list[str]:
    """The ``.cuh`` headers the sources include (``#include "common.cuh"``), sorted."""
    return sorted(p.name for p in resources.files(__name__).iterdir() if p.name.endswith(".cuh"))


def read_source(name: str) -> str:
    """The CUDA C text of ``name`` (one of ``source_names()`` or ``header_names()``)."""
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")
