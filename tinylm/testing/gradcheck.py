"""Gradient checks: autograd against central finite differences, in float64.

The function under test is reduced to a scalar L = Σ ⟨out, u⟩ with a fixed
random u (see _harness.py), and its autograd gradient is compared with finite
differences of L:

- ``check_gradients``: every element,  dL/dx_i ≈ (L(x + ε e_i) − L(x − ε e_i)) / 2ε.
  Two forward passes per element: use it on small inputs (up to a few hundred elements).
- ``check_vjp``: one random direction v per input (autograd's ``check_vjp``),
  ⟨∇_x L, v⟩ ≈ (L(x + ε v) − L(x − ε v)) / 2ε.  Two forward passes per input, so it
  runs on any size; it says *that* a gradient is wrong, ``check_gradients`` says *where*.

Both run in float64 (inputs, parameters and tinylm's default dtype), put a Module
in eval mode, restore everything afterwards, and also fail when the function
modifies one of its inputs in place or returns a gradient of the wrong shape.

Parameters are checked twice: at the values they have, then at random values
p + param_scale · N(0, 1) drawn by the toolkit. Initial values hide bugs: a gain
that starts at 1 or a bias at 0 makes a forgotten factor (or a dropped term)
vanish from the gradient. ``param_scale=0`` checks the given values only.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from tinylm import backends
from tinylm.nn import Module
from tinylm.tensor import Tensor

from ._harness import (backward_projection, cotangents, default_dtype, describe_callable,
                       eval_mode, evaluate, host, is_floating, outputs, projection, to_backend,
                       toolkit_rng)


def check_gradients(fn, *inputs, params=None, names=None, atol: float = 1e-6,
                    rtol: float = 1e-5, eps: float = 1e-6, seed: int = 0,
                    param_scale: float = 0.5) -> None:
    """Assert that autograd's gradient of ``fn`` matches central finite differences elementwise.

    ``fn(*inputs)`` returns a Tensor (or a tuple of Tensors). Checked are: every
    input that is a floating NumPy array or a Tensor with ``requires_grad=True``,
    and ``params`` (a Module, a dict name -> Parameter, or a list; by default the
    parameters of ``fn`` when ``fn`` is a Module). Integer/bool arrays (token ids,
    masks) and other values are passed through unchanged. ``names`` labels the
    inputs in messages. An element passes when
    |analytic − numeric| <= atol + rtol · |numeric|. With parameters, the check
    runs at their values and again at random ones (``param_scale``, see above).

    Raises AssertionError naming the input, the worst element's index, the
    analytic and numeric values and the absolute and relative error.
    """
    with _float64_call(fn, inputs, params, names) as (args, targets):
        for where in _parameter_points(targets, seed, param_scale):
            cots = _forward_backward(fn, args, targets, seed)
            for label, tensor in targets:
                analytic = _analytic(tensor)
                numeric = np.zeros(tensor.shape)
                for index in np.ndindex(*tensor.shape):
                    numeric[index] = _central_difference(fn, args, tensor, cots, eps,
                                                         _unit(tensor.shape, index))
                _compare_elements(label, tensor.shape, analytic, numeric, atol, rtol, eps, where)


def check_vjp(fn, *inputs, params=None, names=None, atol: float = 1e-6, rtol: float = 1e-5,
              eps: float = 1e-6, seed: int = 0, param_scale: float = 0.5) -> None:
    """Assert ⟨∇L, v⟩ matches a directional central difference, for one random v per input.

    Same arguments as :func:`check_gradients`; cheap enough for model-sized inputs.
    """
    with _float64_call(fn, inputs, params, names) as (args, targets):
        for where in _parameter_points(targets, seed, param_scale):
            _check_directions(fn, args, targets, seed, atol, rtol, eps, where)


def _check_directions(fn, args, targets, seed, atol, rtol, eps, where) -> None:
    """One check_vjp pass at the parameters' current values (``where`` says which in messages)."""
    cots = _forward_backward(fn, args, targets, seed)
    rng = toolkit_rng(seed, stream=1)
    failures = []
    for label, tensor in targets:
        direction = rng.standard_normal(tensor.shape)
        analytic = float(np.vdot(_analytic(tensor), direction))
        numeric = _central_difference(fn, args, tensor, cots, eps, direction)
        error = abs(analytic - numeric)
        if not error <= atol + rtol * abs(numeric):
            failures.append(
                f"{label} of shape {tensor.shape}: ⟨gradient, v⟩ along a random direction v "
                f"is {analytic:.10g} by autograd but {numeric:.10g} by finite differences; "
                f"abs error {error:.3g}, rel error {_relative(error, numeric):.3g}")
    if failures:
        # which tensors fail localises the bug: those upstream of it fail, those downstream pass
        others = "; ".join(f.split(" of shape")[0] for f in failures[1:])
        raise AssertionError(
            f"VJP check failed{where} for {failures[0]} (atol {atol:g}, rtol {rtol:g}, "
            f"eps {eps:g}, float64). {len(failures)} of {len(targets)} checked tensors fail"
            f"{': also ' + others if others else ''}. Run check_gradients on a small input "
            f"to find the wrong element.")


