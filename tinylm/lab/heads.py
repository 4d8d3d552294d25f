"""Reductionist tools: look at each attention head, and knock each one out.

Both work on any model laid out like GPT (``blocks[i].attn`` a CausalSelfAttention,
``model(idx)`` a forward pass), including the lab's attention-only transformer.

- :func:`attention_patterns`: every layer's attention matrix, recorded in one
  forward pass.
- :func:`ablation_table`: the validation-loss change when one head's output is
  replaced by zero (zero-ablation) or by its mean over the data (mean-ablation),
  for every layer x head.

Both go through the attention modules' documented hook (tinylm/lab/hooks.py).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from tinylm import backends
from tinylm.errors import ConfigError
from tinylm.lab.hooks import hooked, recording_patterns, replacing_heads, summing_heads
from tinylm.nn import Module
from tinylm.tensor import no_grad

ABLATION_MODES = ("zero", "mean")


def _attentions(model: Module) -> list:
    return [block.attn for block in model.blocks]


@no_grad()
def attention_patterns(model: Module, idx) -> list[np.ndarray]:
    """idx (B, T) -> one host array (B, H, T, T) per layer; row t is query t's attention."""
    attentions, patterns = _attentions(model), []
    with hooked(attentions, [recording_patterns(a.n_head, patterns) for a in attentions]):
        model(backends.current().xp.asarray(idx))
    return [np.asarray(backends.current().to_host(p)) for p in patterns]


@no_grad()
def token_losses(model: Module, x, y) -> np.ndarray:
    """Per-position cross-entropy -log p(y_t | x_<=t) as a host array (B, T)."""
    logits, _ = model(x)
    logp = np.asarray(backends.current().to_host(logits.log_softmax(axis=-1).data))  # (B, T, V)
    y = np.asarray(y)
    return -np.take_along_axis(logp, y[..., None], axis=-1)[..., 0]


@no_grad()
def mean_head_outputs(model: Module, batches) -> list[np.ndarray]:
    """Each layer's mean head output over all batches and positions: host (H, D) per layer."""
    attentions = _attentions(model)
    totals, count = [[0.0] for _ in attentions], 0
    with hooked(attentions, [summing_heads(a.n_head, t) for a, t in zip(attentions, totals)]):
        for xb, _ in batches:
            model(backends.current().xp.asarray(xb))
            count += xb.shape[0] * xb.shape[1]
    return [np.asarray(backends.current().to_host(t[0])) / count for t in totals]


def _mean_loss(model: Module, batches) -> float:
    return float(np.mean([token_losses(model, xb, yb).mean() for xb, yb in batches]))


def ablation_table(model: Module, batches, mode: str = "zero",
                   on_progress: Callable[[int, int], None] = lambda done, total: None) -> dict:
    """Loss change when each head is ablated in turn, over fixed (x, y) batches.

    Returns {"base_loss": float, "delta": host (n_layer, n_head) array of
    loss(ablated) - loss(intact)}; a large positive delta marks a head the model needs.
    """
    if mode not in ABLATION_MODES:
        raise ConfigError(f"ablation mode must be one of {ABLATION_MODES}, got {mode!r}")
    backend = backends.current()
    batches = list(batches)
    model.eval()
    n_layer, n_head = len(model.blocks), model.blocks[0].attn.n_head
    D = model.config.n_embd // n_head
    dtype = model.wte.weight.dtype
    fills = (mean_head_outputs(model, batches) if mode == "mean"
             else [np.zeros((n_head, D)) for _ in range(n_layer)])
    base = _mean_loss(model, batches)
    delta = np.zeros((n_layer, n_head))
    for layer, block in enumerate(model.blocks):
        for head in range(n_head):
            keep = np.ones((n_head, 1))
            keep[head] = 0.0
            ablate = replacing_heads(backend.from_host(keep, dtype=dtype),
                                     backend.from_host(fills[layer].reshape(n_head, D), dtype=dtype))
            with hooked([block.attn], [ablate]):
                delta[layer, head] = _mean_loss(model, batches) - base
            on_progress(layer * n_head + head + 1, n_layer * n_head)
    return {"base_loss": base, "delta": delta}


# --------------------------------------------------------------------------- checkpoints
def require_gpt(model: Module, where) -> None:
    """The head tools read causal attention; other model types are refused in one line."""
    if getattr(model, "model_type", None) != "gpt":
        raise ConfigError(f"{where} holds a {getattr(model, 'model_type', type(model).__name__)!r} "
                          "model; 'tinylm inspect' reads GPT (causal language model) checkpoints")


def inspect_attention(model: Module, tokenizer, prompt: str) -> dict:
    """Attention patterns of every layer and head on ``prompt`` (cut to the last block_size tokens)."""
    ids = np.asarray(tokenizer.encode(prompt))[-model.config.block_size:]
    if len(ids) == 0:
        raise ConfigError("the prompt is empty; pass some text with --prompt")
    patterns = attention_patterns(model.eval(), ids[None, :])            # L x (1, H, T, T)
    return {"tokens": [tokenizer.decode([int(i)]) for i in ids],
            "patterns": np.stack([p[0] for p in patterns]).round(4).tolist(),  # (L, H, T, T)
            "n_layer": len(patterns), "n_head": patterns[0].shape[1]}


def inspect_ablation(model: Module, ids: np.ndarray, batch_size: int, n_batches: int, mode: str,
                     seed: int = 0, on_progress=lambda done, total: None) -> dict:
    """The ablation table on ``n_batches`` fixed windows of ``ids`` (drawn with ``seed``)."""
    from tinylm.data import BatchSampler

    sampler = BatchSampler(ids, model.config.block_size, batch_size, seed)
    batches = [sampler.next() for _ in range(n_batches)]
    table = ablation_table(model, batches, mode, on_progress)
    delta = table["delta"]
    layer, head = np.unravel_index(int(delta.argmax()), delta.shape)
    return {"mode": mode, "base_loss": table["base_loss"], "delta": delta.round(6).tolist(),
            "most_needed": {"layer": int(layer) + 1, "head": int(head) + 1,
                            "delta": float(delta[layer, head])},
            "tokens": n_batches * batch_size * model.config.block_size}
