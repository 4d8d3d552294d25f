"""Scaling: validation loss falls as a power law in model size.

Kaplan et al. (2020), "Scaling laws for neural language models": with data and
compute not the bottleneck, the loss of a transformer language model follows
L(N) ≈ (N_c / N)^α_N over many orders of magnitude of N, the number of
non-embedding parameters; with a fixed budget of training tokens an irreducible
term appears, L(N) = a N^-α + c. Here a ladder of GPTs, each trained on the same
tokens of the same corpus with the same schedule, is fitted to that law.

Parameters count as in Kaplan et al.: non-embedding (the transformer blocks), and
training compute is C = 6 N D + 6 n_layer T d D FLOPs for D training tokens
(forward 2N + 2 n_layer T d per token, backward twice that).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from tinylm import backends
from tinylm.data import Corpus, split_ids
from tinylm.errors import ConfigError, DataError, require_positive_ints
from tinylm.models import GPT, GPTConfig
from tinylm.tokenizers import CharTokenizer
from tinylm.train import TrainConfig, new_state, train

# (name, n_layer, n_head, n_embd): about 140x in non-embedding parameters, smallest to largest.
CPU_LADDER = (("L1-d16", 1, 2, 16), ("L2-d32", 2, 2, 32), ("L2-d48", 2, 4, 48),
              ("L3-d64", 3, 4, 64), ("L4-d96", 4, 4, 96))
GPU_LADDER = CPU_LADDER + (("L4-d128", 4, 4, 128), ("L6-d192", 6, 6, 192))


@dataclass(frozen=True)
class ScalingConfig:
    block_size: int = 64
    batch_size: int = 16
    max_iters: int = 1500          # the same for every size: D = max_iters x batch x block tokens
    learning_rate: float = 2e-3
    warmup_iters: int = 100
    eval_iters: int = 40
    val_fraction: float = 0.1
    seed: int = 0

    def __post_init__(self):
        require_positive_ints(self, ("block_size", "batch_size", "max_iters", "eval_iters"))
        if self.learning_rate <= 0:
            raise ConfigError(f"learning_rate must be > 0, got {self.learning_rate}")

    @property
    def tokens(self) -> int:
        return self.max_iters * self.batch_size * self.block_size

    def train_config(self) -> TrainConfig:
        return TrainConfig(batch_size=self.batch_size, max_iters=self.max_iters,
                           learning_rate=self.learning_rate, min_lr=self.learning_rate / 10,
                           warmup_iters=self.warmup_iters, weight_decay=0.1, beta2=0.99,
                           eval_interval=self.max_iters, eval_iters=self.eval_iters,
                           log_interval=max(1, self.max_iters // 10), seed=self.seed)


def non_embedding_params(model: GPT) -> int:
    """N in Kaplan et al.: every parameter except the token and position embeddings."""
    return model.num_parameters() - model.wte.weight.size - model.wpe.weight.size


def training_flops(n_params: int, cfg: GPTConfig, tokens: int) -> float:
    """C = (6 N + 6 n_layer T d) D: the matmuls of forward (1/3) and backward (2/3)."""
    return float((6 * n_params + 6 * cfg.n_layer * cfg.block_size * cfg.n_embd) * tokens)


def fit_power_law(n, loss) -> dict:
    """L(N) = a N^-α + c by least squares, NumPy only.

    For each c on a grid below min(L), log(L - c) = log a - α log N is a straight
    line fitted in closed form; the c whose curve has the least squared error in L
    wins. R² = 1 - SSE / Σ (L - mean L)² is measured on L itself.
    """
    n, loss = np.asarray(n, dtype=float), np.asarray(loss, dtype=float)
    if len(n) < 3:
        raise ConfigError(f"a power law with an offset needs at least 3 models, got {len(n)}")
    log_n = np.log(n)
    best = None
    for c in np.linspace(0.0, loss.min(), 2001)[:-1]:
        slope, intercept = np.polyfit(log_n, np.log(loss - c), 1)
        predicted = np.exp(intercept) * n ** slope + c
        sse = float(((predicted - loss) ** 2).sum())
        if best is None or sse < best[0]:
            best = (sse, float(np.exp(intercept)), float(-slope), float(c))
    sse, a, alpha, c = best
    sst = float(((loss - loss.mean()) ** 2).sum())
    return {"a": a, "alpha": alpha, "c": c, "r2": 1.0 - sse / sst if sst > 0 else 1.0}


def run_scaling(cfg: ScalingConfig, corpus: Corpus, ladder=CPU_LADDER,
                on_event: Callable[[dict], None] = lambda e: None) -> dict:
    """Train every size on the same tokens; the table, the fit and the signature for the JSON."""
    t0 = time.perf_counter()
    tokenizer = CharTokenizer.from_text(corpus.text)
    train_ids, val_ids = split_ids(tokenizer.encode(corpus.text), cfg.val_fraction)
    if min(len(train_ids), len(val_ids)) <= cfg.block_size:
        raise DataError(f"the corpus is too short for block_size {cfg.block_size}: "
                        f"{len(train_ids)} training and {len(val_ids)} validation tokens")
    train_cfg = cfg.train_config()
    rows = []
    for name, n_layer, n_head, n_embd in ladder:
        model_cfg = GPTConfig(vocab_size=tokenizer.vocab_size, block_size=cfg.block_size,
                              n_layer=n_layer, n_head=n_head, n_embd=n_embd)
        model = GPT(model_cfg, seed=cfg.seed)
        n = non_embedding_params(model)
        on_event({"event": "start", "name": name, "params": n, "index": len(rows),
                  "total": len(ladder)})
        started = time.perf_counter()
        state = train(new_state(model, train_ids, train_cfg), val_ids, train_cfg,
                      on_event=lambda e, name=name: on_event({**e, "name": name}))
        _, train_loss, val_loss = state.history[-1]
        rows.append({"name": name, "n_layer": n_layer, "n_head": n_head, "n_embd": n_embd,
                     "params": n, "total_params": model.num_parameters(),
                     "train_flops": training_flops(n, model_cfg, cfg.tokens),
                     "train_loss": train_loss, "val_loss": val_loss,
                     "seconds": time.perf_counter() - started})
        on_event({"event": "done", **rows[-1]})
    fit = fit_power_law([r["params"] for r in rows], [r["val_loss"] for r in rows])
    losses = [r["val_loss"] for r in rows]
    params = [r["params"] for r in rows]
    signature = {"monotonic": all(b < a for a, b in zip(losses, losses[1:])),
                 "param_span": max(params) / min(params), "r2": fit["r2"], "alpha": fit["alpha"]}
    signature["holds"] = bool(signature["monotonic"] and signature["r2"] >= 0.95
                              and signature["param_span"] >= 30 and len(rows) >= 5)
    return {"experiment": "scaling", "config": asdict(cfg), "tokens": cfg.tokens,
            "data": corpus.source, "vocab_size": tokenizer.vocab_size,
            "backend": backends.current().name, "seconds": time.perf_counter() - t0,
            "models": rows, "fit": fit, "signature": signature}
