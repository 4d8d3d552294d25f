"""Model architectures built from tinylm.nn modules."""

from .encoder import Encoder, EncoderConfig
from .gpt import GPT, Block, CausalSelfAttention, GPTConfig, MLP

# model type (as written in checkpoints) -> (config class, model class)
MODEL_TYPES = {
    "gpt": (GPTConfig, GPT),
    "encoder": (EncoderConfig, Encoder),
}

__all__ = ["GPT", "GPTConfig", "Block", "CausalSelfAttention", "MLP", "MODEL_TYPES",
           "Encoder", "EncoderConfig"]
