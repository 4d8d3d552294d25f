"""tinylm.testing: prove a layer right — gradients, backends, the layer contract, properties.

    from tinylm.testing import check_gradients, check_backend_parity, check_module
    from tinylm.testing import strategies          # hypothesis strategies (pip install 'tinylm[test]')

- ``check_gradients`` / ``check_vjp`` (gradcheck.py): autograd vs central finite
  differences in float64, elementwise or along a random direction.
- ``check_backend_parity`` (parity.py): forward and backward on every available
  backend vs the NumPy reference; unavailable backends are reported as skipped.
- ``check_module`` (modules.py): parameters registered, state_dict round trip,
  output dtype/shape, eval determinism, gradients reach every parameter, no
  NaN/inf for large inputs.
- ``check_causal``, ``check_permutation_equivariant``, ``check_batch_independent``
  (properties.py): properties of sequence layers.
- ``strategies``: hypothesis strategies for shapes, arrays, token batches, masks
  and small GPT configs. Imported on first use, so everything else works
  without hypothesis installed.

docs/testing.md walks through adding a layer and proving it right with these.
"""

from .gradcheck import check_gradients, check_vjp
from .modules import check_module
from .parity import ParityReport, check_backend_parity
from .properties import check_batch_independent, check_causal, check_permutation_equivariant

__all__ = [
    "check_gradients", "check_vjp", "check_backend_parity", "ParityReport", "check_module",
    "check_causal", "check_permutation_equivariant", "check_batch_independent", "strategies",
]


def __getattr__(name):
    if name == "strategies":  # needs hypothesis; import it only when asked for
        import importlib
        return importlib.import_module(".strategies", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
