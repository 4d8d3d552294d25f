"""A training run as `tinylm train` performs it: data, model, state, checkpoints, resume.

The CLI only resolves options and prints; everything it does is here, so tests
and scripts can run exactly what a user runs.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shlex
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable

import numpy as np

from tinylm import backends
from tinylm.checkpoint import (Checkpoint, build_model, load_checkpoint, optimizer_state, restore_optimizer,
                               save_checkpoint)
from tinylm.config import MODEL_CONFIGS
from tinylm.data import BatchSampler, Corpus, default_corpus, load_text, split_ids, unigram_entropy
from tinylm.distributed import Communicator
from tinylm.errors import CheckpointError, ConfigError, DataError, TrainingDiverged
from tinylm.metrics import MetricsLog
from tinylm.mlm import MaskedBatches, MaskingRecipe
from tinylm.models import MODEL_TYPES, Encoder, EncoderConfig, GPTConfig
from tinylm.resources import check_training
from tinylm.tensor import get_default_dtype
from tinylm.tokenizers import CharTokenizer, WithSpecialTokens, tokenizer_from_dict
from tinylm.train import TrainConfig, TrainState, new_state, train


def load_corpus(path: str | None) -> Corpus:
    """The text at ``path`` (a file or directory), or the offline default corpus for None."""
    if path is not None and (not isinstance(path, str) or "\0" in path):
        raise DataError(f"the data path must be a file or directory name, got {path!r:.80}")
    return default_corpus() if path is None else load_text(path)


def data_record(path: str | None, run_dir) -> dict:
    """Where the data is, three ways, so a run resumes from another directory or machine:
    the path as given, resolved to an absolute path, and relative to the run directory."""
    if path is None:  # the offline default corpus
        return {"path": None}
    resolved = Path(path).resolve()
    try:
        relative = os.path.relpath(resolved, Path(run_dir).resolve())
    except ValueError:  # another drive (Windows): no relative path exists
        relative = None
    return {"path": str(path), "resolved": str(resolved), "relative_to_run": relative}


def find_saved_data(record: dict, run_dir) -> str | None:
    """The data path a checkpoint's data ``record`` names that exists here (None: default corpus).

    Tries the absolute path, then the path relative to the run directory, then the
    path as given (relative to the working directory); DataError if none exists.
    """
    given = record.get("path")
    if not isinstance(given, str):  # None: the default corpus; anything else load_corpus refuses
        return given
    relative = record.get("relative_to_run")
    beside_run = os.path.normpath(Path(run_dir) / relative) if isinstance(relative, str) else None
    candidates = [record.get("resolved"), beside_run, given]
    tried = [c for c in candidates if isinstance(c, str)]
    for candidate in tried:
        if Path(candidate).exists():
            return candidate
    raise DataError(f"the data this run was trained on is not at {' nor '.join(dict.fromkeys(tried))}; "
                    "pass --data PATH to say where it is now")


def load_saved_corpus(ckpt: Checkpoint) -> Corpus:
    """The corpus a checkpoint was trained on, found from its data record (see find_saved_data)."""
    record = ckpt.train.get("data") or {}
    if not isinstance(record, dict):
        raise CheckpointError(f"{ckpt.path}: malformed data record {record!r:.80}")
    return load_corpus(find_saved_data(record, ckpt.path.parent))


def text_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def split_for_training(ids: np.ndarray, val_fraction: float, block_size: int):
    """(train_ids, val_ids); both must hold at least one full block plus its target."""
    train_ids, val_ids = split_ids(ids, val_fraction)
    need = block_size + 1
    for name, part in (("training", train_ids), ("validation", val_ids)):
        if len(part) < need:
            raise DataError(f"the {name} split has {len(part)} tokens but block_size {block_size} "
                            f"needs at least {need}; use more data, a smaller --block-size or "
                            "another --val-fraction")
    return train_ids, val_ids


def held_out_ids(ckpt: Checkpoint, tokenizer, data: str | None) -> tuple[np.ndarray, str]:
    """(token ids, description) to evaluate a checkpoint on: the text at ``data``, or the
    run's own validation split (``tinylm eval``, ``tinylm inspect ablate``)."""
    if data is not None:
        corpus = load_corpus(data)
        return np.asarray(tokenizer.encode(corpus.text)), corpus.source
    corpus = load_saved_corpus(ckpt)
    val_fraction = (ckpt.train.get("data") or {}).get("val_fraction", 0.1)
    _, ids = split_for_training(np.asarray(tokenizer.encode(corpus.text)), val_fraction,
                                ckpt.model_config["block_size"])
    return ids, f"validation split of {corpus.source}"


OBJECTIVES = ("clm", "mlm")  # next-token prediction (GPT); masked-LM pre-training (Encoder)
# The language models next-token prediction trains (`tinylm train --model`, config.MODEL_CONFIGS),
# by checkpoint type.
ARCHITECTURES = {name: MODEL_TYPES[name] for name in MODEL_CONFIGS}


