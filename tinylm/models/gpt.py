"""GPT: a decoder-only transformer, in the order data flows through it.

tokens -> token + position embeddings -> n_layer x Block(pre-LN attention, pre-LN MLP)
-> final LayerNorm -> logits over the vocabulary (output matrix tied to the input
embedding). Names follow nanoGPT/GPT-2 so readers can cross-reference.

The training graph only: generation with a KV cache is tinylm/kvcache.py; the lab
watches and ablates heads through ``CausalSelfAttention.hook`` (tinylm/lab/hooks.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tinylm import backends, ops
from tinylm.errors import ConfigError, ConfigRecord, require_choice, require_positive_ints
from tinylm.models.llama import RMSNorm, Rotary
from tinylm.nn import Dropout, Embedding, LayerNorm, Linear, Module
from tinylm.tensor import Tensor

NORMS = {"layernorm": LayerNorm, "rmsnorm": RMSNorm}   # GPT-2's; LLaMA's (no mean, no bias)
POS_ENCODINGS = ("learned", "rope")                    # GPT-2's wpe table; rotary q and k


@dataclass(frozen=True)
class GPTConfig(ConfigRecord):
    KIND = "GPT"
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
        require_choice(self, "norm", NORMS)
        require_choice(self, "pos_encoding", POS_ENCODINGS)
        if self.pos_encoding == "rope" and (self.n_embd // self.n_head) % 2:
            raise ConfigError(f"rope rotates pairs of channels: the head size n_embd / n_head = "
                              f"{self.n_embd // self.n_head} must be even")
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout!r}")


class CausalSelfAttention(Module):
    """Multi-head self-attention in which position t sees positions 0..t only."""

    hook = None  # the lab's observation point: (qkv, y) -> y, may record or change y (tinylm/lab/hooks.py)

    def __init__(self, cfg: GPTConfig, rng: np.random.Generator):
        self.n_head = cfg.n_head
        self.c_attn = Linear(cfg.n_embd, 3 * cfg.n_embd, rng, cfg.bias)  # fused q, k, v
        # residual projections get std 0.02/sqrt(2 n_layer) (GPT-2): the residual
        # stream's variance then stays O(1) however deep the model is
        self.c_proj = Linear(cfg.n_embd, cfg.n_embd, rng, cfg.bias,
                             std=0.02 / math.sqrt(2 * cfg.n_layer))
        self.resid_dropout = Dropout(cfg.dropout)
        # rope: q and k turned by their position before attention (LLaMA); None with a wpe table
        self.rotary = Rotary(cfg.n_embd // cfg.n_head, cfg.block_size) if cfg.pos_encoding == "rope" else None

    def forward(self, x: Tensor) -> Tensor:
        qkv = self.c_attn(x)                                             # (B, T, 3C) = [q | k | v]
        if self.rotary is not None:
            qkv = self.rotary(qkv, self.n_head)                          # q, k turned by position
        # softmax(q k^T / sqrt(D) + causal mask) v on each head, heads side by side: one op
        y = ops.causal_self_attention(qkv, self.n_head)                  # (B, T, C)
        if self.hook is not None:
            y = self.hook(qkv, y)
        return self.resid_dropout(self.c_proj(y))


class MLP(Module):
    """Position-wise feed-forward: Linear(C, 4C) -> GELU -> Linear(4C, C)."""

    def __init__(self, cfg: GPTConfig, rng: np.random.Generator):
        self.c_fc = Linear(cfg.n_embd, 4 * cfg.n_embd, rng, cfg.bias)
        self.c_proj = Linear(4 * cfg.n_embd, cfg.n_embd, rng, cfg.bias,
                             std=0.02 / math.sqrt(2 * cfg.n_layer))
        self.dropout = Dropout(cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.c_proj(ops.gelu(self.c_fc(x))))


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
