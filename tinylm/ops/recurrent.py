"""The LSTM recurrence as one op: forward over every step, then backward through time.

The kernels (``lstm_forward`` / ``lstm_backward``) are defined in
backends/numpy_lstm.py; the Numba backend fuses each step's gate arithmetic
(backends/numba_lstm.py). The equations, gates in PyTorch's order [i | f | g | o]:

    forward, t = 0 .. T-1                        backward, t = T-1 .. 0
    a_t = xw_t + h_{t-1} W_hh                    dh_t = dh[t] + da_{t+1} W_hhᵀ
    i, f, o = σ(a_i), σ(a_f), σ(a_o)             do = dh_t tanh(c_t)
    g = tanh(a_g)                                dc_t = dc[t] + dc_{t+1} f_{t+1} + dh_t o (1 − tanh² c_t)
    c_t = f ⊙ c_{t-1} + i ⊙ g                    di = dc_t g,  df = dc_t c_{t-1},  dg = dc_t i
    h_t = o ⊙ tanh(c_t)                          da_t = [di σ' | df σ' | dg tanh' | do σ'] = dxw_t
                                                 dW_hh = Σ_t h_{t-1}ᵀ da_t,  dh_0 = da_0 W_hhᵀ

The input projection xw = x W_ih + b is an ordinary linear op before this one:
it has no recurrence, so all T steps go through one matmul.
"""

from __future__ import annotations

from tinylm.tensor import Tensor, kernels, xp


def lstm(xw: Tensor, w_hh: Tensor, h0: Tensor, c0: Tensor) -> tuple[Tensor, Tensor]:
    """xw (B, T, 4H), w_hh (H, 4H), h0 and c0 (B, H) -> hidden and cell states h, c (B, T, H).

    Both outputs carry the graph back to xw, w_hh, h0 and c0; each has its own
    VJP (backward is linear in (dh, dc), so the two add up to the joint one), and
    a loss that uses h only (a language model) never runs c's.
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
