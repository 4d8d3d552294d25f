"""Modules: parameters with a forward pass, composed into a transformer.

A Module finds its parameters, buffers and sub-modules by walking its attributes
(in the order they were set), so a layer is just a class whose ``__init__``
assigns Parameters, Buffers and Modules and whose ``forward`` reads like the equation.

A Parameter is trained; a Buffer is state that is not trained (a running mean,
a rotary table) but belongs to the model all the same: it moves with ``to()``
and, unless it is ``persistent=False`` (derived from the config), it is saved by
``state_dict`` and checkpoints. State kept as a plain array is lost on reload.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from tinylm import backends, ops
from tinylm.errors import CheckpointError
from tinylm.tensor import Tensor, get_default_dtype


class Parameter(Tensor):
    """A Tensor that is a trainable weight of a Module (requires_grad=True)."""

    __slots__ = ()

    def __init__(self, data, dtype=None):
        super().__init__(data, requires_grad=True, dtype=dtype or get_default_dtype())


class Buffer(Tensor):
    """Non-trainable state of a Module; ``persistent=False`` for state rebuilt from the config.

    Floating values take tinylm's default dtype (a float64 running mean would
    upcast a float32 model's output); integer values keep theirs. Update one in
    place of the array it holds: ``self.running_mean.data = ...``.
    """

    __slots__ = ("persistent",)

    def __init__(self, data, persistent: bool = True, dtype=None):
        floating = hasattr(data, "dtype") and data.dtype.kind == "f"  # Python floats: Tensor's rule
        super().__init__(data, dtype=dtype or (get_default_dtype() if floating else None))
        self.persistent = persistent


class Module:
    """Base class: ``__call__`` runs ``forward``; parameters are found by attribute walk."""

    training = True

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    # -- discovery ------------------------------------------------------------
    def _children(self) -> Iterator[tuple[str, object]]:
        for name, value in vars(self).items():
            if isinstance(value, (Parameter, Buffer, Module)):
                yield name, value
            elif isinstance(value, (list, tuple)):
                for i, item in enumerate(value):
                    if isinstance(item, (Parameter, Buffer, Module)):
                        yield f"{name}.{i}", item

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, "Module"]]:
        yield prefix, self
        for name, child in self._children():
            if isinstance(child, Module):
                yield from child.named_modules(f"{prefix}{name}.")

    def _named(self, kind) -> Iterator[tuple[str, Tensor]]:
        """(dotted name, tensor) for every ``kind`` (Parameter or Buffer), each shared one once
        under its first name."""
        seen = set()
        for prefix, module in self.named_modules():
            for name, child in module._children():
                if isinstance(child, kind) and id(child) not in seen:
                    seen.add(id(child))
                    yield prefix + name, child

    def named_parameters(self) -> Iterator[tuple[str, Parameter]]:
        return self._named(Parameter)

    def named_buffers(self) -> Iterator[tuple[str, Buffer]]:
        return self._named(Buffer)

    def _named_state(self) -> dict[str, Tensor]:
        """What state_dict saves: every parameter and every persistent buffer, by dotted name."""
        state = dict(self.named_parameters())
        state.update((name, b) for name, b in self.named_buffers() if b.persistent)
        return state

    def parameters(self) -> list[Parameter]:
        return [p for _, p in self.named_parameters()]

    def num_parameters(self) -> int:
        return sum(p.size for p in self.parameters())

    # -- modes ----------------------------------------------------------------
    def train(self, mode: bool = True) -> "Module":
        for _, module in self.named_modules():
            module.training = mode
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    # -- state ----------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """Host (NumPy) copies of every parameter and persistent buffer, by dotted name."""
        to_host = backends.current().to_host
        return {name: np.array(to_host(t.data)) for name, t in self._named_state().items()}

    def load_state_dict(self, state: dict) -> None:
        """Copy ``state`` into the parameters and persistent buffers; names and shapes must match."""
        params = self._named_state()
        missing = sorted(set(params) - set(state))
        unexpected = sorted(set(state) - set(params))
        if missing or unexpected:
            raise CheckpointError(
                f"state does not fit the model: missing {missing[:3]}{'...' if len(missing) > 3 else ''}"
                f", unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}")
        backend = backends.current()
        for name, p in params.items():
            value = state[name]
            if tuple(value.shape) != p.shape:
                raise CheckpointError(f"{type(p).__name__.lower()} {name} has shape {tuple(value.shape)} in the "
                                      f"state but {p.shape} in the model")
            p.data = backend.from_host(backend.to_host(value), dtype=p.dtype)

    def to(self, dtype=None, backend=None) -> "Module":
        """Move every parameter and buffer to ``backend`` (a name) and/or cast the floating ones to ``dtype``."""
        source = backends.current()
        target = backends.get_backend(backend) if isinstance(backend, str) else (backend or source)
        for t in [*self.parameters(), *(b for _, b in self.named_buffers())]:
            host = source.to_host(t.data)
            t.data = target.from_host(host, dtype=dtype if dtype and host.dtype.kind == "f" else host.dtype)
            t.grad = None
        return self


def _normal(rng: np.random.Generator, shape, std: float) -> Parameter:
    return Parameter(backends.current().from_host(rng.normal(0.0, std, size=shape)),
                     dtype=get_default_dtype())


def _filled(shape, value: float) -> Parameter:
    return Parameter(backends.current().xp.full(shape, value))


class Linear(Module):
    """y = x W + b with W of shape (in, out) (GPT-2's Conv1D layout)."""

    def __init__(self, n_in: int, n_out: int, rng: np.random.Generator, bias: bool = True,
                 std: float = 0.02):
        self.weight = _normal(rng, (n_in, n_out), std)
        self.bias = _filled((n_out,), 0.0) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return ops.linear(x, self.weight, self.bias)                  # (..., in) @ (in, out) + (out,)


class Embedding(Module):
    """Row lookup: token ids (...) -> vectors (..., C)."""

    def __init__(self, n_rows: int, dim: int, rng: np.random.Generator, std: float = 0.02):
        self.weight = _normal(rng, (n_rows, dim), std)

    def forward(self, idx) -> Tensor:
        return ops.embedding(self.weight, idx)


class LayerNorm(Module):
    """Normalise the last axis to zero mean and unit variance, then scale and shift."""

    def __init__(self, dim: int, eps: float = 1e-5):
        self.weight = _filled((dim,), 1.0)
        self.bias = _filled((dim,), 0.0)
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return ops.layer_norm(x, self.weight, self.bias, self.eps)


class Dropout(Module):
    """Zero each element with probability p while training (inverted scaling)."""

    def __init__(self, p: float = 0.0):
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return ops.dropout(x, self.p, self.training)
