"""The host side of the cupy backend's fused kernels, checked on the CPU.

``CudaKernels`` (backends/cupy_kernels.py) allocates outputs, computes launch
shapes and strides, and passes argument lists to the CUDA kernels. Here its
``xp`` is NumPy and each kernel is played by a NumPy function that reads its
arguments the way the CUDA source does (pointers with the strides passed, sizes,
scalars in order) and writes its outputs. Every fused method must then match the
reference on drawn shapes: a wrong argument order, stride or saved value fails
here, before any GPU time is spent. The CUDA bodies themselves are compiled by
tests/test_cuda_sources.py and run against the reference on a GPU
(tests/test_gpu_kernels.py).
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.lib.stride_tricks import as_strided

try:
    from numpy.lib.array_utils import byte_bounds      # NumPy 2
except ImportError:
    from numpy import byte_bounds                       # NumPy 1.x

from tinylm.backends import cupy_attention, cupy_kernels
from tinylm.backends.cuda import philox
from tinylm.backends.cuda.flash_attention import flash_attention_backward, flash_attention_forward
from tinylm.backends.cupy_kernels import CudaKernels, embedding_segments
from tinylm.backends.numpy_backend import NumpyKernels

REFERENCE = NumpyKernels(np)


def _view(ptr, shape, strides):
    """The (B, H, T, D) array a kernel reads at ``ptr`` with element strides (sb, sh, st) and d contiguous.

    Asserts that it stays inside the memory ``ptr`` belongs to (a wrong stride fails, not crashes).
    """
    steps = tuple(int(s) * ptr.itemsize for s in (*strides, 1))
    owner = ptr if ptr.base is None else ptr.base
    low, high = byte_bounds(owner)
    start = ptr.__array_interface__["data"][0]
    end = start + sum((n - 1) * step for n, step in zip(shape, steps)) + ptr.itemsize
    assert low <= start and end <= high and min(steps) > 0, f"strides {strides} read outside the array"
    return as_strided(ptr, shape=shape, strides=steps)


# ---- each kernel as NumPy reads its CUDA arguments -------------------------------------------
def softmax_xent_forward(z, t, lse, row_loss, V, ignore):
    z2 = z.reshape(-1, int(V))
    m = z2.max(axis=1)
    lse[:] = m + np.log(np.exp(z2 - m[:, None]).sum(axis=1))
    picked = z2[np.arange(len(t)), np.where(t == ignore, 0, t)]
    row_loss[:] = np.where(t == ignore, 0.0, lse - picked)


def softmax_xent_backward(z, lse, t, dloss, n_valid, out, n, V, ignore):
    N = int(n) // int(V)
    p = np.exp(z.reshape(N, -1) - lse[:, None])
    p[np.arange(N), np.where(t == ignore, 0, t)] -= (t != ignore)
    out.reshape(N, -1)[:] = p * (dloss[0] / max(int(n_valid[0]), 1)) * (t != ignore)[:, None]


def layernorm_forward(x, w, b, y, mean, rstd, C, eps):
    X = x.reshape(-1, int(C))
    m = X.mean(axis=1)
    r = 1 / np.sqrt(((X - m[:, None]) ** 2).mean(axis=1) + eps)
    y.reshape(X.shape)[:] = (X - m[:, None]) * r[:, None] * w + b
    mean.reshape(-1)[:], rstd.reshape(-1)[:] = m, r


def layernorm_backward(dy, x, w, mean, rstd, dx, dw_part, db_part, rows, C):
    G = dw_part.shape[0]
    X, dY = x.reshape(int(rows), int(C)), dy.reshape(int(rows), int(C))
    xhat = (X - mean.reshape(-1, 1)) * rstd.reshape(-1, 1)
    dxhat = dY * w
    dx.reshape(X.shape)[:] = (dxhat - dxhat.mean(1, keepdims=True)
                              - xhat * (dxhat * xhat).mean(1, keepdims=True)) * rstd.reshape(-1, 1)
    for g in range(G):                                   # block g owns rows g, g + G, ...
        dw_part[g], db_part[g] = (dY[g::G] * xhat[g::G]).sum(0), dY[g::G].sum(0)


def sum_partial_rows(part, out, rows, cols):
    out[:] = part.reshape(int(rows), int(cols)).sum(axis=0)


def gelu_forward(x, y, n):
    y[:] = REFERENCE.gelu_forward(x)


def gelu_backward(dy, x, dx, n):
    dx[:] = REFERENCE.gelu_backward(dy, x)


def embedding_backward(dy, order, start, dW, V, C):
    for v in range(int(V)):
        dW[v] = dy.reshape(-1, int(C))[order[start[v]:start[v + 1]]].sum(axis=0)


def _adamw(p, g, m, v, lr, b1, b2, eps, wd, bias1, sqrt_bias2):
    m[:] = b1 * m + (1 - b1) * g
    v[:] = b2 * v + (1 - b2) * g * g
    p *= 1 - lr * wd
    p -= (lr / bias1) * (m / (np.sqrt(v) / sqrt_bias2 + eps))


def adamw_update(p, g, m, v, n, *scalars):
    _adamw(p, g, m, v, *scalars)


def adamw_update_many(p, g, m, v, sizes, wds, lr, b1, b2, eps, bias1, sqrt_bias2):
    for k in range(len(p)):
        assert p[k].size == sizes[k]
        _adamw(p[k], g[k], m[k], v[k], lr, b1, b2, eps, wds[k], bias1, sqrt_bias2)


def sum_of_squares_many(g, sizes, part):
    blocks = part.size // len(g)
    for k, gk in enumerate(g):
        part[k * blocks:(k + 1) * blocks] = 0
        part[k * blocks] = (gk[:int(sizes[k])] ** 2).sum()


def scale_many(g, out, sizes, norm2, max_norm):
    for gk, ok in zip(g, out):
        ok[:] = gk * min(1.0, max_norm / (np.sqrt(norm2[0]) + 1e-6))


def attention_forward(q, k, v, y, lse, H, T, D, sb, sh, st, ysb, ysh, yst, scale):
    shape = (y.shape[0], int(H), int(T), int(D))
    qv, kv, vv = (_view(a, shape, (sb, sh, st)) for a in (q, k, v))
    out, l = flash_attention_forward(qv, kv, vv, scale)
    _view(y, shape, (ysb, ysh, yst))[:] = out
    lse.reshape(l.shape)[:] = l


def attention_backward_delta(dy, y, delta, H, T, D, gsb, gsh, gst, ysb, ysh, yst):
    shape = (y.shape[0], int(H), int(T), int(D))
    delta.reshape(shape[:3])[:] = (_view(dy, shape, (gsb, gsh, gst)) * _view(y, shape, (ysb, ysh, yst))).sum(-1)


def _attention_grads(dy, q, k, v, lse, delta, H, T, D, sb, sh, st, gsb, gsh, gst, scale):
    shape = (lse.shape[0], int(H), int(T), int(D))
    qv, kv, vv = (_view(a, shape, (sb, sh, st)) for a in (q, k, v))
    g = _view(dy, shape, (gsb, gsh, gst))
    y = REFERENCE.attention_forward(qv, kv, vv, scale)[0]          # only to pass the mirror its y
    np.testing.assert_allclose((g * y).sum(-1), delta, rtol=1e-4, atol=1e-5)
    return flash_attention_backward(g, qv, kv, vv, y, lse, scale)


def attention_backward_dkdv(dy, q, k, v, lse, delta, dk, dv, *rest):
    _, dk[:], dv[:] = _attention_grads(dy, q, k, v, lse, delta, *rest)


def attention_backward_dq(dy, q, k, v, lse, delta, dq, *rest):
    dq[:] = _attention_grads(dy, q, k, v, lse, delta, *rest)[0]


def _causal_rows(S, rows, T):
    """S as (rows, T) with each row's query t and the causal mask (key s <= t)."""
    rows, T = int(rows), int(T)
    return S.reshape(rows, T), (np.arange(T)[None, :] <= (np.arange(rows) % T)[:, None])


