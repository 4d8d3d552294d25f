"""tinylm: a small language-model library to read and to use.

The reference is plain NumPy: ``Tensor`` (tensor.py) records operations,
``ops`` holds each primitive's forward and VJP, ``nn`` the modules, and
``models.gpt`` the GPT. Backends (``tinylm.backends``) swap the array module and
a few fused kernels, so the same code runs on Numba or a GPU.
"""

import os.path as _p  # not pathlib: this runs before the CLI's Ctrl-C handler is installed

# In a source checkout, backends/ and cli.py sit beside tinylm/ and an install maps
# them into the package (pyproject.toml, package-dir). Without an install, let this
# package find them where they are, so `import tinylm` works in a plain clone.
_here = _p.dirname(_p.realpath(__file__))
_root = _p.dirname(_here)
if not _p.isdir(_p.join(_here, "backends")) and _p.isfile(_p.join(_root, "backends", "base.py")):
    __path__.append(_root)  # noqa: F821  (a package's __path__)
del _p, _here, _root

# The public names are imported on first use (PEP 562), so that `import tinylm` and
# the CLI's entry module (tinylm/console.py) load nothing heavy before they choose to.
_EXPORTS = {
    "ops": "tinylm.ops", "Tensor": "tinylm.tensor", "no_grad": "tinylm.tensor",
    "get_default_dtype": "tinylm.tensor", "set_default_dtype": "tinylm.tensor",
    "Module": "tinylm.nn", "Parameter": "tinylm.nn", "Buffer": "tinylm.nn",
    "GPT": "tinylm.models", "GPTConfig": "tinylm.models",
    "load": "tinylm.language_model", "fit": "tinylm.language_model", "LanguageModel": "tinylm.language_model",
    **{name: "tinylm.errors" for name in ("TinyLMError", "ConfigError", "DataError", "CheckpointError",
                                          "BackendUnavailable", "TrainingDiverged")},
}


def __getattr__(name: str):
    import importlib

    if name not in _EXPORTS:
        raise AttributeError(f"module 'tinylm' has no attribute {name!r}")
    importlib.import_module("tinylm.ops")  # gives Tensor its operators (a + b, a @ b, x[i])
    module = importlib.import_module(_EXPORTS[name])
    value = module if module.__name__ == f"tinylm.{name}" else getattr(module, name)
    globals()[name] = value
    return value


__version__ = "0.1.0"

__all__ = [
    "Tensor", "no_grad", "get_default_dtype", "set_default_dtype", "ops",
    "Module", "Parameter", "Buffer", "GPT", "GPTConfig", "load", "fit", "LanguageModel",
    "TinyLMError", "ConfigError", "DataError", "CheckpointError", "BackendUnavailable",
    "TrainingDiverged",
]
