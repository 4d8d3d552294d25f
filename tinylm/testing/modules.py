"""The layer contract: what every Module in tinylm promises, checked in one call.

    check_module(lambda: RMSNorm(8), x)             # x: an example input (array, Tensor or tuple)
    check_module(lambda: RMSNorm(8), strategy)      # or a hypothesis strategy of examples

Checks, in order (each failure says which one and why):

1. registration: every Parameter among the module's attributes (also inside
   dicts and nested containers) is reachable from ``named_parameters()``, and no
   plain Tensor requiring grad hides as an attribute;
2. output contract: the output is a Tensor (or tuple) of the expected shape, in
   the dtype of the input (no silent float64 upcast) and float64 in float64 mode;
3. ``eval()`` is deterministic: the same input gives the same output twice;
4. ``state_dict()`` round-trips: host arrays of the right shapes, not aliasing the
   parameters, loaded into a fresh (perturbed) instance they give identical outputs;
5. gradients reach every parameter (not None, right shape, finite, and not all zero
   at a generic input: the example plus Gaussian noise);
6. large-magnitude inputs (x · ``large_magnitude``) give no NaN or inf, forward or backward.
"""

from __future__ import annotations

import sys

import numpy as np

from tinylm import backends
from tinylm.nn import Module, Parameter
from tinylm.tensor import Tensor, get_default_dtype, no_grad

from ._harness import (as_args, backward_projection, cotangents, default_dtype, host, is_floating,
                       outputs, to_backend, toolkit_rng)

CHECKS = ("registration", "output contract", "eval determinism", "state_dict round trip",
          "gradients reach every parameter", "large inputs stay finite")


def check_module(factory, example, *, output_shape=None, large_magnitude: float = 1e4,
                 allow_zero_grad=(), seed: int = 0) -> tuple[str, ...]:
    """Check the layer contract for the Module built by ``factory()`` on ``example``.

    ``example``: the input (a NumPy array or Tensor, or a tuple of positional
    inputs; floating arrays are cast to tinylm's default dtype, integer arrays
    such as token ids are passed as they are), or a hypothesis strategy that
    draws such examples (then every check runs on every drawn example).
    ``output_shape``: the expected shape of the (first) output, or a function
    of the first input's shape returning it. ``allow_zero_grad``: names of
    parameters whose gradient may legitimately be all zero.
    Returns the names of the checks that ran; raises AssertionError on the first failure.
    """
    if _is_strategy(example):
        from hypothesis import given

        @given(example)
        def check_drawn(drawn):
            _check_once(factory, drawn, output_shape, large_magnitude, allow_zero_grad, seed)
        check_drawn()
        return CHECKS
    return _check_once(factory, example, output_shape, large_magnitude, allow_zero_grad, seed)


def _is_strategy(obj) -> bool:
    strategies = sys.modules.get("hypothesis.strategies")
    return strategies is not None and isinstance(obj, strategies.SearchStrategy)


def _check_once(factory, example, output_shape, large_magnitude, allow_zero_grad, seed):
    module = factory()
    if not isinstance(module, Module):
        raise TypeError(f"factory must return a tinylm Module, got {type(module).__name__}")
    name = type(module).__name__
    example = as_args(example)

    def fail(check, message):
        raise AssertionError(f"check_module({name}) {check}: {message}")

    _registration(module, fail)
    module.eval()
    _output_contract(module, factory, example, output_shape, fail)
    _eval_determinism(module, example, fail)
    _state_dict_round_trip(module, factory, example, seed, fail)
    _gradients_reach(module, example, allow_zero_grad, seed, fail)
    _large_inputs(module, example, large_magnitude, seed, fail)
    return CHECKS


def _args(example, dtype=None, scale=1.0):
    dtype = dtype or get_default_dtype()
    return tuple(to_backend(host(x) * scale if is_floating(x) else x, dtype) for x in example)


