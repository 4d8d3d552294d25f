"""A GPT's forward pass for new tokens only, with the keys and values of the past cached.

Generating left to right, the keys and values of the tokens already seen never
change, so they are kept (``KVCache``) and each new token runs through the model
alone, attending over them (``forward_step``). The math is the training graph's
(tinylm/models/gpt.py), from the same backend kernels (``layernorm_forward``,
``gelu_forward``, ``attention_forward`` with the new queries as the last
positions of the keys), on raw arrays: no Tensor and no graph, so a step costs
what its kernels cost.
"""

from __future__ import annotations

import math

from tinylm import backends
from tinylm.models.llama import RMSNorm, rms_norm_forward, rotate
from tinylm.ops.layers import split_heads
from tinylm.tensor import Tensor


class KVCache:
    """The keys and values of the tokens a GPT has already seen.

    keys[l], values[l]: (B, H, block_size, D) buffers of layer l, filled up to
    ``length``. Buffers are allocated once, so a step writes in place instead of
    concatenating. Made by :func:`new_cache`, filled by :func:`forward_step`.
    """

    def __init__(self, cfg, batch_size: int, dtype):
        xp = backends.current().xp
        shape = (batch_size, cfg.n_head, cfg.block_size, cfg.n_embd // cfg.n_head)
        self.keys = [xp.zeros(shape, dtype=dtype) for _ in range(cfg.n_layer)]
        self.values = [xp.zeros(shape, dtype=dtype) for _ in range(cfg.n_layer)]
        self.length = 0

    def append(self, layer: int, k, v):
        """Store k, v (B, H, Tn, D) after the cached ones; returns all of them: 2 x (B, H, length + Tn, D)."""
        t0, t = self.length, self.length + k.shape[2]
        self.keys[layer][:, :, t0:t] = k
        self.values[layer][:, :, t0:t] = v
        return self.keys[layer][:, :, :t], self.values[layer][:, :, :t]

    def clear(self) -> None:
        """Forget every token (the buffers are reused)."""
        self.length = 0


def new_cache(model, batch_size: int = 1) -> KVCache:
    """An empty cache for ``model`` (a GPT): room for block_size tokens."""
    return KVCache(model.config, batch_size, model.wte.weight.dtype)


def forward_step(model, idx, cache: KVCache):
    """Logits (B, Tn, V) of new tokens idx (B, Tn) that follow the cache.length tokens in ``cache``.

    Inference only (arrays, no graph, no dropout). Each block attends over the
    cached keys/values instead of recomputing the prefix, then the new ones join
    the cache. A sequence fed at once or token by token gives the model's logits
    (up to float rounding). The cache holds at most block_size tokens: positions
    are absolute, so a longer context cannot slide inside it; clear it and feed
    the cropped context again (tinylm.generate does, at most every block_size/2 tokens).
    """
    xp = backends.current().xp
    idx = xp.asarray(idx.data if isinstance(idx, Tensor) else idx)
    B, Tn = idx.shape
    t0, block_size = cache.length, model.config.block_size
    if t0 + Tn > block_size:
        raise ValueError(f"the cache holds {t0} tokens and {Tn} more exceed block_size "
                         f"{block_size}; clear it and feed a cropped context")
    x = model.wte.weight.data[idx]                                       # (B, Tn, C)
    if model.wpe is not None:  # a learned position table (with rope, attention turns q and k)
        x = x + model.wpe.weight.data[t0:t0 + Tn]
    for layer, block in enumerate(model.blocks):
        x = x + _attention(_layer_norm(x, block.ln_1), block.attn, cache, layer)
        x = x + _mlp(_layer_norm(x, block.ln_2), block.mlp)
    cache.length += Tn
    return _layer_norm(x, model.ln_f) @ model.wte.weight.data.T          # (B, Tn, V), tied weights


def _affine(x, linear):
    """x W + b."""
    y = x @ linear.weight.data
    if linear.bias is not None:
        y += linear.bias.data
    return y


def _layer_norm(x, ln):
    """The model's norm on arrays: LayerNorm's kernel, or RMSNorm's forward."""
    if isinstance(ln, RMSNorm):
        return rms_norm_forward(x, ln.weight.data, ln.eps)[0]
    return backends.current().kernels.layernorm_forward(x, ln.weight.data, ln.bias.data, ln.eps)[0]


def _mlp(x, mlp):
    return _affine(backends.current().kernels.gelu_forward(_affine(x, mlp.c_fc)), mlp.c_proj)


def _attention(x, attn, cache: KVCache, layer: int):
    """x (B, Tn, C) at positions cache.length.. -> (B, Tn, C); its keys and values join the cache.

    The new queries attend over every cached key plus the new ones, causally among
    themselves: softmax(q k^T / sqrt(D) + mask) v, the training kernel's.
    """
    B, Tn, C = x.shape
    q, k, v = split_heads(_affine(x, attn.c_attn), attn.n_head)          # 3 x (B, H, Tn, D)
    if attn.rotary is not None:  # rope: q and k turned by their positions t0 .. t0 + Tn - 1
        t0 = cache.length
        turn = (attn.rotary.cos.data[t0:t0 + Tn], attn.rotary.sin.data[t0:t0 + Tn])  # (Tn, D/2)
        q, k = rotate(q, *turn), rotate(k, *turn)
    keys, values = cache.append(layer, k, v)                             # (B, H, t, D), t = length + Tn
    y, _ = backends.current().kernels.attention_forward(q, keys, values, 1.0 / math.sqrt(q.shape[-1]))
    return _affine(y.transpose(0, 2, 1, 3).reshape(B, Tn, C), attn.c_proj)  # (B, Tn, C)
