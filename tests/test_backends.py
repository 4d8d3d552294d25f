"""Every fused kernel of every backend against the NumPy reference, through one helper.

``check_kernel`` runs one kernel (``KERNELS`` in backends/numpy_backend.py) on
the reference and on a backend, with inputs built from hypothesis-drawn sizes
(odd ones, T = 1) and magnitudes (up to 1e3), and compares every output. A
backward kernel is fed the values its own backend's forward saved (what is
saved is backend-specific). Unavailable backends skip with their reason.
Then the end-to-end check: 50 training steps give the same losses on every backend.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinylm import backends
from tinylm.backends.numpy_backend import KERNELS, NumpyKernels
from tinylm.models import GPT, GPTConfig
from tinylm.train import TrainConfig, new_state, train

REFERENCE = NumpyKernels(np)
OTHERS = [name for name in backends.REGISTRY if name != "numpy"]
TOLERANCE = {"float32": (1e-4, 2e-6), "float64": (1e-9, 1e-12)}  # (rtol, atol per unit of output scale)


def _usable(name: str):
    ok, reason = backends.availability(name)
    if not ok:
        pytest.skip(f"{name} unavailable: {reason}")
    return backends.get_backend(name)


# ---- one case per kernel: case(k, put, s) -> outputs ----------------------------------------
# ``k`` is the kernels object under test, ``put`` moves a host array to its backend and
# ``s`` holds the drawn sizes; inputs come from s's seeded generator, so every backend
# sees the same values. Backward cases run their own backend's forward first.

def _xent(k, put, s):
    logits = s.normal((s.N, s.V)) * s.magnitude
    targets = s.rng.integers(0, s.V, s.N)
    targets[s.rng.random(s.N) < 0.2] = -100                          # some ignored rows
    loss, saved, n_valid = k.softmax_xent_forward(put(logits), put(targets), -100)
    return (loss,), (saved, put(targets), n_valid)  # what is saved is the backend's own (cupy: not probs)


def xent_forward(k, put, s):
    return _xent(k, put, s)[0]


def xent_backward(k, put, s):
    saved, targets, n_valid = _xent(k, put, s)[1]
    return (k.softmax_xent_backward(put(np.asarray(1.7, s.dtype)), saved, targets, -100, n_valid),)


def _layernorm(k, put, s):
    x = put(s.normal((s.B, s.T, s.C)) * s.magnitude + s.magnitude)  # large mean: cancellation
    w, b, dy = put(s.normal((s.C,))), put(s.normal((s.C,))), put(s.normal((s.B, s.T, s.C)))
    y, mean, rstd = k.layernorm_forward(x, w, b, 1e-5)
    return (y, mean, rstd), (dy, x, w, mean, rstd)


def layernorm_forward(k, put, s):
    return _layernorm(k, put, s)[0]


def layernorm_backward(k, put, s):
    return k.layernorm_backward(*_layernorm(k, put, s)[1])


def gelu_forward(k, put, s):
    return (k.gelu_forward(put(s.normal((s.N, s.C)) * s.magnitude)),)


def gelu_backward(k, put, s):
    dy, x = put(s.normal((s.N, s.C))), put(s.normal((s.N, s.C)) * s.magnitude)
    return (k.gelu_backward(dy, x),)


def _attention(k, put, s):
    # scores up to ~ +-30: sharp, nearly one-hot rows, but not so large that an
    # ulp of a product flips which key wins (the backends' BLAS calls differ);
    # s.past cached keys before the T queries (a KV cache), 0 in training
    q, dy = (put(s.normal((s.B, s.H, s.T, s.D)) * m) for m in (s.sharp, 1))
    kk, v = (put(s.normal((s.B, s.H, s.past + s.T, s.D)) * m) for m in (s.sharp, 1))
    y, saved = k.attention_forward(q, kk, v, s.scale)
    return (y,), (dy, q, kk, v, saved, s.scale)


def attention_forward(k, put, s):
    return _attention(k, put, s)[0]


def attention_backward(k, put, s):
    return k.attention_backward(*_attention(k, put, s)[1])


def embedding_backward(k, put, s):
    dy, idx = s.normal((s.N, s.C)) * s.magnitude, s.rng.integers(0, s.V, s.N)
    return (k.embedding_backward(put(dy), put(idx), s.V),)


def adamw_update(k, put, s):
    n = s.N * s.C
    p, g, m, v = put(s.normal((n,))), s.normal((n,)) * s.magnitude, put(np.zeros(n, s.dtype)), \
        put(np.zeros(n, s.dtype))
    for step in (1, 2, 3):
        k.adamw_update(p, put(g * step), m, v, 1e-2, 0.9, 0.99, 1e-8, 0.1, step)
    return p, m, v


def _tensors(s):
    """The host values of three gradients (or parameters) of different shapes."""
    return [s.normal(shape) * s.magnitude for shape in ((s.N, s.C), (s.C,), (s.V,))]


def adamw_update_many(k, put, s):
    ps, gs = [put(p) for p in _tensors(s)], _tensors(s)
    ms, vs = ([put(np.zeros_like(g)) for g in gs] for _ in range(2))
    for step in (1, 2, 3):
        k.adamw_update_many(ps, [put(g * step) for g in gs], ms, vs, (0.1, 0.0, 0.1), 1e-2, 0.9, 0.99,
                            1e-8, step)
    return (*ps, *ms, *vs)


def clip_grad_norm_many(k, put, s):
    clipped, norm = k.clip_grad_norm_many([put(g) for g in _tensors(s)], 1.0)
    return (*clipped, norm)


def _lstm(k, put, s):
    hidden = s.D
    xw = put(s.normal((s.B, s.T, 4 * hidden)) * s.sharp)              # pre-activations up to ~ +-3
    h0, c0 = put(s.normal((s.B, hidden))), put(s.normal((s.B, hidden)))
    w_hh = put(s.normal((hidden, 4 * hidden)) / np.sqrt(hidden))
    h, c, gates = k.lstm_forward(xw, h0, c0, w_hh)
    dh, dc = put(s.normal((s.B, s.T, hidden))), put(s.normal((s.B, s.T, hidden)))
    return (h, c), (dh, dc, h0, c0, w_hh, h, c, gates)


def lstm_forward(k, put, s):
    return _lstm(k, put, s)[0]


def lstm_backward(k, put, s):
    return k.lstm_backward(*_lstm(k, put, s)[1])


CASES = {
    "softmax_xent_forward": xent_forward, "softmax_xent_backward": xent_backward,
    "layernorm_forward": layernorm_forward, "layernorm_backward": layernorm_backward,
    "gelu_forward": gelu_forward, "gelu_backward": gelu_backward,
    "attention_forward": attention_forward, "attention_backward": attention_backward,
    "embedding_backward": embedding_backward, "adamw_update": adamw_update,
    "adamw_update_many": adamw_update_many, "clip_grad_norm_many": clip_grad_norm_many,
    "lstm_forward": lstm_forward, "lstm_backward": lstm_backward,
}


class Sizes:
    """The drawn sizes and values of one example: a seeded generator and the shapes."""

    def __init__(self, dtype, seed, B, H, T, D, C, V, magnitude, past=0):
        self.dtype, self.seed = dtype, seed
        self.B, self.H, self.T, self.D, self.C, self.V, self.past = B, H, T, D, C, V, past
        self.N = B * T
        self.magnitude = magnitude
        self.sharp = min(magnitude, 3.0)
        self.scale = 1.0 / np.sqrt(D)

    def restart(self) -> "Sizes":
        """Reset the generator, so that the next case draws the same inputs as the last."""
        self.rng = np.random.default_rng(self.seed)
        return self

    def normal(self, shape):
        return self.rng.standard_normal(shape).astype(self.dtype)

    def __repr__(self):
        return (f"B={self.B} H={self.H} T={self.T} past={self.past} D={self.D} C={self.C} V={self.V} "
                f"magnitude={self.magnitude:g} {self.dtype}")


def check_kernel(kernel: str, name: str, sizes: Sizes) -> None:
    """``kernel`` of backend ``name`` matches the reference on ``sizes``: every output, same shape."""
    backend = _usable(name)
    want = CASES[kernel](REFERENCE, lambda a: a, sizes.restart())
    got = CASES[kernel](backend.kernels, backend.from_host, sizes.restart())
    rtol, atol = TOLERANCE[sizes.dtype]
    for i, (w, g) in enumerate(zip(want, got, strict=True)):
        w, g = np.asarray(w, dtype=np.float64), np.asarray(backend.to_host(g), dtype=np.float64)
        where = f"{kernel} on {name}, output {i}, {sizes}"
        assert g.shape == w.shape, f"{where}: shape {g.shape}, reference {w.shape}"
        diff = np.abs(g - w)
        scale = max(1.0, float(np.abs(w).max(initial=0.0)))
        bad = ~(diff <= atol * scale + rtol * np.abs(w))
        assert not bad.any(), (f"{where}: max abs diff {diff.max():.3g} "
                               f"({int(bad.sum())} of {w.size} outside rtol {rtol:g}, atol {atol * scale:.3g})")


def test_every_kernel_has_a_case():
    assert set(CASES) == set(KERNELS)


sizes = st.builds(
    Sizes,
    dtype=st.sampled_from(["float32", "float32", "float64"]),
    seed=st.integers(0, 2**32 - 1),
    B=st.integers(1, 3), H=st.integers(1, 3),
    T=st.sampled_from([1, 2, 5, 17, 64]), D=st.sampled_from([1, 3, 8, 16]),
    C=st.sampled_from([1, 7, 33, 128]), V=st.sampled_from([1, 5, 65]),
    magnitude=st.sampled_from([1.0, 30.0, 1e3]), past=st.sampled_from([0, 0, 1, 6]))


@pytest.mark.parametrize("name", OTHERS)
@pytest.mark.parametrize("kernel", KERNELS)
@given(sizes=sizes)
def test_kernel_matches_reference(kernel, name, sizes):
    check_kernel(kernel, name, sizes)


# ---- end to end: the same training run on every backend -----------------------------------

def _first_losses(name: str, n_steps: int = 50) -> list[float]:
    text = "".join(chr(97 + (i * i + 3 * i) % 23) for i in range(4000))  # deterministic, patterned
    ids = np.frombuffer(text.encode(), dtype=np.uint8).astype(np.int64) - 97
    cfg = GPTConfig(vocab_size=23, block_size=16, n_layer=2, n_head=2, n_embd=32)
    tcfg = TrainConfig(batch_size=4, max_iters=n_steps, log_interval=1, eval_interval=n_steps,
                       eval_iters=1, warmup_iters=5, seed=7)
    losses = []
    with backends.use(name):
        state = new_state(GPT(cfg, seed=3), ids, tcfg)
        train(state, ids[:200], tcfg,
              on_event=lambda e: losses.append(e["loss"]) if e["event"] == "step" else None)
    return losses


@pytest.mark.parametrize("name", OTHERS)
def test_first_50_training_losses_match_numpy(name):
    _usable(name)
    want, got = _first_losses("numpy"), _first_losses(name)
    assert len(got) == len(want) == 50
    diff = np.abs(np.array(got) - np.array(want))
    assert diff.max() < 1e-5, (f"{name}: training losses drift from numpy's; max abs diff "
                               f"{diff.max():.3g} at step {int(diff.argmax()) + 1} "
                               f"({got[int(diff.argmax())]} vs {want[int(diff.argmax())]})")

