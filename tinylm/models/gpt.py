"""GPT: a decoder-only transformer, in the order data flows through it.

tokens -> token + position embeddings -> n_layer x Block(pre-LN attention, pre-LN MLP)
-> final LayerNorm -> logits over the vocabulary (output matrix tied to the input
embedding). Names follow nanoGPT/GPT-2 so readers can cross-reference.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from tinylm import backends, ops
from tinylm.errors import ConfigError, from_known_fields, require_positive_ints
from tinylm.nn import Dropout, Embedding, LayerNorm, Linear, Module, RMSNorm, Rotary
from tinylm.ops.llama import rms_norm_forward, rotate
from tinylm.tensor import Tensor, no_grad

NORMS = {"layernorm": LayerNorm, "rmsnorm": RMSNorm}   # GPT-2's; LLaMA's (no mean, no bias)
POS_ENCODINGS = ("learned", "rope")                    # GPT-2's wpe table; rotary q and k


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int = 65
    block_size: int = 64      # longest context the model sees
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = True         # biases in Linear layers (LayerNorm always has them)
    norm: str = "layernorm"   # "layernorm" (GPT-2) or "rmsnorm" (LLaMA)
    pos_encoding: str = "learned"  # "learned" position table (GPT-2) or "rope" (rotary, LLaMA)

    def __post_init__(self):
        require_positive_ints(self, ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"))
        if self.n_embd % self.n_head:
            raise ConfigError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}); "
                              f"try n_embd {self.n_head * max(1, round(self.n_embd / self.n_head))}")
        if self.norm not in NORMS:
            raise ConfigError(f"norm must be one of {', '.join(NORMS)}, got {self.norm!r}")
        if self.pos_encoding not in POS_ENCODINGS:
            raise ConfigError(f"pos_encoding must be one of {', '.join(POS_ENCODINGS)}, "
                              f"got {self.pos_encoding!r}")
        if self.pos_encoding == "rope" and (self.n_embd // self.n_head) % 2:
            raise ConfigError(f"rope rotates pairs of channels: the head size n_embd / n_head = "
                              f"{self.n_embd // self.n_head} must be even")
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GPTConfig":
        return from_known_fields(cls, d, "GPT")  # a checkpoint older than a field gets its default

    def count_parameters(self) -> int:
        """Exactly ``GPT(cfg).num_parameters()``: no position table with rope, no norm biases with rmsnorm."""
        from tinylm.resources import count_parameters
        n = count_parameters(self.vocab_size, self.block_size, self.n_layer, self.n_embd, self.bias)
        n -= self.block_size * self.n_embd if self.pos_encoding == "rope" else 0
        return n - ((2 * self.n_layer + 1) * self.n_embd if self.norm == "rmsnorm" else 0)


class KVCache:
    """The keys and values of the tokens a GPT has already seen, for generating one token at a time.

    keys[l], values[l]: (B, H, block_size, D) buffers of layer l, filled up to
    ``length``. Buffers are allocated once, so a step writes in place instead of
    concatenating. Made by ``GPT.new_cache``, filled by ``GPT.forward_step``.
    """

    def __init__(self, cfg: GPTConfig, batch_size: int, dtype):
        self.xp = backends.current().xp
        shape = (batch_size, cfg.n_head, cfg.block_size, cfg.n_embd // cfg.n_head)
        self.keys = [self.xp.zeros(shape, dtype=dtype) for _ in range(cfg.n_layer)]
        self.values = [self.xp.zeros(shape, dtype=dtype) for _ in range(cfg.n_layer)]
        self.length = 0

    def append(self, layer: int, k, v):
        """Store k, v (B, H, Tn, D) after the cached ones; returns all of them: 2 x (B, H, length + Tn, D)."""
        t0, t = self.length, self.length + k.shape[2]
        self.keys[layer][:, :, t0:t] = k
        self.values[layer][:, :, t0:t] = v
        return self.keys[layer][:, :, :t], self.values[layer][:, :, :t]

    def mask(self, n_new: int, t: int):
        """(n_new, t) additive causal mask: new query i (position t - n_new + i) sees keys 0..t - n_new + i."""
        return self.xp.triu(self.xp.full((n_new, t), -self.xp.inf, dtype="float32"), k=t - n_new + 1)

    def clear(self) -> None:
        """Forget every token (the buffers are reused)."""
        self.length = 0


# Inference helpers on raw arrays (no Tensor, no graph): the cached path's per-token cost is
# dominated by Python overhead, so it calls the kernels directly.
def _affine(x, linear: Linear):
    """x W + b."""
    y = x @ linear.weight.data
    if linear.bias is not None:
        y += linear.bias.data
    return y


def _layer_norm(x, ln: LayerNorm):
    """(x - mean) / sqrt(var + eps) * w + b over the last axis: the layernorm_forward kernel's
    equation in fewer array calls (sum * 1/C for the means; none of the saved statistics)."""
    if isinstance(ln, RMSNorm):
        return rms_norm_forward(x, ln.weight.data, ln.eps)[0]
    inv_c = 1.0 / x.shape[-1]
    xc = x - x.sum(axis=-1, keepdims=True) * inv_c
    var = (xc * xc).sum(axis=-1, keepdims=True) * inv_c
    xc *= 1.0 / backends.current().xp.sqrt(var + ln.eps)
    xc *= ln.weight.data
    xc += ln.bias.data
    return xc


class CausalSelfAttention(Module):
    """Multi-head self-attention in which position t sees positions 0..t only."""

    def __init__(self, cfg: GPTConfig, rng: np.random.Generator):
        self.n_head = cfg.n_head
        self.c_attn = Linear(cfg.n_embd, 3 * cfg.n_embd, rng, cfg.bias)  # fused q, k, v
        # residual projections get std 0.02/sqrt(2 n_layer) (GPT-2): the residual
        # stream's variance then stays O(1) however deep the model is
        self.c_proj = Linear(cfg.n_embd, cfg.n_embd, rng, cfg.bias,
                             std=0.02 / math.sqrt(2 * cfg.n_layer))
        self.resid_dropout = Dropout(cfg.dropout)
        head_dim = cfg.n_embd // cfg.n_head
        self.rotary = Rotary(head_dim, cfg.block_size) if cfg.pos_encoding == "rope" else None
        # Head ablation for interpretability (tinylm.lab.heads); None while training.
        # head_mask (H, 1): 1 keeps a head, 0 replaces its output by head_fill (H, D).
        self.head_mask = None
        self.head_fill = None

    def _heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """q, k, v, each (B, H, T, D): the fused projection's thirds, split into heads."""
        B, T, C = x.shape
        qkv = self.c_attn(x)
        q, k, v = (qkv if self.rotary is None else self.rotary(qkv, self.n_head)).split(3, axis=2)
        split = lambda t: t.reshape(B, T, self.n_head, C // self.n_head).transpose(0, 2, 1, 3)
        return split(q), split(k), split(v)                              # (B, H, T, D)

    def forward(self, x: Tensor) -> Tensor:
        B, T, C = x.shape
        qkv = self.c_attn(x)                                             # (B, T, 3C)
        if self.rotary is not None:
            qkv = self.rotary(qkv, self.n_head)                          # q, k turned by position
        # causal_attention on each head of _heads(x), heads merged back: one op
        y = ops.causal_self_attention(qkv, self.n_head)                  # (B, T, C)
        if self.head_mask is not None:  # y_h <- m_h y_h + (1 - m_h) fill_h
            y = y.reshape(B, T, self.n_head, C // self.n_head)           # (B, T, H, D)
            y = (y * self.head_mask + (1.0 - self.head_mask) * self.head_fill).reshape(B, T, C)
        return self.resid_dropout(self.c_proj(y))

    @no_grad()
    def attention_weights(self, x: Tensor) -> Tensor:
        """The attention pattern softmax(q k^T / sqrt(D) + mask): (B, H, T, T), rows sum to 1."""
        q, k, _ = self._heads(x)
        T, D = q.shape[2], q.shape[3]
        scores = (q @ k.swapaxes(-1, -2)) * (1.0 / math.sqrt(D))         # (B, H, T, T)
        future = np.triu(np.ones((T, T), dtype=bool), k=1)
        return ops.masked_fill(scores, future, -np.inf).softmax(axis=-1)

    def step(self, x, cache: "KVCache", layer: int):
        """Inference on arrays: x (B, Tn, C) at positions cache.length.. ; keys/values join the cache.

        The new queries attend over every cached key plus the new ones (causally
        among themselves): the same softmax(q k^T / sqrt(D) + mask) v as forward.
        """
        B, Tn, C = x.shape
        H, D = self.n_head, C // self.n_head
        qkv = _affine(x, self.c_attn).reshape(B, Tn, 3, H, D).transpose(2, 0, 3, 1, 4)  # (3, B, H, Tn, D)
        if self.rotary is not None:  # positions cache.length .. cache.length + Tn - 1
            t0 = cache.length
            turn = (self.rotary.cos.data[t0:t0 + Tn], self.rotary.sin.data[t0:t0 + Tn])  # (Tn, D/2)
            qkv = cache.xp.concatenate([rotate(qkv[:2], *turn), qkv[2:]])  # q, k turned; v as is
        keys, values = cache.append(layer, qkv[1], qkv[2])               # (B, H, t, D), t = length + Tn
        att = qkv[0] @ keys.swapaxes(-1, -2)                             # (B, H, Tn, t)
        att *= 1.0 / math.sqrt(D)
        if Tn > 1:  # new query i sits at position t - Tn + i and sees keys 0..t - Tn + i
            att += cache.mask(Tn, keys.shape[2])
        att -= att.max(axis=-1, keepdims=True)
        cache.xp.exp(att, out=att)
        att /= att.sum(axis=-1, keepdims=True)
        y = (att @ values).transpose(0, 2, 1, 3).reshape(B, Tn, C)      # (B, Tn, C)
        return _affine(y, self.c_proj)


class MLP(Module):
    """Position-wise feed-forward: Linear(C, 4C) -> GELU -> Linear(4C, C)."""

    def __init__(self, cfg: GPTConfig, rng: np.random.Generator):
        self.c_fc = Linear(cfg.n_embd, 4 * cfg.n_embd, rng, cfg.bias)
        self.c_proj = Linear(4 * cfg.n_embd, cfg.n_embd, rng, cfg.bias,
                             std=0.02 / math.sqrt(2 * cfg.n_layer))
        self.dropout = Dropout(cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.c_proj(ops.gelu(self.c_fc(x))))

    def step(self, x):
        """Inference on arrays: the same map, x (B, Tn, C) -> (B, Tn, C)."""
        return _affine(backends.current().kernels.gelu_forward(_affine(x, self.c_fc)), self.c_proj)


class Block(Module):
    """Pre-LN residual block: x + attn(ln_1(x)), then + mlp(ln_2(x))."""

    def __init__(self, cfg: GPTConfig, rng: np.random.Generator):
        self.ln_1 = NORMS[cfg.norm](cfg.n_embd)
        self.attn = CausalSelfAttention(cfg, rng)
        self.ln_2 = NORMS[cfg.norm](cfg.n_embd)
        self.mlp = MLP(cfg, rng)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))

    def step(self, x, cache: "KVCache", layer: int):
        """Inference on arrays with a KV cache: x (B, Tn, C) -> (B, Tn, C)."""
        x = x + self.attn.step(_layer_norm(x, self.ln_1), cache, layer)
        return x + self.mlp.step(_layer_norm(x, self.ln_2))


