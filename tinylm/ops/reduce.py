"""Reductions and the softmax family: forward and VJP side by side."""

from __future__ import annotations

from tinylm.tensor import Tensor, xp


def _axes(axis, ndim: int) -> tuple:
    if axis is None:
        return tuple(range(ndim))
    axis = (axis,) if isinstance(axis, int) else tuple(axis)
    return tuple(a % ndim for a in axis)


def _expand(g, axes: tuple, keepdims: bool):
    """Re-insert reduced axes into ``g`` so it broadcasts against the input."""
    return g if keepdims else xp().expand_dims(g, axes)


# y = Σ_axes x;  dx = broadcast(g)
def sum(x: Tensor, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001
    axes = _axes(axis, x.ndim)
    y = x.data.sum(axis=axes, keepdims=keepdims)
    return Tensor.from_op(y, (x,), lambda g: (
        xp().broadcast_to(_expand(g, axes, keepdims), x.shape),), "sum")


# y = Σ_axes x / n;  dx = broadcast(g) / n
def mean(x: Tensor, axis=None, keepdims: bool = False) -> Tensor:
    axes = _axes(axis, x.ndim)
    n = 1
    for a in axes:
        n *= x.shape[a]
    y = x.data.mean(axis=axes, keepdims=keepdims)
    return Tensor.from_op(y, (x,), lambda g: (
        xp().broadcast_to(_expand(g, axes, keepdims) / n, x.shape),), "mean")


# y = max_axes x;  dx = g where x attains the max, shared equally among ties
def max(x: Tensor, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001
    axes = _axes(axis, x.ndim)
    y = x.data.max(axis=axes, keepdims=keepdims)

    def vjp(g):
        hit = x.data == _expand(y, axes, keepdims)
        share = hit / hit.sum(axis=axes, keepdims=True)
        return (share.astype(x.dtype) * _expand(g, axes, keepdims),)
    return Tensor.from_op(y, (x,), vjp, "max")


# y = e^(x - max) / Σ e^(x - max);  dx = y ⊙ (g - Σ_j g_j y_j)
def softmax(x: Tensor, axis: int = -1) -> Tensor:
    module = xp()
    e = module.exp(x.data - x.data.max(axis=axis, keepdims=True))
    y = e / e.sum(axis=axis, keepdims=True)
    return Tensor.from_op(y, (x,), lambda g: (
        y * (g - (g * y).sum(axis=axis, keepdims=True)),), "softmax")


# y = x - logsumexp(x);  dx = g - softmax(x) Σ_j g_j
def log_softmax(x: Tensor, axis: int = -1) -> Tensor:
    module = xp()
    shifted = x.data - x.data.max(axis=axis, keepdims=True)
    y = shifted - module.log(module.exp(shifted).sum(axis=axis, keepdims=True))
    return Tensor.from_op(y, (x,), lambda g: (
        g - module.exp(y) * g.sum(axis=axis, keepdims=True),), "log_softmax")