def objective_parts(objective: str, tokenizer, model: str = "gpt"):
    """(config class, model class, batch factory) that train ``objective`` with ``tokenizer``.

    ``model`` picks the architecture of next-token prediction (a key of ARCHITECTURES).
    """
    if objective == "clm":
        if model not in ARCHITECTURES:
            raise ConfigError(f"unknown model {model!r}; choose one of {', '.join(ARCHITECTURES)}")
        return *ARCHITECTURES[model], BatchSampler
    if model != "gpt":
        raise ConfigError(f"--model {model} trains next-token prediction only (--objective clm); "
                          f"objective {objective!r} has no {model} model")
    if objective == "mlm":
        recipe = MaskingRecipe.for_tokenizer(tokenizer)
        return EncoderConfig, Encoder, functools.partial(MaskedBatches, recipe=recipe)
    raise ConfigError(f"objective {objective!r} has no language-model loss to train or score "
                      f"(the objectives are {', '.join(OBJECTIVES)}); a classifier's scores are in "
                      "the report of 'tinylm finetune'")


@dataclass
class Run:
    """Everything a training run holds; ``execute`` trains it to ``train_config.max_iters``."""

    model_config: GPTConfig
    train_config: TrainConfig
    tokenizer: CharTokenizer
    corpus: Corpus
    data_path: str | None
    val_fraction: float
    state: TrainState
    val_ids: np.ndarray
    out: Path
    saved_step: int | None = None  # step of the checkpoint in ``out`` written by this run
    objective: str = "clm"

    def checkpoint(self) -> Checkpoint:
        opt_arrays, opt_scalars = optimizer_state(self.state.optimizer)
        train = {
            "config": self.train_config.to_dict(),
            "step": self.state.step,
            "optimizer": opt_scalars,
            "sampler": self.state.sampler.state(),
            "dropout_rng": backends.current().rng_state(),
            "history": self.state.history,
            "objective": self.objective,
            "data": {**data_record(self.data_path, self.out), "val_fraction": self.val_fraction,
                     "sha256": text_digest(self.corpus.text), "source": self.corpus.source},
            "unigram_baseline": self.unigram_baseline(),
        }
        return Checkpoint(model_type=self.state.model.model_type, model_config=self.model_config.to_dict(),
                          tokenizer=self.tokenizer.to_dict(),
                          weights=self.state.model.state_dict(), optimizer=opt_arrays,
                          train=train, info={"seed": self.train_config.seed})

    def save(self, state: TrainState | None = None) -> Path:
        try:
            path = save_checkpoint(self.out, self.checkpoint())
        except OSError as exc:  # ENOSPC, EIO...: the atomic write left the old file as it was
            raise CheckpointError(
                f"could not save the checkpoint at step {self.state.step}: "
                f"{exc.strerror or exc}; {self._kept()}; free space (or fix the disk) and "
                f"{self._again()}") from None
        self.saved_step = self.state.step
        return path

    def _again(self) -> str:
        """How to continue after a failed save: resume only where a checkpoint exists."""
        if self.saved_step is None:
            return "run the same command again"
        return f"resume with: tinylm train --resume --out {shlex.quote(str(self.out))}"

    def unigram_baseline(self) -> float:
        """The validation loss of a model that ignores context (nats/token): the bar to beat."""
        return unigram_entropy(self.val_ids, self.tokenizer.vocab_size)

    def _kept(self) -> str:
        if self.saved_step is None:
            return f"no checkpoint of this run was written to {self.out}"
        return f"the last good checkpoint (step {self.saved_step}) in {self.out} is intact"

    def execute(self, on_event: Callable[[dict], None] = lambda e: None,
                stop_requested: Callable[[], bool] = lambda: False,
                communicator: Communicator | None = None) -> TrainState:
        """Train; with a ``communicator`` (data-parallel), only rank 0 writes checkpoints
        and the run's record (metrics.jsonl at each event, loss.png after each save)."""
        saves = communicator is None or communicator.rank == 0
        save = None
        if saves:
            record = MetricsLog(self.out, self.state.step, self.unigram_baseline())

            def on_event(event, show=on_event):
                show(event)
                self._write_record(record, event)

            def save(state):
                self.save(state)
                self._write_record(record.draw)  # drawn after the checkpoint: a full disk spares it
        try:
            return train(self.state, self.val_ids, self.train_config, on_event=on_event,
                         save=save, stop_requested=stop_requested, communicator=communicator)
        except TrainingDiverged as exc:
            raise TrainingDiverged(f"{exc}; {self._kept()}") from None

    def _write_record(self, write: Callable, *args) -> None:
        try:
            write(*args)
        except OSError as exc:
            raise CheckpointError(f"could not write the run's record (metrics.jsonl, loss.png) in "
                                  f"{self.out}: {exc.strerror or exc}; {self._kept()}") from None


