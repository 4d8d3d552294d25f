"""The transformer's fused operations: each calls a forward/backward kernel pair.

The kernels' reference definitions are in ``backends/numpy_backend.py``; other
backends provide faster versions of the same pairs. Each op states both
equations, forward and backward, so a reader of the op sees what it computes.
"""

from __future__ import annotations

import math

from tinylm import backends
from tinylm.tensor import Tensor, kernels, xp


# y = xhat w + b,  xhat = (x - mean) rstd,  rstd = 1 / sqrt(var + eps), over the last axis C
# dxhat = dy w;  dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat));  dw = Σ dy xhat;  db = Σ dy
def layer_norm(x: Tensor, weight: Tensor, bias: Tensor, eps: float = 1e-5) -> Tensor:
    k = kernels()
    y, mean, rstd = k.layernorm_forward(x.data, weight.data, bias.data, eps)

    def vjp(g):
        return k.layernorm_backward(g, x.data, weight.data, mean, rstd)
    return Tensor.from_op(y, (x, weight, bias), vjp, "layer_norm")


# y = x/2 (1 + tanh u),  u = c (x + 0.044715 x^3),  c = sqrt(2/pi)   (GPT-2's GELU)
# dx = dy [(1 + tanh u)/2 + x/2 (1 - tanh^2 u) c (1 + 3 * 0.044715 x^2)]
def gelu(x: Tensor) -> Tensor:
    k = kernels()
    return Tensor.from_op(k.gelu_forward(x.data), (x,),
                          lambda g: (k.gelu_backward(g, x.data),), "gelu")


# y = max(x, 0);  dx = g [x > 0]
def relu(x: Tensor) -> Tensor:
    positive = x.data > 0
    return Tensor.from_op(x.data * positive, (x,), lambda g: (g * positive,), "relu")


# y = x m / (1 - p),  m ~ Bernoulli(1 - p);  dx = g m / (1 - p)
def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """Inverted dropout; the identity when not training or p == 0."""
    if not training or p == 0.0:
        return x
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    keep = backends.current().rng.random(x.shape, dtype=x.dtype) >= p
    scale = keep * x.dtype.type(1.0 / (1.0 - p))
    return Tensor.from_op(x.data * scale, (x,), lambda g: (g * scale,), "dropout")


# loss = mean over kept rows of (logsumexp(z) - z[target]);  dz = (softmax(z) - onehot) / n
def cross_entropy(logits: Tensor, targets, ignore_index: int = -100) -> Tensor:
    """logits (..., V), integer targets (...) -> scalar mean loss over targets != ignore_index."""
    targets = targets.data if isinstance(targets, Tensor) else xp().asarray(targets)
    V = logits.shape[-1]
    if targets.shape != logits.shape[:-1]:
        raise ValueError(f"targets of shape {tuple(targets.shape)} do not match "
                         f"logits of shape {logits.shape} (expected {logits.shape[:-1]})")
    k = kernels()
    z = logits.data.reshape(-1, V)                                    # (N, V)
    t = targets.reshape(-1)                                           # (N,)
    loss, probs, n_valid = k.softmax_xent_forward(z, t, ignore_index)

    def vjp(g):
        dz = k.softmax_xent_backward(g, probs, t, ignore_index, n_valid)
        return (dz.reshape(logits.shape),)
    return Tensor.from_op(xp().asarray(loss), (logits,), vjp, "cross_entropy")


def split_heads(qkv, n_head: int):
    """qkv (B, T, 3C) array = [q | k | v] -> a view (3, B, H, T, D) of its heads, D = C / n_head."""
    B, T, C3 = qkv.shape
    if C3 % (3 * n_head):
        raise ValueError(f"qkv's last axis ({C3}) must be 3 x n_head ({n_head}) x head size")
    return qkv.reshape(B, T, 3, n_head, C3 // (3 * n_head)).transpose(2, 0, 3, 1, 4)


# per head, [q | k | v] = qkv split into n_head heads of D = C / n_head:
# S = q k^T / sqrt(D) + causal mask;  P = softmax(S);  y = P v;  the heads' y side by side
# dv = P^T dy;  dP = dy v^T;  dS = P ⊙ (dP - rowsum(dP ⊙ P));  dq = dS k / sqrt(D);  dk = dS^T q / sqrt(D)
def causal_self_attention(qkv: Tensor, n_head: int) -> Tensor:
    """qkv (B, T, 3C), the fused projection [q | k | v] -> (B, T, C), each head's output in its D columns.

    Query t attends to keys 0..t. The splitting into heads and the merging back
    are done inside the op: the gradient comes back as one (B, T, 3C) array,
    instead of three zero-padded thirds summed.
    """
    B, T, C3 = qkv.shape
    q, k, v = split_heads(qkv.data, n_head)                           # 3 x (B, H, T, D) views
    C, D = C3 // 3, C3 // (3 * n_head)
    kern = kernels()
    scale = 1.0 / math.sqrt(D)
    y, saved = kern.attention_forward(q, k, v, scale)                 # (B, H, T, D)

    def vjp(g):
        dy = g.reshape(B, T, n_head, D).transpose(0, 2, 1, 3)         # (B, H, T, D)
        dq, dk, dv = kern.attention_backward(dy, q, k, v, saved, scale)
        dqkv = xp().stack([d.transpose(0, 2, 1, 3) for d in (dq, dk, dv)], axis=2)  # (B, T, 3, H, D)
        return (dqkv.reshape(B, T, C3),)
    return Tensor.from_op(y.transpose(0, 2, 1, 3).reshape(B, T, C), (qkv,), vjp,
                          "causal_self_attention")
