"""How much memory a training run needs, estimated before anything is allocated.

A run that does not fit should be refused with a message, not killed by the
operating system half an hour in. The estimate counts the arrays of one
training step of a GPT (``E`` = bytes per element, 4 for float32)::

    P  = V C + T C                                  embeddings (output matrix tied to wte)
       + L (12 C² + 13 C)                           per block: qkv 3C²+3C, proj C²+C, fc 4C²+4C,
                                                    proj 4C²+C, two LayerNorms 4C (biases: +9C)
       + 2 C                                        final LayerNorm
    weights, gradients, AdamW m and v   4 P E
    activations kept for backward       L (16 B T C + 1.5 B H T T) E
                                        + (34 B T C + 2 B T V) E
                                        + (2 L + 4) B T C E with dropout

Per layer, the arrays a block keeps for backward are about 16 of size
(B, T, C): the two LayerNorm outputs, the fused q k v projection (3), the
merged attention output, the MLP's hidden pre- and post-GELU (4 + 4), the
projections and residual sums; B H T T is the attention matrix P it keeps,
plus half of one more while a layer's backward runs. 2 B T V: logits and
softmax probabilities (their gradient reuses one). 34 B T C: embeddings, the
final LayerNorm and the gradients in flight during backward. Each dropout
keeps a mask and its output. The coefficients were fitted (least squares on
the relative error) to the measured peaks (tracemalloc, NumPy backend) of 26
random configurations, which the estimate matches within about ±25%
(tests/test_reliability_resources.py checks ±35%).

Evaluation keeps no graph: its activations are those of one layer plus the
logits, ``(30 B T C + 3 B H T T + 3 B T V) E`` on top of the weights ``P E``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from tinylm.errors import ResourceError
from tinylm.models.sizes import count_parameters


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a run needs, by what holds them."""

    parameters: int       # number of parameters (not bytes)
    state_bytes: int      # weights (+ gradients and AdamW moments when training)
    activation_bytes: int

    @property
    def total(self) -> int:
        return self.state_bytes + self.activation_bytes

    def describe(self) -> str:
        return (f"{gib(self.total)} ({self.parameters / 1e6:.1f}M parameters: "
                f"{gib(self.state_bytes)} of weights and optimizer state, "
                f"{gib(self.activation_bytes)} of activations)")


def gib(n_bytes: int) -> str:
    """Bytes for people: GiB from 128 MiB up, MiB from 1 MiB, else KiB."""
    if n_bytes >= 2**27:
        return f"{n_bytes / 2**30:.2f} GiB"
    if n_bytes >= 2**20:
        return f"{n_bytes / 2**20:.1f} MiB"
    return f"{n_bytes / 2**10:.1f} KiB"


def estimate_training(cfg, batch_size: int, itemsize: int = 4) -> MemoryEstimate:
    """Peak bytes of a training step of a GPT with config ``cfg`` (a GPTConfig) at ``batch_size``.

    A config of another architecture (LSTMConfig) counts its own parameters and
    activations (``count_parameters``, ``training_activations``).
    """
    if hasattr(cfg, "training_activations"):
        P = cfg.count_parameters()
        return MemoryEstimate(P, 4 * P * itemsize, cfg.training_activations(batch_size) * itemsize)
    B, T, V, L, H, C = (batch_size, cfg.block_size, cfg.vocab_size, cfg.n_layer, cfg.n_head,
                        cfg.n_embd)
    P = count_parameters(V, T, L, C, cfg.bias)
    # Fitted (least squares on relative error) to tracemalloc peaks of 26 random
    # configurations: per layer the saved inputs of its ops (~16 values per token
    # and channel) and the attention probabilities; outside the layers the
    # embeddings, the logits and the transient gradients of backward; each
    # dropout keeps a mask and a new output.
    dropout = 1 if cfg.dropout > 0 else 0
    activations = L * (16 * B * T * C + 3 * B * H * T * T // 2) + 34 * B * T * C + 2 * B * T * V \
        + dropout * (2 * L + 4) * B * T * C
    return MemoryEstimate(P, 4 * P * itemsize, activations * itemsize)


def estimate_inference(cfg, batch_size: int, itemsize: int = 4) -> MemoryEstimate:
    """Peak bytes of a forward pass without a graph (evaluation, sampling)."""
    if hasattr(cfg, "inference_activations"):
        P = cfg.count_parameters()
        return MemoryEstimate(P, P * itemsize, cfg.inference_activations(batch_size) * itemsize)
    B, T, V, L, H, C = (batch_size, cfg.block_size, cfg.vocab_size, cfg.n_layer, cfg.n_head,
                        cfg.n_embd)
    P = count_parameters(V, T, L, C, cfg.bias)
    activations = 30 * B * T * C + 3 * B * H * T * T + 3 * B * T * V
    return MemoryEstimate(P, P * itemsize, activations * itemsize)


def available_bytes(backend) -> int | None:
    """Memory the backend can still allocate, or None where we cannot tell.

    A backend may say by defining ``memory_available()``; host backends use Linux's
    MemAvailable (free memory plus reclaimable caches); CuPy asks the device.
    """
    query = getattr(backend, "memory_available", None)
    if query is not None:
        return query()
    if backend.xp is np:
        return meminfo_available()
    return _cuda_available(backend.xp)


def _cuda_available(xp) -> int | None:
    """CuPy: the device's free memory plus what CuPy's pool holds for reuse; None if not CuPy."""
    try:
        free, _total = xp.cuda.runtime.memGetInfo()
        return int(free) + int(xp.get_default_memory_pool().free_bytes())
    except Exception:  # not CuPy, or no device: cannot tell (CuPy raises several kinds)
        return None


def meminfo_available(path: str = "/proc/meminfo") -> int | None:
    """MemAvailable from /proc/meminfo in bytes; None where there is no such file (not Linux)."""
    try:
        with open(path, encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # the kernel reports kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def require(estimate: MemoryEstimate, available: int | None, what: str, shrink: str) -> None:
    """Raise ResourceError when ``estimate`` exceeds ``available`` bytes (None: cannot tell, pass)."""
    if available is None or estimate.total <= available:
        return
    raise ResourceError(f"{what} needs about {estimate.describe()} but only {gib(available)} is "
                        f"available; shrink {shrink}")


def check_training(cfg, batch_size: int, backend, itemsize: int = 4) -> MemoryEstimate:
    """Refuse (ResourceError) a training config whose estimate does not fit ``backend``'s memory."""
    estimate = estimate_training(cfg, batch_size, itemsize)
    require(estimate, available_bytes(backend) if _checks_enabled() else None,
            "training this model", "--batch-size, --block-size, --n-layer or --n-embd")
    return estimate


def check_inference(cfg, batch_size: int, backend, itemsize: int = 4) -> MemoryEstimate:
    """Refuse (ResourceError) an evaluation whose estimate does not fit ``backend``'s memory."""
    estimate = estimate_inference(cfg, batch_size, itemsize)
    require(estimate, available_bytes(backend) if _checks_enabled() else None,
            "evaluating this model", "--batch-size")
    return estimate


def _checks_enabled() -> bool:
    """TINYLM_SKIP_MEMORY_CHECK=1 turns the refusal off (the estimate may be wrong for you)."""
    return os.environ.get("TINYLM_SKIP_MEMORY_CHECK", "") in ("", "0")