class GPT(Module):
    """The language model: token ids (B, T) -> next-token logits (B, T, V)."""

    model_type = "gpt"

    def __init__(self, cfg: GPTConfig, seed: int = 0):
        self.config = cfg
        rng = np.random.default_rng(seed)  # initialised on the host: identical on every backend
        self.wte = Embedding(cfg.vocab_size, cfg.n_embd, rng)
        # rope: positions enter through attention's q and k, not a table added to the input
        self.wpe = Embedding(cfg.block_size, cfg.n_embd, rng) if cfg.pos_encoding == "learned" else None
        self.drop = Dropout(cfg.dropout)
        self.blocks = [Block(cfg, rng) for _ in range(cfg.n_layer)]
        self.ln_f = NORMS[cfg.norm](cfg.n_embd)

    def features(self, idx) -> Tensor:
        """idx (B, T) int -> the final hidden states (B, T, C), before the output projection."""
        idx = idx.data if isinstance(idx, Tensor) else idx
        B, T = idx.shape
        if T > self.config.block_size:
            raise ValueError(f"sequence length {T} exceeds block_size {self.config.block_size}; "
                             "crop the input to the last block_size tokens")
        x = self.wte(idx)                                                # (B, T, C)
        if self.wpe is not None:
            x = x + self.wpe(backends.current().xp.arange(T))
        x = self.drop(x)
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x)

    def forward(self, idx, targets=None):
        """idx (B, T) int -> logits (B, T, V), and the mean cross-entropy when targets are given."""
        x = self.features(idx)                                           # (B, T, C)
        logits = x @ self.wte.weight.T                                   # (B, T, V), tied weights
        loss = ops.cross_entropy(logits, targets) if targets is not None else None
        return logits, loss

    # -- inference with a KV cache -----------------------------------------------------------
    def new_cache(self, batch_size: int = 1) -> KVCache:
        """An empty KV cache for ``forward_step`` (room for block_size tokens)."""
        return KVCache(self.config, batch_size, self.wte.weight.dtype)

    def forward_step(self, idx, cache: KVCache):
        """Logits (B, Tn, V) of new tokens idx (B, Tn) that follow the cache.length tokens in ``cache``.

        Inference only (arrays, no graph, no dropout). Each block attends over the
        cached keys/values instead of recomputing the prefix, then the new ones join
        the cache. A sequence fed at once or token by token gives forward's logits
        (up to float rounding). The cache holds at most block_size tokens: positions
        are absolute, so a longer context cannot slide inside it; clear it and feed
        the cropped context again (tinylm.generate does, at most every block_size/2 tokens).
        """
        xp = backends.current().xp
        idx = xp.asarray(idx.data if isinstance(idx, Tensor) else idx)
        B, Tn = idx.shape
        t0 = cache.length
        if t0 + Tn > self.config.block_size:
            raise ValueError(f"the cache holds {t0} tokens and {Tn} more exceed block_size "
                             f"{self.config.block_size}; clear it and feed a cropped context")
        x = self.wte.weight.data[idx]                                     # (B, Tn, C)
        if self.wpe is not None:
            x = x + self.wpe.weight.data[t0:t0 + Tn]
        for layer, block in enumerate(self.blocks):
            x = block.step(x, cache, layer)
        cache.length += Tn
        x = _layer_norm(x, self.ln_f)
        return x @ self.wte.weight.data.T                                 # (B, Tn, V), tied weights
