"""Autoregressive text generation: predict, adjust, sample, append, repeat.

    logits of the next token     KVCacheContext: only the new token runs through the model,
                                 attending over cached keys/values (tinylm.kvcache);
                                 RecomputeContext: the whole context runs again (the reference)
    -> repetition penalty, no-repeat n-grams                       (RepetitionControl)
    -> temperature, top-k, top-p (nucleus), then one draw          (sample_next)
    -> append; stop after max_new_tokens or at a stop string        (generate_text)

The context window. Positions are absolute (learned position embeddings), so a
context longer than block_size cannot slide inside a KV cache: sliding by one
token (nanoGPT) changes every position's embedding and so every cached key.
Instead the window grows to block_size tokens, and on overflow restarts on the
last ceil(block_size / 2) tokens (``context_start``), which the cache recomputes
once. Both contexts follow this rule, so for the same seed they give the same
tokens; the cache only changes the cost.
"""

from __future__ import annotations

import codecs
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np

from tinylm import backends
from tinylm.errors import ConfigError
from tinylm.kvcache import forward_step, new_cache
from tinylm.models.gpt import GPT
from tinylm.tensor import no_grad


# ---------------------------------------------------------------------------- choosing a token
@dataclass(frozen=True)
class Sampling:
    """How the next token is chosen from the logits."""

    temperature: float = 1.0             # softmax(logits / T); 0 = greedy (arg-max)
    top_k: int | None = None             # keep only the k likeliest tokens
    top_p: float | None = None           # keep the fewest likeliest tokens whose probability sums to >= p
    repetition_penalty: float = 1.0      # > 1 discourages every token seen so far (CTRL)
    no_repeat_ngram_size: int = 0        # n > 0: never produce an n-gram that already occurred

    def __post_init__(self):
        if not 0 <= self.temperature < float("inf"):  # also refuses NaN
            raise ConfigError(f"temperature must be a finite number >= 0 (0 = greedy), got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ConfigError(f"top_k must be >= 1, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}; 0.9 is common")
        if not 0 < self.repetition_penalty < float("inf"):
            raise ConfigError(f"repetition_penalty must be > 0 (1 = off, 1.1-1.3 is common), "
                              f"got {self.repetition_penalty}")
        if self.no_repeat_ngram_size < 0:
            raise ConfigError(f"no_repeat_ngram_size must be >= 0 (0 = off), got {self.no_repeat_ngram_size}")


def check_sampling(temperature: float, top_k: int | None, **more) -> Sampling:
    """The validated ``Sampling`` for these settings (ConfigError otherwise)."""
    return Sampling(temperature, top_k, **more)


def sample_next(logits: np.ndarray, rng: np.random.Generator, temperature: float = 1.0,
                top_k: int | None = None, top_p: float | None = None) -> int:
    """One token id from a row of logits (V,): softmax(logits / temperature), cut to top-k then top-p.

    temperature 0 means greedy decoding (the arg-max).
    """
    if temperature == 0:
        return int(np.argmax(logits))
    z = (logits.astype(np.float64) - logits.max()) / temperature  # <= 0: no overflow at tiny T
    if top_k is not None and top_k < len(z):
        kth = np.partition(z, -top_k)[-top_k]
        z = np.where(z < kth, -np.inf, z)
    p = np.exp(z)
    p /= p.sum()
    if top_p is not None and top_p < 1:
        order = np.argsort(-p, kind="stable")                        # likeliest first
        before = np.cumsum(p[order]) - p[order]                      # mass of the likelier tokens
        nucleus = order[before < top_p]                              # always holds the top token
        p = np.zeros_like(p)
        p[nucleus] = np.exp(z[nucleus])
        p /= p.sum()
    # inverse-CDF draw: the first token whose cumulative probability exceeds u ~ U[0, 1)
    # (what rng.choice(len(p), p=p) does, draw for draw, without its per-call checks)
    cdf = np.cumsum(p)
    cdf /= cdf[-1]
    return int(cdf.searchsorted(rng.random(), side="right"))


