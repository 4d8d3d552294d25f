"""Checkpoints: one safetensors file per run directory, written atomically, no pickle.

``DIR/checkpoint.safetensors`` holds the model weights (``model/<name>``), the
optimizer moments (``optim/<name>``) and, in its metadata, one JSON document:
the format version, model type and config, tokenizer, training state (step,
sampler and dropout RNG states, history), versions, and a SHA-256 of every
tensor. The file is replaced atomically (temp file, fsync, rename), so a crash
at any moment leaves the previous checkpoint loadable.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tinylm import backends
from tinylm.errors import CheckpointError, ConfigError
from tinylm.safetensors import load_file, save_file

FORMAT = "tinylm-checkpoint"
VERSION = 1
FILENAME = "checkpoint.safetensors"


@dataclass
class Checkpoint:
    """The parsed content of a checkpoint (host arrays and JSON-able dicts)."""

    model_type: str
    model_config: dict
    tokenizer: dict
    weights: dict[str, np.ndarray]
    optimizer: dict[str, np.ndarray] = field(default_factory=dict)
    train: dict = field(default_factory=dict)    # config, step, sampler, rng, history, ...
    info: dict = field(default_factory=dict)     # versions, backend, time
    path: Path | None = None


def checkpoint_path(location) -> Path:
    """The checkpoint file for a run directory (or the file itself if given)."""
    location = Path(location)
    return location if location.suffix == ".safetensors" else location / FILENAME


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _versions() -> dict:
    import tinylm
    return {"tinylm": tinylm.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def save_checkpoint(location, ckpt: Checkpoint) -> Path:
    """Write ``ckpt`` to ``location`` (a run directory) atomically; returns the file path."""
    path = checkpoint_path(location)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"model/{k}": v for k, v in ckpt.weights.items()}
    tensors.update({f"optim/{k}": v for k, v in ckpt.optimizer.items()})
    meta = {
        "format": FORMAT, "version": VERSION,
        "model": {"type": ckpt.model_type, "config": ckpt.model_config},
        "tokenizer": ckpt.tokenizer,
        "train": ckpt.train,
        "info": {**_versions(), "backend": backends.current().name,
                 "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **ckpt.info},
        "sha256": {name: _digest(a) for name, a in tensors.items()},
    }
    save_file(tensors, path, metadata={"tinylm": json.dumps(meta)})
    return path


def load_checkpoint(location) -> Checkpoint:
    """Read and verify a checkpoint; any problem is a one-line CheckpointError."""
    path = checkpoint_path(location)
    if not path.exists():
        hint = f"; train one with: tinylm train --out {path.parent}" if path.parent.is_dir() else ""
        raise CheckpointError(f"no checkpoint at {path}{hint}")
    tensors, metadata = load_file(path)
    try:
        meta = json.loads(metadata["tinylm"])
    except KeyError:
        raise CheckpointError(f"{path} is a safetensors file but not a tinylm checkpoint "
                              "(no 'tinylm' metadata)") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: checkpoint metadata is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a tinylm checkpoint (format {meta.get('format')!r})"
                              if isinstance(meta, dict) else f"{path}: malformed metadata")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint format version {meta.get('version')!r}; this "
                              f"tinylm reads version {VERSION}")
    sums = meta.get("sha256")
    if not isinstance(sums, dict) or set(sums) != set(tensors):
        raise CheckpointError(f"{path}: the tensor list does not match the manifest "
                              "(file modified or corrupted)")
    for name, array in tensors.items():
        if _digest(array) != sums[name]:
            raise CheckpointError(f"{path}: tensor {name} fails its SHA-256 check "
                                  "(file modified or corrupted)")
    try:
        model = meta["model"]
        return Checkpoint(
            model_type=str(model["type"]), model_config=dict(model["config"]),
            tokenizer=dict(meta["tokenizer"]),
            weights={k[6:]: v for k, v in tensors.items() if k.startswith("model/")},
            optimizer={k[6:]: v for k, v in tensors.items() if k.startswith("optim/")},
            train=dict(meta.get("train") or {}), info=dict(meta.get("info") or {}), path=path)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: malformed checkpoint metadata ({exc!r})") from None


def build_model(ckpt: Checkpoint):
    """The model a checkpoint describes, with its weights loaded on the active backend."""
    from tinylm.models import MODEL_TYPES

    if ckpt.model_type not in MODEL_TYPES:
        raise CheckpointError(f"{ckpt.path}: unknown model type {ckpt.model_type!r}; "
                              f"this tinylm knows {sorted(MODEL_TYPES)}")
    config_cls, model_cls = MODEL_TYPES[ckpt.model_type]
    try:
        config = config_cls.from_dict(ckpt.model_config)
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"{ckpt.path}: invalid model config in checkpoint ({exc})") from None
    model = model_cls(config)
    model.load_state_dict(ckpt.weights)
    return model


def load_model(location):
    """(model, tokenizer, checkpoint) from a run directory, ready for sampling or evaluation."""
    from tinylm.tokenizers import tokenizer_from_dict

    ckpt = load_checkpoint(location)
    model = build_model(ckpt)
    tokenizer = tokenizer_from_dict(ckpt.tokenizer)
    if tokenizer.vocab_size > model.config.vocab_size:
        raise CheckpointError(f"{ckpt.path}: tokenizer has {tokenizer.vocab_size} tokens but the "
                              f"model only {model.config.vocab_size}")
    return model.eval(), tokenizer, ckpt
