"""Pluggable array backends, one registry keyed by name.

    >>> from tinylm import backends
    >>> backends.set_backend("numba")        # every new Tensor lives here
    >>> with backends.use("numpy"): ...      # temporarily

A backend module (``numpy_backend``, ``numba_backend``, ``cupy_backend``) exports
``NAME``, ``available() -> (ok, reason)`` and ``create() -> Backend``. Importing one
has no side effects: compilation and device start-up happen in ``create``.
"""

from __future__ import annotations

import importlib
from contextlib import contextmanager

from tinylm.errors import BackendUnavailable

from .base import Backend

# name -> module path; the order is the order `tinylm backends` lists them in.
REGISTRY = {
    "numpy": "tinylm.backends.numpy_backend",
    "numba": "tinylm.backends.numba_backend",
    "cupy": "tinylm.backends.cupy_backend",
}

_created: dict[str, Backend] = {}
_current: Backend | None = None


def _module(name: str):
    if name not in REGISTRY:
        known = ", ".join(REGISTRY)
        raise BackendUnavailable(f"unknown backend {name!r}; choose one of: {known}")
    try:
        return importlib.import_module(REGISTRY[name])
    except ImportError as exc:  # a registered backend whose module is not written yet
        raise BackendUnavailable(f"backend {name!r} cannot be imported: {exc}") from None


def availability(name: str) -> tuple[bool, str]:
    """(usable here?, reason when not) for the backend called ``name``."""
    try:
        return _module(name).available()
    except BackendUnavailable as exc:
        return False, str(exc)


def describe(name: str) -> str:
    """What the backend runs on, without starting it (the module's ``describe()``)."""
    module = _module(name)
    return module.describe() if hasattr(module, "describe") else name


def available_backends() -> list[tuple[str, bool, str]]:
    """Every registered backend as (name, usable, reason-if-not)."""
    return [(name, *availability(name)) for name in REGISTRY]


def get_backend(name: str) -> Backend:
    """The backend called ``name``; raises BackendUnavailable saying why it cannot run."""
    if name in _created:
        return _created[name]
    module = _module(name)
    ok, reason = module.available()
    if not ok:
        raise BackendUnavailable(f"backend {name!r} is unavailable: {reason}")
    _created[name] = module.create()
    return _created[name]


def current() -> Backend:
    """The active backend (NumPy until ``set_backend`` says otherwise)."""
    global _current
    if _current is None:
        _current = get_backend("numpy")
    return _current


def set_backend(backend: str | Backend) -> Backend:
    """Make ``backend`` (a name or a Backend) the active one and return it."""
    global _current
    _current = get_backend(backend) if isinstance(backend, str) else backend
    return _current


@contextmanager
def use(backend: str | Backend):
    """Run the body with ``backend`` active, then restore the previous one."""
    previous = current()
    set_backend(backend)
    try:
        yield current()
    finally:
        set_backend(previous)


__all__ = [
    "Backend", "REGISTRY", "available_backends", "availability", "current",
    "describe", "get_backend", "set_backend", "use",
]
