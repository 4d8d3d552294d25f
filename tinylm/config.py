"""Run configuration: the training loop's settings, named presets, TOML files, and how they combine.

defaults < ``--preset`` < ``--config FILE.toml`` < command-line options. The
model's fields are ``GPTConfig``'s (tinylm/models/gpt.py) and the loop's are
``TrainConfig``'s (here; tinylm/train.py runs the loop), with nanoGPT's names;
``resolve_config`` merges the layers and validates the result before any data is read.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, fields

from tinylm.errors import ConfigError, ConfigRecord, require_positive_ints
from tinylm.fileio import read_bounded
from tinylm.models import GPTConfig, LSTMConfig
from tinylm.optim import cosine_lr


@dataclass(frozen=True)
class TrainConfig(ConfigRecord):
    KIND = "training"
    batch_size: int = 12
    grad_accum: int = 1              # micro-batches per optimizer step: effective batch × grad_accum
    max_iters: int = 2000
    learning_rate: float = 1e-3
    min_lr: float = 1e-4
    warmup_iters: int = 100
    lr_decay_iters: int = 0          # 0: decay over max_iters
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0           # 0 disables clipping
    eval_interval: int = 250
    eval_iters: int = 20
    log_interval: int = 10
    seed: int = 1337

    def __post_init__(self):
        positive = ("batch_size", "grad_accum", "max_iters", "eval_interval", "eval_iters",
                    "log_interval")
        require_positive_ints(self, positive)
        for name in ("warmup_iters", "lr_decay_iters", "seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{name} must be a non-negative integer, got {value!r}")
        for name in ("learning_rate", "min_lr", "weight_decay", "beta1", "beta2", "grad_clip"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"{name} must be a finite number, got {value!r}")
        if self.learning_rate <= 0:
            raise ConfigError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not 0 <= self.min_lr <= self.learning_rate:
            raise ConfigError(f"min_lr must be in [0, learning_rate={self.learning_rate}], "
                              f"got {self.min_lr}")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ConfigError("weight_decay and grad_clip must be >= 0")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ConfigError(f"beta1 and beta2 must be in [0, 1), got {self.beta1}, {self.beta2}")

    @property
    def decay_iters(self) -> int:
        return self.lr_decay_iters or self.max_iters

    def lr_at(self, step: int) -> float:
        return cosine_lr(step, self.learning_rate, self.min_lr, self.warmup_iters, self.decay_iters)


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
MAX_TOML_BYTES = 2**20  # a config file is a few hundred bytes

# One line per field for `tinylm train --help` (tests/test_help.py checks that every
# MODEL_FIELDS and TRAIN_FIELDS field has one: a new config field needs its line here).
FIELD_HELP = {
    "block_size": "Context length: the most tokens the model sees at once.",
    "n_layer": "Transformer blocks stacked one after another.",
    "n_head": "Attention heads per block; must divide n_embd.",
    "n_embd": "Width of the residual stream (the embedding size).",
    "dropout": "Probability of zeroing an activation while training; 0 turns dropout off.",
    "bias": "Biases in the Linear layers (LayerNorm always has them).",
    "norm": "layernorm (GPT-2's mean-and-variance LayerNorm) or rmsnorm (LLaMA's RMSNorm: no mean, "
            "no bias).",
    "pos_encoding": "learned (GPT-2's wpe table added to the input) or rope (rotary: q and k turned "
                    "by position, LLaMA's).",
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
    raw = read_bounded(path, MAX_TOML_BYTES, "config file", ConfigError)
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    except ValueError as exc:  # an integer of thousands of digits: Python's own limit
        raise ConfigError(f"{path} is not valid TOML: {str(exc).split(';')[0]}") from None
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
    for fld in MODEL_FIELDS + TRAIN_FIELDS:
        if fld.name in flat:
            _check_kind(path, fld.name, flat[fld.name], type(fld.default))
    fraction = flat.get("val_fraction", 0.5)
    if not isinstance(fraction, (int, float)) or isinstance(fraction, bool) or not 0 < fraction < 1:
        raise ConfigError(f"{path}: val_fraction must be a number in (0, 1), got {fraction!r:.40}")
    return flat


def _check_kind(path: str, name: str, value, kind: type) -> None:
    """A TOML value of the field's type: true/false for a bool (not "no"), an integer for an
    int (not true, not 2.0), a finite number for a float."""
    checks = {bool: (lambda v: isinstance(v, bool), "true or false"),
              int: (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
              float: (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
                      and math.isfinite(v), "a finite number")}
    ok, wanted = checks.get(kind, (lambda v: True, ""))  # other kinds: the dataclass checks them
    if not ok(value):
        raise ConfigError(f"{path}: {name} must be {wanted}, got {value!r:.40}")


# The model configs `tinylm train --model` chooses between (a preset's GPT-only fields,
# such as n_head, do not apply to the LSTM; given explicitly they are refused).
MODEL_CONFIGS = {"gpt": GPTConfig, "lstm": LSTMConfig}


def resolve_config(preset: str | None, toml_values: dict, cli_values: dict,
                   model: str = "gpt") -> tuple[dict, TrainConfig]:
    """defaults < preset < TOML file < command line; returns (model fields, train config)."""
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    unknown = sorted(set(cli_values) - {f.name for f in MODEL_FIELDS + TRAIN_FIELDS})
    if unknown:
        raise ConfigError(f"unknown config field(s) {unknown}; the fields are nanoGPT's names, "
                          "e.g. n_layer, learning_rate (see 'tinylm train --help')")
    if model not in MODEL_CONFIGS:
        raise ConfigError(f"unknown model {model!r}; choose one of {', '.join(MODEL_CONFIGS)}")
    config_cls = MODEL_CONFIGS[model]
    own = {f.name for f in fields(config_cls)}
    given = {**toml_values, **{k: v for k, v in cli_values.items() if v is not None}}
    foreign = sorted(k for k in given if k in {f.name for f in MODEL_FIELDS} and k not in own)
    if foreign:
        raise ConfigError(f"{', '.join(foreign)} {'is' if len(foreign) == 1 else 'are'} not a field "
                          f"of the {model} model (its fields: {', '.join(sorted(own - {'vocab_size'}))}); "
                          f"drop {' '.join('--' + k.replace('_', '-') for k in foreign)}")
    merged = dict(PRESETS[preset or toml_values.get("preset") or DEFAULT_PRESET])
    merged.update({k: v for k, v in toml_values.items() if k not in ("preset", "data", "val_fraction")})
    merged.update({k: v for k, v in cli_values.items() if v is not None})
    defaults = {f.name: f.default for f in fields(config_cls)}
    model_fields = {f.name: merged.get(f.name, defaults.get(f.name, f.default)) for f in MODEL_FIELDS
                    if f.name in own}
    train = TrainConfig(**{f.name: merged[f.name] for f in TRAIN_FIELDS if f.name in merged})
    config_cls(**model_fields)  # validate now, before any data is read
    return model_fields, train
