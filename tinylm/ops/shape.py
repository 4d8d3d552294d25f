"""Moving values around: reshape, transpose, indexing, concat/split, where."""

from __future__ import annotations

from tinylm.tensor import Tensor, as_tensor, kernels, unbroadcast, xp

from .arith import _pair


# y = x viewed as `shape`;  dx = g viewed as x's shape
def reshape(x: Tensor, *shape) -> Tensor:
    shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
    return Tensor.from_op(x.data.reshape(shape), (x,), lambda g: (g.reshape(x.shape),), "reshape")


# y = x with axes permuted;  dx = g with the inverse permutation
def transpose(x: Tensor, *axes) -> Tensor:
    axes = axes[0] if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else axes
    axes = tuple(axes) if axes else tuple(reversed(range(x.ndim)))
    inverse = tuple(sorted(range(len(axes)), key=axes.__getitem__))
    return Tensor.from_op(x.data.transpose(axes), (x,),
                          lambda g: (g.transpose(inverse),), "transpose")


def swapaxes(x: Tensor, a: int, b: int) -> Tensor:
    axes = list(range(x.ndim))
    axes[a], axes[b] = axes[b], axes[a]
    return transpose(x, axes)


def _is_basic(key) -> bool:
    """True for keys made of ints, slices, None and Ellipsis (no repeated elements)."""
    parts = key if isinstance(key, tuple) else (key,)
    return all(isinstance(k, (int, slice)) or k is None or k is Ellipsis for k in parts)


# y = x[key];  dx = zeros with g scattered back to key (added, for repeated indices)
def getitem(x: Tensor, key) -> Tensor:
    if isinstance(key, Tensor):
        key = key.data
    elif isinstance(key, tuple):
        key = tuple(k.data if isinstance(k, Tensor) else k for k in key)

    def vjp(g):
        dx = xp().zeros(x.shape, dtype=g.dtype)
        if _is_basic(key):
            dx[key] = g
        else:
            xp().add.at(dx, key, g)
        return (dx,)
    return Tensor.from_op(x.data[key], (x,), vjp, "getitem")


# y = W[idx] (an embedding lookup);  dW = scatter-add of g into the rows idx
def embedding(weight: Tensor, idx) -> Tensor:
    """weight (V, C), idx (...) int -> (..., C)."""
    idx = idx.data if isinstance(idx, Tensor) else xp().asarray(idx)
    V, C = weight.shape

    def vjp(g):
        return (kernels().embedding_backward(g.reshape(-1, C), idx.reshape(-1), V),)
    return Tensor.from_op(weight.data[idx], (weight,), vjp, "embedding")


# y = [x_1, ..., x_n] joined on axis;  dx_i = the slice of g that came from x_i
def concat(tensors, axis: int = 0) -> Tensor:
    tensors = tuple(tensors)
    axis = axis % tensors[0].ndim
    ends, total = [], 0
    for t in tensors:
        total += t.shape[axis]
        ends.append(total)

    def vjp(g):
        return tuple(xp().split(g, ends[:-1], axis=axis))
    return Tensor.from_op(xp().concatenate([t.data for t in tensors], axis=axis),
                          tensors, vjp, "concat")


def split(x: Tensor, sections, axis: int = -1) -> list[Tensor]:
    """Split into ``sections`` equal parts (an int) or parts of the given sizes (a list).

    Each part is a slice of ``x``, so its VJP is getitem's.
    """
    axis = axis % x.ndim
    n = x.shape[axis]
    if isinstance(sections, int):
        if n % sections:
            raise ValueError(f"axis {axis} of size {n} does not split into {sections} equal parts")
        sizes = [n // sections] * sections
    else:
        sizes = list(sections)
        if sum(sizes) != n:
            raise ValueError(f"split sizes {sizes} do not add up to axis {axis}'s size {n}")
    parts, start = [], 0
    for size in sizes:
        key = (slice(None),) * axis + (slice(start, start + size),)
        parts.append(getitem(x, key))
        start += size
    return parts


# y = cond ? a : b;  da = cond ? g : 0,  db = cond ? 0 : g
def where(cond, a, b) -> Tensor:
    cond = cond.data if isinstance(cond, Tensor) else xp().asarray(cond)
    a, b = _pair(a, b)                                    # a Python number takes the other's dtype
    zero = xp().zeros((), dtype=a.dtype)

    def vjp(g):
        return (unbroadcast(xp().where(cond, g, zero), a.shape),
                unbroadcast(xp().where(cond, zero, g), b.shape))
    return Tensor.from_op(xp().where(cond, a.data, b.data), (a, b), vjp, "where")


# y = mask ? value : x;  dx = mask ? 0 : g
def masked_fill(x: Tensor, mask, value: float) -> Tensor:
    return where(mask, as_tensor(value, like=x), x)
