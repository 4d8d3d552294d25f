"""Encoder: a bidirectional transformer (BERT-style), in the order data flows through it.

tokens -> token + position embeddings -> n_layer x EncoderBlock(pre-LN attention
without the causal mask, pre-LN MLP) -> final LayerNorm -> features (B, T, C)
-> masked-LM logits over the vocabulary (output matrix tied to the input embedding).

Everything but the attention mask is GPT's (tinylm/models/gpt.py): the same
projections, MLP, LayerNorms, initialisation and parameter names. Position t
attends to every position that is not padding, before and after it, which is
what lets a masked-LM fill in a blank from both sides (tinylm/mlm.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tinylm import backends, ops
from tinylm.errors import ConfigError
from tinylm.nn import Dropout, Embedding, LayerNorm, Module
from tinylm.tensor import Tensor

from .gpt import MLP, CausalSelfAttention, GPTConfig


@dataclass(frozen=True)
class EncoderConfig(GPTConfig):
    """The encoder's sizes: GPTConfig's fields, defaults and checks (only the mask differs)."""

    def __post_init__(self):
        super().__post_init__()
        if (self.norm, self.pos_encoding) != ("layernorm", "learned"):
            raise ConfigError(f"the encoder has LayerNorm and learned positions only, not norm "
                              f"{self.norm!r} / pos_encoding {self.pos_encoding!r}; drop --norm "
                              "and --pos-encoding")


# P = softmax(q k^T / sqrt(D) + padding mask);  the mask is -inf at padding keys, 0 elsewhere
def attention_probs(q: Tensor, k: Tensor, blocked=None) -> Tensor:
    """q, k (B, H, T, D) -> P (B, H, T, T), rows sum to 1; ``blocked`` (B, 1, 1, T) marks padding keys.

    Composed from primitives (matmul, masked_fill, softmax), so its VJP is theirs.
    """
    scores = (q @ k.swapaxes(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))   # (B, H, T, T)
    if blocked is not None:
        scores = ops.masked_fill(scores, blocked, -math.inf)
    return scores.softmax(axis=-1)


# y = P v: every query attends to every key that is not padding (no causal mask)
def bidirectional_attention(q: Tensor, k: Tensor, v: Tensor, blocked=None) -> Tensor:
    """q, k, v (B, H, T, D) -> (B, H, T, D); a padding key gets weight exactly 0."""
    return attention_probs(q, k, blocked) @ v


def padding_mask(keep) -> object | None:
    """keep (B, T) bool (False at padding) -> blocked (B, 1, 1, T) for the attention scores."""
    if keep is None:
        return None
    keep = backends.current().xp.asarray(keep.data if isinstance(keep, Tensor) else keep)
    return ~keep[:, None, None, :]


class SelfAttention(CausalSelfAttention):
    """GPT's multi-head attention (same c_attn, c_proj) with no causal mask."""

    def _heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """q, k, v, each (B, H, T, D): the fused projection's thirds, split into heads."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(3, axis=2)                         # 3 x (B, T, C)
        split = lambda t: t.reshape(B, T, self.n_head, C // self.n_head).transpose(0, 2, 1, 3)  # noqa: E731
        return split(q), split(k), split(v)                               # (B, H, T, D)

    def forward(self, x: Tensor, blocked=None) -> Tensor:
        B, T, C = x.shape
        q, k, v = self._heads(x)                                          # (B, H, T, D)
        y = bidirectional_attention(q, k, v, blocked)                     # (B, H, T, D)
        y = y.transpose(0, 2, 1, 3).reshape(B, T, C)                      # (B, T, C)
        return self.resid_dropout(self.c_proj(y))


class EncoderBlock(Module):
    """Pre-LN residual block: x + attn(ln_1(x)), then + mlp(ln_2(x))."""

    def __init__(self, cfg: EncoderConfig, rng: np.random.Generator):
        self.ln_1 = LayerNorm(cfg.n_embd)
        self.attn = SelfAttention(cfg, rng)
        self.ln_2 = LayerNorm(cfg.n_embd)
        self.mlp = MLP(cfg, rng)

    def forward(self, x: Tensor, blocked=None) -> Tensor:
        x = x + self.attn(self.ln_1(x), blocked)
        return x + self.mlp(self.ln_2(x))


class Encoder(Module):
    """Token ids (B, T) -> contextual features (B, T, C) and masked-LM logits (B, T, V)."""

    model_type = "encoder"

    def __init__(self, cfg: EncoderConfig, seed: int = 0):
        self.config = cfg
        rng = np.random.default_rng(seed)  # initialised on the host: identical on every backend
        self.wte = Embedding(cfg.vocab_size, cfg.n_embd, rng)
        self.wpe = Embedding(cfg.block_size, cfg.n_embd, rng)
        self.drop = Dropout(cfg.dropout)
        self.blocks = [EncoderBlock(cfg, rng) for _ in range(cfg.n_layer)]
        self.ln_f = LayerNorm(cfg.n_embd)

    def features(self, idx, keep=None) -> Tensor:
        """idx (B, T) int, keep (B, T) bool (False at padding; None: no padding) -> (B, T, C)."""
        idx = idx.data if isinstance(idx, Tensor) else idx
        B, T = idx.shape
        if T > self.config.block_size:
            raise ValueError(f"sequence length {T} exceeds block_size {self.config.block_size}; "
                             "truncate the input to block_size tokens")
        blocked = padding_mask(keep)                                      # (B, 1, 1, T)
        pos = backends.current().xp.arange(T)
        x = self.drop(self.wte(idx) + self.wpe(pos))                      # (B, T, C)
        for block in self.blocks:
            x = block(x, blocked)
        return self.ln_f(x)

    def forward(self, idx, targets=None, keep=None):
        """-> logits (B, T, V), and the mean cross-entropy over targets != -100 when given.

        For masked-LM training ``targets`` holds the original token at the masked
        positions and -100 (ignored) everywhere else (tinylm.mlm.mask_tokens).
        """
        x = self.features(idx, keep)
        logits = x @ self.wte.weight.T                                    # (B, T, V), tied weights
        loss = ops.cross_entropy(logits, targets) if targets is not None else None
        return logits, loss
