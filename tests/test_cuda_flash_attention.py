"""The NumPy mirror of flash attention (backends/cuda/flash_attention.py) equals the reference.

attention.cu follows the mirror tile by tile; here the mirror is checked on the
CPU against NumpyKernels.attention_forward/_backward on drawn shapes: T = 1, T
not a multiple of either tile, head sizes 32, 64 and 128, several tile sizes,
scores from mild to sharp.
"""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from tinylm.backends.cuda.flash_attention import flash_attention_backward, flash_attention_forward
from tinylm.backends.numpy_backend import NumpyKernels

REFERENCE = NumpyKernels(np)


def _inputs(seed, B, H, T, D, sharpness, dtype):
    rng = np.random.default_rng(seed)
    q, k = (rng.standard_normal((B, H, T, D)).astype(dtype) * sharpness for _ in range(2))
    v, dy = (rng.standard_normal((B, H, T, D)).astype(dtype) for _ in range(2))
    return q, k, v, dy, 1.0 / np.sqrt(D)


def _assert_close(got, want, what, rtol, atol):
    diff = np.abs(got - want)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, reference {want.shape}"
    assert np.all(diff <= atol + rtol * np.abs(want)), f"{what}: max abs diff {diff.max():.3g}"


shapes = dict(seed=st.integers(0, 2**32 - 1), B=st.integers(1, 2), H=st.integers(1, 2),
              T=st.sampled_from([1, 2, 7, 8, 33, 70]), D=st.sampled_from([32, 64, 128]),
              block_q=st.sampled_from([1, 3, 8, 16]), block_k=st.sampled_from([1, 5, 32]),
              sharpness=st.sampled_from([1.0, 3.0]))


@given(**shapes)
def test_forward_and_lse_match_the_reference(seed, B, H, T, D, block_q, block_k, sharpness):
    q, k, v, _, scale = _inputs(seed, B, H, T, D, sharpness, np.float64)
    y, lse = flash_attention_forward(q, k, v, scale, block_q, block_k)
    want_y, P = REFERENCE.attention_forward(q, k, v, scale)
    where = f"B={B} H={H} T={T} D={D} tiles {block_q}x{block_k}"
    _assert_close(y, want_y, f"y, {where}", 1e-10, 1e-12)
    # lse is what turns S back into P: exp(S - lse) must be the reference's P
    S = q @ k.swapaxes(-1, -2) * scale + REFERENCE.causal_mask(T, T)
    _assert_close(np.exp(S - lse[..., None]), P, f"exp(S - lse), {where}", 1e-10, 1e-12)


@given(**shapes)
def test_backward_matches_the_reference(seed, B, H, T, D, block_q, block_k, sharpness):
    q, k, v, dy, scale = _inputs(seed, B, H, T, D, sharpness, np.float64)
    y, lse = flash_attention_forward(q, k, v, scale, block_q, block_k)
    got = flash_attention_backward(dy, q, k, v, y, lse, scale, block_q, block_k)
    _, P = REFERENCE.attention_forward(q, k, v, scale)
    want = REFERENCE.attention_backward(dy, q, k, v, P, scale)
    for name, g, w in zip(("dq", "dk", "dv"), got, want, strict=True):
        _assert_close(g, w, f"{name}, B={B} H={H} T={T} D={D} tiles {block_q}x{block_k}", 1e-9, 1e-11)


def test_float32_stays_within_float32_rounding_of_the_reference():
    q, k, v, dy, scale = _inputs(0, 2, 3, 100, 64, 3.0, np.float32)
    y, lse = flash_attention_forward(q, k, v, scale)
    want_y, P = REFERENCE.attention_forward(q, k, v, scale)
    _assert_close(y, want_y, "y", 1e-4, 1e-5)
    got = flash_attention_backward(dy, q, k, v, y, lse, scale)
    for name, g, w in zip(("dq", "dk", "dv"), got, REFERENCE.attention_backward(dy, q, k, v, P, scale)):
        _assert_close(g, w, name, 1e-3, 1e-4)
    assert lse.dtype == y.dtype == np.float32