def causal_softmax_forward(S, lse, rows, T, scale):
    S2, keep = _causal_rows(S, rows, T)
    z = np.where(keep, scale * S2, -np.inf)
    m = z.max(axis=1, keepdims=True)
    lse[...] = (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True))).reshape(lse.shape)
    S2[:] = np.exp(z - lse.reshape(-1, 1))


def causal_softmax_recompute(S, lse, rows, T, scale):
    S2, keep = _causal_rows(S, rows, T)
    S2[:] = np.where(keep, np.exp(scale * S2 - lse.reshape(-1, 1)), 0.0)


def causal_softmax_backward(P, dP, rows, T, scale):
    P2, _ = _causal_rows(P, rows, T)
    g, _ = _causal_rows(dP, rows, T)
    g[:] = P2 * (g - (g * P2).sum(axis=1, keepdims=True)) * scale


def philox_uniform(out, n, key0, key1, draw_lo, draw_hi):
    out[:] = philox.uniform(int(n), int(key0) | int(key1) << 32, int(draw_lo) | int(draw_hi) << 32)


class NumpyModule:
    """Plays a compiled cupy.RawModule: get_function(name) runs the NumPy version above."""

    def get_function(self, name):
        kernel = globals()[name]

        def launch(grid, block, args, shared_mem=0):
            assert all(0 < n <= 2**31 - 1 for n in grid) and len(grid) <= 2 and grid[-1] <= 65535
            assert block[0] % 32 == 0 and block[0] <= 1024 and shared_mem <= 48 * 1024
            kernel(*args)
        return launch


