"""Mutation tests: plant a bug, and the toolkit must fail with a message that finds it.

Each planted bug is a small wrong op (built with Tensor.from_op), a wrong kernel
monkeypatched onto the active backend, a faulty Module, or a fake backend. A
toolkit that passes one of them is a defect. Every check is also run on the
correct version first, so a failure is the bug's and not the toolkit's.
"""

import math
import subprocess
import sys
import types

import numpy as np
import pytest
from hypothesis import given

from tinylm import GPT, GPTConfig, Tensor, backends, ops
from tinylm.backends.numpy_backend import NumpyBackend, NumpyKernels
from tinylm.tensor import unbroadcast
from tinylm.testing import (check_backend_parity, check_batch_independent, check_causal,
                            check_gradients, check_permutation_equivariant, check_vjp)
from tinylm.testing import strategies as tst

rng = np.random.default_rng(0)
A, B1, SQ = rng.standard_normal((3, 4)), rng.standard_normal((1, 4)), rng.standard_normal((4, 4))


def caught(check, *args, match, **kwargs):
    """Run a toolkit check that must fail; return its message (which must match ``match``)."""
    with pytest.raises(AssertionError, match=match) as info:
        check(*args, **kwargs)
    return str(info.value)


# ---- wrong VJPs: check_gradients and check_vjp -----------------------------------------------

def mul_missing_factor(a, b):  # da should be g b
    return Tensor.from_op(a.data * b.data, (a, b),
                          lambda g: (unbroadcast(g, a.shape), unbroadcast(g * a.data, b.shape)), "mul")


def matmul_wrong_transpose(a, b):  # dA should be G B^T
    return Tensor.from_op(a.data @ b.data, (a, b), lambda g: (g @ b.data, a.data.T @ g), "matmul")


def add_no_unbroadcast(a, b):  # db should be summed back to b's shape
    return Tensor.from_op(a.data + b.data, (a, b), lambda g: (g, g), "add")


def add_mean_not_sum(a, b):  # right shape, wrong reduction
    return Tensor.from_op(a.data + b.data, (a, b),
                          lambda g: (g, g.mean(axis=0, keepdims=True)), "add")


def softmax_missing_y(x):  # dx should be y ⊙ (g − Σ g y)
    e = np.exp(x.data - x.data.max(-1, keepdims=True))
    y = e / e.sum(-1, keepdims=True)
    return Tensor.from_op(y, (x,), lambda g: (g - (g * y).sum(-1, keepdims=True),), "softmax")


def scale_in_place(x):  # writes to its input
    x.data *= 2.0
    return Tensor.from_op(x.data.copy(), (x,), lambda g: (2 * g,), "scale")


@pytest.mark.parametrize("buggy, right, inputs, match", [
    (mul_missing_factor, ops.mul, (A, B1), r"input 0 of shape \(3, 4\).*worst at index \(\d, \d\): "
                                           r"analytic .*numeric .*abs error .*rel error"),
    (matmul_wrong_transpose, ops.matmul, (SQ, SQ), r"gradient check failed for input 0"),
    (add_no_unbroadcast, ops.add, (A, B1), r"gradient of input 1 has shape \(3, 4\) but input 1 has "
                                           r"shape \(1, 4\).*unbroadcast"),
    (add_mean_not_sum, ops.add, (A, B1), r"gradient check failed for input 1 of shape \(1, 4\)"),
    (softmax_missing_y, ops.softmax, (A,), r"gradient check failed for input 0"),
    (scale_in_place, lambda x: x * 2.0, (A,), r"modified input 0 in place"),
], ids=["mul-missing-factor", "matmul-wrong-transpose", "add-no-unbroadcast", "add-mean-not-sum",
        "softmax-missing-y", "writes-its-input"])
def test_check_gradients_catches_a_wrong_vjp(buggy, right, inputs, match):
    check_gradients(right, *inputs)
    caught(check_gradients, buggy, *inputs, match=match)
    if buggy is not scale_in_place:
        caught(check_vjp, buggy, *inputs, match=r"input \d|modified")


