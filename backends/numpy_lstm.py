"""The LSTM's reference kernels: the recurrence forward, and backward through time.

Mixed into :class:`numpy_backend.NumpyKernels` (which is the definition every
backend must match); written against ``self.xp`` so they run on CuPy too. The
input projection ``xw = x W_ih + b`` of every step is one matmul done before the
op (``lstm``, tinylm/models/lstm.py) runs the loop; only what depends on h_{t-1} is here.

Gates in PyTorch's order [i | f | g | o], each H wide:

    a_t = xw_t + h_{t-1} W_hh                                   (B, 4H)
    i, f, o = σ(a_i), σ(a_f), σ(a_o);   g = tanh(a_g)
    c_t = f ⊙ c_{t-1} + i ⊙ g;          h_t = o ⊙ tanh(c_t)
"""

from __future__ import annotations


def sigmoid(xp, a):
    """σ(a) = (1 + tanh(a/2)) / 2: no overflow for any a (1 / (1 + e^-a) overflows e^-a)."""
    return 0.5 * (1.0 + xp.tanh(0.5 * a))


class LSTMKernels:
    """lstm_forward / lstm_backward over ``self.xp``."""

    def lstm_forward(self, xw, h0, c0, w_hh):
        """xw (B, T, 4H), h0 and c0 (B, H), w_hh (H, 4H) -> h, c (B, T, H), gates (B, T, 4H).

        ``gates`` holds the activated [i | f | g | o] of every step: what backward needs.
        """
        xp = self.xp
        B, T, H4 = xw.shape
        H = H4 // 4
        h = xp.empty((B, T, H), dtype=xw.dtype)
        c = xp.empty((B, T, H), dtype=xw.dtype)
        gates = xp.empty((B, T, H4), dtype=xw.dtype)
        h_prev, c_prev = h0, c0
        for t in range(T):
            a = xw[:, t] + h_prev @ w_hh                               # (B, 4H)
            gates[:, t, :2 * H] = sigmoid(xp, a[:, :2 * H])            # i, f
            gates[:, t, 2 * H:3 * H] = xp.tanh(a[:, 2 * H:3 * H])      # g
            gates[:, t, 3 * H:] = sigmoid(xp, a[:, 3 * H:])            # o
            i, f, g, o = (gates[:, t, k * H:(k + 1) * H] for k in range(4))
            c[:, t] = f * c_prev + i * g
            h[:, t] = o * xp.tanh(c[:, t])
            h_prev, c_prev = h[:, t], c[:, t]
        return h, c, gates

    # backward through time, t = T-1 .. 0, with dh_t = dh[t] + (the gradient from step t+1):
    #   do = dh_t tanh(c_t);   dc_t = dc[t] + dc_{t+1 -> t} + dh_t o (1 - tanh² c_t)
    #   di = dc_t g;  dg = dc_t i;  df = dc_t c_{t-1};  dc_{t -> t-1} = dc_t f
    #   da = [di i(1-i) | df f(1-f) | dg (1-g²) | do o(1-o)];  dh_{t -> t-1} = da W_hhᵀ
    #   dW_hh = Σ_t h_{t-1}ᵀ da_t;  dxw_t = da_t
    def lstm_backward(self, dh, dc, h0, c0, w_hh, h, c, gates):
        """dh, dc (B, T, H) and the forward's values -> dxw (B, T, 4H), dh0, dc0 (B, H), dw_hh (H, 4H)."""
        xp = self.xp
        B, T, H = dh.shape
        dxw = xp.empty((B, T, 4 * H), dtype=dh.dtype)
        dh_next = xp.zeros((B, H), dtype=dh.dtype)
        dc_next = xp.zeros((B, H), dtype=dh.dtype)
        for t in reversed(range(T)):
            i, f, g, o = (gates[:, t, k * H:(k + 1) * H] for k in range(4))
            c_prev = c[:, t - 1] if t > 0 else c0
            tanh_c = xp.tanh(c[:, t])
            dh_t = dh[:, t] + dh_next
            dc_t = dc[:, t] + dc_next + dh_t * o * (1.0 - tanh_c * tanh_c)
            dxw[:, t, :H] = dc_t * g * i * (1.0 - i)                    # di ⊙ σ'
            dxw[:, t, H:2 * H] = dc_t * c_prev * f * (1.0 - f)          # df ⊙ σ'
            dxw[:, t, 2 * H:3 * H] = dc_t * i * (1.0 - g * g)           # dg ⊙ tanh'
            dxw[:, t, 3 * H:] = dh_t * tanh_c * o * (1.0 - o)           # do ⊙ σ'
            dc_next = dc_t * f
            dh_next = dxw[:, t] @ w_hh.T                                # (B, H)
        h_prev = xp.concatenate([h0[:, None], h[:, :-1]], axis=1)       # (B, T, H): h_{t-1}
        dw_hh = h_prev.reshape(B * T, H).T @ dxw.reshape(B * T, 4 * H)  # (H, 4H)
        return dxw, dh_next, dc_next, dw_hh