def new_run(model_fields: dict, train_config: TrainConfig, data_path: str | None,
            val_fraction: float, out, objective: str = "clm", tokenizer=None,
            model: str = "gpt") -> Run:
    """A fresh run: tokenizer built from the corpus, model initialised from the seed.

    ``objective`` "clm" trains a GPT on next-token prediction; "mlm" an Encoder on
    masked tokens, its vocabulary extended by [PAD], [MASK] and [CLS]. ``tokenizer``
    (e.g. a BPETokenizer from ``tinylm tokenizer train``) replaces the corpus's characters.
    ``model`` "lstm" trains the recurrent model instead of the GPT; ``model_fields``
    may hold GPT-only fields (a preset's n_head), which it ignores.
    """
    corpus = load_corpus(data_path)
    if tokenizer is None:
        tokenizer = CharTokenizer.from_text(corpus.text)
    if objective == "mlm":
        tokenizer = WithSpecialTokens(tokenizer)
    config_cls, model_cls, batches = objective_parts(objective, tokenizer, model)
    known = {f.name for f in fields(config_cls)}
    model_config = config_cls(**{**{k: v for k, v in model_fields.items() if k in known},
                                 "vocab_size": tokenizer.vocab_size})
    train_ids, val_ids = split_for_training(tokenizer.encode(corpus.text), val_fraction,
                                            model_config.block_size)
    check_training(model_config, train_config.batch_size, backends.current(), _itemsize())
    model = model_cls(model_config, seed=train_config.seed)
    state = new_state(model, train_ids, train_config, batches)
    return Run(model_config, train_config, tokenizer, corpus, data_path, val_fraction,
               state, val_ids, Path(out), objective=objective)


def resume_run(out, train_overrides: dict, data_path: str | None = None) -> Run:
    """Continue the run saved in ``out``; only training fields (e.g. max_iters) may change."""
    ckpt = load_checkpoint(out)
    saved = ckpt.train
    if not saved.get("config"):
        raise CheckpointError(f"{ckpt.path} holds no training state (weights only); "
                              "start a new run instead of --resume")
    try:
        train_config = TrainConfig.from_dict({**saved["config"], **train_overrides})
    except TypeError as exc:
        raise CheckpointError(f"{ckpt.path}: malformed training config ({exc})") from None
    data = saved.get("data", {})
    if not isinstance(data, dict):
        raise CheckpointError(f"{ckpt.path}: malformed data record {data!r:.80}")
    if data_path is None:
        data_path = find_saved_data(data, ckpt.path.parent)
    corpus = load_corpus(data_path)
    if data.get("sha256") not in (None, text_digest(corpus.text)):
        raise DataError(f"the data ({corpus.source}) differs from the data this run was trained "
                        "on; resume needs the same data (pass the original --data)")
    tokenizer = tokenizer_from_dict(ckpt.tokenizer)
    model = build_model(ckpt)
    objective = saved.get("objective", "clm")
    architecture = ckpt.model_type if ckpt.model_type in ARCHITECTURES else "gpt"
    _, model_cls, batches = objective_parts(objective, tokenizer, architecture)
    if not isinstance(model, model_cls):
        raise CheckpointError(f"{ckpt.path}: a {ckpt.model_type} model cannot be trained with "
                              f"objective {objective!r}")
    val_fraction = data.get("val_fraction", 0.1)
    if not isinstance(val_fraction, float):
        raise CheckpointError(f"{ckpt.path}: malformed val_fraction {val_fraction!r:.40}")
    train_ids, val_ids = split_for_training(tokenizer.encode(corpus.text), val_fraction,
                                            model.config.block_size)
    step = saved.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise CheckpointError(f"{ckpt.path}: malformed step {step!r:.40}")
    if step > train_config.max_iters:
        raise ConfigError(f"the checkpoint is at step {step}, beyond max_iters "
                          f"{train_config.max_iters}; pass a larger --max-iters")
    check_training(model.config, train_config.batch_size, backends.current(), _itemsize())
    state = new_state(model, train_ids, train_config, batches)
    _restore(state, ckpt, step)
    return Run(model.config, train_config, tokenizer, corpus, data_path, val_fraction, state,
               val_ids, Path(out), saved_step=step, objective=objective)


def _restore(state: TrainState, ckpt: Checkpoint, step: int) -> None:
    """Put the saved optimizer, sampler, dropout generator and history into a fresh state."""
    saved = ckpt.train
    try:
        restore_optimizer(state.optimizer, ckpt.optimizer, saved["optimizer"])
        state.sampler.set_state(saved["sampler"])
        backends.current().set_rng_state(saved["dropout_rng"])
        state.history = [tuple(h) for h in saved.get("history", [])]
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise CheckpointError(f"{ckpt.path}: malformed training state ({exc!r:.120})") from None
    state.step = step


def _itemsize() -> int:
    return np.dtype(get_default_dtype()).itemsize
