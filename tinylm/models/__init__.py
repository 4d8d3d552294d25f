"""Model architectures built from tinylm.nn modules."""

from .gpt import GPT, Block, CausalSelfAttention, GPTConfig, MLP

__all__ = ["GPT", "GPTConfig", "Block", "CausalSelfAttention", "MLP"]
