"""Flash attention in NumPy: the tiling that attention.cu runs, written to be read.

Causal attention is y = P v with P = softmax(q kᵀ · scale + mask). The reference
(NumpyKernels.attention_forward) builds the whole (T, T) matrix P and keeps it
for the backward: memory quadratic in T. Flash attention never holds P:

* **forward**: queries in tiles of ``block_q`` rows; for each, keys and values in
  tiles of ``block_k``. A running row maximum ``m``, a running sum ``l`` of
  exp(S − m) and a running output ``acc`` are rescaled whenever a new tile
  raises the maximum (the *online softmax*): after the last tile,
  y = acc / l and P's rows never existed at once. Only the row log-sum-exp
  ``lse = m + log l`` (T numbers per head) is kept for the backward. Key tiles
  after a query tile's last query are skipped: the causal mask zeroes them.
* **backward**: P is recomputed tile by tile from q, k and lse
  (P = exp(S − lse)), and rowsum(dP ⊙ P) is the precomputed
  Δ = rowsum(dy ⊙ y), because Σ_s P_ts (dy_t · v_s) = dy_t · y_t. Two passes
  keep every output owned by one tile (no atomics, the same bits every run):
  one over key tiles accumulating dk and dv, one over query tiles accumulating dq.

Everything is exact up to rounding: the tests check it against the reference on
drawn shapes (T = 1, T not a multiple of the tiles, head sizes 32, 64, 128).
"""

from __future__ import annotations

import numpy as np

BLOCK_Q = 8    # query rows per tile: attention.cu's warps per block
BLOCK_K = 32   # keys per tile: attention.cu's lanes per warp


def _scores(q_tile, k_tile, q0, k0, scale):
    """S = q kᵀ · scale for one (query tile, key tile), -inf where key s > query t. (B, H, bq, bk)."""
    S = q_tile @ k_tile.swapaxes(-1, -2) * scale
    t = np.arange(q0, q0 + q_tile.shape[-2])[:, None]
    s = np.arange(k0, k0 + k_tile.shape[-2])[None, :]
    return np.where(s <= t, S, -np.inf)


# S = q kᵀ · scale + mask;  y = softmax(S) v, one (query tile, key tile) at a time;  lse = log Σ_s exp(S_ts)
def flash_attention_forward(q, k, v, scale, block_q=BLOCK_Q, block_k=BLOCK_K):
    """q, k, v (B, H, T, D) -> (y (B, H, T, D), lse (B, H, T))."""
    T = q.shape[-2]
    y = np.empty_like(q)
    lse = np.empty(q.shape[:-1], dtype=q.dtype)
    for q0 in range(0, T, block_q):
        q1 = min(q0 + block_q, T)
        q_tile = q[..., q0:q1, :]                                      # (B, H, bq, D)
        m = np.full(q_tile.shape[:-1], -np.inf, dtype=q.dtype)         # running row max   (B, H, bq)
        l = np.zeros(q_tile.shape[:-1], dtype=q.dtype)                 # running Σ exp(S - m)
        acc = np.zeros_like(q_tile)                                    # running Σ exp(S - m) v
        for k0 in range(0, q1, block_k):                               # keys >= q1 are all masked
            k1 = min(k0 + block_k, q1)
            S = _scores(q_tile, k[..., k0:k1, :], q0, k0, scale)       # (B, H, bq, bk)
            m_new = np.maximum(m, S.max(axis=-1))                      # finite: key 0 is in the first tile
            P = np.exp(S - m_new[..., None])                           # this tile's unnormalised probabilities
            alpha = np.exp(m - m_new)                                  # rescales what earlier tiles summed
            l = alpha * l + P.sum(axis=-1)
            acc = alpha[..., None] * acc + P @ v[..., k0:k1, :]
            m = m_new
        y[..., q0:q1, :] = acc / l[..., None]
        lse[..., q0:q1] = m + np.log(l)
    return y, lse


# Δ = rowsum(dy ⊙ y);  P = exp(S - lse);  dv = Pᵀ dy;  dS = P ⊙ (dy vᵀ - Δ);  dk = dSᵀ q · scale;  dq = dS k · scale
def flash_attention_backward(dy, q, k, v, y, lse, scale, block_q=BLOCK_Q, block_k=BLOCK_K):
    """-> (dq, dk, dv), each (B, H, T, D); P recomputed tile by tile, never stored whole."""
    T = q.shape[-2]
    delta = (dy * y).sum(axis=-1)                                      # (B, H, T) = rowsum(dP ⊙ P)
    dq, dk, dv = np.zeros_like(q), np.zeros_like(k), np.zeros_like(v)

    def tile(q0, q1, k0, k1):
        """(P, dS) of one (query tile, key tile): P = exp(S - lse), dS = P ⊙ (dy vᵀ - Δ)."""
        P = np.exp(_scores(q[..., q0:q1, :], k[..., k0:k1, :], q0, k0, scale) - lse[..., q0:q1, None])
        dP = dy[..., q0:q1, :] @ v[..., k0:k1, :].swapaxes(-1, -2)    # (B, H, bq, bk)
        return P, P * (dP - delta[..., q0:q1, None])

    # pass 1, over key tiles: each owns its rows of dk and dv; queries before k0 are masked
    for k0 in range(0, T, block_q):
        k1 = min(k0 + block_q, T)
        for q0 in range(k0, T, block_k):
            q1 = min(q0 + block_k, T)
            P, dS = tile(q0, q1, k0, k1)
            dv[..., k0:k1, :] += P.swapaxes(-1, -2) @ dy[..., q0:q1, :]
            dk[..., k0:k1, :] += dS.swapaxes(-1, -2) @ q[..., q0:q1, :] * scale
    # pass 2, over query tiles: each owns its rows of dq; keys after q1 are masked
    for q0 in range(0, T, block_q):
        q1 = min(q0 + block_q, T)
        for k0 in range(0, q1, block_k):
            k1 = min(k0 + block_k, q1)
            _, dS = tile(q0, q1, k0, k1)
            dq[..., q0:q1, :] += dS @ k[..., k0:k1, :] * scale
    return dq, dk, dv
