"""Checkpoints: one safetensors file per run directory, written atomically, no pickle.

``DIR/checkpoint.safetensors`` holds the model weights (``model/<name>``), the
optimizer moments (``optim/<name>``) and, in its metadata, one JSON document:
the format version, model type and config, tokenizer, training state (step,
sampler and dropout RNG states, history), versions, and a SHA-256 of every
tensor (of its dtype, shape and bytes). The file is replaced atomically (temp
file, fsync, rename), so a crash at any moment leaves the previous checkpoint
loadable.

Loading trusts nothing: the JSON document has its own SHA-256 (metadata key
``tinylm.sha256``), every tensor is checked against the manifest, and the
header must be byte for byte the compact JSON this module writes, so one
changed byte anywhere in the file is reported, never loaded. Nothing is ever
unpickled: safetensors holds raw numbers and JSON only.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tinylm import backends, jsonsafe
from tinylm.checkpoint_schema import check_finite, check_metadata
from tinylm.errors import CheckpointError, ConfigError
from tinylm.fileio import remove_stale_temporaries
from tinylm.models.sizes import gpt_parameters
from tinylm.safetensors import read_file, read_header, save_file

FORMAT = "tinylm-checkpoint"
VERSION = 1
FILENAME = "checkpoint.safetensors"
META_KEY, META_DIGEST_KEY = "tinylm", "tinylm.sha256"


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
    """SHA-256 of a tensor's dtype, shape and bytes (a relabelled dtype or shape fails it too)."""
    h = hashlib.sha256(f"{array.dtype.name}{list(array.shape)}".encode())
    h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()


def _text_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


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
    for name, array in tensors.items():
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise CheckpointError(f"refusing to save {path}: tensor {name} holds NaN or inf; "
                                  "the previous checkpoint is kept")
    meta = {
        "format": FORMAT, "version": VERSION,
        "model": {"type": ckpt.model_type, "config": ckpt.model_config},
        "tokenizer": ckpt.tokenizer,
        "train": ckpt.train,
        "info": {**_versions(), "backend": backends.current().name,
                 "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **ckpt.info},
        "sha256": {name: _digest(a) for name, a in tensors.items()},
    }
    text = json.dumps(meta)
    _check_storable_text(path, meta)
    remove_stale_temporaries(path)  # left by a writer that was killed mid-save
    save_file(tensors, path, metadata={META_KEY: text, META_DIGEST_KEY: _text_digest(text)})
    return path


def _check_storable_text(path: Path, meta: dict) -> None:
    """Refuse strings with lone surrogates: JSON would read a high + low pair back as one character."""
    try:
        json.dumps(meta, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise CheckpointError(f"cannot save {path}: the metadata holds a lone surrogate "
                              f"({exc.object[exc.start]!r}), which the file cannot store faithfully "
                              "(is the tokenizer built from text that is not valid Unicode?)") from None


def load_checkpoint(location) -> Checkpoint:
    """Read and verify a checkpoint; any problem is a one-line CheckpointError."""
    path = checkpoint_path(location)
    if not path.exists():
        hint = f"; train one with: tinylm train --out {path.parent}" if path.parent.is_dir() else ""
        raise CheckpointError(f"no checkpoint at {path}{hint}")
    header = read_header(path)  # no tensor is read until the header and metadata pass
    metadata = header.metadata
    _check_canonical_header(path, header.raw)
    if META_KEY not in metadata:
        raise CheckpointError(f"{path} is a safetensors file but not a tinylm checkpoint "
                              "(no 'tinylm' metadata)")
    text = metadata[META_KEY]
    if META_DIGEST_KEY not in metadata:
        raise CheckpointError(f"{path}: checkpoint metadata has no SHA-256 ({META_DIGEST_KEY!r}); "
                              "the file was modified or written by a pre-release tinylm")
    if metadata[META_DIGEST_KEY] != _text_digest(text):
        raise CheckpointError(f"{path}: checkpoint metadata fails its SHA-256 check "
                              "(file modified or corrupted)")
    meta = jsonsafe.parse(text, f"{path}: checkpoint metadata", CheckpointError)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a tinylm checkpoint (format {meta.get('format')!r})"
                              if isinstance(meta, dict) else f"{path}: malformed metadata")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint format version {meta.get('version')!r}; this "
                              f"tinylm reads version {VERSION}")
    sums = meta.get("sha256")
    if not isinstance(sums, dict) or set(sums) != set(header.entries) \
            or not all(isinstance(v, str) for v in sums.values()):
        raise CheckpointError(f"{path}: the tensor list does not match the manifest "
                              "(file modified or corrupted)")
    check_metadata(path, meta)  # the digests show the file is unchanged, not that it is sane
    again, tensors = read_file(path)
    if again.raw != header.raw:
        raise CheckpointError(f"{path} changed while it was read; load it again")
    for name, array in tensors.items():
        if _digest(array) != sums[name]:
            raise CheckpointError(f"{path}: tensor {name} fails its SHA-256 check "
                                  "(file modified or corrupted)")
    check_finite(path, tensors)
    try:
        model = meta["model"]
        return Checkpoint(
            model_type=str(model["type"]), model_config=dict(model["config"]),
            tokenizer=dict(meta["tokenizer"]),
            weights={k[6:]: v for k, v in tensors.items() if k.startswith("model/")},
            optimizer={k[6:]: v for k, v in tensors.items() if k.startswith("optim/")},
            train=dict(meta.get("train") or {}), info=dict(meta.get("info") or {}), path=path)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: malformed checkpoint metadata ({exc!r:.200})") from None


