"""What a checkpoint's metadata may hold: types and ranges, checked when it is loaded.

The SHA-256 digests in a checkpoint detect corruption, not forgery: anyone can
write a file with consistent digests. So every field a later step reads is
checked here first, and a forged one is refused in one line naming the field,
instead of surfacing as a traceback (a string where a step count belongs) or
being used silently (an objective the model cannot be trained with).
"""

from __future__ import annotations

import math

import numpy as np

from tinylm.errors import CheckpointError
from tinylm.jsonsafe import field, is_int

# objective -> the model types it trains; "clm" is any model outside the other two
OBJECTIVE_MODELS = {"mlm": ("encoder",), "classify": ("classifier",)}
OBJECTIVES = ("clm", *OBJECTIVE_MODELS)


def check_metadata(path, meta: dict) -> None:
    """CheckpointError unless ``meta``'s model, tokenizer, train and info fields are well formed."""
    where = f"{path}: metadata"
    model = field(meta, "model", dict, where, CheckpointError)
    model_type = field(model, "type", str, f"{where} model", CheckpointError)
    field(model, "config", dict, f"{where} model", CheckpointError)
    field(meta, "tokenizer", dict, where, CheckpointError)
    field(meta, "info", (dict, type(None)), where, CheckpointError, default=None)
    train = field(meta, "train", (dict, type(None)), where, CheckpointError, default=None) or {}
    _check_train(f"{where} train", train, model_type)


def _check_train(where: str, train: dict, model_type: str) -> None:
    step = field(train, "step", int, where, CheckpointError, default=0)
    if step < 0:
        raise CheckpointError(f"{where}: step must be >= 0, got {step}")
    objective = field(train, "objective", str, where, CheckpointError, default="clm")
    if objective not in OBJECTIVES:
        raise CheckpointError(f"{where}: unknown objective {objective!r:.40}; known: {', '.join(OBJECTIVES)}")
    fits = model_type in OBJECTIVE_MODELS[objective] if objective in OBJECTIVE_MODELS else \
        all(model_type not in types for types in OBJECTIVE_MODELS.values())
    if not fits:
        raise CheckpointError(f"{where}: objective {objective!r} does not train a {model_type!r} model")
    optimizer = field(train, "optimizer", (dict, type(None)), where, CheckpointError, default=None)
    if optimizer is not None:
        opt_step = field(optimizer, "step", int, f"{where} optimizer", CheckpointError)
        if opt_step < 0:
            raise CheckpointError(f"{where} optimizer: step must be >= 0, got {opt_step}")
    for n, entry in enumerate(field(train, "history", list, where, CheckpointError, default=[])):
        _check_history_entry(f"{where} history[{n}]", entry)
    data = field(train, "data", (dict, type(None)), where, CheckpointError, default=None)
    if data is not None:
        _check_data(f"{where} data", data)


def _check_history_entry(where: str, entry) -> None:
    """[step, train loss, val loss]: a non-negative int and two finite numbers."""
    if not (isinstance(entry, list) and len(entry) == 3 and is_int(entry[0]) and entry[0] >= 0
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
                    for x in entry[1:])):
        raise CheckpointError(f"{where} must be [step, train loss, val loss], got {entry!r:.60}")


def _check_data(where: str, data: dict) -> None:
    for name in ("path", "resolved", "relative_to_run"):  # where the run's data is (tinylm.run)
        path = field(data, name, (str, type(None)), where, CheckpointError, default=None)
        if path is not None and (not path or "\0" in path):
            raise CheckpointError(f"{where}: {name} must be a file or directory name, got {path!r:.60}")
    fraction = field(data, "val_fraction", float, where, CheckpointError, default=0.1)
    if not 0 < fraction < 1:
        raise CheckpointError(f"{where}: val_fraction must be in (0, 1), got {fraction}")
    for name in ("sha256", "source"):
        field(data, name, (str, type(None)), where, CheckpointError, default=None)


def check_finite(path, tensors: dict[str, np.ndarray]) -> None:
    """No NaN or inf in a floating-point tensor (tinylm never saves one; a forged file might)."""
    for name, array in tensors.items():
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise CheckpointError(f"{path}: tensor {name} holds NaN or inf; a model with such weights "
                                  "computes nothing meaningful (file modified or corrupted)")