def _run(module, args) -> list[Tensor]:
    return outputs(module(*args), f"{type(module).__name__}.forward")


# -- 1. registration ---------------------------------------------------------------------------

def _registration(module, fail):
    reachable = {id(p) for _, p in module.named_parameters()}
    for path, tensor in _tensors_in(module, type(module).__name__, set()):
        if isinstance(tensor, Parameter) and id(tensor) not in reachable:
            fail("registration", f"the Parameter at {path} is not reachable from "
                 "named_parameters(): a Module finds parameters in its attributes and in "
                 "lists/tuples of them, not in dicts or nested containers; it would never be "
                 "trained or saved")
        if not isinstance(tensor, Parameter) and tensor.requires_grad:
            fail("registration", f"{path} is a Tensor requiring grad but not a Parameter: wrap "
                 "it in tinylm.Parameter so that it is trained and saved")


def _tensors_in(value, path, seen):
    """(attribute path, Tensor) for every Tensor reachable through attributes and containers."""
    if isinstance(value, Tensor):
        yield path, value
    elif isinstance(value, Module):
        if id(value) in seen:
            return
        seen.add(id(value))
        for key, item in vars(value).items():
            yield from _tensors_in(item, f"{path}.{key}", seen)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _tensors_in(item, f"{path}[{key!r}]", seen)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _tensors_in(item, f"{path}[{i}]", seen)


# -- 2. output contract ------------------------------------------------------------------------

def _output_contract(module, factory, example, output_shape, fail):
    args = _args(example)
    with no_grad():
        outs = _run(module, args)
    expected_dtype = next((a.dtype for a in args if isinstance(a, Tensor)), None)
    expected_dtype = expected_dtype or np.dtype(get_default_dtype())
    for i, out in enumerate(outs):
        if out.dtype.kind == "f" and out.dtype != expected_dtype:
            fail("output contract", f"output {i} has dtype {out.dtype} for {expected_dtype} "
                 "inputs: a constant or buffer of another dtype upcasts it (build constants "
                 "with the input's dtype)")
    if output_shape is not None:
        first = next((a for a in args if hasattr(a, "shape")), None)
        shape = output_shape(tuple(first.shape)) if callable(output_shape) else output_shape
        if outs[0].shape != tuple(shape):
            fail("output contract", f"output shape {outs[0].shape}, expected {tuple(shape)}")
    with default_dtype("float64"):
        module64 = factory().eval()
        with no_grad():
            outs64 = _run(module64, _args(example, "float64"))
    for i, out in enumerate(outs64):
        if out.dtype.kind == "f" and out.dtype != np.float64:
            fail("output contract", f"output {i} is {out.dtype} when the module is built and "
                 "run in float64 (set_default_dtype('float64')): something is hard-coded to "
                 "float32, which breaks gradient checks")


# -- 3. eval determinism -----------------------------------------------------------------------

def _eval_determinism(module, example, fail):
    args = _args(example)
    with no_grad():
        first = [host(o).copy() for o in _run(module, args)]
        second = [host(o) for o in _run(module, args)]
    for i, (a, b) in enumerate(zip(first, second)):
        if not np.array_equal(a, b, equal_nan=True):
            fail("eval determinism", f"in eval() mode two calls on the same input differ in "
                 f"output {i} (max abs diff {np.nanmax(np.abs(a - b)):.3g}): dropout or another "
                 "random op ignores self.training")


# -- 4. state_dict round trip ------------------------------------------------------------------

