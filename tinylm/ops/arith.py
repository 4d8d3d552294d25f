"""Elementwise arithmetic and matrix products: forward and VJP side by side.

Each op takes Tensors (or Python numbers), computes its result on the active
backend's arrays and returns ``Tensor.from_op(data, parents, vjp, name)``. The
VJP maps the output gradient ``g`` to one gradient per parent; broadcasting is
undone once, by ``unbroadcast``.
"""

from __future__ import annotations

from tinylm.tensor import Tensor, as_tensor, unbroadcast, xp


def _pair(a, b) -> tuple[Tensor, Tensor]:
    if isinstance(a, Tensor):
        return a, as_tensor(b, like=a)
    b = as_tensor(b)
    return as_tensor(a, like=b), b


# y = a + b;  da = g,  db = g
def add(a, b) -> Tensor:
    a, b = _pair(a, b)
    return Tensor.from_op(a.data + b.data, (a, b),
                          lambda g: (unbroadcast(g, a.shape), unbroadcast(g, b.shape)), "add")


# y = a - b;  da = g,  db = -g
def sub(a, b) -> Tensor:
    a, b = _pair(a, b)
    return Tensor.from_op(a.data - b.data, (a, b),
                          lambda g: (unbroadcast(g, a.shape), unbroadcast(-g, b.shape)), "sub")


# y = a * b;  da = g b,  db = g a
def mul(a, b) -> Tensor:
    a, b = _pair(a, b)
    return Tensor.from_op(a.data * b.data, (a, b),
                          lambda g: (unbroadcast(g * b.data, a.shape),
                                     unbroadcast(g * a.data, b.shape)), "mul")


# y = a / b;  da = g / b,  db = -g a / b^2
def div(a, b) -> Tensor:
    a, b = _pair(a, b)
    return Tensor.from_op(a.data / b.data, (a, b),
                          lambda g: (unbroadcast(g / b.data, a.shape),
                                     unbroadcast(-g * a.data / (b.data * b.data), b.shape)), "div")


# y = -x;  dx = -g
def neg(x: Tensor) -> Tensor:
    return Tensor.from_op(-x.data, (x,), lambda g: (-g,), "neg")


# y = a^b;  da = g b a^(b-1),  db = g y ln a   (db only where a > 0)
def pow(a, b) -> Tensor:  # noqa: A001 - the op is called pow
    a, b = _pair(a, b)
    y = a.data ** b.data

    def vjp(g):
        da = unbroadcast(g * b.data * a.data ** (b.data - 1), a.shape)
        if not b.requires_grad:
            return da, None
        safe = xp().where(a.data > 0, a.data, 1)
        return da, unbroadcast(g * y * xp().log(safe), b.shape)
    return Tensor.from_op(y, (a, b), vjp, "pow")


# y = e^x;  dx = g y
def exp(x: Tensor) -> Tensor:
    y = xp().exp(x.data)
    return Tensor.from_op(y, (x,), lambda g: (g * y,), "exp")


# y = ln x;  dx = g / x
def log(x: Tensor) -> Tensor:
    return Tensor.from_op(xp().log(x.data), (x,), lambda g: (g / x.data,), "log")


# y = tanh x;  dx = g (1 - y^2)
def tanh(x: Tensor) -> Tensor:
    y = xp().tanh(x.data)
    return Tensor.from_op(y, (x,), lambda g: (g * (1 - y * y),), "tanh")


# Y = A B (batched over leading axes);  dA = G B^T,  dB = A^T G
def matmul(a: Tensor, b: Tensor) -> Tensor:
    """(..., n, k) @ (..., k, m) -> (..., n, m), leading axes broadcast.

    A 2-D right operand (a weight matrix) is applied to all rows of ``a`` at once:
    one large matrix product instead of one per batch element, forward and backward.
    """
    a, b = _pair(a, b)
    if a.ndim < 2 or b.ndim < 2:
        raise ValueError(f"matmul needs operands of at least 2 dimensions, got {a.shape} @ {b.shape}")
    if b.ndim == 2 and a.ndim > 2:
        k = a.shape[-1]
        a2 = a.data.reshape(-1, k)                                    # (B*T, k)
        y = (a2 @ b.data).reshape(*a.shape[:-1], b.shape[1])

        def vjp_rows(g):
            g2 = g.reshape(-1, g.shape[-1])                           # (B*T, m)
            return (g2 @ b.data.T).reshape(a.shape), a2.T @ g2
        return Tensor.from_op(y, (a, b), vjp_rows, "matmul")

    def vjp(g):
        return (unbroadcast(g @ b.data.swapaxes(-1, -2), a.shape),
                unbroadcast(a.data.swapaxes(-1, -2) @ g, b.shape))
    return Tensor.from_op(a.data @ b.data, (a, b), vjp, "matmul")


# Y = X W + b (X's rows through one affine map);  dX = G W^T,  dW = X^T G,  db = Σ_rows G
def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x (..., n) @ weight (n, m) + bias (m,) -> (..., m): ``x @ weight + bias`` as one op.

    The same values and gradients as matmul then add, without the intermediate
    product as a separate array and graph node (the bias is added in place).
    """
    n, m = weight.shape
    if x.shape[-1] != n or (bias is not None and bias.shape != (m,)):
        raise ValueError(f"linear: x {x.shape}, weight {weight.shape} and bias "
                         f"{None if bias is None else bias.shape} do not fit (..., n) (n, m) (m,)")
    x2 = x.data.reshape(-1, n)                                        # (N, n)
    y = x2 @ weight.data                                              # (N, m), a new array
    if bias is not None:
        y += bias.data

    def vjp(g):
        g2 = g.reshape(-1, m)                                         # (N, m)
        return ((g2 @ weight.data.T).reshape(x.shape), x2.T @ g2,
                None if bias is None else g2.sum(axis=0))
    parents = (x, weight) if bias is None else (x, weight, bias)
    return Tensor.from_op(y.reshape(*x.shape[:-1], m), parents, vjp, "linear")
