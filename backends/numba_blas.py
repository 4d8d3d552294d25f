"""NumPy's OpenBLAS on Numba's threads, and its gemm callable from inside a kernel.

Imported with the kernels (backends/numba_kernels.py), never at package import.

A NumPy + Numba process has two thread pools: OpenBLAS's, which runs the
matrix products, and Numba's, which runs the fused kernels. On a machine with
few cores they take turns on the same cores, and each turn costs: OpenBLAS's
idle worker spins on a core for a while after every product, so the kernel that
follows waits for that core (measured on 2 cores: GELU after a matmul 85 →
190 µs). OpenBLAS (0.3.27 and later) can hand its work to the caller's
threads instead: :func:`share_threads` registers a callback that runs each
product's jobs on Numba's pool, so a training step has one pool for everything.

Kernels also call gemm themselves (``gemm`` below), one product per thread,
e.g. attention's per-head products, inside ``OpenBLAS.one_thread()``: OpenBLAS
then does each on the calling thread, where a product it threaded would call the
callback from inside a kernel's parallel loop. As with numba_math.py, Numba's
on-disk cache of a kernel does not notice an edit to ``gemm``: after one, delete
the ``*.nbi``/``*.nbc`` files so that the kernels that call it compile again.
"""

from __future__ import annotations

import ctypes
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass

import numba
import numpy as np
from llvmlite import ir
from numba import cfunc, njit, prange, types
from numba.extending import intrinsic

from .numba_math import FLAGS

ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112      # the CBLAS enums


@dataclass(frozen=True)
class OpenBLAS:
    """The OpenBLAS library NumPy loaded, and what tinylm uses of it."""

    path: str
    sgemm: int           # addresses of cblas_sgemm / cblas_dgemm, for ``gemm``
    dgemm: int
    int_bits: int        # 64 for an ILP64 build (NumPy's wheels), else 32
    lib: ctypes.CDLL
    prefix: str          # symbol names are prefix + name + suffix
    suffix: str

    def symbol(self, name: str):
        return getattr(self.lib, self.prefix + name + self.suffix, None)

    @property
    def takes_threads_callback(self) -> bool:
        """Whether this OpenBLAS (0.3.27+) can hand its threaded work to the caller's threads."""
        return self.symbol("openblas_set_threads_callback_function") is not None

    def set_num_threads(self, n: int) -> None:
        self.symbol("openblas_set_num_threads")(ctypes.c_int(n))

    def num_threads(self) -> int:
        return self.symbol("openblas_get_num_threads")()

    @contextmanager
    def one_thread(self):
        """OpenBLAS on one thread for the enclosed code (~1 us): every gemm then runs on
        its caller's thread, as the kernels that call gemm from a parallel loop need.
        The count is the process's: the first of several Python threads inside lowers
        it, the last one out restores it."""
        with _ONE_THREAD_LOCK:
            if _ONE_THREAD["holders"] == 0:
                _ONE_THREAD["threads"] = self.num_threads()
                self.set_num_threads(1)
            _ONE_THREAD["holders"] += 1
        try:
            yield
        finally:
            with _ONE_THREAD_LOCK:
                _ONE_THREAD["holders"] -= 1
                if _ONE_THREAD["holders"] == 0:
                    self.set_num_threads(_ONE_THREAD["threads"])


_ONE_THREAD_LOCK = threading.Lock()
_ONE_THREAD = {"holders": 0, "threads": 0}   # Python threads inside one_thread(); the count before


def _numpy_naming() -> tuple[str, str, int] | None:
    """(symbol prefix, suffix, int bits) of the OpenBLAS NumPy was built with, from its
    build configuration: the wheels' scipy-openblas prefixes ``scipy_`` and, with 64-bit
    ints, suffixes ``64_``; a plain OpenBLAS neither. None for another BLAS."""
    try:
        blas = np.__config__.CONFIG["Build Dependencies"]["blas"]
    except (AttributeError, KeyError, TypeError):
        return None
    name = str(blas.get("name", "")).lower()
    ilp64 = "USE64BITINT" in str(blas.get("openblas configuration", ""))
    if "openblas" not in name:
        return None
    return ("scipy_" if name.startswith("scipy") else ""), ("64_" if ilp64 else ""), (64 if ilp64 else 32)


def find_openblas() -> OpenBLAS | None:
    """NumPy's OpenBLAS, found among the libraries this process has loaded (Linux);
    None where there is none (another BLAS, another OS, a build we cannot name)."""
    naming = _numpy_naming()
    if naming is None:
        return None
    prefix, suffix, bits = naming
    try:
        with open("/proc/self/maps") as f:
            paths = sorted({line.split()[-1] for line in f
                            if "openblas" in line.lower() and ".so" in line.split()[-1]})
    except OSError:
        return None
    for path in paths:   # SciPy's OpenBLAS may be loaded too: NumPy's has NumPy's names
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        sgemm = getattr(lib, f"{prefix}cblas_sgemm{suffix}", None)
        dgemm = getattr(lib, f"{prefix}cblas_dgemm{suffix}", None)
        if sgemm is not None and dgemm is not None:
            address = lambda f: ctypes.cast(f, ctypes.c_void_p).value   # noqa: E731
            return OpenBLAS(path, address(sgemm), address(dgemm), bits, lib, prefix, suffix)
    return None


# -- gemm from inside a kernel ---------------------------------------------------------
def _int_as(builder, value, ty):
    """An LLVM integer ``value`` as integer type ``ty`` (truncated or sign-extended)."""
    if value.type.width == ty.width:
        return value
    return builder.trunc(value, ty) if value.type.width > ty.width else builder.sext(value, ty)


