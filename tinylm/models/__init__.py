"""Model architectures built from tinylm.nn modules."""

from .gpt import GPT, Block, CausalSelfAttention, GPTConfig, MLP

# model type (as written in checkpoints) -> (config class, model class)
MODEL_TYPES = {
    "gpt": (GPTConfig, GPT),
}

__all__ = ["GPT", "GPTConfig", "Block", "CausalSelfAttention", "MLP", "MODEL_TYPES"]
