"""Data-parallel training: 2 MPI ranks equal one process on the union of their batches;
a rank that fails or hangs ends the job with a clear error; gradient accumulation
equals one large batch; the communicator's averaging in-process, without MPI.

The multi-process tests launch ``mpiexec`` (from the venv's bin directory, where
``pip install 'tinylm[mpi]'`` puts it, or PATH) and skip when mpi4py or mpiexec
is missing. GPU tests (NCCL through CuPy) are marked ``gpu``.
"""

import importlib.util
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tinylm import backends
from tinylm.checkpoint import load_checkpoint
from tinylm.cli import cli
from tinylm.config import resolve_config
from tinylm.data import BatchSampler
from tinylm.distributed import Communicator, SingleProcess, _flatten, rank_seed, replicate
from tinylm.errors import ConfigError
from tinylm.models import GPT, GPTConfig
from tinylm.run import new_run
from tinylm.train import TrainConfig, new_state, train

TEXT = "".join(f"{i} green bottles hanging on the wall, {i * 5 % 11} fell\n" for i in range(300))
# A tiny model and run; the same dict drives the CLI (as flags) and the in-process reference.
CONFIG = dict(n_layer=1, n_head=2, n_embd=16, block_size=16, dropout=0.0, batch_size=4,
              max_iters=4, warmup_iters=1, eval_interval=4, eval_iters=1, log_interval=1, seed=5)
TOLERANCE = 2e-5  # float32: the same sums, reduced in a different order


def flags(config: dict) -> list[str]:
    return [str(a) for k, v in config.items() for a in (f"--{k.replace('_', '-')}", v)]


def mpiexec() -> str | None:
    beside_python = Path(sys.executable).parent / "mpiexec"
    return str(beside_python) if beside_python.exists() else shutil.which("mpiexec")


needs_mpi = pytest.mark.skipif(
    importlib.util.find_spec("mpi4py") is None or mpiexec() is None,
    reason="mpi4py or mpiexec unavailable; pip install 'tinylm[mpi]'")

TINYLM = [sys.executable, "-m", "tinylm.cli"]
# Rank 1 of the failure tests: the real CLI, with a gradient allreduce that fails on the 3rd step.
FAILING_RANK = [sys.executable, "-c", """
import sys, time
from tinylm import distributed
from tinylm.cli import main

mode, reduce = sys.argv[1], distributed.MPICommunicator.allreduce_mean_gradients
def fail_mid_run(self, params):
    if self.allreduces == 2:
        if mode == "hang":
            time.sleep(600)  # alive but silent: the other rank must time out
        raise RuntimeError("simulated failure")
    reduce(self, params)
distributed.MPICommunicator.allreduce_mean_gradients = fail_mid_run
main(sys.argv[2:])
"""]


