"""Compile CUDA C with NVRTC through ctypes: works on a machine with no GPU and no driver.

CuPy's own compile path needs a driver; NVRTC itself does not. The library
comes from the pip package ``nvidia-cuda-nvrtc`` (``pip install
'tinylm[cuda-compile]'``), found inside the installed ``nvidia`` package.
A compile for ``sm_XX`` produces a CUBIN, which also runs ptxas over the
generated PTX (inline ``mma.sync``, register and shared-memory limits);
``compute_XX`` stops at PTX. Errors come back with NVRTC's log, whose lines
read ``name.cu(LINE): error: ...``.

    python -m tinylm.backends.cuda.nvrtc        # compile every .cu for sm_80 and sm_90

Headers are expanded into each source first (``tinylm.backends.cuda.expanded_source``),
so what is compiled here is the text the cupy backend compiles.
"""

from __future__ import annotations

import ctypes
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

from tinylm.errors import BackendUnavailable

ARCHITECTURES = ("sm_80", "sm_90")   # A100, H100/H200: what the cupy kernels target
OPTIONS = ("-std=c++17",)
INSTALL_HINT = "pip install 'tinylm[cuda-compile]' (the nvidia-cuda-nvrtc wheel)"


class CudaCompileError(Exception):
    """NVRTC rejected a source; the message is its log (``name.cu(LINE): error: ...``)."""


@dataclass(frozen=True)
class Compiled:
    """What one compile produced: the binary (CUBIN or PTX) and NVRTC's log (warnings)."""

    name: str
    arch: str
    binary: bytes
    log: str


def find_library() -> Path | None:
    """libnvrtc inside the installed ``nvidia`` namespace package, or None.

    CUDA 12 wheels put it in nvidia/cuda_nvrtc/lib, CUDA 13 wheels in nvidia/cu13/lib.
    """
    spec = importlib.util.find_spec("nvidia")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        for path in sorted(Path(root).glob("*/lib/libnvrtc.so*")):
            if "builtins" not in path.name:
                return path
    return None


def _load():
    path = find_library()
    if path is None:
        raise BackendUnavailable(f"NVRTC is not installed; {INSTALL_HINT}")
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as exc:
        raise BackendUnavailable(f"NVRTC at {path.name} cannot be loaded: {exc}") from None
    lib.nvrtcGetErrorString.restype = ctypes.c_char_p
    return lib


_lib = None


def library():
    """The loaded NVRTC (loaded on first use, never at import)."""
    global _lib
    if _lib is None:
        _lib = _load()
    return _lib


def version() -> str:
    """NVRTC's version as "13.0"."""
    major, minor = ctypes.c_int(), ctypes.c_int()
    _check(library().nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)), "nvrtcVersion")
    return f"{major.value}.{minor.value}"


def _check(result: int, call: str) -> None:
    if result != 0:
        raise CudaCompileError(f"{call}: {library().nvrtcGetErrorString(result).decode()}")


def _read(prog, size_fn, get_fn) -> bytes:
    size = ctypes.c_size_t()
    _check(size_fn(prog, ctypes.byref(size)), size_fn.__name__)
    buf = ctypes.create_string_buffer(size.value)
    _check(get_fn(prog, buf), get_fn.__name__)
    return buf.raw[:size.value]


def compile_source(source: str, name: str, arch: str = "sm_90", options=OPTIONS) -> Compiled:
    """Compile CUDA C ``source`` (reported as ``name``) for ``arch``: "sm_XX" -> CUBIN, "compute_XX" -> PTX.

    The source includes nothing (see ``expanded_source``). Raises CudaCompileError
    carrying NVRTC's log when it does not compile.
    """
    lib = library()
    prog = ctypes.c_void_p()
    _check(lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), name.encode(), 0, None, None),
           "nvrtcCreateProgram")
    try:
        args = [f"--gpu-architecture={arch}".encode(), *(o.encode() for o in options)]
        argv = (ctypes.c_char_p * len(args))(*args)
        result = lib.nvrtcCompileProgram(prog, len(args), argv)
        log = _read(prog, lib.nvrtcGetProgramLogSize, lib.nvrtcGetProgramLog).rstrip(b"\0").decode()
        if result != 0:
            raise CudaCompileError(f"{name} for {arch}:\n{log.strip()}")
        if arch.startswith("sm_"):
            binary = _read(prog, lib.nvrtcGetCUBINSize, lib.nvrtcGetCUBIN)
        else:
            binary = _read(prog, lib.nvrtcGetPTXSize, lib.nvrtcGetPTX)
        return Compiled(name, arch, binary, log.strip())
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


def compile_project_source(name: str, arch: str) -> Compiled:
    """One of the cupy backend's ``.cu`` sources for ``arch``, its headers expanded in place:
    the very text ``cupy_backend.create()`` compiles."""
    from tinylm.backends.cuda import expanded_source
    return compile_source(expanded_source(name), name, arch)


def main() -> int:
    """Compile every source; print one line per (source, arch), or NVRTC's log on failure."""
    from tinylm.backends.cuda import source_names
    try:
        print(f"NVRTC {version()}")
    except BackendUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    failed = 0
    for name in source_names():
        for arch in ARCHITECTURES:
            try:
                done = compile_project_source(name, arch)
                print(f"ok    {name:<22} {arch}  {len(done.binary):>8} bytes" +
                      (f"\n{done.log}" if done.log else ""))
            except CudaCompileError as exc:
                failed += 1
                print(f"FAIL  {exc}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
