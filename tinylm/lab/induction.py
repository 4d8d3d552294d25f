"""Induction heads: a 2-layer attention-only transformer learns to copy, abruptly.

Olsson et al. (2022), "In-context learning and induction heads": a sequence that
repeats can be continued by a two-step circuit. A *previous-token head* in layer 1
writes "the token before me was A" into each position; an *induction head* in
layer 2 then looks, from the current token A, for the position whose previous
token was A, and copies the token found there. Neither layer can do it alone, so
the ability appears as a phase change: a loss plateau, then an abrupt drop that
coincides with a layer-2 head's induction score jumping. A 1-layer model has no
such drop. Nor does a recurrent model (``control="lstm"``, an LSTM with about as
many parameters): it must carry every token it may copy in a fixed-size state,
where the attention model looks the earlier occurrence up.

The data: uniformly random tokens in which a random span of L tokens is followed
by its copy, with L and the span's place drawn per sequence, so that neither a
fixed position nor a fixed offset finds the copy: only matching the content does.
The "first half" is every position whose next token is fresh and random
(unpredictable, loss >= log V); the "second half" every position inside the copy.

Why these choices (measured on 2 CPU cores, docs/lab/induction.md): with a copy of
fixed length at a fixed place, the 2-layer model learns a positional shortcut
instead of an induction head; with tokens that never repeat, "a token seen
before will not come again" pushes heads away from copying and nothing is
learnt; a learning rate of 1e-3 with batch 32 picks non-induction solutions on
some seeds, 5e-4 with batch 64 formed an induction head on every seed tried.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from tinylm import backends, ops
from tinylm.errors import ConfigError, require_choice, require_positive_ints
from tinylm.lab.heads import attention_patterns, token_losses
from tinylm.models.gpt import CausalSelfAttention, GPTConfig
from tinylm.models.lstm import LSTM, LSTMConfig
from tinylm.nn import Embedding, LayerNorm, Linear, Module
from tinylm.optim import AdamW, clip_grad_norm
from tinylm.tensor import Tensor


# --------------------------------------------------------------------------- model
class AttentionBlock(Module):
    """Pre-LN residual attention with no MLP: x + attn(ln_1(x))."""

    def __init__(self, cfg: GPTConfig, rng: np.random.Generator):
        self.ln_1 = LayerNorm(cfg.n_embd)
        self.attn = CausalSelfAttention(cfg, rng)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.attn(self.ln_1(x))


class AttentionOnly(Module):
    """Token + position embeddings, n_layer attention blocks, LayerNorm, unembedding.

    Same attribute names as GPT (wte, wpe, blocks[i].ln_1, blocks[i].attn), so the
    head tools in tinylm.lab.heads read either model.
    """

    def __init__(self, cfg: GPTConfig, seed: int = 0):
        self.config = cfg
        rng = np.random.default_rng(seed)
        self.wte = Embedding(cfg.vocab_size, cfg.n_embd, rng)
        self.wpe = Embedding(cfg.block_size, cfg.n_embd, rng)
        self.blocks = [AttentionBlock(cfg, rng) for _ in range(cfg.n_layer)]
        self.ln_f = LayerNorm(cfg.n_embd)
        self.lm_head = Linear(cfg.n_embd, cfg.vocab_size, rng, bias=False)

    def forward(self, idx, targets=None):
        """idx (B, T) -> logits (B, T, V), and the mean cross-entropy when targets are given."""
        idx = idx.data if isinstance(idx, Tensor) else idx
        pos = backends.current().xp.arange(idx.shape[1])
        x = self.wte(idx) + self.wpe(pos)                                # (B, T, C)
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))                              # (B, T, V)
        loss = ops.cross_entropy(logits, targets) if targets is not None else None
        return logits, loss


# --------------------------------------------------------------------------- data
def repeated_sequences(rng: np.random.Generator, batch: int, seq_len: int, vocab_size: int,
                       min_copy: int, max_copy: int):
    """(x, y, start, copy_len): random tokens in which a random span of copy_len tokens repeats.

    Each sequence s is T+1 i.i.d. uniform tokens, then s[a+L : a+2L] = s[a : a+L] with
    L = copy_len[b] in [min_copy, max_copy] and a = start[b] uniform: the copy's length
    and place both vary, so no fixed position or offset finds it (a 1-layer model
    cannot shortcut). x, y (B, T) int64, y = x shifted by one.
    """
    seq = rng.integers(0, vocab_size, size=(batch, seq_len + 1))          # (B, T+1)
    copy_len = rng.integers(min_copy, max_copy + 1, size=batch)           # (B,)
    start = rng.integers(0, seq_len + 2 - 2 * copy_len)                   # (B,) a <= T+1-2L
    for b, (a, L) in enumerate(zip(start, copy_len)):
        seq[b, a + L:a + 2 * L] = seq[b, a:a + L]
    return seq[:, :-1].copy(), seq[:, 1:].copy(), start, copy_len


def region_masks(seq_len: int, start: np.ndarray, copy_len: np.ndarray):
    """(random, copied) boolean masks (B, T) over prediction positions t (target s_{t+1}).

    random: the target is a fresh random token (unpredictable: loss log V at best);
    copied: the current token is already in the copy, so the target repeats the
    token after its previous occurrence (at t - L + 1). The first copied token is
    in neither: nothing announces where the copy starts.
    """
    t = np.arange(seq_len)[None, :]                                        # (1, T)
    first = (start + copy_len)[:, None]                                    # first copied position
    last = first + copy_len[:, None] - 1                                   # last copied position
    target = t + 1
    return (target < first) | (target > last), (t >= first) & (t < last)


def induction_scores(patterns: list[np.ndarray], start: np.ndarray, copy_len: np.ndarray) -> np.ndarray:
    """(n_layer, n_head): mean attention from each copied token to the token after its
    previous occurrence (query t -> key t - L + 1), over the copied positions."""
    B, H, T, _ = patterns[0].shape
    _, copied = region_masks(T, start, copy_len)
    b, t = np.nonzero(copied)
    keys = t - copy_len[b] + 1
    return np.stack([p[b, :, t, keys].mean(axis=0) for p in patterns])    # (L, H)


def previous_token_scores(patterns: list[np.ndarray]) -> np.ndarray:
    """(n_layer, n_head): mean attention from each token to the one just before it (t -> t-1),
    the other half of the induction circuit."""
    T = patterns[0].shape[-1]
    t = np.arange(1, T)
    return np.stack([p[:, :, t, t - 1].mean(axis=(0, 2)) for p in patterns])  # (L, H)


# --------------------------------------------------------------------------- experiment
@dataclass(frozen=True)
class InductionConfig:
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 64
    vocab_size: int = 64
    seq_len: int = 32
    min_copy: int = 3
    max_copy: int = 16
    batch_size: int = 64
    max_iters: int = 3000
    learning_rate: float = 5e-4
    warmup_iters: int = 50
    cooldown_iters: int = 1000
    weight_decay: float = 0.0
    eval_interval: int = 25
    eval_size: int = 128
    seed: int = 0
    control: str = "attention"  # the model that should not copy: 1-layer attention, or an LSTM

    def __post_init__(self):
        require_positive_ints(self, ("n_layer", "n_head", "n_embd", "vocab_size", "seq_len",
                                     "min_copy", "max_copy", "batch_size", "max_iters",
                                     "eval_interval", "eval_size"))
        if not self.min_copy <= self.max_copy <= (self.seq_len + 1) // 2:
            raise ConfigError(f"need min_copy <= max_copy <= (seq_len + 1) // 2 = "
                              f"{(self.seq_len + 1) // 2}, got {self.min_copy}, {self.max_copy}")
        if self.min_copy < 2:
            raise ConfigError("min_copy must be at least 2 (one copied token is unpredictable)")
        require_choice(self, "control", CONTROLS)
        GPTConfig(vocab_size=self.vocab_size, block_size=self.seq_len, n_layer=self.n_layer,
                  n_head=self.n_head, n_embd=self.n_embd)  # validates the model fields


CONTROLS = ("attention", "lstm")


def attention_model(cfg: InductionConfig, n_layer: int) -> AttentionOnly:
    return AttentionOnly(GPTConfig(vocab_size=cfg.vocab_size, block_size=cfg.seq_len,
                                   n_layer=n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd),
                         seed=cfg.seed)


def lstm_control(cfg: InductionConfig, n_params: int) -> LSTM:
    """A 1-layer LSTM whose hidden size gives the parameter count closest to ``n_params``."""
    sized = lambda h: LSTMConfig(vocab_size=cfg.vocab_size, block_size=cfg.seq_len, n_layer=1,
                                 n_embd=h)
    hidden = min(range(1, 4 * cfg.n_embd + 1),
                 key=lambda h: abs(sized(h).count_parameters() - n_params))
    return LSTM(sized(hidden), seed=cfg.seed)


def _lr_at(step: int, cfg) -> float:
    """Linear warmup, constant, then linearly to 0 over the last cooldown_iters steps.

    Constant through the middle, so the schedule does not itself bend the loss curve
    where the phase change happens; the cool-down only sharpens the final fit.
    """
    warmup = min(1.0, (step + 1) / (cfg.warmup_iters + 1))
    cooldown = min(1.0, (cfg.max_iters - step) / max(cfg.cooldown_iters, 1))
    return cfg.learning_rate * min(warmup, cooldown)


def region_losses(model: Module, batch) -> dict:
    """Mean loss on the random and on the copied region of a held-out batch."""
    x, y, start, copy_len = batch
    losses = token_losses(model, x, y)                                    # (B, T)
    random, copied = region_masks(x.shape[1], start, copy_len)
    return {"random_loss": float(losses[random].mean()), "copied_loss": float(losses[copied].mean())}


def evaluate(model: Module, batch) -> dict:
    """Loss on the random and the copied region; every head's induction and previous-token score."""
    x, _, start, copy_len = batch
    patterns = attention_patterns(model, x)
    return {**region_losses(model, batch),
            "induction_scores": induction_scores(patterns, start, copy_len).round(4).tolist(),
            "previous_token_scores": previous_token_scores(patterns).round(4).tolist()}


