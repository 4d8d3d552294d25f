"""Data-parallel training: every rank holds the whole model and trains on its own share of each batch.

    mpiexec -n 2 tinylm train --distributed ...

Each step, rank k computes the gradient g_k of its own batch's mean loss; one
allreduce averages them, so every rank applies the same update and the
replicas stay identical:

    g = (1/K) Σ_k g_k      (K ranks; the gradient of the mean loss over all K batches)

A communicator is the only thing that differs between one process, MPI (CPU
processes on one or many hosts, through mpi4py) and NCCL (one GPU per rank,
through CuPy). Every collective waits with a deadline: a rank that dies or hangs
makes the others raise DistributedError instead of waiting forever, and
``abort_on_error`` turns an exception on any rank into the end of the whole job.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from contextlib import contextmanager

import numpy as np

from tinylm import backends
from tinylm.data import BatchSampler
from tinylm.errors import ConfigError, DistributedError, TinyLMError

MPI_INSTALL_HINT = "pip install 'tinylm[mpi]' (mpi4py and MPICH), or mpi4py against your cluster's MPI"
RANK_SEED_STRIDE = 1000  # seed + 1 and seed + 2 are the evaluation streams (train.estimate_loss)
ABORT_GRACE_S = 0.2  # after the last words of a failing rank, before MPI_Abort ends the job


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s batches and dropout masks; rank 0 keeps ``seed``.

    So a 1-rank job draws exactly what a plain run draws.
    """
    return seed + RANK_SEED_STRIDE * rank


