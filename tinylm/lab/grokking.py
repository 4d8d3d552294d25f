"""Grokking: a network that memorises first and understands much later.

Power et al. (2022), "Grokking: generalization beyond overfitting on small
algorithmic datasets": a small transformer trained on a fraction of the table
a + b (mod p) fits its training pairs quickly, sits at chance on the held-out
pairs for a long time, and then, under weight decay, suddenly generalises (it
replaces the memorised table by a compact algorithm; Nanda et al. 2023 read it
out as rotations in Fourier space). Without weight decay nothing pushes it off
the memorised solution, and the held-out accuracy stays low.

Each example is the sequence ``a b =`` and the model predicts (a + b) mod p at
the ``=``; training is full-batch AdamW, as in the paper.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from tinylm import backends
from tinylm.errors import ConfigError, require_positive_ints
from tinylm.models import GPT, GPTConfig
from tinylm.optim import AdamW
from tinylm.tensor import no_grad

IGNORE = -100  # cross_entropy's ignore_index: no loss on the a and b positions

# On a GPU (--backend cupy) the classic size: p = 113 and a 128-wide layer (Nanda et al. 2023).
GPU_DEFAULTS = {"p": 113, "n_embd": 128, "max_iters": 6000}


@dataclass(frozen=True)
class GrokkingConfig:
    p: int = 59                   # modulus (a prime): 3,481 pairs, 1,044 of them trained on
    train_fraction: float = 0.3   # share of the p^2 pairs trained on
    n_head: int = 4
    n_embd: int = 64
    max_iters: int = 2000
    learning_rate: float = 3e-3
    weight_decay: float = 1.0
    warmup_iters: int = 10
    eval_interval: int = 20
    seed: int = 0

    def __post_init__(self):
        require_positive_ints(self, ("p", "n_head", "n_embd", "max_iters", "eval_interval"))
        if self.p < 3:
            raise ConfigError(f"p must be at least 3, got {self.p}")
        if not 0.0 < self.train_fraction < 1.0:
            raise ConfigError(f"train_fraction must be in (0, 1), got {self.train_fraction}")
        if self.weight_decay < 0 or self.learning_rate <= 0:
            raise ConfigError("learning_rate must be > 0 and weight_decay >= 0")
        self.model_config()  # validates n_embd / n_head

    def model_config(self) -> GPTConfig:
        """One transformer layer over the tokens 0..p-1 and '=' (token p)."""
        return GPTConfig(vocab_size=self.p + 1, block_size=3, n_layer=1, n_head=self.n_head,
                         n_embd=self.n_embd, dropout=0.0, bias=True)


def modular_addition(p: int, train_fraction: float, seed: int):
    """((x_train, y_train), (x_val, y_val)): every pair a, b < p as ``a b =``, split at random.

    x (N, 3) int64; y (N, 3) with (a + b) mod p at the last position and IGNORE elsewhere.
    """
    a, b = np.divmod(np.arange(p * p), p)                                 # every pair once
    x = np.stack([a, b, np.full_like(a, p)], axis=1)                      # (p^2, 3)
    y = np.full_like(x, IGNORE)
    y[:, 2] = (a + b) % p
    order = np.random.default_rng(seed).permutation(p * p)
    n_train = int(round(train_fraction * p * p))
    train, val = order[:n_train], order[n_train:]
    return (x[train], y[train]), (x[val], y[val])


def _accuracy(logits, y) -> float:
    """Share of examples whose argmax at '=' is the answer; logits (N, 3, V) backend array."""
    guess = np.asarray(backends.current().to_host(logits[:, -1].argmax(axis=-1)))
    return float((guess == y[:, -1]).mean())


def train_modular_addition(cfg: GrokkingConfig, weight_decay: float,
                           on_event: Callable[[dict], None] = lambda e: None) -> list[dict]:
    """Full-batch AdamW on the training pairs; history of {step, train/val loss and accuracy}."""
    backend = backends.current()
    backend.seed(cfg.seed)
    (x_tr, y_tr), (x_va, y_va) = modular_addition(cfg.p, cfg.train_fraction, cfg.seed)
    xt, yt = backend.from_host(x_tr), backend.from_host(y_tr)
    xv, yv = backend.from_host(x_va), backend.from_host(y_va)
    model = GPT(cfg.model_config(), seed=cfg.seed)
    opt = AdamW(model, lr=cfg.learning_rate, betas=(0.9, 0.98), weight_decay=weight_decay)
    history, t0 = [], time.perf_counter()
    for step in range(cfg.max_iters + 1):
        logits, loss = model(xt, yt)
        if step % cfg.eval_interval == 0 or step == cfg.max_iters:
            with no_grad():
                val_logits, val_loss = model(xv, yv)
            history.append({"step": step, "train_loss": float(loss.item()),
                            "train_acc": _accuracy(logits.data, y_tr),
                            "val_loss": float(val_loss.item()),
                            "val_acc": _accuracy(val_logits.data, y_va)})
            on_event({"event": "eval", "weight_decay": weight_decay,
                      "seconds": time.perf_counter() - t0, **history[-1]})
        if step == cfg.max_iters:
            break
        opt.zero_grad()
        loss.backward()
        opt.step(cfg.learning_rate * min(1.0, (step + 1) / (cfg.warmup_iters + 1)))
    return history


def first_step(history: list[dict], key: str, threshold: float) -> int | None:
    """The first evaluated step where ``key`` reached ``threshold`` (None if it never did)."""
    return next((e["step"] for e in history if e[key] >= threshold), None)


def run_grokking(cfg: GrokkingConfig, on_event: Callable[[dict], None] = lambda e: None) -> dict:
    """Train with cfg.weight_decay and the no-decay control on the same split; results for the JSON."""
    t0 = time.perf_counter()
    runs = {}
    for name, wd in (("weight_decay", cfg.weight_decay), ("control", 0.0)):
        on_event({"event": "start", "name": name, "weight_decay": wd})
        runs[name] = {"weight_decay": wd, "history": train_modular_addition(cfg, wd, on_event)}
    grok, control = runs["weight_decay"]["history"], runs["control"]["history"]
    train_99, val_95 = first_step(grok, "train_acc", 0.99), first_step(grok, "val_acc", 0.95)
    signature = {
        "train_99_step": train_99, "val_95_step": val_95,
        "delay_ratio": val_95 / max(train_99, 1) if train_99 is not None and val_95 is not None else None,
        "final_val_acc": grok[-1]["val_acc"],
        "control_train_99_step": first_step(control, "train_acc", 0.99),
        "control_best_val_acc": max(e["val_acc"] for e in control),
    }
    signature["holds"] = bool(signature["delay_ratio"] is not None and signature["delay_ratio"] >= 3
                              and signature["control_best_val_acc"] < 0.5)
    return {"experiment": "grokking", "config": asdict(cfg), "backend": backends.current().name,
            "pairs": {"train": int(round(cfg.train_fraction * cfg.p ** 2)),
                      "validation": cfg.p ** 2 - int(round(cfg.train_fraction * cfg.p ** 2))},
            "seconds": time.perf_counter() - t0, "signature": signature, "runs": runs}
