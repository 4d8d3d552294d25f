"""Philox4x32-10 in NumPy: the counter-based generator behind the cupy backend's dropout.

A counter-based generator is a keyed hash: block = Philox(counter, key) gives four
32-bit words, and nothing else is carried from one draw to the next. So the
random number of element i of the k-th draw of a run is a pure function of
(seed, k, i): a GPU thread computes its own without touching a shared state, and
a resumed run that restores (seed, k) draws exactly what the uninterrupted run
would have (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", 2011).

One round of Philox4xW on the counter (c0, c1, c2, c3) with key (k0, k1):
    (hi0, lo0) = M0 * c0,   (hi1, lo1) = M1 * c2       # the high and low W bits of each product
    counter   <- (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0)
and between rounds the key moves by the Weyl constants: (k0, k1) += (W0, W1).

``philox`` is the definition on Python integers (any word size, 32 or 64 bits);
``philox4x32`` is the same for many counters at once in NumPy, which the CUDA
kernel (philox.cu) follows; ``uniform`` is what the backend's generator draws.
"""

from __future__ import annotations

import numpy as np

ROUNDS = 10
# (M0, M1, W0, W1) by word size: Random123's multipliers and Weyl increments
CONSTANTS = {
    32: (0xD2511F53, 0xCD9E8D57, 0x9E3779B9, 0xBB67AE85),
    64: (0xD2E7470EE14C6C93, 0xCA5A826395121157, 0x9E3779B97F4A7C15, 0xBB67AE8584CAA73B),
}


def philox(counter, key, bits: int = 32, rounds: int = ROUNDS) -> tuple[int, ...]:
    """Philox4x{bits}-{rounds} of one counter (4 words) under key (2 words), on Python integers."""
    M0, M1, W0, W1 = CONSTANTS[bits]
    mask = (1 << bits) - 1
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for r in range(rounds):
        if r:                                                        # the key schedule: a Weyl sequence
            k0, k1 = (k0 + W0) & mask, (k1 + W1) & mask
        p0, p1 = M0 * c0, M1 * c2                                    # 2·bits-wide products
        c0, c1, c2, c3 = ((p1 >> bits) ^ c1 ^ k0, p1 & mask, (p0 >> bits) ^ c3 ^ k1, p0 & mask)
    return c0, c1, c2, c3


def philox4x32(c0, c1, c2, c3, k0: int, k1: int):
    """Philox4x32-10 of many counters: four uint32 arrays (one per word) -> four uint32 arrays.

    uint64 holds each 32 x 32-bit product whole; the key is the same for all counters.
    """
    M0, M1, W0, W1 = (np.uint64(c) for c in CONSTANTS[32])
    low = np.uint64(0xFFFFFFFF)
    c0, c1, c2, c3 = (np.asarray(c, dtype=np.uint64) for c in (c0, c1, c2, c3))
    k0, k1 = np.uint64(k0), np.uint64(k1)
    for r in range(ROUNDS):
        if r:
            k0, k1 = (k0 + W0) & low, (k1 + W1) & low
        p0, p1 = M0 * c0, M1 * c2
        c0, c1, c2, c3 = (p1 >> np.uint64(32)) ^ c1 ^ k0, p1 & low, (p0 >> np.uint64(32)) ^ c3 ^ k1, p0 & low
    return tuple(c.astype(np.uint32) for c in (c0, c1, c2, c3))


def uniform(n: int, seed: int, draw: int) -> np.ndarray:
    """n float32 uniforms in [0, 1): element i of draw number ``draw`` of the generator seeded ``seed``.

    Element i is word i % 4 of block i // 4, whose counter is (block low, block high, draw low,
    draw high) under key (seed low, seed high). A word w gives (w >> 8) / 2^24: 24 random bits,
    every value exactly a float32.
    """
    blocks = np.arange((n + 3) // 4, dtype=np.uint64)
    draw_lo, draw_hi = np.uint64(draw & 0xFFFFFFFF), np.uint64((draw >> 32) & 0xFFFFFFFF)
    words = philox4x32(blocks & np.uint64(0xFFFFFFFF), blocks >> np.uint64(32),
                       np.full_like(blocks, draw_lo), np.full_like(blocks, draw_hi),
                       seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF)
    w = np.stack(words, axis=1).reshape(-1)[:n]                      # (blocks, 4) -> element order
    return (w >> np.uint32(8)).astype(np.float32) * np.float32(2.0 ** -24)