def train_attention_only(cfg: InductionConfig, n_layer: int,
                         on_event: Callable[[dict], None] = lambda e: None) -> list[dict]:
    """Train one attention-only model; returns its history (one evaluate() dict per eval step)."""
    return train_model(cfg, attention_model(cfg, n_layer), evaluate,
                       lambda e: on_event({"n_layer": n_layer, **e}))


def train_model(cfg: InductionConfig, model: Module, measure,
                on_event: Callable[[dict], None] = lambda e: None) -> list[dict]:
    """Train ``model`` on repeated sequences; its history, one ``measure(model, held_out)`` per eval."""
    backend = backends.current()
    backend.seed(cfg.seed)
    opt = AdamW(model, lr=cfg.learning_rate, betas=(0.9, 0.99), weight_decay=cfg.weight_decay)
    data_rng = np.random.default_rng(cfg.seed)
    shape = (cfg.seq_len, cfg.vocab_size, cfg.min_copy, cfg.max_copy)
    held_out = repeated_sequences(np.random.default_rng(cfg.seed + 10_000), cfg.eval_size, *shape)
    history, t0 = [], time.perf_counter()
    for step in range(cfg.max_iters + 1):
        if step % cfg.eval_interval == 0 or step == cfg.max_iters:
            model.eval()
            history.append({"step": step, **measure(model, held_out)})
            model.train()
            on_event({"event": "eval", "seconds": time.perf_counter() - t0, **history[-1]})
        if step == cfg.max_iters:
            break
        x, y, _, _ = repeated_sequences(data_rng, cfg.batch_size, *shape)
        _, loss = model(backend.from_host(x), backend.from_host(y))
        opt.zero_grad()
        loss.backward()
        clip_grad_norm(opt.params, 1.0)
        opt.step(_lr_at(step, cfg))
    return history