def _check_canonical_header(path: Path, raw: bytes) -> None:
    """The header must be exactly what save_file writes: compact JSON, then < 8 spaces.

    JSON ignores whitespace and the digests cannot cover the header that holds
    them, so without this check a changed padding byte would load unnoticed.
    ``raw`` is the header as stored, already parsed once by ``read_file``.
    """
    body = raw.rstrip(b" ")
    padding = len(raw) - len(body)
    parsed = jsonsafe.parse(body, f"{path}: header", CheckpointError)
    canonical = json.dumps(parsed, separators=(",", ":")).encode("utf-8")
    if body != canonical or padding != -len(body) % 8:
        raise CheckpointError(f"{path}: the header is not as tinylm wrote it "
                              "(file modified or corrupted)")


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
    # Compare sizes before allocating: a config that does not match its weights
    # could otherwise ask for any amount of memory.
    counter = getattr(config, "count_parameters", None)  # a model not laid out as GPT counts its own
    expected = counter() if counter else gpt_parameters(config)
    held = sum(int(w.size) for w in ckpt.weights.values())
    if held != expected:
        raise CheckpointError(f"{ckpt.path}: the model config describes {expected:,} parameters "
                              f"but the file holds {held:,} (shape-mismatched checkpoint)")
    model = model_cls(config)
    try:
        model.load_state_dict(ckpt.weights)
    except CheckpointError as exc:
        raise CheckpointError(f"{ckpt.path}: {exc}") from None
    return model


# The optimizer's part: the moments of parameter i as optim/m.<i> and optim/v.<i>, the step
# in the training state (train["optimizer"]); restored into a fresh AdamW over the same model.
def optimizer_state(opt) -> tuple[dict[str, np.ndarray], dict]:
    """An AdamW's (first and second moments as host arrays by parameter index, JSON-able scalars)."""
    to_host = backends.current().to_host
    arrays = {}
    for i, (m, v) in enumerate(zip(opt.m, opt.v)):
        arrays[f"m.{i}"] = np.array(to_host(m))
        arrays[f"v.{i}"] = np.array(to_host(v))
    return arrays, {"step": opt.step_count, "lr": opt.lr}


def restore_optimizer(opt, arrays: dict, scalars: dict) -> None:
    """Put saved moments and step (``optimizer_state``'s) into ``opt``; names and shapes must match."""
    backend = backends.current()
    for i, p in enumerate(opt.params):
        for name, store in (("m", opt.m), ("v", opt.v)):
            key = f"{name}.{i}"
            if key not in arrays or tuple(arrays[key].shape) != p.shape:
                raise CheckpointError(f"optimizer state {key} is missing or does not "
                                      f"match parameter shape {p.shape}")
            store[i] = backend.from_host(arrays[key], dtype=p.dtype)
    step = scalars.get("step") if isinstance(scalars, dict) else None
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise CheckpointError(f"optimizer step must be a non-negative integer, got {step!r:.40}")
    opt.step_count = step


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
