"""LSTM: the recurrent language model the transformer is compared with.

tokens -> embedding -> n_layer x LSTMLayer -> linear head -> logits over the
vocabulary: Keras's ``Embedding → LSTM → Dense(softmax)``, with the loss and the
training loop of the GPT. The recurrence itself is one op, ``lstm`` (below),
whose equations sit beside its backward through time.

Truncated BPTT: training batches are windows of ``block_size`` tokens (the GPT's
sampler), each started from the zero state, so gradients flow back at most
``block_size`` steps. Generation carries the state (h, c) from token to token
(``new_cache`` / ``forward_step``, what tinylm.generate calls for a GPT's KV
cache) and restarts from the zero state over the cropped window when the text
outgrows ``block_size``, as the model was trained.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tinylm import backends, ops
from tinylm.errors import ConfigError, ConfigRecord, require_positive_ints
from tinylm.nn import Dropout, Embedding, Linear, Module, Parameter
from tinylm.tensor import Tensor, get_default_dtype, kernels, no_grad, xp


@dataclass(frozen=True)
class LSTMConfig(ConfigRecord):
    KIND = "LSTM"
    vocab_size: int = 65
    block_size: int = 64      # tokens per training window: the truncation length of BPTT
    n_layer: int = 1
    n_embd: int = 128         # embedding width and hidden size H of every layer
    dropout: float = 0.0      # between layers and before the head

    def __post_init__(self):
        require_positive_ints(self, ("vocab_size", "block_size", "n_layer", "n_embd"))
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout!r}")

    def count_parameters(self) -> int:
        """V C embedding + L (8 C² + 4 C) layers + C V + V head (exactly ``LSTM(cfg).num_parameters()``)."""
        V, L, C = self.vocab_size, self.n_layer, self.n_embd
        return V * C + L * (8 * C * C + 4 * C) + C * V + V

    # Memory estimates (tinylm.resources), in array elements beyond the weights; counted
    # from the arrays below, not fitted to measurements as the GPT's are.
    def training_activations(self, batch_size: int) -> int:
        """Per layer and token: xw and the gates (4H each), h, c and the layer's input, then
        the gradients of the same sizes in backward (22 H); the embeddings and dropout
        outputs (4 C) and the logits, their softmax and its gradient (3 V)."""
        B, T, L, C, V = batch_size, self.block_size, self.n_layer, self.n_embd, self.vocab_size
        return B * T * (22 * L * C + 4 * C + 3 * V)

    def inference_activations(self, batch_size: int) -> int:
        """One layer's xw, gates, h and c at a time (11 H per token), the logits and softmax."""
        B, T, C, V = batch_size, self.block_size, self.n_embd, self.vocab_size
        return B * T * (11 * C + 3 * V)


