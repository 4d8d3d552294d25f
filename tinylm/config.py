"""Run configuration: named presets, TOML files, and how they combine.

defaults < ``--preset`` < ``--config FILE.toml`` < command-line options. The
model's fields are ``GPTConfig``'s and the loop's are ``TrainConfig``'s, with
nanoGPT's names; ``resolve_config`` merges the layers and validates the result
before any data is read.
"""

from __future__ import annotations

import tomllib
from dataclasses import fields

from tinylm.errors import ConfigError
from tinylm.models import GPTConfig
from tinylm.train import TrainConfig

# Named presets: model and training fields (nanoGPT's names and values).
PRESETS = {
    "tiny": dict(n_layer=2, n_head=2, n_embd=64, block_size=32, batch_size=8, max_iters=200,
                 eval_interval=100, eval_iters=10, warmup_iters=20),
    "cpu": dict(n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=12, max_iters=2000,
                learning_rate=1e-3, min_lr=1e-4, warmup_iters=100, beta2=0.99, dropout=0.0,
                eval_interval=250, eval_iters=20),
    "shakespeare": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, batch_size=64,
                        max_iters=5000, learning_rate=1e-3, min_lr=1e-4, warmup_iters=100,
                        beta2=0.99, dropout=0.2, eval_interval=250, eval_iters=200),
}
DEFAULT_PRESET = "cpu"
MODEL_FIELDS = [f for f in fields(GPTConfig) if f.name != "vocab_size"]  # vocab comes from the data
TRAIN_FIELDS = list(fields(TrainConfig))

# One line per field for `tinylm train --help` (tests/test_help.py checks that every
# MODEL_FIELDS and TRAIN_FIELDS field has one: a new config field needs its line here).
FIELD_HELP = {
    "block_size": "Context length: the most tokens the model sees at once.",
    "n_layer": "Transformer blocks stacked one after another.",
    "n_head": "Attention heads per block; must divide n_embd.",
    "n_embd": "Width of the residual stream (the embedding size).",
    "dropout": "Probability of zeroing an activation while training; 0 turns dropout off.",
    "bias": "Biases in the Linear layers (LayerNorm always has them).",
    "batch_size": "Sequences in one micro-batch.",
    "grad_accum": "Micro-batches whose gradients add up into one optimizer step "
                  "(effective batch: batch_size x grad_accum).",
    "max_iters": "Optimizer steps in the whole run (resuming continues up to this step).",
    "learning_rate": "Peak learning rate, reached at the end of the warmup.",
    "min_lr": "Learning rate at the end of the cosine decay.",
    "warmup_iters": "Steps of linear warmup from 0 to learning_rate.",
    "lr_decay_iters": "Step at which the cosine decay reaches min_lr; 0 means max_iters.",
    "weight_decay": "AdamW's decoupled weight decay, on matrices and embeddings only.",
    "beta1": "AdamW's decay rate of the gradient's running mean.",
    "beta2": "AdamW's decay rate of the squared gradient's running mean.",
    "grad_clip": "Scale gradients down to this global norm; 0 disables clipping.",
    "eval_interval": "Steps between evaluations (train and val loss) and checkpoint saves.",
    "eval_iters": "Batches averaged per split for each loss estimate at an evaluation.",
    "log_interval": "Steps between progress lines (in a log) and metrics.jsonl records.",
    "seed": "Seed of the initial weights, the batch sampler and dropout.",
}
# nanoGPT's name for a field where it differs from ours (the others are nanoGPT's own names);
# None: nanoGPT has no such setting
NANOGPT_NAMES = {"grad_accum": "gradient_accumulation_steps", "seed": None}
_DEFAULTS = {f.name: f.default for f in MODEL_FIELDS + TRAIN_FIELDS}


def field_help(name: str) -> str:
    """The help line of a config field, with nanoGPT's name and the default preset's value."""
    nanogpt = NANOGPT_NAMES.get(name, name)
    default = PRESETS[DEFAULT_PRESET].get(name, _DEFAULTS[name])
    return FIELD_HELP[name] + (f" nanoGPT: {nanogpt}." if nanogpt else "") + f" [{default}]"


def read_toml(path: str) -> dict:
    """Flat ``key = value`` pairs (or [model]/[train] tables) naming config fields."""
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: not UTF-8 at byte {exc.start}") from None
    except RecursionError:
        raise ConfigError(f"{path} is not valid TOML: nested too deeply") from None
    flat = {}
    for key, value in doc.items():
        flat.update(value if isinstance(value, dict) else {key: value})
    known = {f.name for f in MODEL_FIELDS + TRAIN_FIELDS} | {"preset", "data", "val_fraction"}
    unknown = sorted(set(flat) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {unknown}; valid keys are the train options "
                          "with '_' for '-' (e.g. n_layer, learning_rate)")
    if "preset" in flat and (not isinstance(flat["preset"], str) or flat["preset"] not in PRESETS):
        raise ConfigError(f"{path}: preset must be one of {sorted(PRESETS)}, got {flat['preset']!r:.40}")
    if "data" in flat and not isinstance(flat["data"], str):
        raise ConfigError(f"{path}: data must be a path in quotes, got {flat['data']!r:.40}")
    fraction = flat.get("val_fraction", 0.5)
    if not isinstance(fraction, (int, float)) or isinstance(fraction, bool) or not 0 < fraction < 1:
        raise ConfigError(f"{path}: val_fraction must be a number in (0, 1), got {fraction!r:.40}")
    return flat


def resolve_config(preset: str | None, toml_values: dict, cli_values: dict) -> tuple[dict, TrainConfig]:
    """defaults < preset < TOML file < command line; returns (model fields, train config)."""
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    unknown = sorted(set(cli_values) - {f.name for f in MODEL_FIELDS + TRAIN_FIELDS})
    if unknown:
        raise ConfigError(f"unknown config field(s) {unknown}; the fields are nanoGPT's names, "
                          "e.g. n_layer, learning_rate (see 'tinylm train --help')")
    merged = dict(PRESETS[preset or toml_values.get("preset") or DEFAULT_PRESET])
    merged.update({k: v for k, v in toml_values.items() if k not in ("preset", "data", "val_fraction")})
    merged.update({k: v for k, v in cli_values.items() if v is not None})
    model = {f.name: merged.get(f.name, f.default) for f in MODEL_FIELDS}
    train = TrainConfig(**{f.name: merged[f.name] for f in TRAIN_FIELDS if f.name in merged})
    GPTConfig(**model)  # validate now, before any data is read
    return model, train
