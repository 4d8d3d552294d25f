"""A GPT's parameter count from its sizes, without building it (for estimates and checks)."""

from __future__ import annotations


def count_parameters(vocab_size: int, block_size: int, n_layer: int, n_embd: int,
                     bias: bool = True) -> int:
    """Parameters of a GPT with these sizes (exactly ``GPT(cfg).num_parameters()``)."""
    V, T, L, C = vocab_size, block_size, n_layer, n_embd
    per_block = 12 * C * C + 4 * C + (9 * C if bias else 0)   # 4 matrices, 2 LayerNorms, biases
    return V * C + T * C + L * per_block + 2 * C


def gpt_parameters(cfg) -> int:
    """Exactly ``GPT(cfg).num_parameters()`` for a GPTConfig (or EncoderConfig): GPT-2's count,
    less the position table with rope and the norms' biases with rmsnorm (LLaMA's layers)."""
    n = count_parameters(cfg.vocab_size, cfg.block_size, cfg.n_layer, cfg.n_embd, cfg.bias)
    n -= cfg.block_size * cfg.n_embd if cfg.pos_encoding == "rope" else 0
    return n - ((2 * cfg.n_layer + 1) * cfg.n_embd if cfg.norm == "rmsnorm" else 0)