def summarize(history: list[dict]) -> dict:
    """The signature in a few numbers: final losses, the best last-layer head, and the steps
    where the copied-token loss fell fastest and that head's induction score rose fastest."""
    steps = [e["step"] for e in history]
    copied = np.array([e["copied_loss"] for e in history])
    last_layer = np.array([e["induction_scores"][-1] for e in history])  # (evals, H)
    head = int(last_layer[-1].argmax())
    score = last_layer[:, head]
    final = history[-1]
    return {
        "random_loss": final["random_loss"], "copied_loss": final["copied_loss"],
        "copied_over_random": final["copied_loss"] / final["random_loss"],
        "best_head": {"layer": len(final["induction_scores"]), "head": head,
                      "induction_score": float(score[-1])},
        "best_layer1_previous_token_score": float(max(final["previous_token_scores"][0])),
        "steepest_loss_drop_step": steps[int(np.argmin(np.diff(copied))) + 1] if len(steps) > 1 else 0,
        "steepest_score_rise_step": steps[int(np.argmax(np.diff(score))) + 1] if len(steps) > 1 else 0,
    }


def summarize_losses(history: list[dict]) -> dict:
    """A control without attention: its final losses and their ratio."""
    final = history[-1]
    return {"random_loss": final["random_loss"], "copied_loss": final["copied_loss"],
            "copied_over_random": final["copied_loss"] / final["random_loss"]}


