"""Noticing a diverged run: the first step whose loss or gradient norm is NaN or inf.

Training records every step's loss and global gradient norm (both stay backend
scalars) and checks them:

* on the host (NumPy, Numba) at once, for free, before the step's update, so
  the weights in memory are still the last good ones;
* on a device (a GPU) only where the loop synchronises anyway, at the logging
  interval and before every checkpoint, so no step waits for the device.

Either way no checkpoint is written from a non-finite state: the loop checks
before it saves, and the run stops with one line naming the step, the first
parameter (in model order) whose value or gradient is not finite, and remedies.
"""

from __future__ import annotations

import math

import numpy as np

from tinylm.errors import TrainingDiverged


class DivergenceWatch:
    """Collects (step, lr, loss, grad_norm) and raises TrainingDiverged at the first bad one."""

    def __init__(self, model, backend, grad_clip: float):
        self.model, self.backend, self.grad_clip = model, backend, grad_clip
        self.on_host = backend.xp is np  # reading a host scalar costs nothing
        self.unchecked: list[tuple] = []

    def record(self, step: int, lr: float, loss, grad_norm) -> None:
        """Note one step's loss and gradient norm; checked at once when they live on the host."""
        self.unchecked.append((step, lr, loss, grad_norm))
        if self.on_host:
            self.check()

    def check(self) -> None:
        """Raise TrainingDiverged if any step recorded since the last check was not finite."""
        if not self.unchecked:
            return
        xp = self.backend.xp
        pairs = xp.stack([xp.stack([xp.asarray(loss, dtype=xp.float64),
                                    xp.asarray(norm, dtype=xp.float64)])
                          for _, _, loss, norm in self.unchecked])            # (steps, 2)
        values = np.asarray(self.backend.to_host(pairs))
        bad = np.flatnonzero(~np.isfinite(values).all(axis=1))
        records, self.unchecked = self.unchecked, []
        if len(bad):
            step, lr = records[bad[0]][:2]
            loss, norm = values[bad[0]]
            raise TrainingDiverged(self.message(step, lr, f"loss {_show(loss)}, gradient norm "
                                                          f"{_show(norm)}"))

    def check_evaluation(self, step: int, lr: float, train_loss: float, val_loss: float) -> None:
        """Finite weights can still overflow in the forward pass: an evaluation loss must be finite."""
        if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
            raise TrainingDiverged(self.message(step, lr, f"evaluation loss {_show(train_loss)} "
                                                          f"(train), {_show(val_loss)} (val)"))

    def message(self, step: int, lr: float, what: str) -> str:
        which = first_non_finite(self.model, self.backend)
        where = f" (first non-finite: {which})" if which else ""
        remedies = [f"a lower --learning-rate (it was {lr:.2e})"]
        if self.grad_clip == 0:
            remedies.append("--grad-clip 1.0")
        remedies.append("float32 if you trained in float16")
        return f"training diverged at step {step}: {what}{where}; try {', '.join(remedies)}"


def first_non_finite(model, backend) -> str | None:
    """'parameter NAME' or 'gradient of NAME' for the first parameter holding NaN or inf."""
    xp = backend.xp
    for name, p in model.named_parameters():
        if not bool(xp.isfinite(p.data).all()):
            return f"parameter {name}"
    for name, p in model.named_parameters():
        if p.grad is not None and not bool(xp.isfinite(p.grad).all()):
            return f"gradient of {name}"
    return None


def _show(x: float) -> str:
    return str(x) if not math.isfinite(x) else f"{x:.4g}"
