"""tinylm: a small language-model library to read and to use.

The reference is plain NumPy: ``Tensor`` (tensor.py) records operations,
``ops`` holds each primitive's forward and VJP, ``nn`` the modules, and
``models.gpt`` the GPT. Backends (``tinylm.backends``) swap the array module and
a few fused kernels, so the same code runs on Numba or a GPU.
"""

from tinylm import ops  # noqa: F401  (installs Tensor's operators)
from tinylm.errors import (BackendUnavailable, CheckpointError, ConfigError, DataError,
                           TinyLMError, TrainingDiverged)
from tinylm.models import GPT, GPTConfig
from tinylm.nn import Module, Parameter
from tinylm.tensor import Tensor, get_default_dtype, no_grad, set_default_dtype

__version__ = "0.1.0"

__all__ = [
    "Tensor", "no_grad", "get_default_dtype", "set_default_dtype", "ops",
    "Module", "Parameter", "GPT", "GPTConfig",
    "TinyLMError", "ConfigError", "DataError", "CheckpointError", "BackendUnavailable",
    "TrainingDiverged",
]