class Communicator:
    """One process's view of a data-parallel job: who it is, and the collectives training needs.

    Subclasses provide ``_broadcast(flat)`` and ``_allreduce_sum(flat)`` on one
    contiguous buffer, ``any_rank``, ``barrier`` and ``abort``. ``comm_seconds``
    adds up the time spent in gradient allreduces (for benchmarks).
    """

    rank, world_size, name = 0, 1, "single process"

    def __init__(self):
        self.comm_seconds, self.allreduces = 0.0, 0

    def broadcast_arrays(self, arrays: list) -> None:
        """Overwrite every array in place with rank 0's values (parameters, optimizer moments)."""
        if not arrays:
            return
        flat = _flatten(arrays)
        self._broadcast(flat)
        for a, chunk in zip(arrays, _split(flat, arrays)):
            a[...] = chunk

    def allreduce_mean_gradients(self, params: list) -> None:
        """p.grad <- (1/K) Σ_k p.grad on rank k, for every parameter, in one allreduce.

        All gradients go into one flat buffer first: one large message instead of
        one per parameter (the latency of each message is paid once). A parameter
        without a gradient on this rank contributes zeros.
        """
        xp = backends.current().xp
        grads = [p.grad if p.grad is not None else xp.zeros_like(p.data) for p in params]
        flat = _flatten(grads)
        start = time.perf_counter()
        self._allreduce_sum(flat)
        self.comm_seconds += time.perf_counter() - start
        self.allreduces += 1
        flat *= flat.dtype.type(1.0 / self.world_size)
        for p, chunk in zip(params, _split(flat, grads)):
            p.grad = chunk  # views of this step's fresh buffer, which nothing else holds

    def any_rank(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on at least one (e.g. "stop requested")."""
        return flag

    def barrier(self) -> None:
        """Return when every rank has reached this point."""

    @contextmanager
    def abort_on_error(self):
        """End the whole job when this rank fails, after one line on stderr saying where and why.

        Alone, an exception simply propagates (the CLI reports it as usual).
        """
        if self.world_size == 1:
            yield
            return
        where = f"rank {self.rank} of {self.world_size}"
        try:
            yield
        except (TinyLMError, OSError, MemoryError) as exc:  # anticipated: one line, no traceback
            self.abort(f"error: {where}: {exc}", getattr(exc, "exit_code", 1))
        except KeyboardInterrupt:
            self.abort(f"{where}: interrupted", 130)
        except Exception as exc:  # a bug: keep the traceback, then stop every rank
            self.abort(f"{traceback.format_exc()}error: {where}: {type(exc).__name__}: {exc}", 1)

    def describe(self, cfg) -> str:
        """The job in one line: ranks, library, and the sequences each optimizer step sees."""
        per_step = self.world_size * cfg.batch_size * cfg.grad_accum
        return (f"{self.world_size} rank(s), {self.name}; {self.world_size} x batch_size "
                f"{cfg.batch_size} x grad_accum {cfg.grad_accum} = {per_step} sequences per step")


class SingleProcess(Communicator):
    """No other ranks: every collective is the identity (the default of ``train``)."""

    def allreduce_mean_gradients(self, params: list) -> None:
        pass

    def broadcast_arrays(self, arrays: list) -> None:
        pass


class MPICommunicator(Communicator):
    """Collectives of mpi4py on NumPy arrays (the numpy and numba backends), each with a deadline.

    A nonblocking collective (Iallreduce, Ibcast, Ibarrier) is polled with Test()
    until it completes or ``timeout`` seconds pass; polling is what drives MPI's
    progress, so it spins, and only backs off after a second of waiting (a slow
    rank, not a slow transfer).
    """

    def __init__(self, timeout: float):
        if not timeout > 0:
            raise ConfigError(f"--dist-timeout must be a positive number of seconds, got {timeout}")
        MPI = import_mpi()
        super().__init__()
        self.MPI, self.comm, self.timeout = MPI, MPI.COMM_WORLD, float(timeout)
        self.rank, self.world_size = self.comm.Get_rank(), self.comm.Get_size()
        self.name = "MPI: " + " ".join(MPI.Get_library_version().split()[:3])  # e.g. MPICH Version: 5.0.2

    def _broadcast(self, flat) -> None:
        self.wait(self.comm.Ibcast(flat, root=0), "the broadcast of rank 0's parameters")

    def _allreduce_sum(self, flat) -> None:
        request = self.comm.Iallreduce(self.MPI.IN_PLACE, flat, op=self.MPI.SUM)
        self.wait(request, f"gradient allreduce #{self.allreduces + 1}")

    def any_rank(self, flag: bool) -> bool:
        buf = np.array([int(flag)], dtype=np.int32)
        self.wait(self.comm.Iallreduce(self.MPI.IN_PLACE, buf, op=self.MPI.MAX), "a stop-flag exchange")
        return bool(buf[0])

    def barrier(self) -> None:
        self.wait(self.comm.Ibarrier(), "a barrier")

    def wait(self, request, what: str) -> None:
        """Poll ``request`` to completion, or raise DistributedError after ``timeout`` seconds."""
        start = time.monotonic()
        while not request.Test():
            waited = time.monotonic() - start
            if waited > self.timeout:
                raise DistributedError(
                    f"no answer from the other ranks within {self.timeout:g} s during {what}; a rank "
                    "has died or hangs (see its output above); raise --dist-timeout if a step, "
                    "an evaluation or a checkpoint can take longer")
            if waited > 1.0:
                time.sleep(1e-3)

    def abort(self, message: str, exit_code: int) -> None:
        # One write, then a moment for the launcher to forward it: MPI_Abort kills
        # every rank at once, and output still in the launcher's pipes can be lost.
        sys.stderr.write(message + "\n")
        sys.stderr.flush()
        time.sleep(ABORT_GRACE_S)
        self.comm.Abort(exit_code)  # asks the launcher to end every rank
        os._exit(exit_code)  # MPI_Abort may return (e.g. once a peer has finalized)


class NCCLCommunicator(Communicator):
    """Gradients reduced by NCCL on the GPUs (CuPy arrays), one GPU per rank; MPI starts the job.

    MPI gives the rank, chooses this rank's GPU (its index among the ranks on the
    same host), carries NCCL's unique id from rank 0 to the others, and handles the
    small host-side flags. NCCL calls are queued on the current CUDA stream; a
    deadline is kept by polling an event recorded after each collective, waited on
    just before the next one so the host is never held up by the GPU step.
    Not yet run on a GPU: written against cupy.cuda.nccl's documented API; the
    ``gpu`` tests in tests/test_distributed.py check it where CUDA is present.
    """

    DTYPES = {"float16": "NCCL_FLOAT16", "float32": "NCCL_FLOAT32", "float64": "NCCL_FLOAT64"}

    def __init__(self, timeout: float):
        super().__init__()
        self.mpi = MPICommunicator(timeout)
        self.rank, self.world_size, self.timeout = self.mpi.rank, self.mpi.world_size, self.mpi.timeout
        try:
            import cupy
            from cupy.cuda import nccl
        except ImportError as exc:
            raise DistributedError(f"NCCL through CuPy is unavailable ({exc}); install CuPy with "
                                   "NCCL (pip install 'tinylm[gpu]' nvidia-nccl-cu12) or train "
                                   "with --backend numpy/numba over MPI") from None
        self.cupy, self.nccl = cupy, nccl
        cupy.cuda.Device(self._local_gpu()).use()
        self.comm = nccl.NcclCommunicator(self.world_size, self._unique_id(), self.rank)
        self.name = f"NCCL {nccl.get_version()} via CuPy {cupy.__version__}"
        self._last = None  # event after the latest collective

    def _local_gpu(self) -> int:
        """This rank's GPU: its index among the ranks on this host, or 0 when it sees only one
        (a launcher such as ``srun --gpus-per-task=1`` already gave each rank its own)."""
        local = self.mpi.comm.Split_type(self.mpi.MPI.COMM_TYPE_SHARED)
        gpus = self.cupy.cuda.runtime.getDeviceCount()
        if gpus == 1:
            return 0
        if local.Get_size() > gpus:
            raise DistributedError(f"{local.Get_size()} ranks on this host but only {gpus} GPUs; "
                                   "NCCL needs one GPU per rank: start at most one rank per GPU")
        return local.Get_rank()

    def _unique_id(self):
        """NCCL's 128-byte id made on rank 0, sent over MPI (as a tuple or bytes, as this CuPy wants)."""
        buf = np.zeros(129, dtype=np.uint8)  # [0]: 1 when CuPy uses bytes; [1:]: the id
        if self.rank == 0:
            uid = self.nccl.get_unique_id()
            buf[0] = isinstance(uid, bytes)
            buf[1:] = np.frombuffer(uid if isinstance(uid, bytes) else np.array(uid, np.int8).tobytes(),
                                    dtype=np.uint8)
        self.mpi.wait(self.mpi.comm.Ibcast(buf, root=0), "the broadcast of NCCL's unique id")
        return buf[1:].tobytes() if buf[0] else tuple(buf[1:].view(np.int8).tolist())

    def _broadcast(self, flat) -> None:
        self._wait_last("a broadcast")
        stream = self.cupy.cuda.get_current_stream()
        self.comm.bcast(flat.data.ptr, flat.size, self._dtype(flat), 0, stream.ptr)
        self._last = stream.record()
        self._wait_last("the end of the broadcast")

    def _allreduce_sum(self, flat) -> None:
        """Queues the allreduce; ``comm_seconds`` therefore counts only the wait for the previous one."""
        self._wait_last(f"gradient allreduce #{self.allreduces + 1}")
        stream = self.cupy.cuda.get_current_stream()
        self.comm.allReduce(flat.data.ptr, flat.data.ptr, flat.size, self._dtype(flat),
                            self.nccl.NCCL_SUM, stream.ptr)
        self._last = stream.record()

    def _dtype(self, flat) -> int:
        return getattr(self.nccl, self.DTYPES[flat.dtype.name])

    def _wait_last(self, what: str) -> None:
        """Wait for the latest queued collective to finish on the GPU, at most ``timeout`` seconds."""
        start = time.monotonic()
        while self._last is not None and not self._last.done:
            if time.monotonic() - start > self.timeout:
                self.comm.abort()
                raise DistributedError(f"NCCL made no progress within {self.timeout:g} s before "
                                       f"{what}; a rank has died or hangs; raise --dist-timeout "
                                       "if a step can take longer")
            time.sleep(1e-4)

    def any_rank(self, flag: bool) -> bool:
        return self.mpi.any_rank(flag)

    def barrier(self) -> None:
        self._wait_last("a barrier")
        self.mpi.barrier()

    def abort(self, message: str, exit_code: int) -> None:
        self.comm.abort()
        self.mpi.abort(message, exit_code)


