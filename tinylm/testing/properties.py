"""Properties of sequence layers: causality, permutation equivariance, batch independence.

Each check calls ``fn`` (a function or a Module, put in eval mode) on an input
``x`` of shape (B, T, ...) and on edited copies of it, without a graph, and
compares the outputs on the host. Floating inputs become Tensors; integer ones
(token ids) are passed as backend arrays, so ``lambda idx: gpt(idx)[0]`` works.

- ``check_causal``: the output at position t does not change when the inputs
  after t change (decoders, causal attention, recurrent layers).
- ``check_permutation_equivariant``: permuting the positions permutes the
  outputs the same way (attention without a mask or positional terms).
- ``check_batch_independent``: one example's output does not depend on the
  other examples in the batch, nor on the batch size.
"""

from __future__ import annotations

import numpy as np

from tinylm.tensor import get_default_dtype

from ._harness import describe_callable, eval_mode, evaluate, host, to_backend, toolkit_rng


def _call(fn, x: np.ndarray) -> np.ndarray:
    """The first output of fn(x) on the host, in float64 (floating x runs in the default dtype)."""
    arg = to_backend(x, get_default_dtype(), requires_grad=False)
    with eval_mode(fn):
        return host(evaluate(fn, (arg,))[0]).astype(np.float64)


def _differs(a, b, atol, rtol) -> tuple[bool, float]:
    diff = np.abs(a - b)
    bad = ~(diff <= atol + rtol * np.abs(a))
    return bool(bad.any()), float(np.nanmax(diff)) if diff.size else 0.0


def _changed_values(x: np.ndarray, rng, vocab_size) -> np.ndarray:
    """New values of x's shape, each different from x's (other token ids, or fresh floats)."""
    if x.dtype.kind == "f":
        return x + rng.standard_normal(x.shape).astype(x.dtype) + 1.0
    V = int(vocab_size) if vocab_size is not None else int(x.max()) + 1
    if V < 2:
        raise ValueError("cannot change token ids drawn from a vocabulary of one id: pass vocab_size")
    return ((x + rng.integers(1, V, size=x.shape)) % V).astype(x.dtype)


def check_causal(fn, x, *, axis: int = 1, vocab_size: int | None = None, atol: float = 1e-6,
                 rtol: float = 1e-5, seed: int = 0) -> None:
    """Assert that the output at position t is unchanged when the inputs after t change.

    ``axis`` is the sequence axis of both the input and the output. For integer
    inputs the replacement ids are drawn from range(vocab_size) (default: up to
    the largest id in ``x``). One forward pass per position.
    """
    x = host(x).copy()
    axis = axis % x.ndim
    T = x.shape[axis]
    rng = toolkit_rng(seed)
    base = _call(fn, x)
    for t in range(T - 1):
        edited = x.copy()
        future = [slice(None)] * x.ndim
        future[axis] = slice(t + 1, None)
        edited[tuple(future)] = _changed_values(x[tuple(future)], rng, vocab_size)
        out = _call(fn, edited)
        past = np.take(out, range(t + 1), axis=axis)
        bad, _ = _differs(np.take(base, range(t + 1), axis=axis), past, atol, rtol)
        if bad:
            per_position = np.abs(np.take(base, range(t + 1), axis=axis) - past)
            per_position = np.moveaxis(per_position, axis, 0).reshape(t + 1, -1).max(axis=1)
            s = int(np.argmax(per_position))
            raise AssertionError(
                f"{describe_callable(fn)} is not causal: changing only the inputs at positions "
                f"> {t} (axis {axis}) changed the output at position {s} by up to "
                f"{per_position[s]:.3g} (atol {atol:g}, rtol {rtol:g}); position {s} must not "
                f"see the future (is the causal mask off by one?)")


def check_permutation_equivariant(fn, x, *, axis: int = 1, atol: float = 1e-6,
                                  rtol: float = 1e-5, seed: int = 0) -> None:
    """Assert fn(x permuted along ``axis``) == fn(x) permuted the same way."""
    x = host(x).copy()
    axis = axis % x.ndim
    T = x.shape[axis]
    if T < 2:
        raise ValueError(f"permutation equivariance needs at least 2 positions on axis {axis}, got {T}")
    perm = toolkit_rng(seed).permutation(T)
    if np.array_equal(perm, np.arange(T)):
        perm = np.roll(perm, 1)
    expected = np.take(_call(fn, x), perm, axis=axis)
    got = _call(fn, np.take(x, perm, axis=axis))
    bad, max_diff = _differs(expected, got, atol, rtol)
    if bad:
        raise AssertionError(
            f"{describe_callable(fn)} is not permutation-equivariant along axis {axis}: permuting "
            f"the inputs by {perm.tolist()} changed the outputs by more than the same permutation "
            f"(max abs diff {max_diff:.3g}, atol {atol:g}, rtol {rtol:g}); a positional term or a "
            f"mask breaks the symmetry")


def check_batch_independent(fn, x, *, axis: int = 0, vocab_size: int | None = None,
                            atol: float = 1e-6, rtol: float = 1e-5, seed: int = 0) -> None:
    """Assert each example's output depends only on that example.

    For each example i: its output in the batch equals its output when run
    alone, and stays the same when every other example changes.
    """
    x = host(x).copy()
    axis = axis % x.ndim
    B = x.shape[axis]
    rng = toolkit_rng(seed)
    base = _call(fn, x)
    for i in range(B):
        own = np.take(base, [i], axis=axis)
        if B > 1:
            others = [j for j in range(B) if j != i]
            edited = x.copy()
            index = [slice(None)] * x.ndim
            index[axis] = others
            edited[tuple(index)] = _changed_values(x[tuple(index)], rng, vocab_size)
            bad, max_diff = _differs(own, np.take(_call(fn, edited), [i], axis=axis), atol, rtol)
            if bad:
                raise AssertionError(
                    f"{describe_callable(fn)} is not batch-independent: example {i}'s output "
                    f"changed by up to {max_diff:.3g} when only the other examples changed "
                    f"(atol {atol:g}, rtol {rtol:g}); information leaks across the batch axis {axis}")
        bad, max_diff = _differs(own, _call(fn, np.take(x, [i], axis=axis)), atol, rtol)
        if bad:
            raise AssertionError(
                f"{describe_callable(fn)} is not batch-independent: example {i} gives a different "
                f"output in a batch of {B} than alone (max abs diff {max_diff:.3g}, atol {atol:g}, "
                f"rtol {rtol:g}); the output depends on the batch size")
