"""The layer contract: what every Module in tinylm promises, checked in one call.

    check_module(lambda: RMSNorm(8), x)             # tinylm.models.llama.RMSNorm; x: an example input
    check_module(lambda: RMSNorm(8), strategy)      # or a hypothesis strategy of examples

Checks, in order (each failure says which one and why):

1. registration: every Parameter and Buffer among the module's attributes (also
   inside dicts and nested containers) is reachable from ``named_parameters()`` /
   ``named_buffers()``, and no plain Tensor requiring grad hides as an attribute;
2. output contract: the output is a Tensor (or tuple) of the expected shape, in
   the dtype of the input (no silent float64 upcast) and float64 in float64 mode;
3. ``eval()`` is deterministic: the same input gives the same output twice;
4. ``state_dict()`` round-trips *after training-mode calls* (which update running
   statistics and other state): host arrays of the right shapes, not aliasing the
   model, loaded into a fresh (perturbed) instance they give identical eval
   outputs; a plain-array attribute that the training calls changed is named;
5. gradients reach every parameter (not None, right shape, finite, and not all zero
   at a generic input: the example plus Gaussian noise);
6. gradient values: ``check_vjp`` on a float64 instance, at its initial parameter
   values and at random ones (p + ``param_scale`` · N(0, 1)), so that a factor
   hidden by a parameter's initial value (a gain of 1) is caught;
7. large-magnitude inputs (x · ``large_magnitude``) give no NaN or inf, forward or backward.
"""

from __future__ import annotations

import sys

import numpy as np

from tinylm import backends
from tinylm.nn import Buffer, Module, Parameter
from tinylm.tensor import Tensor, get_default_dtype, no_grad

from ._harness import (as_args, backward_projection, cotangents, default_dtype, host, is_floating,
                       outputs, to_backend, toolkit_rng)
from .gradcheck import check_vjp

CHECKS = ("registration", "output contract", "eval determinism", "state_dict round trip",
          "gradients reach every parameter", "gradient values", "large inputs stay finite")
TRAINING_CALLS = 2  # forward passes in training mode before the state round trip


def check_module(factory, example, *, output_shape=None, large_magnitude: float = 1e4,
                 allow_zero_grad=(), seed: int = 0, param_scale: float = 0.5,
                 vjp_tolerance: tuple[float, float] = (1e-6, 1e-5)) -> tuple[str, ...]:
    """Check the layer contract for the Module built by ``factory()`` on ``example``.

    ``example``: the input (a NumPy array or Tensor, or a tuple of positional
    inputs; floating arrays are cast to tinylm's default dtype, integer arrays
    such as token ids are passed as they are), or a hypothesis strategy that
    draws such examples (then every check runs on every drawn example).
    ``output_shape``: the expected shape of the (first) output, or a function
    of the first input's shape returning it. ``allow_zero_grad``: names of
    parameters whose gradient may legitimately be all zero. ``param_scale``: the
    spread of the random parameter values the gradient values are checked at (0:
    initial values only); ``vjp_tolerance``: (atol, rtol) of that check.
    Returns the names of the checks that ran; raises AssertionError on the first failure.
    """
    options = dict(output_shape=output_shape, large_magnitude=large_magnitude,
                   allow_zero_grad=allow_zero_grad, seed=seed, param_scale=param_scale,
                   vjp_tolerance=vjp_tolerance)
    if _is_strategy(example):
        from hypothesis import given

        @given(example)
        def check_drawn(drawn):
            _check_once(factory, drawn, **options)
        check_drawn()
        return CHECKS
    return _check_once(factory, example, **options)


def _is_strategy(obj) -> bool:
    strategies = sys.modules.get("hypothesis.strategies")
    return strategies is not None and isinstance(obj, strategies.SearchStrategy)


def _check_once(factory, example, output_shape, large_magnitude, allow_zero_grad, seed,
                param_scale, vjp_tolerance):
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
    _gradient_values(factory, example, seed, param_scale, vjp_tolerance, fail)
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
    reachable |= {id(b) for _, b in module.named_buffers()}
    for path, tensor in _tensors_in(module, type(module).__name__, set()):
        if isinstance(tensor, (Parameter, Buffer)) and id(tensor) not in reachable:
            kind = type(tensor).__name__
            fail("registration", f"the {kind} at {path} is not reachable from "
                 f"named_{kind.lower()}s(): a Module finds them in its attributes and in "
                 "lists/tuples of them, not in dicts or nested containers; it would never be "
                 f"{'trained or ' if kind == 'Parameter' else ''}saved")
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
    changed = _train_briefly(module, example, seed)
    state = module.state_dict()
    params = dict(module.named_parameters())
    params.update((n, b) for n, b in module.named_buffers() if b.persistent)
    if set(state) != set(params):
        fail("state_dict round trip", f"state_dict() keys {sorted(state)} differ from the "
             f"parameters and persistent buffers {sorted(params)}")
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
    for p in fresh._named_state().values():  # make every entry differ, so that a skipped one shows
        p.data = backend.from_host(rng.standard_normal(p.shape), dtype=p.dtype)
    fresh.load_state_dict(state)
    fresh.eval()
    args = _args(example)
    with no_grad():
        expected = [host(o).copy() for o in _run(module, args)]
        got = [host(o) for o in _run(fresh, args)]
    for i, (a, b) in enumerate(zip(expected, got)):
        if not np.array_equal(a, b, equal_nan=True):
            cause = (f"{', '.join(changed)} changed during {TRAINING_CALLS} training-mode calls "
                     "but is a plain array, which state_dict does not save: register it as a "
                     "tinylm.Buffer" if changed else
                     "some state that the output depends on is not a Parameter or Buffer, or "
                     "load_state_dict skips it")
            fail("state_dict round trip", f"a fresh instance given load_state_dict(state_dict()) "
                 f"differs in output {i} (max abs diff {np.nanmax(np.abs(a - b)):.3g}, state "
                 f"saved after training-mode calls): {cause}")


def _train_briefly(module, example, seed) -> list[str]:
    """Call ``module`` in training mode (running statistics update); return the plain-array
    attributes those calls changed, as 'Name.attribute' paths."""
    before = dict(_plain_arrays(module))
    noise = toolkit_rng(seed, stream=4)
    module.train()
    for _ in range(TRAINING_CALLS):
        drawn = [host(x) + noise.standard_normal(x.shape) if is_floating(x) else x for x in example]
        with no_grad():
            _run(module, _args(drawn))
    module.eval()
    after = dict(_plain_arrays(module))
    return [path for path, value in before.items()
            if path in after and (value.shape != after[path].shape
                                  or not np.array_equal(value, after[path], equal_nan=True))]


def _plain_arrays(module):
    """(path, host copy) of every array attribute of the module and its sub-modules that is
    not a Tensor: state the module keeps where state_dict cannot see it."""
    for prefix, sub in module.named_modules(type(module).__name__ + "."):
        for key, value in vars(sub).items():
            if hasattr(value, "shape") and hasattr(value, "dtype") and not isinstance(value, Tensor):
                yield prefix + key, host(value).copy()


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


# -- 6. gradient values ------------------------------------------------------------------------

def _gradient_values(factory, example, seed, param_scale, vjp_tolerance, fail):
    with default_dtype("float64"):
        module = factory()
    atol, rtol = vjp_tolerance
    try:
        check_vjp(module, *example, seed=seed, param_scale=param_scale, atol=atol, rtol=rtol)
    except AssertionError as failure:
        fail("gradient values", str(failure))


# -- 7. large inputs ---------------------------------------------------------------------------

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
