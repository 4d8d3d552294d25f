"""tinylm: a small language-model library to read and to use.

The reference is plain NumPy: ``Tensor`` (tensor.py) records operations,
``ops`` holds each primitive's forward and VJP, ``nn`` the modules, and
``models.gpt`` the GPT. Backends (``tinylm.backends``) swap the array module and
a few fused kernels, so the same code runs on Numba or a GPU.
"""

from pathlib import Path as _Path

# In a source checkout, backends/ and cli.py sit beside tinylm/ and an install maps
# them into the package (pyproject.toml, package-dir). Without an install, let this
# package find them where they are, so `import tinylm` works in a plain clone.
_root = _Path(__file__).resolve().parent.parent
if not (_Path(__file__).parent / "backends").is_dir() and (_root / "backends" / "base.py").is_file():
    __path__.append(str(_root))  # noqa: F821  (a package's __path__)
del _root

from tinylm import ops  # noqa: F401,E402  (installs Tensor's operators)
from tinylm.errors import (BackendUnavailable, CheckpointError, ConfigError, DataError,
                           TinyLMError, TrainingDiverged)
from tinylm.language_model import LanguageModel, fit, load
from tinylm.models import GPT, GPTConfig
from tinylm.nn import Module, Parameter
from tinylm.tensor import Tensor, get_default_dtype, no_grad, set_default_dtype

__version__ = "0.1.0"

__all__ = [
    "Tensor", "no_grad", "get_default_dtype", "set_default_dtype", "ops",
    "Module", "Parameter", "GPT", "GPTConfig", "load", "fit", "LanguageModel",
    "TinyLMError", "ConfigError", "DataError", "CheckpointError", "BackendUnavailable",
    "TrainingDiverged",
]