def test_the_cotangent_is_independent_of_seed_0_user_data():
    # ⟨u, y⟩ for y = x / rms(x) has zero gradient when u ∥ x; had the toolkit drawn u from
    # default_rng(0), like this x, the missing 1/r below would hide (found writing docs/testing.md)
    x = np.random.default_rng(0).standard_normal((5, 8)) * 3

    def normalise_missing_factor(x):
        xhat = x.data / np.sqrt((x.data * x.data).mean(-1, keepdims=True))
        return Tensor.from_op(xhat, (x,), lambda g: (g - xhat * (g * xhat).mean(-1, keepdims=True),),
                              "normalise")
    caught(check_gradients, normalise_missing_factor, x, match=r"input 0 of shape \(5, 8\)")


def test_messages_use_the_given_names():
    caught(check_gradients, mul_missing_factor, A, B1, names=("x", "w"), match=r"input 0 \('x'\)")


def kernel(monkeypatch, name, fn):
    """Replace one fused kernel of the active backend for this test."""
    monkeypatch.setattr(backends.current().kernels, name, types.MethodType(fn, backends.current().kernels))


def layernorm_backward_missing_term_3(self, dy, x, w, mean, rstd):
    xhat = (x - mean) * rstd
    dxhat = dy * w
    dx = (dxhat - dxhat.mean(-1, keepdims=True)) * rstd
    return dx, (dy * xhat).sum(0), dy.sum(0)


def attention_backward_missing_scale(self, dy, q, k, v, P, scale):
    return NumpyKernels.attention_backward(self, dy, q, k, v, P, 1.0)


def embedding_backward_assigns(self, dy, idx, vocab_size):  # repeated ids overwrite, not add
    dW = np.zeros((vocab_size, dy.shape[1]), dtype=dy.dtype)
    dW[idx] = dy
    return dW


def gelu_backward_off_by_a_percent(self, dy, x):
    return NumpyKernels.gelu_backward(self, dy, x) * 1.01


@pytest.mark.parametrize("name, buggy, op, inputs, match", [
    ("layernorm_backward", layernorm_backward_missing_term_3, ops.layer_norm,
     (A, rng.standard_normal(4), rng.standard_normal(4)), r"input 0 of shape \(3, 4\)"),
    ("attention_backward", attention_backward_missing_scale, lambda qkv: ops.causal_self_attention(qkv, 2),
     (rng.standard_normal((1, 3, 24)),), r"input 0 of shape \(1, 3, 24\)"),
    ("embedding_backward", embedding_backward_assigns, lambda w: ops.embedding(w, np.array([1, 1, 0])),
     (rng.standard_normal((3, 2)),), r"input 0 of shape \(3, 2\).*worst at index \(1, \d\)"),
    ("gelu_backward", gelu_backward_off_by_a_percent, ops.gelu, (A,), r"input 0"),
], ids=["layernorm-missing-term", "attention-missing-scale", "embedding-no-scatter-add", "gelu-1%-off"])
def test_check_gradients_catches_a_wrong_kernel(monkeypatch, name, buggy, op, inputs, match):
    check_gradients(op, *inputs)
    kernel(monkeypatch, name, buggy)
    caught(check_gradients, op, *inputs, match=match)


def test_check_vjp_finds_a_wrong_kernel_inside_a_whole_gpt(monkeypatch):
    cfg = GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16)
    model = GPT(cfg, seed=0)
    idx = rng.integers(0, 11, (2, 8))
    check_vjp(model, idx, idx)
    kernel(monkeypatch, "gelu_backward", gelu_backward_off_by_a_percent)
    message = caught(check_vjp, model, idx, idx, match=r"VJP check failed for parameter '")
    # everything upstream of the MLPs' GELU fails; the head's LayerNorm after them passes
    assert "blocks.1.mlp.c_fc.weight" in message and "ln_f" not in message
    assert model.parameters()[0].dtype == np.float32  # the check restored the model's dtype


