"""Philox4x32-10 (backends/cuda/philox.py), the GPU dropout generator built on it, and exact resume.

The definition is checked against Random123's known answers for Philox4x32-10
and, at 64-bit words, against NumPy's own Philox (4x64-10); the vectorised
mirror that philox.cu follows against the definition; then the cupy backend's
generator, on the CPU with the kernel played by the mirror (tests/test_cuda_host.py):
a generator restored from a checkpoint's state draws what the uninterrupted one draws.
"""

import json

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from test_cuda_host import FAMILIES, HostKernels, NumpyModule

from tinylm import backends
from tinylm.backends.cuda.philox import philox, philox4x32, uniform
from tinylm.backends.cupy_backend import CupyBackend
from tinylm.backends.cupy_random import PhiloxGenerator
from tinylm.ops.layers import dropout
from tinylm.tensor import Tensor

words32, words64 = st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1)


def test_known_answers_of_philox4x32_10():
    """Random123's kat_vectors for Philox4x32-10: counter and key all zeros, then all ones."""
    assert philox((0, 0, 0, 0), (0, 0)) == (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)
    assert philox((2**32 - 1,) * 4, (2**32 - 1,) * 2) == (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)


@given(counter=st.tuples(words64, words64, words64, words64), key=st.tuples(words64, words64))
def test_64_bit_words_give_numpys_philox(counter, key):
    """NumPy's Philox is Philox4x64-10; it adds 1 to the counter before each block."""
    before = np.array(counter, dtype=np.uint64)
    carry = [counter[0] == 0, counter[0] == 0 and counter[1] == 0, counter[:3] == (0, 0, 0)]
    before -= np.array([1, *carry], dtype=np.uint64)                # counter - 1, as a 256-bit number
    want = np.random.Philox(key=np.array(key, dtype=np.uint64), counter=before).random_raw(4)
    assert philox(counter, key, bits=64) == tuple(int(w) for w in want)


@given(seed=st.integers(0, 2**32 - 1), key=st.tuples(words32, words32))
def test_the_vectorised_mirror_is_the_definition(seed, key):
    counters = np.random.default_rng(seed).integers(0, 2**32, (4, 16), dtype=np.uint64)
    got = np.stack(philox4x32(*counters, *key), axis=1)
    want = [philox(tuple(int(c) for c in counters[:, i]), key) for i in range(16)]
    assert got.tolist() == [list(w) for w in want]


def test_uniforms_depend_on_seed_draw_and_index_only():
    u = uniform(1003, seed=2**40 + 5, draw=7)
    assert u.dtype == np.float32 and 0.0 <= u.min() and u.max() < 1.0
    assert np.array_equal(u[:10], uniform(10, seed=2**40 + 5, draw=7))   # a prefix is the same draw
    assert not np.array_equal(u, uniform(1003, seed=2**40 + 5, draw=8))
    assert not np.array_equal(u, uniform(1003, seed=5, draw=7))           # the seed's high word counts
    assert np.array_equal(u * 2**24, np.floor(u * 2**24))                 # 24-bit grid, exact in float32
    many = uniform(200_000, seed=1, draw=0)
    assert abs(many.mean() - 0.5) < 0.005 and abs((many < 0.2).mean() - 0.2) < 0.005


def host_backend():
    """The cupy backend's host logic over NumPy, its kernels played by the NumPy mirrors."""
    return CupyBackend(np, HostKernels(np, {name: NumpyModule() for name in FAMILIES}, {}))


def test_a_restored_generator_draws_the_same_dropout_masks():
    backend = host_backend()
    backend.seed(1234)
    x = Tensor(np.ones((3, 50), np.float32))
    with backends.use(backend):
        dropout(x, 0.3)                                                 # one draw before the checkpoint
        state = json.loads(json.dumps(backend.rng_state()))             # as a checkpoint stores it
        straight = [dropout(x, 0.3).data for _ in range(3)]
        backend.set_rng_state(state)
        resumed = [dropout(x, 0.3).data for _ in range(3)]
    assert isinstance(backend.rng, PhiloxGenerator)
    for a, b in zip(straight, resumed):
        assert np.array_equal(a, b)
    assert not np.array_equal(straight[0], straight[1])
    kept = np.mean([(m > 0).mean() for m in straight])
    assert 0.55 < kept < 0.85                                            # about 1 - p


def test_a_checkpoint_from_cupys_generator_restarts_from_its_seed():
    backend = host_backend()
    backend.set_rng_state({"cupy_seed": 9})
    assert backend.rng.state() == {"philox4x32_seed": 9, "philox4x32_draws": 0}