def _parameter_points(targets, seed, param_scale):
    """Yield a label per point the parameters are checked at: as given, then at random values.

    The random point p + param_scale · N(0, 1) is drawn in place (the parameters
    are float64 copies that _float64_call restores).
    """
    yield ""
    params = [tensor for label, tensor in targets if label.startswith("parameter")]
    if not params or param_scale == 0:
        return
    rng = toolkit_rng(seed, stream=3)
    backend = backends.current()
    for p in params:
        p.data = p.data + backend.from_host(param_scale * rng.standard_normal(p.shape),
                                            dtype=p.data.dtype)
    yield (f" at random parameter values (p + {param_scale:g}·N(0, 1): initial values such "
           "as a gain of 1 hide a missing factor)")


# -- setting up a float64 call --------------------------------------------------------------

@contextmanager
def _float64_call(fn, inputs, params, names):
    """Yield (args, targets): float64 copies of the inputs, and (label, tensor) pairs to check.

    Parameters are cast to float64 in place (the function refers to them) and
    restored, with their gradients, on the way out.
    """
    if names is not None and len(names) != len(inputs):
        raise ValueError(f"names has {len(names)} entries for {len(inputs)} inputs")
    named_params = _named_params(fn, params)
    saved = [(p, p.data, p.grad) for _, p in named_params]
    with default_dtype("float64"), eval_mode(fn):
        try:
            args = tuple(to_backend(x, "float64", requires_grad=_wants_grad(x)) for x in inputs)
            for _, p in named_params:
                p.data, p.grad = p.data.astype("float64"), None
            targets = [(_input_label(i, names), a) for i, a in enumerate(args)
                       if isinstance(a, Tensor) and a.requires_grad]
            targets += [(f"parameter '{name}'", p) for name, p in named_params]
            yield args, targets
        finally:
            for p, data, grad in saved:
                p.data, p.grad = data, grad


def _wants_grad(x) -> bool:
    if isinstance(x, Tensor):
        return x.requires_grad
    return isinstance(x, np.ndarray) and is_floating(x)


def _named_params(fn, params) -> list[tuple[str, Tensor]]:
    if params is None:
        params = fn if isinstance(fn, Module) else ()
    if isinstance(params, Module):
        return list(params.named_parameters())
    if isinstance(params, dict):
        return list(params.items())
    return [(f"params[{j}]", p) for j, p in enumerate(params)]


def _input_label(i: int, names) -> str:
    return f"input {i} ({names[i]!r})" if names else f"input {i}"


def _forward_backward(fn, args, targets, seed) -> list[np.ndarray]:
    """Run fn once with a graph, backpropagate L, check contracts; return the cotangents u."""
    for _, tensor in targets:  # a second pass (at other parameter values) starts from no gradient
        tensor.grad = None
    pristine = [host(a).copy() if hasattr(a, "shape") else None for a in args]
    outs = outputs(fn(*args), describe_callable(fn))
    cots = cotangents(outs, seed)
    backward_projection(outs, cots)
    for i, (a, before) in enumerate(zip(args, pristine)):
        if before is not None and not np.array_equal(host(a), before, equal_nan=True):
            changed = np.argwhere(host(a) != before)
            raise AssertionError(
                f"{describe_callable(fn)} modified input {i} in place (first changed element "
                f"at index {tuple(int(j) for j in changed[0])}); an op must not write to its inputs")
    for label, tensor in targets:
        if tensor.grad is not None and tuple(tensor.grad.shape) != tensor.shape:
            raise AssertionError(
                f"the gradient of {label} has shape {tuple(tensor.grad.shape)} but {label} has "
                f"shape {tensor.shape}: a VJP did not sum its gradient back to its input's shape "
                f"(undo broadcasting with tinylm.tensor.unbroadcast)")
    return cots


def _analytic(tensor: Tensor) -> np.ndarray:
    return np.zeros(tensor.shape) if tensor.grad is None else host(tensor.grad).astype(np.float64)


def _central_difference(fn, args, tensor, cots, eps, direction) -> float:
    """(L(x + ε d) − L(x − ε d)) / 2ε, moving ``tensor`` in place and restoring it exactly."""
    data = tensor.data
    original = data.copy()
    step = backends.current().from_host(eps * direction, dtype=data.dtype)
    data[...] = original + step
    plus = projection(evaluate(fn, args), cots)
    data[...] = original - step
    minus = projection(evaluate(fn, args), cots)
    data[...] = original
    return (plus - minus) / (2 * eps)


def _unit(shape, index) -> np.ndarray:
    e = np.zeros(shape)
    e[index] = 1.0
    return e


# -- reporting --------------------------------------------------------------------------------

def _relative(error: float, reference: float) -> float:
    return error / abs(reference) if reference else float("inf") if error else 0.0


def _compare_elements(label, shape, analytic, numeric, atol, rtol, eps, where="") -> None:
    error = np.abs(analytic - numeric)
    tolerance = atol + rtol * np.abs(numeric)
    bad = ~(error <= tolerance)  # NaN counts as bad
    if not bad.any():
        return
    ratio = np.where(np.isnan(error), np.inf, error / tolerance)
    worst = tuple(int(i) for i in np.unravel_index(int(np.argmax(ratio)), shape))
    a, n, e = analytic[worst], numeric[worst], error[worst]
    raise AssertionError(
        f"gradient check failed{where} for {label} of shape {tuple(shape)}: {int(bad.sum())} of "
        f"{bad.size} elements differ; worst at index {worst}: analytic {a:.10g}, numeric "
        f"{n:.10g}, abs error {e:.3g}, rel error {_relative(e, n):.3g} "
        f"(atol {atol:g}, rtol {rtol:g}; central differences with eps {eps:g} in float64)")
