"""The LSTM on the Numba backend: BLAS for h_{t-1} W_hh, one fused kernel for each step's gates.

Per step the reference (backends/numpy_lstm.py) makes about ten passes over
(B, 4H) arrays (σ, tanh, products, sums, each a temporary); here the gate
arithmetic of a step is one loop over the batch rows, and the recurrent matmul
stays in BLAS. Arrays are kept time-major, (T, B, ·), so that a step's rows are
contiguous; ``h`` and ``c`` are returned as (B, T, H) views of them and the
saved ``gates`` stay time-major (backward is this backend's too).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .numba_math import FLAGS

_JIT = dict(parallel=True, **FLAGS)


# i, f, o = σ(a_i), σ(a_f), σ(a_o);  g = tanh(a_g);  c = f c_prev + i g;  h = o tanh(c)
@njit(**_JIT)
def lstm_cell_forward(a, c_prev, gates, c, h):
    """One step: pre-activations a (B, 4H) and c_prev (B, H) -> gates (B, 4H), c and h (B, H)."""
    B, H4 = a.shape
    H = H4 // 4
    for b in prange(B):  # each row b owns gates[b], c[b], h[b]
        for j in range(H):
            i = 0.5 * (1.0 + math.tanh(0.5 * a[b, j]))                   # σ(x) = (1 + tanh(x/2)) / 2
            f = 0.5 * (1.0 + math.tanh(0.5 * a[b, H + j]))
            g = math.tanh(a[b, 2 * H + j])
            o = 0.5 * (1.0 + math.tanh(0.5 * a[b, 3 * H + j]))
            gates[b, j], gates[b, H + j], gates[b, 2 * H + j], gates[b, 3 * H + j] = i, f, g, o
            c[b, j] = f * c_prev[b, j] + i * g
            h[b, j] = o * math.tanh(c[b, j])


# dh = dh_out + dh_rec;  dc = dc_out + dc_next + dh o (1 − tanh² c)
# term 1: di σ' = dc g i (1 − i);   term 2: df σ' = dc c_prev f (1 − f)
# term 3: dg tanh' = dc i (1 − g²); term 4: do σ' = dh tanh(c) o (1 − o);  dc_prev = dc f
@njit(**_JIT)
def lstm_cell_backward(dh_out, dh_rec, dc_out, dc, gates, c_prev, c, da):
    """One step back: writes da (B, 4H) and replaces dc (B, H), the cell gradient, by dc_prev."""
    B, H4 = da.shape
    H = H4 // 4
    for b in prange(B):  # each row b owns da[b] and dc[b]
        for j in range(H):
            i, f, g, o = gates[b, j], gates[b, H + j], gates[b, 2 * H + j], gates[b, 3 * H + j]
            tanh_c = math.tanh(c[b, j])
            dh = dh_out[b, j] + dh_rec[b, j]
            dcell = dc_out[b, j] + dc[b, j] + dh * o * (1.0 - tanh_c * tanh_c)
            da[b, j] = dcell * g * i * (1.0 - i)
            da[b, H + j] = dcell * c_prev[b, j] * f * (1.0 - f)
            da[b, 2 * H + j] = dcell * i * (1.0 - g * g)
            da[b, 3 * H + j] = dh * tanh_c * o * (1.0 - o)
            dc[b, j] = dcell * f


class NumbaLSTMKernels:
    """lstm_forward / lstm_backward with the fused step kernels above (mixed into NumbaKernels)."""

    def lstm_forward(self, xw, h0, c0, w_hh):
        B, T, H4 = xw.shape
        H = H4 // 4
        xw_t = np.ascontiguousarray(xw.transpose(1, 0, 2))               # (T, B, 4H)
        h = np.empty((T, B, H), dtype=xw.dtype)
        c = np.empty((T, B, H), dtype=xw.dtype)
        gates = np.empty((T, B, H4), dtype=xw.dtype)
        a = np.empty((B, H4), dtype=xw.dtype)
        h_prev, c_prev = np.ascontiguousarray(h0), np.ascontiguousarray(c0)
        for t in range(T):
            np.matmul(h_prev, w_hh, out=a)                               # (B, 4H), BLAS
            a += xw_t[t]
            lstm_cell_forward(a, c_prev, gates[t], c[t], h[t])
            h_prev, c_prev = h[t], c[t]
        return h.transpose(1, 0, 2), c.transpose(1, 0, 2), gates       # (B, T, H) views

    def lstm_backward(self, dh, dc, h0, c0, w_hh, h, c, gates):
        B, T, H = dh.shape
        dh_t = np.ascontiguousarray(dh.transpose(1, 0, 2))               # (T, B, H)
        dc_t = np.ascontiguousarray(dc.transpose(1, 0, 2))
        h_t, c_t = h.transpose(1, 0, 2), c.transpose(1, 0, 2)             # time-major again (views)
        dxw = np.empty((T, B, 4 * H), dtype=dh.dtype)
        dh_rec = np.zeros((B, H), dtype=dh.dtype)
        dc_rec = np.zeros((B, H), dtype=dh.dtype)
        w_hh_t = np.ascontiguousarray(w_hh.T)                            # (4H, H)
        for t in reversed(range(T)):
            c_prev = c_t[t - 1] if t > 0 else np.ascontiguousarray(c0)
            lstm_cell_backward(dh_t[t], dh_rec, dc_t[t], dc_rec, gates[t], c_prev, c_t[t], dxw[t])
            dh_rec = dxw[t] @ w_hh_t                                     # (B, H), BLAS
        h_prev = np.concatenate([h0[None], h_t[:-1]], axis=0)           # (T, B, H): h_{t-1}
        dw_hh = h_prev.reshape(T * B, H).T @ dxw.reshape(T * B, 4 * H)   # (H, 4H)
        return dxw.transpose(1, 0, 2), dh_rec, dc_rec, dw_hh
