"""The training loop: one function that every backend runs.

Each step: sample a batch, forward, backward (``grad_accum`` micro-batches whose
gradients add up), average the gradients across data-parallel ranks when there
are several (tinylm.distributed), clip the global gradient norm, one AdamW
update at the scheduled learning rate. Every ``eval_interval`` steps
the train and validation losses are estimated on fixed batches and a
checkpoint is written. Progress goes to a callback so the library never prints.
The settings are a ``TrainConfig`` (tinylm/config.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from tinylm import backends
from tinylm.config import TrainConfig  # the loop's settings (re-exported: tinylm.train.TrainConfig)
from tinylm.data import BatchSampler
from tinylm.divergence import DivergenceWatch
from tinylm.distributed import Communicator, SingleProcess
from tinylm.nn import Module
from tinylm.optim import AdamW, clip_grad_norm
from tinylm.tensor import no_grad


@no_grad()
def estimate_loss(model: Module, ids: np.ndarray, block_size: int, batch_size: int,
                  iters: int, seed: int = 0, batches: Callable = BatchSampler) -> float:
    """Mean loss over ``iters`` batches drawn with a fixed seed (the same batches every call)."""
    was_training = model.training
    model.eval()
    sampler = batches(ids, block_size, batch_size, seed)
    total = 0.0
    for _ in range(iters):
        x, y = sampler.next()
        _, loss = model(x, y)
        total += float(loss.item())
    model.train(was_training)
    return total / iters


@dataclass
class TrainState:
    """Everything that changes during training and must be saved for an exact resume."""

    model: Module
    optimizer: AdamW
    sampler: BatchSampler
    step: int = 0
    history: list = field(default_factory=list)  # [(step, train_loss, val_loss)] at each evaluation
    # makes a sampler (data, block_size, batch_size, seed) -> .next() = (x, y) for model(x, y):
    # BatchSampler (next token), mlm.MaskedBatches (masked LM), classify.LabelledBatches
    batches: Callable = BatchSampler


def new_state(model: Module, train_ids: np.ndarray, cfg: TrainConfig,
              batches: Callable = BatchSampler) -> TrainState:
    backends.current().seed(cfg.seed)
    sampler = batches(train_ids, model.config.block_size, cfg.batch_size, cfg.seed)
    optimizer = AdamW(model, lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay)
    return TrainState(model, optimizer, sampler, batches=batches)


# NaN and inf are expected when a run diverges; DivergenceWatch reports them in one
# line, so NumPy's floating-point warnings would only add noise.
@np.errstate(over="ignore", invalid="ignore", divide="ignore")
def train(state: TrainState, val_ids: np.ndarray, cfg: TrainConfig,
          on_event: Callable[[dict], None] = lambda event: None,
          save: Callable[[TrainState], None] | None = None,
          stop_requested: Callable[[], bool] = lambda: False,
          communicator: Communicator | None = None) -> TrainState:
    """Run from ``state.step`` to ``cfg.max_iters``; returns the final state.

    ``on_event`` receives dicts: {"event": "step", step, loss, lr, ms_per_iter, tokens_per_s}
    every ``log_interval`` steps, and {"event": "eval", step, train_loss, val_loss}.
    ``save(state)`` is called after each evaluation and at the end;
    ``stop_requested()`` is polled after every step (for a clean Ctrl-C).
    ``communicator`` averages the gradients of data-parallel ranks between backward
    and clipping (every rank runs this loop; the caller gives rank 0 the events and
    the saving). tokens_per_s counts the tokens of all ranks.
    """
    model, opt, backend = state.model, state.optimizer, backends.current()
    comm = communicator or SingleProcess()
    block = model.config.block_size
    tokens_per_step = cfg.batch_size * block * cfg.grad_accum * comm.world_size
    model.train()
    watch = DivergenceWatch(model, backend, cfg.grad_clip)
    pending, carried, t0 = [], 0.0, time.perf_counter()
    while state.step < cfg.max_iters:
        step = state.step
        lr = cfg.lr_at(step)
        opt.zero_grad()
        micro_losses = []
        for _ in range(cfg.grad_accum):  # L = (1/N) Σ_n L_n: seeded with 1/N, .grad sums to dL/dθ
            x, y = state.sampler.next()
            _, loss = model(x, y)
            loss.backward(backend.xp.full_like(loss.data, 1.0 / cfg.grad_accum))
            micro_losses.append(loss.data)
        comm.allreduce_mean_gradients(opt.params)  # g = (1/K) Σ_k g_k over K ranks; alone a no-op
        grad_norm = clip_grad_norm(opt.params, cfg.grad_clip)  # grad_clip 0: measured, not clipped
        step_loss = sum(micro_losses) / cfg.grad_accum
        watch.record(step + 1, lr, step_loss, grad_norm)  # on the host: stops before a bad update
        opt.step(lr)
        state.step += 1
        pending.append(step_loss)  # read when logging: no device sync per step

        last = state.step == cfg.max_iters
        if state.step % cfg.log_interval == 0 or last:
            backend.synchronize()
            elapsed = carried + time.perf_counter() - t0
            value = float(backend.to_host(pending[-1]))
            watch.check()
            on_event({"event": "step", "step": state.step, "loss": value, "lr": lr,
                      "ms_per_iter": 1e3 * elapsed / len(pending),
                      "tokens_per_s": tokens_per_step * len(pending) / elapsed})
            pending, carried, t0 = [], 0.0, time.perf_counter()
        if state.step % cfg.eval_interval == 0 or last:
            watch.check()  # never evaluate or save a non-finite state
            backend.synchronize()
            carried += time.perf_counter() - t0  # evaluation and saving are not training time
            train_loss = estimate_loss(model, state.sampler.ids, block, cfg.batch_size,
                                       cfg.eval_iters, seed=cfg.seed + 1, batches=state.batches)
            val_loss = estimate_loss(model, val_ids, block, cfg.batch_size, cfg.eval_iters,
                                     seed=cfg.seed + 2, batches=state.batches)
            watch.check_evaluation(state.step, lr, train_loss, val_loss)
            state.history.append((state.step, train_loss, val_loss))
            on_event({"event": "eval", "step": state.step, "train_loss": train_loss,
                      "val_loss": val_loss})
            if save is not None:
                save(state)
            t0 = time.perf_counter()
        if stop_requested() and not last:
            watch.check()
            if save is not None:
                save(state)
            on_event({"event": "stopped", "step": state.step})
            break
    return state
