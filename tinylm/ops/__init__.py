"""The primitives of tinylm, each with its forward and VJP side by side.

- ``arith``: add, sub, mul, div, neg, pow, exp, log, tanh, matmul, linear
- ``reduce``: sum, mean, max, softmax, log_softmax
- ``shape``: reshape, transpose, getitem, embedding, concat, split, where, masked_fill
- ``layers``: layer_norm, gelu, relu, dropout, cross_entropy, causal_self_attention

This module also gives Tensor its operators (``a + b``, ``a @ b``, ``x[i]``, ...).
"""

from tinylm.tensor import Tensor

from .arith import add, div, exp, linear, log, matmul, mul, neg, pow, sub, tanh
from .layers import causal_self_attention, cross_entropy, dropout, gelu, layer_norm, relu
from .reduce import log_softmax, max, mean, softmax, sum
from .shape import (concat, embedding, getitem, masked_fill, reshape, split, swapaxes,
                    transpose, where)


def _reflected(op):
    """``number (op) tensor``: Python calls the tensor's reflected method, e.g. 2 - t -> t.__rsub__(2)."""
    return lambda self, other: op(other, self)


# The Tensor front end: operators and methods, each one of the primitives above.
Tensor.__add__, Tensor.__radd__ = add, _reflected(add)
Tensor.__sub__, Tensor.__rsub__ = sub, _reflected(sub)
Tensor.__mul__, Tensor.__rmul__ = mul, _reflected(mul)
Tensor.__truediv__, Tensor.__rtruediv__ = div, _reflected(div)
Tensor.__pow__, Tensor.__rpow__ = pow, _reflected(pow)
Tensor.__matmul__, Tensor.__rmatmul__ = matmul, _reflected(matmul)
Tensor.__neg__ = neg
Tensor.__getitem__ = getitem
for _op in (exp, log, tanh, sum, mean, max, softmax, log_softmax, reshape, transpose, swapaxes, split):
    setattr(Tensor, _op.__name__, _op)                    # t.exp(), t.sum(axis=0), t.reshape(B, T, C)
Tensor.T = property(lambda self: transpose(self))

__all__ = [
    "add", "sub", "mul", "div", "neg", "pow", "exp", "log", "tanh", "matmul", "linear",
    "sum", "mean", "max", "softmax", "log_softmax",
    "reshape", "transpose", "swapaxes", "getitem", "embedding", "concat", "split",
    "where", "masked_fill",
    "layer_norm", "gelu", "relu", "dropout", "cross_entropy", "causal_self_attention",
]
