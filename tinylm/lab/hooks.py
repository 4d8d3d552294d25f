"""Watching and changing attention heads through the model's one hook.

``CausalSelfAttention.hook`` (tinylm/models/gpt.py) is None while training. Set
to a function ``hook(qkv, y) -> y``, it is called in every forward pass after
attention, with the fused projection ``qkv`` (B, T, 3C) = [q | k | v] and the
heads' outputs ``y`` (B, T, C), head h in columns h D .. (h+1) D. It may record
what it sees, or return y changed. The functions below make the hooks the lab
needs; :func:`hooked` sets them for the length of a ``with`` block and always
removes them afterwards.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

from tinylm import backends
from tinylm.backends.numpy_backend import NumpyKernels
from tinylm.ops.layers import split_heads


@contextmanager
def hooked(attentions: list, hooks: list):
    """Inside the block, attentions[i].hook = hooks[i]; afterwards (even on error) no hook."""
    try:
        for attn, hook in zip(attentions, hooks, strict=True):
            attn.hook = hook
        yield
    finally:
        for attn in attentions:
            attn.hook = None


# P = softmax(q k^T / sqrt(D) + causal mask), from the reference kernel on any backend:
# a fused kernel may keep P in another layout (Numba keeps P^T), or not at all.
def attention_pattern(qkv, n_head: int):
    """qkv (B, T, 3C) array -> P (B, H, T, T): row t is query t's attention, rows sum to 1."""
    q, k, v = split_heads(qkv, n_head)                                   # 3 x (B, H, T, D)
    _, P = NumpyKernels(backends.current().xp).attention_forward(q, k, v, 1.0 / math.sqrt(q.shape[-1]))
    return P


def recording_patterns(n_head: int, patterns: list):
    """A hook that appends each call's attention pattern (B, H, T, T) to ``patterns``."""
    def record(qkv, y):
        patterns.append(attention_pattern(qkv.data, n_head))
        return y
    return record


def summing_heads(n_head: int, total: list):
    """A hook that adds each head's outputs over batch and positions into total[0]: (H, D)."""
    def add(qkv, y):
        B, T, C = y.shape
        total[0] = total[0] + y.data.reshape(B, T, n_head, C // n_head).sum(axis=(0, 1))  # (H, D)
        return y
    return add


# y_h <- keep_h y_h + (1 - keep_h) fill_h:  keep (H, 1) of ones and zeros, fill (H, D)
def replacing_heads(keep, fill):
    """A hook that replaces the output of each head h with keep[h] == 0 by fill[h]."""
    def replace(qkv, y):
        B, T, C = y.shape
        heads = y.reshape(B, T, keep.shape[0], C // keep.shape[0])      # (B, T, H, D)
        return (heads * keep + (1.0 - keep) * fill).reshape(B, T, C)
    return replace
