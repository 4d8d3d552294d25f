"""Tensor and the reverse-mode engine.

A Tensor wraps an array of the active backend (NumPy, Numba's NumPy arrays, or
CuPy on a GPU). Every operation (tinylm/ops/) returns a new Tensor that
remembers its parents and a VJP: a function from the gradient of the output to
the gradients of the parents. ``backward()`` sorts the graph topologically and
runs the VJPs in reverse order, summing gradients where a tensor was used twice.
Its operators (``a + b``, ``a @ b``, ``x[i]``) are those primitives, installed by
``tinylm.ops`` (which ``import tinylm``'s names and every model load first).
"""

from __future__ import annotations

from contextlib import contextmanager

from tinylm import backends

_grad_enabled = True
_default_dtype = "float32"


def get_default_dtype() -> str:
    return _default_dtype


def set_default_dtype(dtype: str) -> None:
    """Dtype of floating tensors made from Python numbers and of new parameters."""
    global _default_dtype
    if dtype not in ("float32", "float64", "float16"):
        raise ValueError(f"default dtype must be float16, float32 or float64, not {dtype!r}")
    _default_dtype = dtype


@contextmanager
def no_grad():
    """Context manager (and, as ``@no_grad()``, decorator) in which no graph is recorded."""
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, False
    try:
        yield
    finally:
        _grad_enabled = previous


def xp():
    """The array module of the active backend."""
    return backends.current().xp


def kernels():
    """The fused kernels of the active backend."""
    return backends.current().kernels


_FREED = object()  # marks a node whose graph was released by backward()


class Tensor:
    """An n-dimensional array that records the operations applied to it."""

    __slots__ = ("data", "grad", "requires_grad", "_parents", "_vjp", "_op", "__weakref__")
    __array_priority__ = 1000  # ndarray (op) Tensor defers to Tensor's reflected operator

    def __init__(self, data, requires_grad: bool = False, dtype=None):
        if isinstance(data, Tensor):
            data = data.data
        module = xp()
        from_python = not hasattr(data, "dtype")
        array = module.asarray(data, dtype=dtype)
        if dtype is None and from_python and array.dtype.kind == "f":
            array = array.astype(_default_dtype)  # Python floats -> the default dtype
        if requires_grad and array.dtype.kind != "f":
            raise TypeError(f"only floating tensors can require gradients, not {array.dtype}")
        self.data = array
        self.grad = None
        self.requires_grad = requires_grad
        self._parents = ()
        self._vjp = None
        self._op = ""

    # -- construction of results (used by every op) ---------------------------
    @staticmethod
    def from_op(data, parents: tuple, vjp, op: str) -> "Tensor":
        """The output of an op: how every primitive, built-in or yours, returns its result.

        ``data``: the output array (backend array); ``parents``: the input Tensors;
        ``vjp(g)``: the gradient g of the output (same shape as ``data``) -> a tuple
        with one gradient (or None) per parent, each of its parent's shape;
        ``op``: a name for messages. The graph is recorded only when a parent
        requires a gradient and grad mode is on (see ``no_grad``).
        """
        out = Tensor.__new__(Tensor)
        out.data, out.grad, out._op = data, None, op
        out.requires_grad = _grad_enabled and any(p.requires_grad for p in parents)
        out._parents, out._vjp = (parents, vjp) if out.requires_grad else ((), None)
        return out

    # -- the engine ---------------------------------------------------------------
    def backward(self, grad=None) -> None:
        """Accumulate d(self)/d(leaf) into ``leaf.grad`` for every leaf that requires grad.

        ``grad`` is the upstream gradient (defaults to 1 for a scalar). The graph is
        released afterwards, as in PyTorch: a second backward through it is an error.
        """
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad "
                               "(no input had requires_grad=True, or it was made under no_grad)")
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(f"grad can be implicit only for a scalar, not shape {self.shape}")
            grad = xp().ones_like(self.data)
        grad = grad.data if isinstance(grad, Tensor) else grad

        grads = {id(self): grad}
        for node in reversed(_toposort(self)):
            g = grads.pop(id(node), None)
            if g is None:
                continue
            if node._vjp is _FREED:
                raise RuntimeError("backward() through a graph a second time: the first "
                                   "backward released it; recompute the forward pass")
            if node._vjp is None:  # a leaf: accumulate across backward calls
                node.grad = g if node.grad is None else node.grad + g
                continue
            for parent, pg in zip(node._parents, node._vjp(g)):
                if pg is None or not parent.requires_grad:
                    continue
                key = id(parent)
                grads[key] = pg if key not in grads else grads[key] + pg
            node._parents, node._vjp = (), _FREED

    # -- conveniences ---------------------------------------------------------
    @property
    def shape(self) -> tuple:
        return tuple(self.data.shape)

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def size(self) -> int:
        return int(self.data.size)

    def __len__(self) -> int:
        return self.shape[0]

    def numpy(self):
        """A host NumPy copy of the values."""
        return backends.current().to_host(self.data).copy()

    def item(self) -> float:
        return self.data.item()

    def __repr__(self) -> str:
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor(shape={self.shape}, dtype={self.dtype}{grad})"


def _toposort(root: Tensor) -> list[Tensor]:
    """Nodes reachable from ``root`` that need gradients, parents before children."""
    order, seen = [], set()
    stack = [(root, False)]
    while stack:  # iterative DFS: deep graphs must not hit Python's recursion limit
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        stack.extend((p, False) for p in node._parents if p.requires_grad and id(p) not in seen)
    return order


def unbroadcast(grad, shape: tuple):
    """Sum ``grad`` down to ``shape``: the VJP of NumPy broadcasting, shared by every op."""
    if grad.shape == tuple(shape):
        return grad
    extra = grad.ndim - len(shape)
    axes = tuple(range(extra)) + tuple(
        i + extra for i, n in enumerate(shape) if n == 1 and grad.shape[i + extra] != 1)
    grad = grad.sum(axis=axes, keepdims=True) if axes else grad
    return grad.reshape(shape)


def as_tensor(value, like: Tensor | None = None) -> Tensor:
    """``value`` as a Tensor; Python numbers take the dtype of ``like`` (no silent upcast)."""
    if isinstance(value, Tensor):
        return value
    dtype = like.dtype if like is not None and not hasattr(value, "dtype") else None
    return Tensor(value, dtype=dtype)