def _state_dict_round_trip(module, factory, example, seed, fail):
    state = module.state_dict()
    params = dict(module.named_parameters())
    if set(state) != set(params):
        fail("state_dict round trip", f"state_dict() keys {sorted(state)} differ from "
             f"named_parameters() {sorted(params)}")
    for key, value in state.items():
        if not isinstance(value, np.ndarray) or value.shape != params[key].shape:
            fail("state_dict round trip", f"state_dict()[{key!r}] should be a host NumPy array "
                 f"of shape {params[key].shape}, got {type(value).__name__} "
                 f"{getattr(value, 'shape', '')}")
        data = params[key].data
        if isinstance(data, np.ndarray) and np.shares_memory(value, data):
            fail("state_dict round trip", f"state_dict()[{key!r}] aliases the parameter: "
                 "editing the saved state would change the model")
    fresh = factory()
    rng = toolkit_rng(seed, stream=2)
    backend = backends.current()
    for p in fresh.parameters():  # make every parameter differ, so that a skipped one shows
        p.data = backend.from_host(rng.standard_normal(p.shape), dtype=p.dtype)
    fresh.load_state_dict(state)
    fresh.eval()
    args = _args(example)
    with no_grad():
        expected = [host(o).copy() for o in _run(module, args)]
        got = [host(o) for o in _run(fresh, args)]
    for i, (a, b) in enumerate(zip(expected, got)):
        if not np.array_equal(a, b, equal_nan=True):
            fail("state_dict round trip", f"a fresh instance given load_state_dict(state_dict()) "
                 f"differs in output {i} (max abs diff {np.nanmax(np.abs(a - b)):.3g}): some "
                 "state that the output depends on is not a Parameter, or load_state_dict "
                 "skips it")


# -- 5. gradients reach every parameter --------------------------------------------------------

def _gradients_reach(module, example, allow_zero_grad, seed, fail):
    # at a generic point near the example: at x = 0 a weight's gradient is legitimately zero
    noise = toolkit_rng(seed, stream=1)
    generic = [host(x) + noise.standard_normal(x.shape) if is_floating(x) else x for x in example]
    module.zero_grad()
    args = _args(generic)
    outs = _run(module, args)
    backward_projection(outs, cotangents(outs, seed))
    for name, p in module.named_parameters():
        if p.grad is None:
            fail("gradients reach every parameter", f"parameter '{name}' received no gradient: "
                 "the forward does not use it, or uses it through .data / a NumPy detour")
        grad = host(p.grad)
        if grad.shape != p.shape:
            fail("gradients reach every parameter", f"the gradient of '{name}' has shape "
                 f"{grad.shape} but the parameter {p.shape}")
        if not np.all(np.isfinite(grad)):
            fail("gradients reach every parameter", f"the gradient of '{name}' has NaN/inf")
        if not grad.any() and name not in allow_zero_grad:
            fail("gradients reach every parameter", f"parameter '{name}' received an all-zero "
                 "gradient (pass allow_zero_grad=('" + name + "',) if that is expected)")
    module.zero_grad()


# -- 6. large inputs ---------------------------------------------------------------------------

def _large_inputs(module, example, large_magnitude, seed, fail):
    if not any(is_floating(x) for x in example):
        return  # integer inputs (token ids) have no magnitude to scale
    args = _args(example, scale=large_magnitude)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # the check reports them
        outs = _run(module, args)
    for i, out in enumerate(outs):
        values = host(out)
        if not np.all(np.isfinite(values)):
            fail("large inputs stay finite", f"output {i} has {int((~np.isfinite(values)).sum())} "
                 f"NaN/inf values for inputs scaled by {large_magnitude:g}: use a numerically "
                 "stable form (subtract the max before exp, add eps before dividing, ...)")
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        backward_projection(outs, cotangents(outs, seed))
    grads = [(f"input {i}", a.grad) for i, a in enumerate(args) if isinstance(a, Tensor)]
    grads += [(f"parameter '{n}'", p.grad) for n, p in module.named_parameters()]
    for label, grad in grads:
        if grad is not None and not np.all(np.isfinite(host(grad))):
            fail("large inputs stay finite", f"the gradient of {label} has NaN/inf for inputs "
                 f"scaled by {large_magnitude:g}")
    module.zero_grad()