class HostKernels(CudaKernels):
    """CudaKernels whose pointer arrays are lists of the NumPy arrays themselves."""

    def _pointers(self, arrays):
        return list(arrays)


FAMILIES = ["adamw.cu", "attention.cu", "causal_softmax.cu", "embedding.cu", "gelu.cu", "layernorm.cu",
            "philox.cu", "softmax_xent.cu"]
fused = HostKernels(np, {name: NumpyModule() for name in FAMILIES}, {})


def _close(got, want, what):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, reference {want.shape}"
    scale = max(1.0, float(np.abs(want).max(initial=0)))
    diff = np.abs(got - want)
    assert np.all(diff <= 1e-4 * np.abs(want) + 2e-6 * scale), f"{what}: max abs diff {diff.max():.3g}"


sizes = dict(seed=st.integers(0, 2**32 - 1), N=st.sampled_from([1, 5, 64]), C=st.sampled_from([1, 7, 33, 130]),
             V=st.sampled_from([1, 5, 65]), magnitude=st.sampled_from([1.0, 1e3]))


@given(**sizes)
def test_cross_entropy_layer_norm_gelu_and_embedding_match_the_reference(seed, N, C, V, magnitude):
    rng = np.random.default_rng(seed)
    f32 = np.float32
    logits = (rng.standard_normal((N, V)) * magnitude).astype(f32)
    targets = rng.integers(0, V, N)
    targets[rng.random(N) < 0.3] = -100
    loss, saved, n_valid = fused.softmax_xent_forward(logits, targets, -100)
    want_loss, probs, want_n = REFERENCE.softmax_xent_forward(logits, targets, -100)
    _close(loss, want_loss, "loss")
    assert isinstance(saved, cupy_kernels.SavedLogits) and int(n_valid) == want_n
    _close(fused.softmax_xent_backward(np.asarray(1.7, f32), saved, targets, -100, n_valid),
           REFERENCE.softmax_xent_backward(np.asarray(1.7, f32), probs, targets, -100, want_n), "dlogits")

    x = (rng.standard_normal((N, 3, C)) * magnitude + magnitude).astype(f32)
    w, b, dy = (rng.standard_normal(s).astype(f32) for s in ((C,), (C,), (N, 3, C)))
    got, want = fused.layernorm_forward(x, w, b, 1e-5), REFERENCE.layernorm_forward(x, w, b, 1e-5)
    for name, g, r in zip(("y", "mean", "rstd"), got, want, strict=True):
        _close(g, r, f"layernorm {name}")
    for name, g, r in zip(("dx", "dw", "db"), fused.layernorm_backward(dy, x, w, *got[1:]),
                          REFERENCE.layernorm_backward(dy, x, w, *want[1:]), strict=True):
        _close(g, r, f"layernorm {name}")

    h = x[:, 0] - magnitude
    _close(fused.gelu_forward(h), REFERENCE.gelu_forward(h), "gelu")
    _close(fused.gelu_backward(dy[:, 0], h), REFERENCE.gelu_backward(dy[:, 0], h), "gelu backward")

    idx = rng.integers(0, V, N)
    _close(fused.embedding_backward(dy[:, 0], idx, V), REFERENCE.embedding_backward(dy[:, 0], idx, V),
           "embedding")