# -- the recurrence: one op, forward over every step, then backward through time -----------------
def lstm(xw: Tensor, w_hh: Tensor, h0: Tensor, c0: Tensor) -> tuple[Tensor, Tensor]:
    """xw (B, T, 4H), w_hh (H, 4H), h0 and c0 (B, H) -> hidden and cell states h, c (B, T, H).

    The equations, gates in PyTorch's order [i | f | g | o]; the kernels
    ``lstm_forward`` / ``lstm_backward`` are defined in backends/numpy_lstm.py and
    the Numba backend fuses each step's gate arithmetic (backends/numba_lstm.py):

        forward, t = 0 .. T-1                        backward, t = T-1 .. 0
        a_t = xw_t + h_{t-1} W_hh                    dh_t = dh[t] + da_{t+1} W_hhᵀ
        i, f, o = σ(a_i), σ(a_f), σ(a_o)             do = dh_t tanh(c_t)
        g = tanh(a_g)                                dc_t = dc[t] + dc_{t+1} f_{t+1} + dh_t o (1 − tanh² c_t)
        c_t = f ⊙ c_{t-1} + i ⊙ g                    di = dc_t g,  df = dc_t c_{t-1},  dg = dc_t i
        h_t = o ⊙ tanh(c_t)                          da_t = [di σ' | df σ' | dg tanh' | do σ'] = dxw_t
                                                     dW_hh = Σ_t h_{t-1}ᵀ da_t,  dh_0 = da_0 W_hhᵀ

    The input projection xw = x W_ih + b is an ordinary linear op before this one:
    it has no recurrence, so all T steps go through one matmul. Both outputs carry
    the graph back to xw, w_hh, h0 and c0; each has its own VJP (backward is
    linear in (dh, dc), so the two add up to the joint one), and a loss that uses
    h only (a language model) never runs c's.
    """
    B, T, H4 = xw.shape
    if H4 % 4 or w_hh.shape != (H4 // 4, H4) or h0.shape != (B, H4 // 4) or c0.shape != h0.shape:
        raise ValueError(f"lstm needs xw (B, T, 4H), w_hh (H, 4H), h0 and c0 (B, H); got xw "
                         f"{xw.shape}, w_hh {w_hh.shape}, h0 {h0.shape}, c0 {c0.shape}")
    k = kernels()
    h, c, gates = k.lstm_forward(xw.data, h0.data, c0.data, w_hh.data)

    def backward(dh, dc):
        dxw, dh0, dc0, dw_hh = k.lstm_backward(dh, dc, h0.data, c0.data, w_hh.data, h, c, gates)
        return dxw, dw_hh, dh0, dc0
    zeros = lambda g: xp().zeros_like(g)
    parents = (xw, w_hh, h0, c0)
    return (Tensor.from_op(h, parents, lambda dh: backward(dh, zeros(dh)), "lstm"),
            Tensor.from_op(c, parents, lambda dc: backward(zeros(dc), dc), "lstm cell state"))


class LSTMLayer(Module):
    """One LSTM layer: x (B, T, I) -> h (B, T, H), with the state (h_T, c_T) it ends in."""

    def __init__(self, n_in: int, n_hidden: int, rng: np.random.Generator):
        bound = 1.0 / math.sqrt(n_hidden)  # PyTorch's U(-1/sqrt(H), 1/sqrt(H)) for every weight
        uniform = lambda *shape: Parameter(backends.current().from_host(
            rng.uniform(-bound, bound, size=shape)), dtype=get_default_dtype())
        self.weight_ih = uniform(n_in, 4 * n_hidden)                    # x W_ih, gates [i f g o]
        self.weight_hh = uniform(n_hidden, 4 * n_hidden)
        self.bias = uniform(4 * n_hidden)
        self.n_hidden = n_hidden

    def forward(self, x: Tensor, state=None) -> tuple[Tensor, Tensor, Tensor]:
        """``state``: (h0, c0), each (B, H), or None for zeros. Returns (h, h_T, c_T)."""
        B = x.shape[0]
        if state is None:
            zeros = backends.current().xp.zeros((B, self.n_hidden), dtype=x.dtype)
            state = (Tensor(zeros), Tensor(zeros))
        xw = ops.linear(x, self.weight_ih, self.bias)                   # (B, T, 4H), every step at once
        h, c = lstm(xw, self.weight_hh, *state)                         # 2 x (B, T, H)
        return h, h[:, -1], c[:, -1]


class LSTMState:
    """The recurrent state of an LSTM during generation: (h, c) per layer after ``length`` tokens.

    The LSTM's counterpart of a GPT's KV cache (the same ``length`` / ``clear``),
    made by ``LSTM.new_cache`` and advanced by ``LSTM.forward_step``.
    """

    def __init__(self, n_layer: int):
        self.layers = [None] * n_layer
        self.length = 0

    def clear(self) -> None:
        """Back to the zero state (the start of a window)."""
        self.layers = [None] * len(self.layers)
        self.length = 0


class LSTM(Module):
    """The language model: token ids (B, T) -> next-token logits (B, T, V)."""

    model_type = "lstm"

    def __init__(self, cfg: LSTMConfig, seed: int = 0):
        self.config = cfg
        rng = np.random.default_rng(seed)  # initialised on the host: identical on every backend
        self.wte = Embedding(cfg.vocab_size, cfg.n_embd, rng, std=1.0)  # PyTorch's N(0, 1)
        self.layers = [LSTMLayer(cfg.n_embd, cfg.n_embd, rng) for _ in range(cfg.n_layer)]
        self.drop = Dropout(cfg.dropout)
        self.lm_head = Linear(cfg.n_embd, cfg.vocab_size, rng, std=1.0 / math.sqrt(cfg.n_embd))

    def run(self, idx, states=None) -> tuple[Tensor, list]:
        """idx (B, T) int -> (logits (B, T, V), the state (h_T, c_T) of every layer)."""
        idx = idx.data if isinstance(idx, Tensor) else idx
        if idx.shape[1] > self.config.block_size:
            raise ValueError(f"sequence length {idx.shape[1]} exceeds block_size "
                             f"{self.config.block_size}; crop the input to the last block_size tokens")
        states = states or [None] * len(self.layers)
        x = self.wte(idx)                                                # (B, T, C)
        finals = []
        for layer, state in zip(self.layers, states):
            x, h_last, c_last = layer(self.drop(x), state)              # (B, T, H)
            finals.append((h_last, c_last))
        return self.lm_head(self.drop(x)), finals                       # (B, T, V)

    def forward(self, idx, targets=None):
        """idx (B, T) int -> logits (B, T, V), and the mean cross-entropy when targets are given."""
        logits, _ = self.run(idx)
        loss = ops.cross_entropy(logits, targets) if targets is not None else None
        return logits, loss

    # -- generation, carrying the state ---------------------------------------------------
    def new_cache(self, batch_size: int = 1) -> LSTMState:
        """The zero state, for ``forward_step`` (the interface tinylm.generate uses)."""
        return LSTMState(self.config.n_layer)

    @no_grad()
    def forward_step(self, idx, cache: LSTMState):
        """Logits (B, Tn, V) of tokens idx (B, Tn) that follow the cache.length tokens of ``cache``.

        Runs only the new tokens, from the carried state. Within block_size tokens
        this equals forward on the whole window; beyond, the caller clears the
        state and feeds the cropped window again (as tinylm.generate does).
        """
        idx = backends.current().xp.asarray(idx.data if isinstance(idx, Tensor) else idx)
        if cache.length + idx.shape[1] > self.config.block_size:
            raise ValueError(f"the state covers {cache.length} tokens and {idx.shape[1]} more exceed "
                             f"block_size {self.config.block_size}; clear it and feed a cropped context")
        logits, cache.layers = self.run(idx, None if cache.length == 0 else cache.layers)
        cache.length += idx.shape[1]
        return logits.data
