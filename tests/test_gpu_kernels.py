"""The cupy backend's fused CUDA kernels against the NumPy reference, on a GPU (marked ``gpu``).

Through the same helper as every backend (tests/test_backends.py's
``check_kernel``), on float32 shapes chosen for the kernels' tiles: T = 1 and T
not a multiple of attention's tiles (8 queries, 32 keys), head sizes 32, 64
and 128, rows longer than a block, large magnitudes. Without a GPU these skip
with the reason; tests/test_cuda_host.py checks the host side on the CPU and
tests/test_cuda_sources.py compiles the CUDA.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_backends import Sizes, _usable, check_kernel

from tinylm import backends
from tinylm.backends.cuda import philox
from tinylm.backends.cupy_random import PhiloxGenerator
from tinylm.backends.numpy_backend import KERNELS, NumpyKernels

pytestmark = pytest.mark.gpu
REFERENCE = NumpyKernels(np)


def fused_backend():
    """The cupy backend, which must have compiled every CUDA source (else the test fails, saying why)."""
    backend = _usable("cupy")
    fallbacks = getattr(backend.kernels, "fallbacks", None)
    assert fallbacks == {}, f"CUDA sources that did not compile: {fallbacks}"
    return backend


tiles = st.builds(
    Sizes, dtype=st.just("float32"), seed=st.integers(0, 2**32 - 1),
    B=st.integers(1, 3), H=st.integers(1, 4),
    T=st.sampled_from([1, 7, 9, 33, 100]), D=st.sampled_from([32, 64, 128]),
    C=st.sampled_from([1, 33, 768, 1030]), V=st.sampled_from([1, 65, 1000]),
    magnitude=st.sampled_from([1.0, 30.0, 1e3]))


@pytest.mark.parametrize("kernel", KERNELS)
@given(sizes=tiles)
def test_fused_kernel_matches_reference(kernel, sizes):
    fused_backend()
    check_kernel(kernel, "cupy", sizes)


@pytest.mark.parametrize("path", ["flash", "cublas"])
@pytest.mark.parametrize("kernel", ["attention_forward", "attention_backward"])
@given(sizes=tiles)
def test_both_attention_paths_match_reference(kernel, path, sizes):
    kernels = fused_backend().kernels
    kernels.attention = path
    try:
        check_kernel(kernel, "cupy", sizes)
    finally:
        kernels.attention = None


def test_saved_values_are_linear_in_size():
    """Cross-entropy keeps lse (N,), not probs (N, V); attention keeps lse (B, H, T), not P (B, H, T, T)."""
    backend = fused_backend()
    xp = backend.xp
    _, saved, _ = backend.kernels.softmax_xent_forward(xp.zeros((6, 50), xp.float32),
                                                       xp.arange(6), -100)
    assert saved.lse.shape == (6,)
    q = xp.ones((1, 2, 1024, 64), xp.float32)
    _, saved = backend.kernels.attention_forward(q, q, q, 0.125)
    assert saved.lse.shape == (1, 2, 1024)


@pytest.mark.parametrize("path", ["flash", "cublas"])
def test_long_sequence_attention_matches_reference(path):
    backend, rng = fused_backend(), np.random.default_rng(0)
    q, k, v, dy = (rng.standard_normal((1, 2, 1024, 64)).astype(np.float32) for _ in range(4))
    put, get = backend.from_host, backend.to_host
    backend.kernels.attention = path
    try:
        y, saved = backend.kernels.attention_forward(put(q), put(k), put(v), 0.125)
        got = backend.kernels.attention_backward(put(dy), put(q), put(k), put(v), saved, 0.125)
    finally:
        backend.kernels.attention = None
    want_y, P = REFERENCE.attention_forward(q, k, v, 0.125)
    np.testing.assert_allclose(get(y), want_y, rtol=1e-4, atol=1e-5)
    for g, w in zip(got, REFERENCE.attention_backward(dy, q, k, v, P, 0.125)):
        np.testing.assert_allclose(get(g), w, rtol=1e-3, atol=1e-4)


def test_reductions_give_the_same_bits_every_run():
    """No atomics: layer norm's dw, the embedding's dW and the global norm repeat exactly."""
    backend, rng = fused_backend(), np.random.default_rng(1)
    k, put = backend.kernels, backend.from_host
    x, dy = (put(rng.standard_normal((4096, 384)).astype(np.float32)) for _ in range(2))
    w, b = put(np.ones(384, np.float32)), put(np.zeros(384, np.float32))
    idx = put(rng.integers(0, 65, 4096))
    _, mean, rstd = k.layernorm_forward(x, w, b, 1e-5)
    runs = [(k.layernorm_backward(dy, x, w, mean, rstd)[1], k.embedding_backward(dy, idx, 65),
             k.clip_grad_norm_many([x, dy], 1.0)[1]) for _ in range(2)]
    for first, second in zip(*runs):
        assert backend.xp.array_equal(first, second)


def test_multi_tensor_adamw_and_clipping_match_the_reference():
    backend, rng = fused_backend(), np.random.default_rng(2)
    shapes = [(384, 1152), (1152,), (65, 384), (1,)]
    params = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [rng.standard_normal(s).astype(np.float32) * 3 for s in shapes]
    put, get = backend.from_host, backend.to_host
    clipped, norm = backend.kernels.clip_grad_norm_many([put(g) for g in grads], 1.0)
    total = np.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in grads))
    np.testing.assert_allclose(float(norm), total, rtol=1e-5)
    on_gpu = [put(p) for p in params]
    moments = [[put(np.zeros_like(p)) for p in params] for _ in range(2)]
    wds = [0.1, 0.0, 0.1, 0.0]
    for step in (1, 2, 3):
        backend.kernels.adamw_update_many(on_gpu, clipped, *moments, wds, 1e-3, 0.9, 0.95, 1e-8, step)
    for i, p in enumerate(params):
        m, v, g = np.zeros_like(p), np.zeros_like(p), get(clipped[i])
        for step in (1, 2, 3):
            REFERENCE.adamw_update(p, g, m, v, 1e-3, 0.9, 0.95, 1e-8, wds[i], step)
        np.testing.assert_allclose(get(on_gpu[i]), p, rtol=1e-5, atol=1e-7)


def test_philox_uniforms_are_the_mirrors_bits():
    backend = fused_backend()
    got = backend.to_host(backend.kernels.philox_uniform(1_000_003, 2**40 + 3, 5))
    assert np.array_equal(got, philox.uniform(1_000_003, 2**40 + 3, 5))


def test_a_resumed_gpu_run_with_dropout_is_bitwise_the_uninterrupted_one(tmp_path):
    """Dropout from Philox (state: seed, draws) and kernels without atomics: resume is exact."""
    from reliability import same_arrays, write_corpus
    from test_reliability_resume import MODEL, _config, _train

    from tinylm.run import new_run, resume_run
    backend = fused_backend()
    with backends.use(backend):
        data = str(write_corpus(tmp_path))
        straight = new_run(MODEL, _config(), data, 0.1, tmp_path / "straight")
        _train(straight)
        first = new_run(MODEL, _config(), data, 0.1, tmp_path / "stopped")
        _train(first, stop_at=5)
        resumed = resume_run(first.out, {})
        _train(resumed)
        assert isinstance(backend.rng, PhiloxGenerator)
        assert same_arrays(resumed.state.model.state_dict(), straight.state.model.state_dict())