def import_mpi():
    """mpi4py's MPI module (initialising MPI), or DistributedError saying how to install it."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise DistributedError(f"--distributed needs mpi4py and an MPI library ({exc}); "
                               f"{MPI_INSTALL_HINT}") from None
    return MPI


def connect(backend_name: str, timeout: float) -> Communicator:
    """This process's communicator: NCCL for the cupy backend, MPI for the CPU backends.

    Call it before the backend is activated: NCCL chooses this rank's GPU.
    """
    if backend_name == "cupy":
        return NCCLCommunicator(timeout)
    return MPICommunicator(timeout)


def replicate(state, cfg, comm: Communicator) -> None:
    """Make ``state`` this rank's replica: rank 0's weights and optimizer moments, its own batches.

    Rank 0 keeps the single-process streams; rank r draws batches and dropout
    masks seeded with ``rank_seed(seed, r)``. On resume, ranks > 0 skip the
    step × grad_accum batches they drew before (exact while grad_accum is
    unchanged); their dropout streams restart from the seed.
    """
    opt = state.optimizer
    comm.broadcast_arrays([p.data for p in state.model.parameters()] + opt.m + opt.v)
    if comm.rank == 0:
        return
    seed = rank_seed(cfg.seed, comm.rank)
    old = state.sampler
    state.sampler = BatchSampler(old.ids, old.block_size, old.batch_size, seed)
    for _ in range(state.step * cfg.grad_accum):
        state.sampler.next()
    backends.current().seed(seed)


def _flatten(arrays):
    """One contiguous 1-D buffer holding every array in order: (Σ sizes,)."""
    xp = backends.current().xp
    return xp.concatenate([a.reshape(-1) for a in arrays])


def _split(flat, like):
    """Views of ``flat`` shaped as the arrays in ``like`` (the inverse of ``_flatten``)."""
    out, offset = [], 0
    for a in like:
        out.append(flat[offset:offset + a.size].reshape(a.shape))
        offset += a.size
    return out