class RepetitionControl:
    """The repetition penalty and the no-repeat n-gram ban, over the prompt and the tokens so far.

    penalty p (CTRL, Keskar et al. 2019): logit l of a seen token -> l / p if l > 0 else l * p.
    n-gram ban: if the last n-1 tokens occurred before, the tokens that followed them
    then get logit -inf. Both update in O(1) per token.
    """

    def __init__(self, sampling: Sampling, prompt_ids: Sequence[int]):
        self.penalty = sampling.repetition_penalty
        self.n = sampling.no_repeat_ngram_size
        self.seen: set[int] = set()
        self.followers: dict[tuple, set[int]] = defaultdict(set)  # (n-1)-gram -> tokens after it
        self.ids: list[int] = []
        for token in prompt_ids:
            self.add(token)

    def add(self, token: int) -> None:
        self.ids.append(token)
        self.seen.add(token)
        if self.n and len(self.ids) >= self.n:
            self.followers[tuple(self.ids[len(self.ids) - self.n:-1])].add(token)

    def apply(self, logits: np.ndarray) -> np.ndarray:
        """Adjusted copy of ``logits`` (V,) (the input itself when both are off)."""
        if self.penalty != 1.0:
            seen = np.fromiter(self.seen, dtype=np.int64)
            logits = logits.astype(np.float64)
            l = logits[seen]
            logits[seen] = np.where(l > 0, l / self.penalty, l * self.penalty)
        if self.n and len(self.ids) >= self.n - 1:
            banned = self.followers.get(tuple(self.ids[len(self.ids) - self.n + 1:]))
            if banned and len(banned) < len(logits):  # never ban every token
                logits = logits.astype(np.float64)
                logits[list(banned)] = -np.inf
        return logits


# ---------------------------------------------------------------------------- the next logits
def context_start(start: int, n_ids: int, block_size: int) -> int:
    """First token of the window [start, n_ids) the model sees: restarted on overflow."""
    if n_ids - start <= block_size:
        return start
    return n_ids - (block_size + 1) // 2


class RecomputeContext:
    """Next-token logits by running the model on the whole window again: T positions per token."""

    def __init__(self, model):
        self.model, self.start = model.eval(), 0
        self.to_host = backends.current().to_host

    def next_logits(self, ids: list[int]) -> np.ndarray:
        self.start = context_start(self.start, len(ids), self.model.config.block_size)
        context = np.asarray(ids[self.start:], dtype=np.int64)[None, :]    # (1, T)
        with no_grad():
            logits, _ = self.model(context)
        return self.to_host(logits.data[0, -1])                            # (V,)


class KVCacheContext:
    """Next-token logits with a KV cache: only tokens not yet in the cache run through the model."""

    def __init__(self, model):
        # a GPT's cache is tinylm.kvcache; a recurrent model carries its own state
        # (LSTM.new_cache / LSTM.forward_step: the same interface)
        if isinstance(model, GPT):
            self.new_cache, self.forward_step = partial(new_cache, model), partial(forward_step, model)
        elif hasattr(model, "forward_step"):
            self.new_cache, self.forward_step = model.new_cache, model.forward_step
        else:
            kind = getattr(model, "model_type", type(model).__name__)
            raise ConfigError(f"this is a {kind!r} model, which does not generate text left to "
                              "right; sample from a GPT or LSTM checkpoint")
        self.model, self.start = model.eval(), 0
        self.cache = self.new_cache()
        self.to_host = backends.current().to_host

    def next_logits(self, ids: list[int]) -> np.ndarray:
        start = context_start(self.start, len(ids), self.model.config.block_size)
        if start != self.start:  # the window restarted: its positions changed, recompute it
            self.start = start
            self.cache.clear()
        new = np.asarray(ids[self.start + self.cache.length:], dtype=np.int64)[None, :]  # (1, Tn)
        logits = self.forward_step(new, self.cache)
        return self.to_host(logits[0, -1])                                   # (V,)


# ---------------------------------------------------------------------------- the loop
def iter_tokens(context, prompt_ids, max_new_tokens: int, sampling: Sampling = Sampling(),
                seed: int = 0) -> Iterator[int]:
    """The new token ids one at a time, as they are chosen (stop iterating whenever you like).

    ``context`` is a KVCacheContext or RecomputeContext around the model.
    """
    if max_new_tokens < 0:
        raise ConfigError(f"number of tokens must be >= 0, got {max_new_tokens}")
    ids = [int(t) for t in np.asarray(prompt_ids).reshape(-1)]
    if not ids:
        raise ConfigError("the prompt must contain at least one token")
    return _token_stream(context, ids, max_new_tokens, sampling, seed)


