"""The NumPy backend, and the reference definition of every fused kernel.

Each kernel is a forward/backward pair with the same name stem in every
backend (``layernorm_forward`` / ``layernorm_backward``, ...). The code here is
the definition: it is written against ``self.xp`` so it also runs on CuPy
arrays, and a faster backend must match it (tests/test_backends.py checks).
A forward returns what its backward needs, named as in the equation.
"""

from __future__ import annotations

import math

import numpy as np

from .base import Backend
from .host_memory import keep_freed_memory
from .numpy_lstm import LSTMKernels

NAME = "numpy"

# The kernels a backend may override; tests iterate over this list.
KERNELS = (
    "softmax_xent_forward", "softmax_xent_backward",
    "layernorm_forward", "layernorm_backward",
    "gelu_forward", "gelu_backward",
    "attention_forward", "attention_backward",
    "embedding_backward",
    "adamw_update", "adamw_update_many", "clip_grad_norm_many",
    "lstm_forward", "lstm_backward",
)

_GELU_C = math.sqrt(2.0 / math.pi)


class NumpyKernels(LSTMKernels):
    """Reference kernels over the array module ``xp`` (the LSTM's in numpy_lstm.py)."""

    def __init__(self, xp=np):
        self.xp = xp
        self._causal_mask = xp.zeros((0, 0), dtype=xp.float32)

    # -- cross-entropy --------------------------------------------------------
    # loss = mean_i (logsumexp(z_i) - z_i[t_i]) over rows with t_i != ignore_index
    def softmax_xent_forward(self, logits, targets, ignore_index):
        """logits (N, V), targets (N,) int -> (loss (), probs (N, V), n_valid)."""
        xp = self.xp
        valid = targets != ignore_index
        n_valid = int(valid.sum())
        shifted = logits - logits.max(axis=1, keepdims=True)         # (N, V), max 0
        probs = xp.exp(shifted)
        sumexp = probs.sum(axis=1, keepdims=True)
        probs /= sumexp
        safe_t = xp.where(valid, targets, 0)
        logp_t = shifted[xp.arange(len(targets)), safe_t] - xp.log(sumexp[:, 0])
        loss = -(logp_t * valid).sum() / max(n_valid, 1)
        return loss.astype(logits.dtype), probs, n_valid

    # dz_i = (softmax(z_i) - onehot(t_i)) * dloss / n_valid, and 0 for ignored rows
    def softmax_xent_backward(self, dloss, probs, targets, ignore_index, n_valid):
        xp = self.xp
        valid = targets != ignore_index
        dlogits = probs.copy()
        dlogits[xp.arange(len(targets)), xp.where(valid, targets, 0)] -= 1
        dlogits *= (dloss / max(n_valid, 1)) * valid[:, None]
        return dlogits.astype(probs.dtype, copy=False)

    # -- layer norm -----------------------------------------------------------
    # y = (x - mean) * rstd * w + b,   rstd = 1 / sqrt(var + eps), over the last axis
    def layernorm_forward(self, x, w, b, eps):
        """x (..., C) -> (y, mean (..., 1), rstd (..., 1))."""
        xp = self.xp
        mean = x.mean(axis=-1, keepdims=True)
        xc = x - mean
        var = (xc * xc).mean(axis=-1, keepdims=True)
        rstd = 1.0 / xp.sqrt(var + eps)
        xc *= rstd                                                    # xhat
        y = xc * w
        y += b
        return y, mean, rstd

    def layernorm_backward(self, dy, x, w, mean, rstd):
        """-> (dx, dw, db)."""
        xhat = (x - mean) * rstd
        lead = tuple(range(dy.ndim - 1))
        db = dy.sum(axis=lead)
        dw = (dy * xhat).sum(axis=lead)
        dxhat = dy * w
        # term 1: dxhat;  term 2: -mean(dxhat);  term 3: -xhat * mean(dxhat * xhat)
        dx = dxhat - dxhat.mean(axis=-1, keepdims=True)
        dx -= xhat * (dxhat * xhat).mean(axis=-1, keepdims=True)
        dx *= rstd                                                    # final scale
        return dx, dw, db

    # -- GELU, tanh form (as GPT-2) -------------------------------------------
    # y = x/2 (1 + tanh u),  u = c (x + 0.044715 x^3),  c = sqrt(2/pi)
    def gelu_forward(self, x):
        u = _GELU_C * (x + 0.044715 * x * x * x)
        return 0.5 * x * (1.0 + self.xp.tanh(u))

    # dx = dy [(1 + tanh u)/2 + x/2 (1 - tanh^2 u) du/dx],  du/dx = c (1 + 3 * 0.044715 x^2)
    def gelu_backward(self, dy, x):
        t = self.xp.tanh(_GELU_C * (x + 0.044715 * x * x * x))        # tanh u
        du = _GELU_C * (1.0 + 3 * 0.044715 * x * x)
        # term 1: (1 + tanh u)/2;  term 2: x/2 (1 - tanh^2 u) du/dx
        return dy * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du)

    # -- causal self-attention ------------------------------------------------
    def causal_mask(self, n_queries, n_keys):
        """(n_queries, n_keys) additive mask for queries at the last n_queries of n_keys positions:
        0 where key s <= the query's position, -inf after it."""
        if self._causal_mask.shape[1] < n_keys:  # one mask, grown as needed; smaller ones are its corners
            xp = self.xp
            upper = xp.triu(xp.ones((n_keys, n_keys), dtype=bool), k=1)
            self._causal_mask = xp.where(upper, -xp.inf, 0.0).astype(xp.float32)
        return self._causal_mask[n_keys - n_queries:n_keys, :n_keys]

    # S = q k^T * scale + mask;  P = softmax(S);  y = P v
    def attention_forward(self, q, k, v, scale):
        """q (B, H, Tq, D), k, v (B, H, Tk, D) -> (y (B, H, Tq, D), P (B, H, Tq, Tk)).
        Query i is at position Tk - Tq + i (Tq = Tk in training; Tq new tokens after Tk - Tq cached)."""
        xp = self.xp
        att = q @ k.swapaxes(-1, -2)                                  # (B, H, Tq, Tk)
        att *= scale
        att += self.causal_mask(q.shape[-2], k.shape[-2]).astype(att.dtype, copy=False)
        att -= att.max(axis=-1, keepdims=True)
        xp.exp(att, out=att)
        att /= att.sum(axis=-1, keepdims=True)
        return att @ v, att

    # dv = P^T dy;  dP = dy v^T;  dS = P ⊙ (dP - rowsum(dP ⊙ P))  (softmax's VJP)
    # dq = dS k * scale;  dk = dS^T q * scale                      (S = q k^T * scale + mask)
    def attention_backward(self, dy, q, k, v, P, scale):
        dv = P.swapaxes(-1, -2) @ dy                                  # (B, H, Tk, D)
        dP = dy @ v.swapaxes(-1, -2)                                  # (B, H, Tq, Tk)
        # term 1: P dP;  term 2: -P rowsum(dP P);  final scale
        dS = dP - (dP * P).sum(axis=-1, keepdims=True)
        dS *= P
        dS *= scale
        dq = dS @ k                                                   # (B, H, Tq, D)
        dk = dS.swapaxes(-1, -2) @ q                                  # (B, H, Tk, D)
        return dq, dk, dv

    # -- embedding ------------------------------------------------------------
    # y = W[idx];  dW[v] = sum of dy rows whose index is v (scatter-add)
    def embedding_backward(self, dy, idx, vocab_size):
        """dy (N, C), idx (N,) int -> dW (vocab_size, C)."""
        dW = self.xp.zeros((vocab_size, dy.shape[1]), dtype=dy.dtype)
        self.xp.add.at(dW, idx, dy)
        return dW

    # -- AdamW (decoupled weight decay, as in PyTorch) ------------------------
    # m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  p = p (1 - lr wd) - lr m̂ / (sqrt(v̂) + eps)
    def adamw_update(self, p, g, m, v, lr, beta1, beta2, eps, weight_decay, step):
        """Updates p, m and v in place; ``step`` counts from 1."""
        xp = self.xp
        m *= beta1
        m += (1 - beta1) * g
        v *= beta2
        v += (1 - beta2) * (g * g)
        if weight_decay:
            p *= 1 - lr * weight_decay
        bias1 = 1 - beta1 ** step
        bias2 = 1 - beta2 ** step
        denom = xp.sqrt(v)
        denom /= math.sqrt(bias2)
        denom += eps
        p -= (lr / bias1) * (m / denom)

    # the same update of every (p, g, m, v, weight decay): a GPU does them all in one launch
    def adamw_update_many(self, params, grads, ms, vs, weight_decays, lr, beta1, beta2, eps, step):
        for p, g, m, v, wd in zip(params, grads, ms, vs, weight_decays, strict=True):
            self.adamw_update(p, g, m, v, lr, beta1, beta2, eps, wd, step)

    # -- gradient clipping (as torch's clip_grad_norm_) -----------------------
    # norm = sqrt(Σ_k |g_k|²);  g_k ← g_k min(1, max_norm / (norm + 1e-6)), unclipped when max_norm ≤ 0
    def clip_grad_norm_many(self, grads, max_norm):
        """-> (clipped gradients, norm ()): new arrays, never scaled in place (a gradient may be shared)."""
        xp = self.xp
        norm = xp.sqrt(sum(xp.vdot(g, g) for g in grads))            # vdot: no g*g temporary
        if max_norm <= 0:
            return grads, norm
        scale = xp.minimum(1.0, max_norm / (norm + 1e-6)).astype(grads[0].dtype)
        return [g * scale for g in grads], norm


def available() -> tuple[bool, str]:
    return True, ""


def describe() -> str:
    return f"NumPy {np.__version__} on the CPU (the reference)"


class NumpyBackend(Backend):
    """The reference backend: plain NumPy on the CPU."""

    name = NAME
    describe = staticmethod(describe)  # the same before and after create(): nothing to start


def create() -> Backend:
    keep_freed_memory()
    return NumpyBackend(np, NumpyKernels(np))