def launch(*ranks: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
    """Run one program per rank under mpiexec (MPMD: ``-n 1 a : -n 1 b``); never hangs the suite."""
    command = [mpiexec()]
    for i, argv in enumerate(ranks):
        command += ([":"] if i else []) + ["-n", "1", *map(str, argv)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # OpenMPI refuses root without both; MPICH ignores them
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


class ConcatSampler:
    """Draws one batch from each sampler in turn and stacks them: (sum of batch sizes, T).

    The same sampler given twice yields two consecutive batches of it.
    """

    def __init__(self, samplers):
        self.samplers = samplers
        self.ids = samplers[0].ids

    def next(self):
        xs, ys = zip(*(s.next() for s in self.samplers))
        return np.concatenate(xs), np.concatenate(ys)


def assert_same_parameters(got: dict, expected: dict, tol: float = TOLERANCE):
    assert got.keys() == expected.keys()
    for name in expected:
        diff = float(np.max(np.abs(got[name] - expected[name])))
        assert diff <= tol, f"{name}: maxdiff {diff:.3g} > {tol}"


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "bottles.txt"
    path.write_text(TEXT)
    return str(path)


# --------------------------------------------------------------------------- 2 MPI ranks
@needs_mpi
def test_two_ranks_equal_one_process_on_the_union_of_their_batches(corpus, tmp_path):
    """``mpiexec -n 2 tinylm train --distributed`` = one process whose batch is both ranks' batches.

    Rank r draws B sequences from BatchSampler(seed=rank_seed(seed, r)) and takes
    the gradient of its mean loss, g_r; the allreduce gives (g_0 + g_1) / 2. The
    reference is one process with the same start (same seed) whose every batch is
    the 2B rows [rank 0's batch; rank 1's batch] drawn from those two samplers:
    the gradient of its mean loss is the same (g_0 + g_1) / 2, so clipping, the
    schedule and AdamW see the same numbers and the weights agree to float32
    rounding (the sums are reduced in another order). Dropout is 0: its masks are
    per rank and could not be reproduced by one process.
    """
    argv = [*TINYLM, "train", "--distributed", "--data", corpus, "--out", tmp_path / "dist",
            *flags(CONFIG)]
    result = launch(argv, argv)
    assert result.returncode == 0, result.stderr
    assert "2 rank(s)" in result.stderr and result.stdout.count("done: 4 steps") == 1  # rank 0 only

    model_fields, cfg = resolve_config(None, {}, CONFIG)
    reference = new_run(model_fields, cfg, corpus, 0.1, tmp_path / "ref")
    ids = reference.state.sampler.ids
    block = model_fields["block_size"]
    reference.state.sampler = ConcatSampler([BatchSampler(ids, block, cfg.batch_size,
                                                          rank_seed(cfg.seed, r)) for r in (0, 1)])
    train(reference.state, reference.val_ids, cfg)  # no checkpoint
    assert_same_parameters(load_checkpoint(tmp_path / "dist").weights,
                           reference.state.model.state_dict())


@needs_mpi
def test_a_resumed_two_rank_run_repeats_the_uninterrupted_one(corpus, tmp_path):
    """Rank 0 restores its batch stream from the checkpoint; rank 1 skips the batches it drew."""
    config = {**CONFIG, "lr_decay_iters": 4}  # the same schedule for the 2-step first half

    def two_ranks(*args):
        argv = [*TINYLM, "train", "--distributed", "--data", corpus, *args]
        result = launch(argv, argv)
        assert result.returncode == 0, result.stderr

    two_ranks("--out", tmp_path / "straight", *flags(config))
    two_ranks("--out", tmp_path / "halves", *flags({**config, "max_iters": 2}))
    two_ranks("--out", tmp_path / "halves", "--resume", "--max-iters", 4)
    assert_same_parameters(load_checkpoint(tmp_path / "halves").weights,
                           load_checkpoint(tmp_path / "straight").weights, tol=0)


@needs_mpi
def test_a_rank_that_hangs_makes_the_other_exit_with_a_clear_error(corpus, tmp_path):
    argv = ["train", "--distributed", "--dist-timeout", "3", "--data", corpus,
            "--out", tmp_path / "run", *flags({**CONFIG, "max_iters": 50})]
    start = time.monotonic()
    result = launch([*TINYLM, *argv], [*FAILING_RANK, "hang", *argv])
    elapsed = time.monotonic() - start
    assert result.returncode != 0
    assert "error: rank 0 of 2: no answer from the other ranks within 3 s during gradient " \
           "allreduce #3" in result.stderr, result.stderr
    assert elapsed < 30, f"took {elapsed:.0f} s"


@needs_mpi
def test_an_exception_on_one_rank_aborts_the_whole_job_at_once(corpus, tmp_path):
    argv = ["train", "--distributed", "--dist-timeout", "120", "--data", corpus,
            "--out", tmp_path / "run", *flags({**CONFIG, "max_iters": 50})]
    start = time.monotonic()
    result = launch([*TINYLM, *argv], [*FAILING_RANK, "raise", *argv])
    elapsed = time.monotonic() - start
    assert result.returncode != 0
    assert "error: rank 1 of 2: RuntimeError: simulated failure" in result.stderr, result.stderr
    assert elapsed < 30, f"took {elapsed:.0f} s: the other rank waited for its timeout"


# --------------------------------------------------------------------------- in-process
def test_grad_accum_equals_one_batch_of_the_same_samples():
    """grad_accum=2 over batches b1, b2 of size B = one step on [b1; b2] of size 2B.

    Each micro-batch's backward is seeded with 1/2, so .grad sums to
    (1/2)(g(b1) + g(b2)), the gradient of the mean loss over all 2B rows.
    """
    ids = np.random.default_rng(0).integers(0, 20, 3000)
    model_cfg = GPTConfig(vocab_size=20, block_size=8, n_layer=1, n_head=2, n_embd=16)
    results = []
    for batch_size, grad_accum in ((4, 2), (8, 1)):
        cfg = TrainConfig(batch_size=batch_size, grad_accum=grad_accum, max_iters=4, warmup_iters=1,
                          eval_interval=4, eval_iters=1, seed=3)
        state = new_state(GPT(model_cfg, seed=3), ids, cfg)
        stream = BatchSampler(ids, 8, 4, seed=11)
        state.sampler = stream if grad_accum == 2 else ConcatSampler([stream, stream])
        results.append(train(state, ids, cfg).model.state_dict())
    assert_same_parameters(*results)


def test_allreduce_averages_every_gradient_in_one_message():
    """Rank 0 of a pretend 2-rank job: p.grad <- (own + other) / 2; a missing gradient counts as 0."""
    a, b = GPT(GPTConfig(vocab_size=5, block_size=4, n_layer=1, n_head=1, n_embd=4), seed=0).parameters()[:2]
    own = [np.full(a.shape, 1.0, a.dtype), None]
    other = [np.full(a.shape, 3.0, a.dtype), np.full(b.shape, 4.0, b.dtype)]

    class OtherRank(Communicator):
        world_size = 2

        def _allreduce_sum(self, flat):
            flat += _flatten(other)

    a.grad, b.grad = own
    comm = OtherRank()
    comm.allreduce_mean_gradients([a, b])
    np.testing.assert_array_equal(a.grad, np.full(a.shape, 2.0))
    np.testing.assert_array_equal(b.grad, np.full(b.shape, 2.0))
    assert comm.allreduces == 1


def test_replicate_gives_rank_1_rank_0s_weights_and_its_own_resumed_batch_stream():
    ids = np.arange(500) % 7
    cfg = TrainConfig(batch_size=2, grad_accum=3, seed=9)
    state = new_state(GPT(GPTConfig(vocab_size=7, block_size=4, n_layer=1, n_head=1, n_embd=4), seed=1),
                      ids, cfg)
    state.step = 5  # as if resumed: 5 steps x 3 micro-batches already drawn
    rank0 = GPT(state.model.config, seed=2)  # other weights, which rank 1 must take

    class Rank1(Communicator):
        rank, world_size = 1, 2

        def _broadcast(self, flat):
            flat[...] = _flatten([p.data for p in rank0.parameters()] + state.optimizer.m + state.optimizer.v)

    replicate(state, cfg, Rank1())
    assert_same_parameters(state.model.state_dict(), rank0.state_dict(), tol=0)
    expected = BatchSampler(ids, 4, 2, rank_seed(9, 1))
    for _ in range(15):
        expected.next()
    np.testing.assert_array_equal(state.sampler.next()[0], expected.next()[0])


def test_single_process_communicator_changes_nothing():
    comm, p = SingleProcess(), GPT(GPTConfig(vocab_size=5, block_size=4, n_layer=1, n_head=1,
                                             n_embd=4), seed=0).parameters()[0]
    p.grad = np.ones(p.shape, p.dtype)
    before = p.grad
    comm.allreduce_mean_gradients([p])
    with comm.abort_on_error():
        assert comm.any_rank(True) and not comm.any_rank(False)
    assert p.grad is before and (comm.rank, comm.world_size) == (0, 1)


@pytest.mark.parametrize("value", [0, -2, True])
def test_grad_accum_must_be_a_positive_integer(value):
    with pytest.raises(ConfigError, match="grad_accum must be a positive integer"):
        TrainConfig(grad_accum=value)


def test_distributed_without_mpi4py_is_a_one_line_error(monkeypatch, corpus, tmp_path):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # import mpi4py -> ImportError
    result = CliRunner().invoke(cli, ["train", "--distributed", "--data", corpus,
                                      "--out", str(tmp_path / "run")])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "pip install 'tinylm[mpi]'" in lines[0]


# --------------------------------------------------------------------------- GPU (NCCL)
def gpus() -> int:
    ok, _ = backends.availability("cupy")
    if not ok:
        return 0
    import cupy
    return cupy.cuda.runtime.getDeviceCount()


@pytest.mark.gpu
@needs_mpi
@pytest.mark.parametrize("ranks", [1, 2])
def test_nccl_ranks_equal_one_cupy_process_on_the_union_of_their_batches(ranks, corpus, tmp_path):
    """As the MPI test, on CuPy arrays with gradients reduced by NCCL (one GPU per rank)."""
    if gpus() < ranks:
        pytest.skip(f"needs {ranks} CUDA GPU(s) and CuPy with NCCL; found {gpus()}")
    argv = [*TINYLM, "train", "--distributed", "--backend", "cupy", "--data", corpus,
            "--out", tmp_path / "dist", *flags(CONFIG)]
    result = launch(*[argv] * ranks)
    assert result.returncode == 0, result.stderr
    model_fields, cfg = resolve_config(None, {}, CONFIG)
    with backends.use("cupy"):
        reference = new_run(model_fields, cfg, corpus, 0.1, tmp_path / "ref")
        ids = reference.state.sampler.ids
        reference.state.sampler = ConcatSampler([
            BatchSampler(ids, model_fields["block_size"], cfg.batch_size, rank_seed(cfg.seed, r))
            for r in range(ranks)])
        train(reference.state, reference.val_ids, cfg)
        expected = reference.state.model.state_dict()
    assert_same_parameters(load_checkpoint(tmp_path / "dist").weights, expected)
