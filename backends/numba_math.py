"""Arithmetic for the Numba kernels (backends/numba_kernels.py): an e^x that vectorises, row sums.

Imported with the kernels, never at package import (defining these imports Numba).
Numba's on-disk cache of a kernel does not notice a change in a function it calls
from another file: after editing this one, delete the ``*.nbi``/``*.nbc`` files in
``__pycache__`` (or ``NUMBA_CACHE_DIR``) so that the kernels compile again.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

# How every kernel compiles. error_model="numpy": x / 0 is inf or nan, as in NumPy,
# instead of a Python ZeroDivisionError check on every division (which also blocks
# vectorisation). fastmath "contract" only: a * b + c may become one fused multiply-add
# (one rounding instead of two; e^x's polynomial, measured, a third faster), while sums
# keep their order, so that results do not depend on the thread count.
FLAGS = dict(cache=True, fastmath={"contract"}, error_model="numpy")


# -- e^x that vectorises ------------------------------------------------------------
# LLVM turns a loop of math.exp calls into one libm call per element; this
# polynomial (Cephes' expf, within 1.5 ulp measured) is plain arithmetic, so loops over
# float32 rows become SIMD. float64 keeps math.exp.
@intrinsic
def _bits_to_float32(typingctx, bits):
    """The float32 whose IEEE-754 bits are the int32 ``bits``."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())
    return types.float32(types.int32), codegen


def _expf(x):
    # e^x = 2^n e^r,  n = round(x / ln 2),  |r| <= ln(2)/2;  2^n built from its exponent bits
    F = np.float32
    xc = min(max(x, F(-87.33654)), F(88.0))
    n = np.floor(xc * F(1.44269504088896341) + F(0.5))
    r = xc - n * F(0.693359375) - n * F(-2.12194440e-4)                # ln 2 in two parts
    p = F(1.9875691500e-4)
    p = p * r + F(1.3981999507e-3)
    p = p * r + F(8.3334519073e-3)
    p = p * r + F(4.1665795894e-2)
    p = p * r + F(1.6666665459e-1)
    p = p * r + F(5.0000001201e-1)
    e = (p * r * r + r + F(1.0)) * _bits_to_float32((np.int32(n) + np.int32(127)) << np.int32(23))
    return F(0.0) if x < F(-87.33654) else e                             # below: underflow


def exp(x):
    """e^x in a kernel: the polynomial above for float32, math.exp for float64."""
    return math.exp(x)


@overload(exp, inline="always")
def _exp_for(x):
    if x == types.float32:
        return _expf
    return lambda x: math.exp(x)


# -- row reductions -------------------------------------------------------------------
# A sum in one accumulator is a chain of dependent adds (4 cycles each). These two
# may reassociate (and only they: the flags are per function, and they are not
# inlined at Numba's level), so LLVM splits each sum into SIMD lanes of partial
# sums, in a fixed order for a given length: one row's result does not depend on
# the thread that computes it.
_REDUCE = dict(fastmath={"reassoc", "contract"}, error_model="numpy")


@njit(**_REDUCE)
def row_dot(a, b):
    """Σ_i a[i] b[i] over 1-D arrays, accumulated in float64."""
    s = 0.0
    for i in range(len(a)):
        s += a[i] * b[i]
    return s


@njit(**_REDUCE)
def row_sum(a):
    """Σ_i a[i] over a 1-D array, accumulated in float64."""
    s = 0.0
    for i in range(len(a)):
        s += a[i]
    return s
