"""Hypothesis profiles for testing layers, usable from any test suite.

    # conftest.py of your project (or nothing at all: the pytest plugin registers them)
    from tinylm.testing.profiles import load_profile
    load_profile("tinylm-ci")

    pytest --hypothesis-profile=tinylm-ci          # or choose one on the command line

Both profiles turn off hypothesis's per-example deadline and its ``too_slow``
health check: the first call of a layer may compile a Numba kernel, and a
gradient check costs two forward passes per element, so timing one example
says nothing about a bug.

- ``tinylm-ci``: derandomized (the same examples on every run, no example
  database), 25 examples per test: for every commit;
- ``tinylm-thorough``: 500 random examples, with the example database: locally,
  before a release or after touching an op.

The pytest plugin (``tinylm.testing.pytest_plugin``, installed as the ``tinylm``
entry point of ``pytest11``) registers both in every pytest session, so
``--hypothesis-profile`` can name them without any code.
"""

from __future__ import annotations

try:
    from hypothesis import HealthCheck, settings
except ImportError as exc:
    raise ImportError("tinylm.testing.profiles needs hypothesis, which is not installed: "
                      "pip install 'tinylm[test]'") from exc

PROFILES = {
    "tinylm-ci": dict(derandomize=True, database=None, max_examples=25, deadline=None,
                      suppress_health_check=[HealthCheck.too_slow], print_blob=True),
    "tinylm-thorough": dict(max_examples=500, deadline=None,
                            suppress_health_check=[HealthCheck.too_slow], print_blob=True),
}


def register_profiles() -> None:
    """Register tinylm's profiles with hypothesis (loading none of them)."""
    for name, options in PROFILES.items():
        settings.register_profile(name, **options)


def load_profile(name: str = "tinylm-ci") -> None:
    """Register tinylm's profiles and make ``name`` the active one: one call in a conftest.py."""
    if name not in PROFILES:
        raise ValueError(f"unknown hypothesis profile {name!r}; tinylm's are {sorted(PROFILES)}")
    register_profiles()
    settings.load_profile(name)
