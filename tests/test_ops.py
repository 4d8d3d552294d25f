"""Every primitive in tinylm.ops through one helper, and the invariants of the fused ops.

``check_op`` runs an op in float64 on hypothesis-drawn shapes and values: its forward
against a plain NumPy definition, its gradient against central finite differences
(tinylm.testing.check_gradients, which also fails when an op writes to its inputs).
``test_every_primitive_is_checked`` keeps the list complete as ops are added.
"""

import math

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tinylm import Tensor, backends, ops
from tinylm.testing import check_causal, check_gradients, check_permutation_equivariant
from tinylm.testing import strategies as tst

COVERED: set[str] = set()


def covers(*names):
    """Record which primitives a test checks (for test_every_primitive_is_checked)."""
    COVERED.update(names)
    return lambda test: test


def check_op(fn, *inputs, reference=None):
    """Forward vs ``reference`` (NumPy, float64) and gradient vs finite differences."""
    if reference is not None:
        args = [Tensor(x) if isinstance(x, np.ndarray) and x.dtype.kind == "f" else x
                for x in inputs]
        got = fn(*args)
        got = got if isinstance(got, (list, tuple)) else [got]
        want = reference(*inputs)
        want = want if isinstance(want, (list, tuple)) else [want]
        for g, w in zip(got, want):
            np.testing.assert_allclose(g.numpy(), w, rtol=1e-10, atol=1e-12)
    check_gradients(fn, *inputs)


def arrays(data, shape, **kwargs):
    return data.draw(tst.float_arrays(shape, **kwargs))


def test_every_primitive_is_checked():
    assert set(ops.__all__) - COVERED == set()


# ---- arithmetic ---------------------------------------------------------------------------------

BINARY = {
    "add": (ops.add, np.add, {}),
    "sub": (ops.sub, np.subtract, {}),
    "mul": (ops.mul, np.multiply, {}),
    "div": (ops.div, np.divide, {"min_abs": 0.5}),
}


@covers(*BINARY)
@given(tst.broadcastable_shapes(), st.sampled_from(sorted(BINARY)), st.data())
def test_binary_arithmetic_broadcasts(shapes, name, data):
    op, reference, b_kwargs = BINARY[name]
    check_op(op, arrays(data, shapes[0]), arrays(data, shapes[1], **b_kwargs), reference=reference)


@given(tst.shapes(), st.floats(0.5, 3.0), st.data())
def test_python_numbers_on_either_side(shape, c, data):
    x = arrays(data, shape, min_abs=0.5)
    check_op(lambda x: (c - x) * 2.0 + x / c - c / x + (1.0 + x), x,
             reference=lambda x: (c - x) * 2.0 + x / c - c / x + (1.0 + x))


UNARY = {
    "neg": (ops.neg, np.negative, {}),
    "exp": (ops.exp, np.exp, {"magnitude": 3.0}),
    "log": (ops.log, np.log, {"positive": True, "min_abs": 0.1, "magnitude": 4.0}),
    "tanh": (ops.tanh, np.tanh, {"magnitude": 3.0}),
    "gelu": (ops.gelu, lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3))),
             {"magnitude": 4.0}),
    "relu": (ops.relu, lambda x: np.maximum(x, 0), {"min_abs": 1e-3}),
}


@covers(*UNARY)
@given(tst.shapes(), st.sampled_from(sorted(UNARY)), st.data())
def test_elementwise(shape, name, data):
    op, reference, kwargs = UNARY[name]
    check_op(op, arrays(data, shape, **kwargs), reference=reference)


@covers("pow")
@given(tst.broadcastable_shapes(), st.data())
def test_pow(shapes, data):
    base = arrays(data, shapes[0], positive=True, min_abs=0.5, magnitude=2.0)
    check_op(ops.pow, base, arrays(data, shapes[1], magnitude=2.0), reference=np.power)
    x = arrays(data, shapes[0], magnitude=2.0)  # any sign, constant integer exponent
    check_op(lambda x: x ** 3, x, reference=lambda x: x ** 3)


@covers("matmul")
@given(tst.matmul_shapes(), st.data())
def test_matmul_batched_and_broadcast(shapes, data):
    check_op(ops.matmul, arrays(data, shapes[0]), arrays(data, shapes[1]), reference=np.matmul)


