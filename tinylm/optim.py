"""Optimizers, the learning-rate schedule and gradient clipping."""

from __future__ import annotations

import math

from tinylm import backends
from tinylm.errors import ConfigError
from tinylm.nn import Module, Parameter


def decay_groups(model: Module) -> tuple[list[Parameter], list[Parameter]]:
    """(decayed, not decayed): matrices and embeddings decay; biases and LayerNorm gains do not."""
    params = model.parameters()
    return [p for p in params if p.ndim >= 2], [p for p in params if p.ndim < 2]


class AdamW:
    """Adam with decoupled weight decay (Loshchilov & Hutter), as torch.optim.AdamW.

    ``params`` is a model (decay by :func:`decay_groups`) or a list of parameters
    (all decayed). The update itself is the backend's ``adamw_update_many`` kernel:
    ``adamw_update`` on every parameter, in one launch on a GPU. A checkpoint saves
    and restores ``m``, ``v`` and ``step_count`` (tinylm/checkpoint.py).
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01):
        if lr <= 0:
            raise ConfigError(f"learning rate must be positive, got {lr}")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ConfigError(f"betas must be in [0, 1), got {tuple(betas)}")
        if weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {weight_decay}")
        if isinstance(params, Module):
            decay, no_decay = decay_groups(params)
        else:
            decay, no_decay = list(params), []
        self.params = decay + no_decay
        self.weight_decays = [weight_decay] * len(decay) + [0.0] * len(no_decay)
        self.lr, self.betas, self.eps = lr, tuple(betas), eps
        xp = backends.current().xp
        self.m = [xp.zeros_like(p.data) for p in self.params]
        self.v = [xp.zeros_like(p.data) for p in self.params]
        self.step_count = 0

    def step(self, lr: float | None = None) -> None:
        """One update of every parameter that has a gradient, at ``lr`` (default self.lr)."""
        lr = self.lr if lr is None else lr
        self.step_count += 1
        live = [i for i, p in enumerate(self.params) if p.grad is not None]  # the rest keep their moments
        params = [self.params[i] for i in live]
        backends.current().kernels.adamw_update_many(
            [p.data for p in params], [p.grad for p in params], [self.m[i] for i in live],
            [self.v[i] for i in live], [self.weight_decays[i] for i in live], lr,
            self.betas[0], self.betas[1], self.eps, self.step_count)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None


def cosine_lr(step: int, lr: float, min_lr: float, warmup_iters: int, decay_iters: int) -> float:
    """Linear warmup to ``lr``, then cosine decay to ``min_lr`` at ``decay_iters`` (nanoGPT's)."""
    if step < warmup_iters:
        return lr * (step + 1) / (warmup_iters + 1)
    if step >= decay_iters:
        return min_lr
    ratio = (step - warmup_iters) / max(1, decay_iters - warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)


def clip_grad_norm(params, max_norm: float):
    """Scale all gradients so their global L2 norm is at most ``max_norm``; return the norm before.

    norm = sqrt(Σ_p Σ g_p^2);  g_p *= min(1, max_norm / (norm + 1e-6))   (as torch's clip_grad_norm_)
    The backend's ``clip_grad_norm_many`` kernel; the norm stays a backend scalar:
    reading it would stall a GPU every step.
    """
    params = [p for p in params if p.grad is not None]
    if not params:
        return backends.current().xp.zeros(())
    clipped, norm = backends.current().kernels.clip_grad_norm_many([p.grad for p in params], max_norm)
    for p, g in zip(params, clipped):
        p.grad = g  # the kernel scales into new arrays: a gradient array may be shared
    return norm
