"""The primitives of tinylm, each with its forward and VJP side by side.

- ``arith``: add, sub, mul, div, neg, pow, exp, log, tanh, matmul, linear
- ``reduce``: sum, mean, max, softmax, log_softmax
- ``shape``: reshape, transpose, getitem, embedding, concat, split, where, masked_fill
- ``layers``: layer_norm, gelu, relu, dropout, cross_entropy, causal_attention,
  causal_self_attention

This module also gives Tensor its operators (``a + b``, ``a @ b``, ``x[i]``, ...).
"""

from tinylm.tensor import Tensor

from .arith import add, div, exp, linear, log, matmul, mul, neg, pow, sub, tanh
from .layers import (causal_attention, causal_self_attention, cross_entropy, dropout, gelu,
                     layer_norm, relu)
from .reduce import log_softmax, max, mean, softmax, sum
from .shape import (concat, embedding, getitem, masked_fill, reshape, split, swapaxes,
                    transpose, where)

# The Tensor front end: operators and methods, each one of the primitives above.
Tensor.__add__ = add
Tensor.__radd__ = lambda self, other: add(other, self)
Tensor.__sub__ = sub
Tensor.__rsub__ = lambda self, other: sub(other, self)
Tensor.__mul__ = mul
Tensor.__rmul__ = lambda self, other: mul(other, self)
Tensor.__truediv__ = div
Tensor.__rtruediv__ = lambda self, other: div(other, self)
Tensor.__neg__ = neg
Tensor.__pow__ = pow
Tensor.__rpow__ = lambda self, other: pow(other, self)
Tensor.__matmul__ = matmul
Tensor.__rmatmul__ = lambda self, other: matmul(other, self)
Tensor.__getitem__ = getitem
Tensor.exp = exp
Tensor.log = log
Tensor.tanh = tanh
Tensor.sum = sum
Tensor.mean = mean
Tensor.max = max
Tensor.softmax = softmax
Tensor.log_softmax = log_softmax
Tensor.reshape = reshape
Tensor.transpose = transpose
Tensor.swapaxes = swapaxes
Tensor.split = split
Tensor.T = property(lambda self: transpose(self))

__all__ = [
    "add", "sub", "mul", "div", "neg", "pow", "exp", "log", "tanh", "matmul", "linear",
    "sum", "mean", "max", "softmax", "log_softmax",
    "reshape", "transpose", "swapaxes", "getitem", "embedding", "concat", "split",
    "where", "masked_fill",
    "layer_norm", "gelu", "relu", "dropout", "cross_entropy", "causal_attention",
    "causal_self_attention",
]
