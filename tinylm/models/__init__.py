"""Model architectures built from tinylm.nn modules."""

from .classifier import ClassifierConfig, SequenceClassifier
from .encoder import Encoder, EncoderConfig
from .gpt import GPT, Block, CausalSelfAttention, GPTConfig, MLP
from .lstm import LSTM, LSTMConfig

# model type (as written in checkpoints) -> (config class, model class)
MODEL_TYPES = {
    "gpt": (GPTConfig, GPT),
    "encoder": (EncoderConfig, Encoder),
    "classifier": (ClassifierConfig, SequenceClassifier),
    "lstm": (LSTMConfig, LSTM),
}

__all__ = ["GPT", "GPTConfig", "Block", "CausalSelfAttention", "MLP", "MODEL_TYPES",
           "Encoder", "EncoderConfig", "SequenceClassifier", "ClassifierConfig", "LSTM", "LSTMConfig"]