def test_embedding_segments_list_each_index_s_rows_in_order():
    idx = np.array([3, 0, 3, 1, 3, 0])
    order, start = embedding_segments(np, idx, 5)
    assert start.tolist() == [0, 2, 3, 3, 6, 6]
    assert order.tolist() == [1, 5, 3, 0, 2, 4]


@pytest.mark.parametrize("path", ["flash", "cublas"])
@given(seed=st.integers(0, 2**32 - 1), T=st.sampled_from([1, 7, 8, 33, 70]),
       D=st.sampled_from([8, 32, 64, 128]), H=st.integers(1, 3))
def test_attention_through_qkv_views_matches_the_reference(path, seed, T, D, H):
    """q, k, v as the model passes them: strided views of one (B, T, 3, H, D) projection."""
    rng = np.random.default_rng(seed)
    qkv = rng.standard_normal((2, T, 3, H, D)).astype(np.float32)
    q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))     # (B, H, T, D) views
    dy = rng.standard_normal((2, T, H, D)).astype(np.float32).transpose(0, 2, 1, 3)
    scale = 1 / np.sqrt(D)
    kernels = HostKernels(np, {name: NumpyModule() for name in FAMILIES}, {})
    kernels.attention = path
    assert kernels.attention_path(q) == path
    y, saved = kernels.attention_forward(q, k, v, scale)
    want_y, P = REFERENCE.attention_forward(q, k, v, scale)
    _close(y, want_y, f"{path} y")
    assert isinstance(saved, cupy_attention.SavedAttention)
    if path == "flash":
        assert y.transpose(0, 2, 1, 3).flags.c_contiguous    # heads merge back without a copy
    for name, g, r in zip(("dq", "dk", "dv"), kernels.attention_backward(dy, q, k, v, saved, scale),
                          REFERENCE.attention_backward(dy, q, k, v, P, scale), strict=True):
        _close(g, r, f"{path} {name}")


def test_attention_path_follows_the_shape():
    kernels = HostKernels(np, {name: NumpyModule() for name in FAMILIES}, {})
    small, huge = (np.broadcast_to(np.float32(0), shape) for shape in ((2, 4, 64, 32), (64, 16, 4096, 64)))
    assert kernels.attention_path(small) == "cublas"       # (B, H, T, T) fits: tensor-core products
    assert kernels.attention_path(huge) == "flash"         # 64 GB of scores would not
    assert kernels.attention_path(small.astype(np.float64)) == "reference"
    assert kernels.attention_path(np.zeros((1, 1, 8, 256), np.float32)) == "cublas"   # D > 128: no flash
    only_flash = HostKernels(np, {"attention.cu": NumpyModule()}, {"causal_softmax.cu": "failed"})
    assert only_flash.attention_path(small) == "flash"


