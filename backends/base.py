"""The backend contract: what every array backend provides.

A backend is an array module (``xp``: NumPy, or CuPy on a GPU), a way to move
arrays between host and device, a seeded random generator, and a set of fused
kernels. The reference kernels are :class:`tinylm.backends.numpy_backend.NumpyKernels`;
a backend subclasses them and overrides the ones it can do faster, so every
kernel it does not provide falls back to the reference.
"""

from __future__ import annotations

import numpy as np


class Backend:
    """One array backend. Subclasses set ``name`` and pass their ``xp`` and kernels."""

    name = "abstract"

    def __init__(self, xp, kernels):
        self.xp = xp
        self.kernels = kernels
        self.rng = xp.random.default_rng(0)

    # host <-> device -------------------------------------------------------
    def from_host(self, a, dtype=None):
        """A backend array holding a copy of host data ``a``."""
        return self.xp.array(a, dtype=dtype)

    def to_host(self, a) -> np.ndarray:
        """A NumPy array holding the values of backend array ``a``."""
        return np.asarray(a)

    def synchronize(self) -> None:
        """Wait for queued device work (a no-op on the CPU); call before timing."""

    def set_threads(self, n: int) -> None:
        """Use ``n`` CPU threads for this backend's own kernels (a no-op where it has none)."""

    # randomness --------------------------------------------------------------
    def seed(self, seed: int) -> None:
        """Reseed the generator used for dropout masks."""
        self.rng = self.xp.random.default_rng(seed)

    def rng_state(self) -> dict:
        """JSON-serialisable state of the dropout generator (for exact resume)."""
        return self.rng.bit_generator.state

    def set_rng_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state

    def describe(self) -> str:
        """One line saying what this backend runs on (shown by ``tinylm backends``)."""
        return self.name

    def __repr__(self) -> str:
        return f"<backend {self.name}>"
