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
from tinylm.models import GPTConfig, LSTMConfig
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


# The model configs `tinylm train --model` chooses between (a preset's GPT-only fields,
# such as n_head, do not apply to the LSTM; given explicitly they are refused).
MODEL_CONFIGS = {"gpt": GPTConfig, "lstm": LSTMConfig}


def resolve_config(preset: str | None, toml_values: dict, cli_values: dict,
                   model: str = "gpt") -> tuple[dict, TrainConfig]:
    """defaults < preset < TOML file < command line; returns (model fields, train config)."""
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