@intrinsic
def gemm(typingctx, fn, int_like, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    """C = alpha op(A) op(B) + beta C, row major, by the cblas_?gemm at address ``fn``.

    ``a``, ``b``, ``c`` are data addresses (``arr.ctypes.data``); the integers are
    passed as ``int_like``'s type (the library's), the scalars as ``alpha``'s.
    """
    sig = types.void(fn, int_like, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)

    def codegen(context, builder, signature, args):
        real = context.get_value_type(signature.args[7])
        i32 = ir.IntType(32)
        blasint = context.get_value_type(signature.args[1])
        ptr = real.as_pointer()
        fnty = ir.FunctionType(ir.VoidType(), [i32, i32, i32, blasint, blasint, blasint, real, ptr,
                                               blasint, ptr, blasint, real, ptr, blasint])

        def to(value, ty):
            return _int_as(builder, value, ty)

        fn_, _, ta, tb, m_, n_, k_, al, a_, lda_, b_, ldb_, be, c_, ldc_ = args
        builder.call(builder.inttoptr(fn_, fnty.as_pointer()),
                     [ir.Constant(i32, ROW_MAJOR), to(ta, i32), to(tb, i32),
                      to(m_, blasint), to(n_, blasint), to(k_, blasint), al,
                      builder.inttoptr(a_, ptr), to(lda_, blasint),
                      builder.inttoptr(b_, ptr), to(ldb_, blasint), be,
                      builder.inttoptr(c_, ptr), to(ldc_, blasint)])
        return context.get_dummy_value()
    return sig, codegen


# -- OpenBLAS's jobs on Numba's threads -------------------------------------------------
@intrinsic
def _run_job(typingctx, dojob, position, job, arg):
    """dojob(position, job, arg): void (*)(int, void *, int), at address ``dojob``."""
    sig = types.void(dojob, position, job, arg)

    def codegen(context, builder, signature, args):
        i32, void_ptr = ir.IntType(32), ir.IntType(8).as_pointer()
        fnty = ir.FunctionType(ir.VoidType(), [i32, void_ptr, i32])
        dojob_, position_, job_, arg_ = args
        builder.call(builder.inttoptr(dojob_, fnty.as_pointer()),
                     [_int_as(builder, position_, i32), builder.inttoptr(job_, void_ptr), arg_])
        return context.get_dummy_value()
    return sig, codegen


@njit(parallel=True, **FLAGS)
def _run_jobs(dojob, n_jobs, job_size, jobs, arg):
    # one job per thread, all at once (a gemm's jobs wait for each other's packed panels):
    # share_threads and NumbaBackend.set_threads keep OpenBLAS's job count <= Numba's threads
    for i in prange(n_jobs):  # job i owns what OpenBLAS gave it
        _run_job(dojob, i, jobs + i * job_size, arg)


# void callback(int sync, void (*dojob)(int, void *, int), int numjobs, size_t jobdata_elsize,
#               void *jobdata, int dojob_data)   (OpenBLAS's openblas_threads_callback)
_callback = None
_CALLBACK_TYPE = types.void(types.int32, types.intp, types.int32, types.uintp, types.intp, types.int32)


def _threads_callback():
    """The callback, compiled on first use: its code calls Numba's parallel runtime, which
    must be running by then (after a first kernel). Not cached: it reads the calling
    thread's Numba thread count, which Numba's cache cannot hold (about 0.1 s to compile)."""
    most = numba.config.NUMBA_NUM_THREADS

    @cfunc(_CALLBACK_TYPE)
    def threads_callback(sync, dojob, n_jobs, job_size, jobs, arg):
        # the loop below makes as many chunks as the caller has threads: at least n_jobs,
        # even where numba.set_num_threads lowered them behind the backend's back
        threads = numba.get_num_threads()
        if threads < n_jobs:
            numba.set_num_threads(min(n_jobs, most))
        _run_jobs(dojob, n_jobs, np.intp(job_size), jobs, arg)
        if threads < n_jobs:
            numba.set_num_threads(threads)
    return threads_callback


def share_threads(blas: OpenBLAS, threads: int) -> bool:
    """Run OpenBLAS's threaded work on Numba's pool from now on, ``threads`` jobs at most.

    Process-wide (every NumPy matmul after this call). Needs OpenBLAS 0.3.27+ and
    Numba's omp threading layer, which runs a loop's chunks at once on distinct
    threads and takes launches from several Python threads at a time (the
    workqueue layer would abort on the second; tbb does not promise the first).
    Returns whether it was done.
    """
    try:
        layer = numba.threading_layer()   # known once a parallel kernel has run
    except ValueError:
        return False
    if not blas.takes_threads_callback or layer != "omp":
        return False
    register = blas.symbol("openblas_set_threads_callback_function")
    # never more jobs than Numba has threads; fewer if OpenBLAS was told so (OPENBLAS_NUM_THREADS)
    blas.set_num_threads(min(threads, blas.num_threads()))
    global _callback   # kept alive: OpenBLAS holds its address
    _callback = _threads_callback()
    register(ctypes.c_void_p(_callback.address))
    # GNU OpenMP cannot run in a child forked from a process that used it (Numba aborts
    # the child): there, OpenBLAS gets its own pool back, which it restarts after a fork
    os.register_at_fork(after_in_child=lambda: register(ctypes.c_void_p(None)))
    return True