def test_multi_tensor_adamw_and_clipping_match_one_tensor_at_a_time():
    rng = np.random.default_rng(0)
    shapes = [(5, 3), (7,), (2, 2, 2)]
    params = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [rng.standard_normal(s).astype(np.float32) * 10 for s in shapes]
    want = [p.copy() for p in params]
    state = [[np.zeros_like(p) for p in params] for _ in range(4)]
    wds = [0.1, 0.0, 0.1]
    clipped, norm = fused.clip_grad_norm_many(grads, 1.0)
    total = np.sqrt(sum((g.astype(np.float64) ** 2).sum() for g in grads))
    _close(norm, total, "norm")
    for g, c in zip(grads, clipped):
        _close(c, g * min(1, 1.0 / (total + 1e-6)), "clipped")
    for step in (1, 2):
        fused.adamw_update_many(params, clipped, state[0], state[1], wds, 1e-2, 0.9, 0.99, 1e-8, step)
        for i in range(3):
            REFERENCE.adamw_update(want[i], clipped[i], state[2][i], state[3][i], 1e-2, 0.9, 0.99, 1e-8,
                                   wds[i], step)
    for p, w in zip(params, want):
        _close(p, w, "adamw")


def test_float64_and_unfused_families_run_the_reference():
    kernels = CudaKernels(np, {}, {"gelu.cu": "no compiler"})
    x = np.linspace(-3, 3, 12)
    np.testing.assert_array_equal(kernels.gelu_forward(x), REFERENCE.gelu_forward(x))
    y, saved = kernels.attention_forward(*(np.ones((1, 1, 3, 4)),) * 3, 0.5)
    assert saved.shape == (1, 1, 3, 3)                      # the reference's P: nothing fused ran


def test_the_optimizer_and_clipping_use_the_multi_tensor_kernels(monkeypatch):
    """tinylm.optim sends every tensor to one call of the multi-tensor kernels (one launch each here)."""
    from tinylm import backends, optim
    from tinylm.models import GPT, GPTConfig
    from tinylm.tensor import Tensor

    calls = []

    class Counting(HostKernels):
        def adamw_update_many(self, *args):
            calls.append(("adamw", len(args[0])))
            return super().adamw_update_many(*args)

        def clip_grad_norm_many(self, grads, max_norm):
            calls.append(("clip", len(grads)))
            return super().clip_grad_norm_many(grads, max_norm)

    def one_step(kernels):
        """Gradients from the reference kernels; then clipping and AdamW with ``kernels``."""
        backend = backends.get_backend("numpy")
        with backends.use(backend):
            model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=32), seed=1)
            opt = optim.AdamW(model, lr=1e-2, weight_decay=0.1)
            idx = np.arange(16).reshape(2, 8) % 11
            _, loss = model(Tensor(idx), Tensor((idx + 1) % 11))
            loss.backward()
            monkeypatch.setattr(backend, "kernels", kernels)
            norm = float(optim.clip_grad_norm(opt.params, 0.5))
            opt.step()
            return norm, [p.data.copy() for p in opt.params]

    want_norm, want = one_step(REFERENCE)
    got_norm, got = one_step(Counting(np, {name: NumpyModule() for name in FAMILIES}, {}))
    n = len(want)
    assert calls == [("clip", n), ("adamw", n)]
    _close(got_norm, want_norm, "norm")
    for g, w in zip(got, want):
        _close(g, w, "parameters after one step")


def test_small_device_arrays_are_reused_only_for_the_same_values():
    kernels = CudaKernels(np, {}, {})
    sizes = kernels._on_device((3, 5), np.int64)
    assert kernels._on_device((3, 5), np.int64) is sizes and sizes.tolist() == [3, 5]
    assert kernels._on_device((3, 6), np.int64).tolist() == [3, 6]
    assert kernels._on_device((3, 5), np.float32).dtype == np.float32
    for n in range(100):
        kernels._on_device((n,), np.int64)
    assert len(kernels._small_arrays) == 64 and kernels._on_device((99,), np.int64).tolist() == [99]
