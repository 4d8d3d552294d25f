"""How the toolkit calls the code under test: inputs in, outputs out, in a chosen dtype.

Every check in tinylm.testing runs a user's function or module the same way:
host arrays become Tensors of the active backend (floating ones in the dtype
under test, integer ones such as token ids as plain backend arrays), the result
is one Tensor or a tuple of them, and it is reduced to a scalar by a fixed
random projection L = Σ_i ⟨out_i, u_i⟩ so that no gradient cancels by symmetry
(the plain sum of a softmax is constant, so its gradient would be zero).
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from tinylm import backends, ops
from tinylm.nn import Module
from tinylm.tensor import Tensor, get_default_dtype, no_grad, set_default_dtype


@contextmanager
def default_dtype(dtype: str):
    """Run the body with tinylm's default floating dtype set to ``dtype``."""
    previous = get_default_dtype()
    set_default_dtype(dtype)
    try:
        yield
    finally:
        set_default_dtype(previous)


@contextmanager
def eval_mode(fn):
    """Put a Module in eval mode (no dropout) for the body; other callables are left alone."""
    if not isinstance(fn, Module):
        yield
        return
    was_training = fn.training
    fn.eval()
    try:
        yield
    finally:
        fn.train(was_training)


def host(a) -> np.ndarray:
    """A NumPy array holding the values of a Tensor, a backend array or host data."""
    if isinstance(a, Tensor):
        a = a.data
    if isinstance(a, np.ndarray):
        return a
    return np.asarray(backends.current().to_host(a)) if hasattr(a, "shape") else np.asarray(a)


def is_floating(a) -> bool:
    return hasattr(a, "dtype") and np.dtype(a.dtype).kind == "f"


def to_backend(value, dtype: str, requires_grad: bool = True):
    """One input for the code under test, on the active backend.

    Floating arrays and Tensors become fresh Tensors of ``dtype`` (requiring grad
    when asked); integer and boolean arrays become plain backend arrays (token ids,
    masks); anything else (numbers, None, slices) is passed through unchanged.
    """
    if isinstance(value, Tensor) or isinstance(value, np.ndarray) or hasattr(value, "__array__"):
        array = host(value)
        if array.dtype.kind == "f":
            data = backends.current().from_host(array, dtype=dtype)
            return Tensor(data, requires_grad=requires_grad)
        return backends.current().from_host(array)
    return value


def as_args(example) -> tuple:
    """An example input as a tuple of positional arguments."""
    return tuple(example) if isinstance(example, (tuple, list)) else (example,)


def outputs(result, what: str = "the function") -> list[Tensor]:
    """The Tensors a call returned (a Tensor, or a tuple whose None entries are dropped)."""
    if isinstance(result, Tensor):
        return [result]
    if isinstance(result, (tuple, list)):
        tensors = [r for r in result if r is not None]
        if tensors and all(isinstance(r, Tensor) for r in tensors):
            return tensors
    raise TypeError(f"{what} must return a Tensor or a tuple of Tensors, "
                    f"got {type(result).__name__}")


# Salted into every generator the toolkit seeds: a user's data drawn with default_rng(0)
# must not coincide with the cotangent u (u ∥ y makes the gradient of a normalisation vanish).
SALT = 0x7E57


def toolkit_rng(seed: int, stream: int = 0) -> np.random.Generator:
    """The toolkit's own random generator for ``seed``, independent of default_rng(seed)."""
    return np.random.default_rng([SALT, stream, seed])


def cotangents(outs: list[Tensor], seed: int) -> list[np.ndarray]:
    """Fixed random upstream gradients u_i, one per output, in float64 on the host."""
    rng = toolkit_rng(seed)
    return [rng.standard_normal(out.shape) for out in outs]


def projection(outs: list[Tensor], cots: list[np.ndarray]) -> float:
    """L = Σ_i ⟨out_i, u_i⟩ evaluated on the host in float64."""
    return float(sum(np.vdot(host(o).astype(np.float64), u) for o, u in zip(outs, cots)))


def backward_projection(outs: list[Tensor], cots: list[np.ndarray]) -> None:
    """Backpropagate L = Σ_i ⟨out_i, u_i⟩ into every leaf that requires grad."""
    outs_with_grad = [(o, u) for o, u in zip(outs, cots) if o.requires_grad]
    if not outs_with_grad:
        return
    backend = backends.current()
    if len(outs_with_grad) == 1:  # the common case: no extra op between the user's code and backward
        out, u = outs_with_grad[0]
        out.backward(backend.from_host(u, dtype=out.dtype))
        return
    # several outputs may share a graph (logits and loss), so one backward through their sum
    total = None
    for out, u in outs_with_grad:
        term = ops.sum(ops.mul(out, Tensor(backend.from_host(u, dtype=out.dtype))))
        total = term if total is None else ops.add(total, term)
    total.backward()


def evaluate(fn, args) -> list[Tensor]:
    """The outputs of ``fn(*args)`` without recording a graph."""
    with no_grad():
        return outputs(fn(*args), describe_callable(fn))


def describe_callable(fn) -> str:
    """A short name for messages: the Module's class or the function's name."""
    if isinstance(fn, Module):
        return type(fn).__name__
    return getattr(fn, "__name__", type(fn).__name__)