def _token_stream(context, ids: list[int], max_new_tokens: int, sampling: Sampling, seed: int):
    rng = np.random.default_rng(seed)
    control = RepetitionControl(sampling, ids)
    for _ in range(max_new_tokens):
        logits = control.apply(context.next_logits(ids))
        token = sample_next(logits, rng, sampling.temperature, sampling.top_k, sampling.top_p)
        ids.append(token)
        control.add(token)
        yield token


def generate(model, prompt_ids, max_new_tokens: int, temperature: float = 1.0,
             top_k: int | None = None, seed: int = 0,
             on_token: Callable[[int], None] | None = None, *, top_p: float | None = None,
             repetition_penalty: float = 1.0, no_repeat_ngram_size: int = 0,
             context=KVCacheContext) -> np.ndarray:
    """Extend ``prompt_ids`` (1-D ints) by ``max_new_tokens`` sampled tokens; returns all ids.

    ``on_token`` is called with each new id as soon as it is chosen (streaming).
    ``context=RecomputeContext`` runs without the KV cache (same tokens, slower).
    """
    sampling = Sampling(temperature, top_k, top_p, repetition_penalty, no_repeat_ngram_size)
    ids = [int(t) for t in np.asarray(prompt_ids).reshape(-1)]
    for token in iter_tokens(context(model), ids, max_new_tokens, sampling, seed):
        ids.append(token)
        if on_token is not None:
            on_token(token)
    return np.asarray(ids, dtype=np.int64)


# ---------------------------------------------------------------------------- text
class TextStream:
    """Token ids in, text out as soon as it is complete.

    A byte-level tokenizer (one with ``decode_bytes``, e.g. BPE) can end a token
    inside a multi-byte character; an incremental UTF-8 decoder holds those bytes
    until the character is whole. Other tokenizers decode token by token.
    """

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.utf8 = None
        if hasattr(tokenizer, "decode_bytes"):
            from tinylm.bpe import DECODE_ERRORS
            self.utf8 = codecs.getincrementaldecoder("utf-8")(DECODE_ERRORS)

    def push(self, token: int) -> str:
        if self.utf8 is None:
            return self.tokenizer.decode([token])
        return self.utf8.decode(self.tokenizer.decode_bytes([token]))

    def flush(self) -> str:
        return "" if self.utf8 is None else self.utf8.decode(b"", final=True)


def generate_text(model, tokenizer, prompt_ids, max_new_tokens: int,
                  sampling: Sampling = Sampling(), seed: int = 0, stop: Sequence[str] = (),
                  on_text: Callable[[str], None] | None = None, context=KVCacheContext) -> str:
    """The text generated after ``prompt_ids``, cut before the first ``stop`` string if one appears.

    ``on_text`` receives the text in pieces as it is produced; the last
    len(longest stop) - 1 characters are held back until they cannot begin a stop
    string, so a stop string is never printed.
    """
    stop = [s for s in stop if s]
    hold = max((len(s) for s in stop), default=1) - 1
    stream, text, shown = TextStream(tokenizer), "", 0
    tokens = iter_tokens(context(model), prompt_ids, max_new_tokens, sampling, seed)
    for token in tokens:
        before = len(text)
        text += stream.push(token)
        cut = _first_stop(text, stop, max(0, before - hold))
        if cut is not None:
            text = text[:cut]
            break
        if on_text is not None and len(text) - hold > shown:
            on_text(text[shown:len(text) - hold])
            shown = len(text) - hold
    else:
        text += stream.flush()
        cut = _first_stop(text, stop, 0)
        text = text if cut is None else text[:cut]
    if on_text is not None and len(text) > shown:
        on_text(text[shown:])
    return text


def _first_stop(text: str, stop: Sequence[str], start: int) -> int | None:
    """Index of the earliest stop string in text[start:], or None."""
    found = [i for i in (text.find(s, start) for s in stop) if i >= 0]
    return min(found) if found else None
