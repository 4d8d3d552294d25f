"""NumPy's OpenBLAS run on Numba's threads (backends/numba_blas.py), and the attention
kernels that call its gemm from inside a parallel loop, on both of their paths."""

import os
import subprocess
import sys

import numpy as np
import pytest

from tinylm import backends

from test_backends import Sizes, check_kernel


@pytest.fixture(scope="module")
def numba_backend():
    ok, reason = backends.availability("numba")
    if not ok:
        pytest.skip(f"numba unavailable: {reason}")
    backend = backends.get_backend("numba")
    if backend.kernels.blas is None:
        pytest.skip("NumPy's BLAS here is not an OpenBLAS this backend can find")
    return backend


def _fresh_process(script: str, cwd, env=None) -> list[str]:
    """Run ``script`` in a new Python (a timeout, so that a hang fails); its stdout's words."""
    done = subprocess.run([sys.executable, "-c", script], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.split()


def test_numpy_openblas_is_found_with_its_gemm(numba_backend):
    blas = numba_backend.kernels.blas
    assert "openblas" in blas.path.lower()
    assert blas.sgemm and blas.dgemm and blas.int_bits in (32, 64)


@pytest.mark.parametrize("shape", [(768, 128, 384), (384, 768, 128), (5, 3, 7)])
def test_products_on_numba_threads_match_at_every_thread_count(numba_backend, shape):
    # OpenBLAS threads the large products: their jobs now run on Numba's pool, all at once
    if not numba_backend.blas_on_numba_threads:
        pytest.skip("this OpenBLAS has no threads callback (needs 0.3.27+)")
    m, k, n = shape
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((m, k)).astype(np.float32), rng.standard_normal((k, n)).astype(np.float32)
    want = a.astype(np.float64) @ b
    threads = numba_backend.threads()
    try:
        results = []
        for t in sorted({1, threads}):
            numba_backend.set_threads(t)
            assert numba_backend.kernels.blas.num_threads() == t   # never more jobs than threads
            results.append(a @ b)
    finally:
        numba_backend.set_threads(threads)
    for got in results:
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    # a product's jobs split its output, not its sums: the thread count changes no bit
    assert all(np.array_equal(results[0], r) for r in results[1:])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("T, D, past", [(64, 32, 0), (17, 8, 6), (40, 80, 9)])
@pytest.mark.parametrize("per_head", [True, False])
def test_attention_matches_the_reference_on_both_paths(numba_backend, monkeypatch, dtype, T, D, past,
                                                       per_head):
    # heads one per thread (gemm inside the kernel), or batched through NumPy without OpenBLAS
    if not per_head:
        monkeypatch.setattr(numba_backend.kernels, "blas", None)
    q = np.zeros((1, 1, T, D), dtype)
    assert (numba_backend.kernels._heads_gemm(T, past + T, D, q, q, q) is not None) == per_head
    threads = numba_backend.kernels.blas.num_threads() if per_head else None
    for kernel in ("attention_forward", "attention_backward"):
        check_kernel(kernel, "numba", Sizes(dtype, seed=1, B=2, H=3, T=T, D=D, C=8, V=5,
                                            magnitude=30.0, past=past))
    if per_head:   # OpenBLAS on one thread only inside the kernel
        assert numba_backend.kernels.blas.num_threads() == threads


def test_attention_falls_back_when_blas_cannot_read_the_rows(numba_backend):
    # a head whose rows are not unit-stride cannot go to BLAS as it is: the batched path takes it
    q = np.zeros((1, 1, 8, 16), np.float32)[..., ::2]
    assert numba_backend.kernels._heads_gemm(8, 8, 8, q, q, q) is None


LOWERED_THREADS = r"""
import numba
import numpy as np
from tinylm import backends

backend = backends.set_backend("numba")
numba.set_num_threads(1)   # behind the backend's back: OpenBLAS still makes one job per core
a = np.ones((128, 768), np.float32)
print(backend.blas_on_numba_threads, (a @ np.ones((768, 512), np.float32)).min())
"""


def test_a_product_completes_when_numba_threads_are_lowered_behind_the_backend(numba_backend, tmp_path):
    # a threaded product's jobs wait for each other: run one after another on one thread,
    # they would hang (in a fresh process, with a timeout, so that a regression fails)
    if numba_backend.threads() < 2:
        pytest.skip("needs two threads")
    words = _fresh_process(LOWERED_THREADS, tmp_path)
    assert words[-2:] == [str(numba_backend.blas_on_numba_threads), "768.0"]


FORKED_CHILD = r"""
import os
import numpy as np
from tinylm import backends

backends.set_backend("numba")
a = np.ones((512, 512), np.float32)
a @ a                      # the parent's products ran on Numba's OpenMP threads
pid = os.fork()
if pid == 0:               # GNU OpenMP cannot run here: OpenBLAS must use its own pool again
    os._exit(0 if (a @ a)[0, 0] == 512 else 3)
print(os.waitpid(pid, 0)[1])
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_can_still_multiply(numba_backend, tmp_path):
    assert _fresh_process(FORKED_CHILD, tmp_path)[-1] == "0"   # the child's exit status


PYTHON_THREADS = r"""
import threading
import numpy as np
from tinylm import backends

kernels = backends.set_backend("numba").kernels
rng = np.random.default_rng(0)
q = rng.standard_normal((12, 4, 64, 32)).astype(np.float32)
a, c = rng.standard_normal((768, 512)).astype(np.float32), rng.standard_normal((512, 384)).astype(np.float32)
want = {"matmul": a @ c, "attention": kernels.attention_forward(q, q, q, 0.2)[0]}
run = {"matmul": lambda: a @ c, "attention": lambda: kernels.attention_forward(q, q, q, 0.2)[0]}
wrong = []

def work(kind):
    for _ in range(100):
        if not np.array_equal(run[kind](), want[kind]):
            wrong.append(kind)

threads = [threading.Thread(target=work, args=(kind,)) for kind in ("matmul", "attention") * 2]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(len(wrong), kernels.blas.num_threads())
"""


def test_python_threads_share_the_pool(numba_backend, tmp_path):
    # products and attention from several Python threads at once: same bits, no hang, and
    # OpenBLAS's thread count back where it was once every attention kernel is done
    words = _fresh_process(PYTHON_THREADS, tmp_path)
    assert words[-2:] == ["0", str(numba_backend.kernels.blas.num_threads())]


def test_openblas_num_threads_is_respected(numba_backend, tmp_path):
    # a user who limits OpenBLAS (OPENBLAS_NUM_THREADS=1) keeps that limit when BLAS moves to Numba's pool
    script = ("from tinylm import backends; b = backends.set_backend('numba'); "
              "print(b.kernels.blas.num_threads(), b.threads())")
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    assert _fresh_process(script, tmp_path, env)[-2:] == ["1", str(numba_backend.threads())]