def run_induction(cfg: InductionConfig, on_event: Callable[[dict], None] = lambda e: None) -> dict:
    """Train the n_layer model and the control on the same data; results for the JSON.

    The control is the 1-layer attention model, or (``cfg.control == "lstm"``) a
    1-layer LSTM with about the model's parameter count.
    """
    t0 = time.perf_counter()
    model = attention_model(cfg, cfg.n_layer)
    on_event({"event": "start", "name": "model", "n_layer": cfg.n_layer})
    history = train_model(cfg, model, evaluate, lambda e: on_event({"n_layer": cfg.n_layer, **e}))
    runs = {"model": {"n_layer": cfg.n_layer, "label": f"{cfg.n_layer}-layer",
                      "parameters": model.num_parameters(), "summary": summarize(history),
                      "history": history}}
    if cfg.control == "lstm":
        control = lstm_control(cfg, model.num_parameters())
        label = f"LSTM (hidden {control.config.n_embd})"
        on_event({"event": "start", "name": "control", "label": label})
        history = train_model(cfg, control, region_losses, lambda e: on_event({"label": label, **e}))
        runs["control"] = {"label": label, "n_layer": 1, "parameters": control.num_parameters(),
                           "summary": summarize_losses(history), "history": history}
    else:
        control = attention_model(cfg, 1)
        on_event({"event": "start", "name": "control", "n_layer": 1})
        history = train_model(cfg, control, evaluate, lambda e: on_event({"n_layer": 1, **e}))
        runs["control"] = {"n_layer": 1, "label": "1-layer", "parameters": control.num_parameters(),
                           "summary": summarize(history), "history": history}
    model, control = runs["model"]["summary"], runs["control"]["summary"]
    signature = {
        "copied_over_random": model["copied_over_random"],
        "best_induction_score": model["best_head"]["induction_score"],
        "control_copied_over_random": control["copied_over_random"],
        "previous_token_score": model["best_layer1_previous_token_score"],
        "phase_change_step": model["steepest_loss_drop_step"],
        "induction_jump_step": model["steepest_score_rise_step"],
    }
    signature["holds"] = bool(signature["copied_over_random"] <= 0.2
                              and signature["best_induction_score"] >= 0.5
                              and signature["control_copied_over_random"] >= 0.6)
    return {"experiment": "induction", "config": asdict(cfg), "backend": backends.current().name,
            "seconds": time.perf_counter() - t0, "signature": signature, "runs": runs}