@given(tst.shapes(min_dims=3, max_dims=4), st.integers(1, 4), st.data())
def test_matmul_with_a_weight_matrix(shape, m, data):
    w = arrays(data, (shape[-1], m))
    check_op(ops.matmul, arrays(data, shape), w, reference=np.matmul)


@covers("linear")
@given(tst.shapes(min_dims=1, max_dims=3), st.integers(1, 4), st.booleans(), st.data())
def test_linear_is_matmul_plus_bias(shape, m, with_bias, data):
    x, w = arrays(data, shape), arrays(data, (shape[-1], m))
    if with_bias:
        check_op(ops.linear, x, w, arrays(data, (m,)), reference=lambda x, w, b: x @ w + b)
    else:
        check_op(ops.linear, x, w, reference=np.matmul)


def test_linear_refuses_mismatched_shapes():
    x, w = Tensor(np.ones((2, 3))), Tensor(np.ones((3, 4)))
    with pytest.raises(ValueError, match="do not fit"):
        ops.linear(x, Tensor(np.ones((2, 4))))
    with pytest.raises(ValueError, match="do not fit"):
        ops.linear(x, w, Tensor(np.ones(3)))


def test_a_tensor_used_twice_accumulates_its_gradient():
    check_op(lambda x: x * x + ops.exp(x) * x, np.linspace(-1, 1, 6).reshape(2, 3))


# ---- reductions and the softmax family -------------------------------------------------------

@st.composite
def shape_and_axis(draw, max_dims=3):
    shape = draw(tst.shapes(max_dims=max_dims))
    ndim = len(shape)
    axis = draw(st.one_of(st.none(), st.integers(-ndim, ndim - 1),
                          st.lists(st.integers(0, ndim - 1), min_size=1, unique=True).map(tuple)))
    return shape, axis


REDUCTIONS = {"sum": (ops.sum, np.sum), "mean": (ops.mean, np.mean), "max": (ops.max, np.max)}


@covers(*REDUCTIONS)
@given(shape_and_axis(), st.booleans(), st.sampled_from(sorted(REDUCTIONS)), st.data())
def test_reductions(shape_axis, keepdims, name, data):
    (shape, axis), (op, reference) = shape_axis, REDUCTIONS[name]
    x = data.draw(tst.distinct_arrays(shape)) if name == "max" else arrays(data, shape)
    check_op(lambda x: op(x, axis=axis, keepdims=keepdims), x,
             reference=lambda x: reference(x, axis=axis, keepdims=keepdims))


