"""Autoregressive text generation: predict, sample, append, repeat."""

from __future__ import annotations

from typing import Callable

import numpy as np

from tinylm import backends
from tinylm.errors import ConfigError
from tinylm.tensor import no_grad


def sample_next(logits: np.ndarray, rng: np.random.Generator, temperature: float = 1.0,
                top_k: int | None = None) -> int:
    """One token id from a row of logits (V,): softmax(logits / temperature) over the top k.

    temperature 0 means greedy decoding (the arg-max).
    """
    if temperature == 0:
        return int(np.argmax(logits))
    z = (logits.astype(np.float64) - logits.max()) / temperature  # <= 0: no overflow at tiny T
    if top_k is not None and top_k < len(z):
        kth = np.partition(z, -top_k)[-top_k]
        z = np.where(z < kth, -np.inf, z)
    p = np.exp(z - z.max())
    p /= p.sum()
    return int(rng.choice(len(p), p=p))


def check_sampling(temperature: float, top_k: int | None) -> None:
    if not (0 <= temperature < float("inf")):  # also refuses NaN
        raise ConfigError(f"temperature must be a finite number >= 0 (0 = greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise ConfigError(f"top_k must be >= 1, got {top_k}")


@no_grad()
def generate(model, prompt_ids, max_new_tokens: int, temperature: float = 1.0,
             top_k: int | None = None, seed: int = 0,
             on_token: Callable[[int], None] | None = None) -> np.ndarray:
    """Extend ``prompt_ids`` (1-D ints) by ``max_new_tokens`` sampled tokens; returns all ids.

    The context is cropped to the model's block_size. ``on_token`` is called with
    each new id as soon as it is chosen (for streaming output).
    """
    check_sampling(temperature, top_k)
    if max_new_tokens < 0:
        raise ConfigError(f"number of tokens must be >= 0, got {max_new_tokens}")
    ids = [int(t) for t in np.asarray(prompt_ids).reshape(-1)]
    if not ids:
        raise ConfigError("the prompt must contain at least one token")
    rng = np.random.default_rng(seed)
    to_host = backends.current().to_host
    block = model.config.block_size
    model.eval()
    for _ in range(max_new_tokens):
        context = np.asarray(ids[-block:], dtype=np.int64)[None, :]     # (1, T)
        logits, _ = model(context)
        last = to_host(logits.data[0, -1])                               # (V,)
        token = sample_next(last, rng, temperature, top_k)
        ids.append(token)
        if on_token is not None:
            on_token(token)
    return np.asarray(ids, dtype=np.int64)