# ---- leaky masks and other broken properties -------------------------------------------------

def leaky_causal_mask(self, n_queries, n_keys):  # key t+1 visible to query t
    blocked = np.triu(np.ones((n_keys, n_keys), dtype=bool), k=2)[n_keys - n_queries:]
    return np.where(blocked, -np.inf, 0.0).astype(np.float32)


def attention(x, T_mask=None):
    """x (B, T, 3D) -> one-head attention on its thirds; T_mask (T, T) True = blocked."""
    B, T, D3 = x.shape
    q, k, v = (t.reshape(B, 1, T, D3 // 3) for t in x.split(3, axis=-1))
    scores = (q @ k.swapaxes(-1, -2)) * (1.0 / math.sqrt(D3 // 3))
    if T_mask is not None:
        scores = ops.masked_fill(scores, T_mask(T), -np.inf)
    return (ops.softmax(scores) @ v).reshape(B, T, D3 // 3)


X = rng.standard_normal((2, 5, 6))


def test_check_causal_catches_a_leaky_mask_in_a_layer():
    check_causal(lambda x: attention(x, lambda T: np.triu(np.ones((T, T), bool), k=1)), X)
    caught(check_causal, lambda x: attention(x, lambda T: np.triu(np.ones((T, T), bool), k=2)), X,
           match=r"not causal: changing only the inputs at positions > 0 \(axis 1\) changed the "
                 r"output at position 0 by up to")
    caught(check_causal, attention, X, match="not causal")  # no mask at all


def test_check_causal_catches_a_leaky_kernel_mask_through_the_gpt(monkeypatch):
    model = GPT(GPTConfig(vocab_size=7, block_size=6, n_layer=1, n_head=2, n_embd=8), seed=0)
    idx = rng.integers(0, 7, (2, 6))
    check_causal(lambda i: model(i)[0], idx, vocab_size=7)
    kernel(monkeypatch, "causal_mask", leaky_causal_mask)
    caught(check_causal, lambda i: model(i)[0], idx, vocab_size=7, match="GPT|not causal")


def test_check_permutation_equivariant_catches_a_positional_term():
    check_permutation_equivariant(attention, X)
    positional = lambda x: attention(x + np.arange(x.shape[1])[:, None])  # noqa: E731
    caught(check_permutation_equivariant, positional, X,
           match=r"not permutation-equivariant along axis 1: permuting the inputs by \[")
    caught(check_permutation_equivariant, lambda x: attention(
        x, lambda T: np.triu(np.ones((T, T), bool), k=1)), X, match="a positional term or a mask")


def test_check_batch_independent_catches_statistics_across_the_batch():
    per_example = lambda x: x - x.mean(axis=1, keepdims=True)  # noqa: E731
    check_batch_independent(per_example, X)
    across_batch = lambda x: x - x.mean(axis=0, keepdims=True)  # noqa: E731
    caught(check_batch_independent, across_batch, X,
           match=r"example 0's output changed by up to .* when only the other examples changed")
    by_batch_size = lambda x: x * float(x.shape[0])  # noqa: E731
    caught(check_batch_independent, by_batch_size, X,
           match=r"example 0 gives a different output in a batch of 2 than alone")


# ---- backend parity -----------------------------------------------------------------------------

def fake_backend(monkeypatch, name, kernels=None, available=(True, "")):
    """Register a backend ``name`` for this test; its kernels default to the reference."""
    module = types.ModuleType(f"tinylm_test_backend_{name}")
    module.NAME = name
    module.available = lambda: available
    module.create = lambda: type(f"{name}Backend", (NumpyBackend,), {"name": name})(
        np, kernels or NumpyKernels(np))
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(backends.REGISTRY, name, module.__name__)
    monkeypatch.setattr(backends, "_created", dict(backends._created))


class OffGelu(NumpyKernels):
    gelu_backward = gelu_backward_off_by_a_percent


class CrashingAttention(NumpyKernels):
    def attention_forward(self, q, k, v, scale):
        raise NotImplementedError("no attention here")


CFG = GPTConfig(vocab_size=9, block_size=6, n_layer=1, n_head=2, n_embd=8)
IDX = rng.integers(0, 9, (2, 6))


def test_parity_reports_unavailable_backends_as_skipped_not_passed(monkeypatch):
    fake_backend(monkeypatch, "same")
    fake_backend(monkeypatch, "absent", available=(False, "needs a quantum computer"))
    report = check_backend_parity(lambda: GPT(CFG), (IDX, IDX), backends=("same", "absent"))
    assert report.passed == ["same"] and report.compared == ["same"]
    assert report.skipped == {"absent": "needs a quantum computer"}
    assert "absent  skipped    needs a quantum computer" in str(report)


def test_parity_catches_a_wrong_kernel_in_a_backend(monkeypatch):
    fake_backend(monkeypatch, "offgelu", OffGelu(np))
    x = rng.standard_normal((3, 5))
    message = caught(check_backend_parity, ops.gelu, (x,), backends=("offgelu",),
                     match=r"backend parity failed for offgelu")
    assert "grad of input 0: max abs diff" in message and "output 0" not in message
    message = caught(check_backend_parity, lambda: GPT(CFG), (IDX, IDX), backends=("offgelu",),
                     match=r"offgelu\s+FAILED")
    assert "grad of parameter 'blocks.0.mlp.c_fc.weight'" in message


def test_parity_reports_a_crashing_backend_as_failed(monkeypatch):
    fake_backend(monkeypatch, "crash", CrashingAttention(np))
    report = check_backend_parity(lambda: GPT(CFG), (IDX,), backends=("crash",), raise_on_failure=False)
    assert report.failed == ["crash"] and "NotImplementedError: no attention here" in str(report)


def test_parity_catches_an_unseeded_factory(monkeypatch):
    fake_backend(monkeypatch, "same")
    seeds = iter(range(100))
    caught(check_backend_parity, lambda: GPT(CFG, seed=next(seeds)), (IDX,), backends=("same",),
           match=r"initial parameter '.*the factory must build identical modules")


def test_parity_over_the_real_backends_of_this_machine():
    report = check_backend_parity(lambda: GPT(CFG), (IDX, IDX))
    print(report)
    assert set(report.compared) | set(report.skipped) | {"numpy"} == set(backends.REGISTRY)


# ---- the package: lazy hypothesis, strategies ---------------------------------------------------

def test_the_checks_import_without_hypothesis_and_strategies_say_how_to_get_it():
    code = ("import sys; sys.modules['hypothesis'] = None\n"
            "from tinylm.testing import check_gradients, check_backend_parity, check_module\n"
            "import tinylm.testing as t\n"
            "try:\n    t.strategies\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'tinylm[test]'" in out.stdout


@given(tst.float_arrays(tst.shapes(), magnitude=3.0, min_abs=0.5))
def test_float_arrays_keep_their_bounds(x):
    assert np.all((np.abs(x) >= 0.5) & (np.abs(x) <= 3.0)) and x.dtype == np.float64


@given(tst.distinct_arrays(tst.shapes(), spacing=0.1))
def test_distinct_arrays_are_spaced(x):
    v = np.sort(x.ravel())
    assert np.all(np.diff(v) >= 0.1 - 1e-12)


@given(tst.attention_masks(5))
def test_attention_masks_leave_the_diagonal_visible(mask):
    assert mask.shape == (5, 5) and not mask.diagonal().any()


@given(tst.gpt_batches())
def test_gpt_batches_fit_their_config(batch):
    cfg, idx, targets = batch
    assert idx.shape == targets.shape and idx.shape[1] <= cfg.block_size
    assert 0 <= idx.min() and idx.max() < cfg.vocab_size and cfg.n_embd % cfg.n_head == 0
