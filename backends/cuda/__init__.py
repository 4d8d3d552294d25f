"""CUDA C sources of the cupy backend's fused kernels, one ``.cu`` file per kernel family.

Each file translates its NumPy reference (backends/numpy_backend.py) line by
line, with the math in comments; ``cupy_backend.create()`` compiles them with
CuPy's NVRTC, and tests/test_cuda_sources.py compiles them on any machine
(no GPU needed) with ``nvrtc.py``. Importing this package reads nothing.
"""

from __future__ import annotations

import re
from importlib import resources

_INCLUDE = re.compile(r'^\s*#include\s+"([\w.]+\.cuh)"\s*$')


def source_names() -> list[str]:
    """The ``.cu`` files shipped with the package, sorted: ``["adamw.cu", ...]``."""
    return sorted(p.name for p in resources.files(__name__).iterdir() if p.name.endswith(".cu"))


def header_names() -> list[str]:
    """The ``.cuh`` headers the sources include (``#include "common.cuh"``), sorted."""
    return sorted(p.name for p in resources.files(__name__).iterdir() if p.name.endswith(".cuh"))


def read_source(name: str) -> str:
    """The CUDA C text of ``name`` (one of ``source_names()`` or ``header_names()``)."""
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")


def expanded_source(name: str) -> str:
    """``name`` with each ``#include "x.cuh"`` replaced by the header's text, between ``#line``
    markers so that compile errors still name the right file and line.

    One self-contained text: CuPy's kernel cache is keyed by the source, so a changed
    header must change the text it compiles (an ``-I`` include would not).
    """
    out = []
    for number, line in enumerate(read_source(name).splitlines(), start=1):
        match = _INCLUDE.match(line)
        if match is None:
            out.append(line)
            continue
        out += [f'#line 1 "{match[1]}"', read_source(match[1]).rstrip("\n"), f'#line {number + 1} "{name}"']
    return "\n".join(out) + "\n"
