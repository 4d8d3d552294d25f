"""Backend parity: the same layer, forward and backward, on every backend vs the NumPy reference.

    report = check_backend_parity(lambda: MyLayer(16), (x,))
    print(report)            # one line per backend: reference / passed / FAILED / skipped (why)

A backend that cannot run here (Numba not installed, no GPU) is listed as
skipped with its reason and is never counted as passed: ``report.compared``
holds only the backends that were actually run and compared.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import numpy as np

from tinylm import backends as registry

from ._harness import (as_args, backward_projection, cotangents, default_dtype, eval_mode, host,
                       outputs, to_backend)

REFERENCE = "numpy"


@dataclass
class BackendResult:
    """What happened on one backend: status is reference, passed, FAILED or skipped."""

    name: str
    status: str
    detail: str = ""


@dataclass
class ParityReport:
    """One result per backend; ``str(report)`` is a table a test can print."""

    results: list[BackendResult] = field(default_factory=list)

    def _names(self, status: str) -> list[str]:
        return [r.name for r in self.results if r.status == status]

    @property
    def passed(self) -> list[str]:
        return self._names("passed")

    @property
    def failed(self) -> list[str]:
        return self._names("FAILED")

    @property
    def skipped(self) -> dict[str, str]:
        return {r.name: r.detail for r in self.results if r.status == "skipped"}

    @property
    def compared(self) -> list[str]:
        """Backends run and compared with the reference (passed or failed; never skipped ones)."""
        return self.passed + self.failed

    def __str__(self) -> str:
        width = max(len(r.name) for r in self.results)
        return "\n".join(f"{r.name:<{width}}  {r.status:<9}  {r.detail}".rstrip()
                         for r in self.results)


def check_backend_parity(fn_or_module_factory, inputs, *, atol: float = 1e-5, rtol: float = 1e-4,
                         dtype: str = "float32", backends=None, seed: int = 0,
                         raise_on_failure: bool = True) -> ParityReport:
    """Run forward and backward on every available backend and compare with NumPy's.

    ``fn_or_module_factory`` is either a function of the inputs returning a Tensor
    (or tuple of Tensors), or a factory taking no arguments that returns a Module
    built deterministically (seeded), which is then called on the inputs; its
    parameter gradients are compared too. ``inputs`` is a tuple of host arrays
    (floating ones become Tensors of ``dtype`` requiring grad; integer ones, such
    as token ids, are passed as backend arrays). ``backends`` restricts the names
    (default: every registered backend).

    Compared: each output, the gradient of each floating input and of each
    parameter, with |x - ref| <= atol + rtol |ref|. Raises AssertionError naming
    the backend, the output or gradient and the max abs difference, unless
    ``raise_on_failure`` is False. Returns the :class:`ParityReport`.
    """
    args = tuple(host(a) if hasattr(a, "shape") else a for a in as_args(inputs))
    names = list(backends) if backends is not None else list(registry.REGISTRY)
    if REFERENCE not in names:
        names.insert(0, REFERENCE)
    report = ParityReport()
    reference = _run(REFERENCE, fn_or_module_factory, args, dtype, seed)
    report.results.append(BackendResult(REFERENCE, "reference", registry.describe(REFERENCE)))
    for name in names:
        if name == REFERENCE:
            continue
        usable, reason = registry.availability(name)
        if not usable:
            report.results.append(BackendResult(name, "skipped", reason))
            continue
        try:
            result = _run(name, fn_or_module_factory, args, dtype, seed)
        except Exception as exc:  # a backend that crashes has failed, with its error as the detail
            report.results.append(BackendResult(name, "FAILED", f"raised {type(exc).__name__}: {exc}"))
            continue
        report.results.append(_compare(name, reference, result, atol, rtol))
    if raise_on_failure and report.failed:
        raise AssertionError(f"backend parity failed for {', '.join(report.failed)}:\n{report}")
    return report


def _is_factory(obj) -> bool:
    """A callable with no required parameters (and no *args) builds the module under test."""
    try:
        params = inspect.signature(obj).parameters.values()
    except (TypeError, ValueError):
        return False
    return not any(p.kind is p.VAR_POSITIONAL or
                   (p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))
                   for p in params)


def _run(name, fn_or_factory, args, dtype, seed) -> dict[str, np.ndarray | None]:
    """Host copies of every output and gradient of one forward/backward on backend ``name``."""
    with registry.use(name), default_dtype(dtype):
        params = {}
        fn = fn_or_factory
        if _is_factory(fn_or_factory):
            fn = fn_or_factory()
            params = dict(fn.named_parameters())
        with eval_mode(fn):
            tensors = tuple(to_backend(a, dtype) for a in args)
            initial = {n: host(p).copy() for n, p in params.items()}
            outs = outputs(fn(*tensors), "the function under test")
            backward_projection(outs, cotangents(outs, seed))
        result = {f"output {i}": host(o).copy() for i, o in enumerate(outs)}
        for i, t in enumerate(tensors):
            if getattr(t, "requires_grad", False):
                result[f"grad of input {i}"] = None if t.grad is None else host(t.grad).copy()
        for n, p in params.items():
            result[f"initial parameter '{n}'"] = initial[n]
            result[f"grad of parameter '{n}'"] = None if p.grad is None else host(p.grad).copy()
        return result


def _compare(name, reference, result, atol, rtol) -> BackendResult:
    problems, worst = [], 0.0
    for key, ref in reference.items():
        got = result.get(key)
        if ref is None and got is None:
            continue
        if ref is None or got is None:
            problems.append(f"{key}: {'no gradient' if got is None else 'a gradient'} here but "
                            f"{'a gradient' if ref is not None else 'none'} on {REFERENCE}")
            continue
        if got.shape != ref.shape:
            problems.append(f"{key}: shape {got.shape}, reference {ref.shape}")
            continue
        diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))
        max_diff = float(diff.max()) if diff.size else 0.0
        worst = max(worst, max_diff)
        if not np.all(diff <= atol + rtol * np.abs(ref)):
            hint = "; the factory must build identical modules (seed it)" if key.startswith("initial") else ""
            problems.append(f"{key}: max abs diff {max_diff:.3g} (atol {atol:g}, rtol {rtol:g}){hint}")
    if problems:
        return BackendResult(name, "FAILED", "; ".join(problems))
    return BackendResult(name, "passed", f"max abs diff {worst:.3g} over {len(reference)} arrays")
