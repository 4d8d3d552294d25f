"""Dropout's random numbers on the GPU from a counter-based generator (Philox4x32-10).

Draw k of the generator seeded s is a pure function of (s, k): cuda/philox.py
defines it, cuda/philox.cu computes the same bits on the device. The whole state
is (seed, draws), which a checkpoint saves, so a resumed GPU run draws the same
dropout masks as the uninterrupted one (CuPy's own generators cannot export
their state).
"""

from __future__ import annotations

import math

import numpy as np

MASK64 = (1 << 64) - 1


class PhiloxGenerator:
    """``random(shape, dtype)`` as NumPy's Generator has it, each call one Philox draw.

    ``uniform(n, seed, draw)`` returns the n float32 uniforms of a draw (the cupy
    kernels' ``philox_uniform``).
    """

    def __init__(self, uniform, seed: int, draws: int = 0):
        self.uniform, self.seed, self.draws = uniform, int(seed) & MASK64, int(draws)

    def random(self, shape, dtype=np.float32):
        """Uniforms in [0, 1) of ``shape`` (24 random bits each; float64 too)."""
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        out = self.uniform(math.prod(shape), self.seed, self.draws)
        self.draws += 1
        return out.reshape(shape).astype(dtype, copy=False)

    def state(self) -> dict:
        """JSON-serialisable: everything the next draw depends on."""
        return {"philox4x32_seed": self.seed, "philox4x32_draws": self.draws}

    @classmethod
    def from_state(cls, uniform, state: dict) -> "PhiloxGenerator":
        return cls(uniform, state["philox4x32_seed"], state["philox4x32_draws"])