def _np_softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@covers("softmax", "log_softmax")
@given(tst.shapes(), st.data())
def test_softmax_and_log_softmax(shape, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = arrays(data, shape, magnitude=3.0)
    check_op(lambda x: ops.softmax(x, axis), x, reference=lambda x: _np_softmax(x, axis))
    check_op(lambda x: ops.log_softmax(x, axis), x,
             reference=lambda x: np.log(_np_softmax(x, axis)))


@given(tst.float_arrays(tst.shapes(min_dims=2), magnitude=80.0), st.floats(-50, 50))
def test_softmax_rows_sum_to_one_and_ignore_a_shift(x, shift):
    x = x.astype(np.float32)  # the default dtype, with logits large enough to overflow a naive exp
    y = ops.softmax(Tensor(x)).numpy()
    np.testing.assert_allclose(y.sum(axis=-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(ops.softmax(Tensor(x + np.float32(shift))).numpy(), y, atol=1e-5)
    assert np.all(np.isfinite(ops.log_softmax(Tensor(x)).numpy()))


# ---- moving values around ------------------------------------------------------------------------

@covers("reshape", "transpose", "swapaxes")
@given(tst.shapes(max_dims=4), st.data())
def test_reshape_and_axis_permutations(shape, data):
    x = arrays(data, shape)
    check_op(lambda x: ops.reshape(x, -1, 1), x, reference=lambda x: x.reshape(-1, 1))
    axes = tuple(data.draw(st.permutations(range(len(shape)))))
    check_op(lambda x: ops.transpose(x, axes), x, reference=lambda x: x.transpose(axes))
    a, b = data.draw(st.integers(0, len(shape) - 1)), data.draw(st.integers(0, len(shape) - 1))
    check_op(lambda x: ops.swapaxes(x, a, b), x, reference=lambda x: x.swapaxes(a, b))


@covers("getitem")
@given(tst.shapes(max_dims=3), st.data())
def test_getitem_slices_and_gathers_with_repeats(shape, data):
    x = arrays(data, shape)
    key = tuple(slice(data.draw(st.integers(0, n - 1)), None, data.draw(st.integers(1, 2)))
                for n in shape)
    check_op(lambda x: x[key], x, reference=lambda x: x[key])
    rows = data.draw(st.lists(st.integers(0, shape[0] - 1), min_size=1, max_size=6))
    rows = np.asarray(rows)  # repeated rows must add their gradients
    check_op(lambda x: x[rows], x, reference=lambda x: x[rows])


@covers("embedding")
@given(st.integers(2, 6), st.integers(1, 4), tst.token_batches(6), st.data())
def test_embedding_scatter_adds_repeated_ids(V, C, idx, data):
    idx = idx % V
    check_op(lambda w: ops.embedding(w, idx), arrays(data, (V, C)), reference=lambda w: w[idx])


@covers("concat", "split")
@given(tst.shapes(max_dims=3), st.integers(1, 3), st.data())
def test_concat_and_split(shape, n, data):
    axis = data.draw(st.integers(0, len(shape) - 1))
    parts = [arrays(data, shape) for _ in range(n)]
    check_op(lambda *ps: ops.concat(ps, axis=axis), *parts,
             reference=lambda *ps: np.concatenate(ps, axis=axis))
    whole = np.concatenate(parts, axis=axis)
    check_op(lambda x: ops.split(x, n, axis=axis), whole,
             reference=lambda x: np.split(x, n, axis=axis))
    sizes = [shape[axis] * n - 1, 1] if shape[axis] * n > 1 else [1]
    check_op(lambda x: ops.split(x, sizes, axis=axis), whole,
             reference=lambda x: np.split(x, np.cumsum(sizes)[:-1], axis=axis))


@covers("where", "masked_fill")
@given(tst.broadcastable_shapes(num_shapes=3), st.data())
def test_where_and_masked_fill(shapes, data):
    cond = arrays(data, shapes[0]) > 0
    a, b = arrays(data, shapes[1]), arrays(data, shapes[2])
    check_op(lambda a, b: ops.where(cond, a, b), a, b, reference=lambda a, b: np.where(cond, a, b))
    x = arrays(data, np.broadcast_shapes(*shapes))  # the mask broadcasts against x
    check_op(lambda x: ops.masked_fill(x, cond, -2.0), x, reference=lambda x: np.where(cond, -2.0, x))


# ---- the transformer's fused ops ----------------------------------------------------------------

def _np_layer_norm(x, w, b, eps=1e-5):
    return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps) * w + b


@covers("layer_norm")
@given(tst.shapes(min_dims=1, max_dims=3, min_side=2), st.data())
def test_layer_norm(shape, data):
    C = shape[-1]
    x = arrays(data, shape, magnitude=2.0) + np.arange(C) * 0.1  # the ramp spreads zero rows
    assume(np.all(x.std(-1) > 0.1))  # away from the eps-dominated regime of near-constant rows
    check_op(ops.layer_norm, x, arrays(data, (C,)), arrays(data, (C,)), reference=_np_layer_norm)


@given(tst.float_arrays(tst.shapes(min_dims=2, min_side=2), magnitude=100.0))
def test_layer_norm_rows_have_zero_mean_and_unit_variance(x):
    x = x + np.arange(x.shape[-1])  # the ramp spreads zero rows
    assume(np.all(x.std(-1) > 0.1))
    C = x.shape[-1]
    y = ops.layer_norm(Tensor(x), Tensor(np.ones(C)), Tensor(np.zeros(C))).numpy()
    var = x.var(-1)
    np.testing.assert_allclose(y.mean(-1), 0.0, atol=1e-9)
    np.testing.assert_allclose(y.var(-1), var / (var + 1e-5), rtol=1e-9)


@covers("dropout")
@given(tst.shapes(), st.sampled_from([0.0, 0.25, 0.5]), st.data())
def test_dropout(shape, p, data):
    x = arrays(data, shape)

    def fixed_mask_dropout(x):  # reseed so that every finite-difference pass draws the same mask
        backends.current().seed(3)
        return ops.dropout(x, p)
    check_op(fixed_mask_dropout, x)
    assert ops.dropout(Tensor(x), p, training=False).numpy().tolist() == x.tolist()


def test_dropout_keeps_the_expectation():
    backends.current().seed(0)
    y = ops.dropout(Tensor(np.ones(100_000)), 0.25).numpy()
    assert abs((y == 0).mean() - 0.25) < 0.01 and abs(y.mean() - 1.0) < 0.02
    assert set(np.unique(y)) == {0.0, np.float64(1 / 0.75)}


def _np_cross_entropy(z, t, ignore=-100):
    z = z.reshape(-1, z.shape[-1])
    t = t.reshape(-1)
    keep = t != ignore
    logp = np.log(_np_softmax(z, -1))[keep, t[keep]]
    return -logp.mean() if keep.any() else 0.0


@covers("cross_entropy")
@given(tst.shapes(max_dims=2), st.integers(2, 5), st.data())
def test_cross_entropy_with_ignored_targets(lead, V, data):
    z = arrays(data, (*lead, V), magnitude=3.0)
    t = data.draw(hnp.arrays(np.int64, lead, elements=st.integers(-1, V - 1)))
    t[t == -1] = -100  # some rows ignored
    check_op(lambda z: ops.cross_entropy(z, t), z, reference=lambda z: _np_cross_entropy(z, t))


@given(st.integers(2, 50), st.integers(1, 8))
def test_cross_entropy_of_uniform_logits_is_log_vocab(V, N):
    loss = ops.cross_entropy(Tensor(np.zeros((N, V))), np.arange(N) % V)
    assert loss.item() == pytest.approx(math.log(V), rel=1e-12)


def test_cross_entropy_ignores_rows_entirely():
    z = Tensor(np.random.default_rng(0).standard_normal((4, 3)), requires_grad=True)
    t = np.array([1, -100, 2, -100])
    loss = ops.cross_entropy(z, t)
    assert loss.item() == pytest.approx(_np_cross_entropy(z.numpy(), t), rel=1e-12)
    loss.backward()
    assert not z.grad[[1, 3]].any() and z.grad[[0, 2]].all()
    none_kept = ops.cross_entropy(Tensor(np.ones((2, 3)), requires_grad=True), np.full(2, 7),
                                  ignore_index=7)
    assert none_kept.item() == 0.0


def _np_causal_attention(q, k, v):
    T, D = q.shape[-2:]
    s = q @ k.swapaxes(-1, -2) / math.sqrt(D) + np.triu(np.full((T, T), -np.inf), 1)
    return _np_softmax(s, -1) @ v


def _np_causal_self_attention(qkv, n_head):
    B, T, C3 = qkv.shape
    q, k, v = (t.reshape(B, T, n_head, -1).transpose(0, 2, 1, 3) for t in np.split(qkv, 3, axis=-1))
    return _np_causal_attention(q, k, v).transpose(0, 2, 1, 3).reshape(B, T, C3 // 3)


@covers("causal_self_attention")
@given(st.integers(1, 2), st.integers(1, 5), st.integers(1, 3), st.integers(1, 3), st.data())
def test_causal_self_attention_is_causal_attention_per_head(B, T, H, D, data):
    qkv = arrays(data, (B, T, 3 * H * D), magnitude=2.0)
    check_op(lambda x: ops.causal_self_attention(x, H), qkv,
             reference=lambda x: _np_causal_self_attention(x, H))


def test_causal_self_attention_refuses_a_width_that_does_not_split_into_heads():
    with pytest.raises(ValueError, match="n_head"):
        ops.causal_self_attention(Tensor(np.ones((1, 2, 9))), 2)


def _qkv_attention(causal):
    """x (B, T, 3D) -> attention with q, k, v the thirds of the last axis, one head."""
    def attend(x):
        if causal:
            return ops.causal_self_attention(x, 1)
        B, T, D3 = x.shape
        q, k, v = (t.reshape(B, 1, T, D3 // 3) for t in x.split(3, axis=-1))
        scores = (q @ k.swapaxes(-1, -2)) * (1.0 / math.sqrt(D3 // 3))
        return (ops.softmax(scores) @ v).reshape(B, T, D3 // 3)
    return attend


@given(tst.float_arrays(st.tuples(st.integers(1, 3), st.integers(2, 6), st.just(6)), magnitude=2.0))
def test_causal_attention_ignores_the_future(x):
    check_causal(_qkv_attention(causal=True), x)


@given(tst.float_arrays(st.tuples(st.integers(1, 3), st.integers(2, 6), st.just(6)), magnitude=2.0))
def test_unmasked_attention_is_permutation_equivariant(x):
    check_permutation_equivariant(_qkv_attention(causal=False), x)
