"""Shared test configuration: hypothesis profiles, global-state hygiene, the backend fixture.

Hypothesis profiles (docs/testing.md; defined in tinylm/testing/profiles.py, which
users' test suites load the same way), chosen by TINYLM_HYPOTHESIS_PROFILE:
- ``ci`` (default): deterministic (derandomize), few examples, no deadline — what .ci/run uses;
- ``thorough``: many random examples, for local runs before a release.
"""

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis.configuration import set_hypothesis_home_dir

from tinylm import backends
from tinylm.tensor import get_default_dtype, set_default_dtype
from tinylm.testing.profiles import load_profile

# ---- hypothesis profiles ----------------------------------------------------------------------

PROFILE = os.environ.get("TINYLM_HYPOTHESIS_PROFILE", "ci")
if PROFILE not in ("ci", "thorough"):
    raise pytest.UsageError(f"TINYLM_HYPOTHESIS_PROFILE={PROFILE!r}: choose 'ci' or 'thorough'")
load_profile(f"tinylm-{PROFILE}")
# Hypothesis keeps a cache (even with database=None); keep it out of the checkout too.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "tinylm-tests-hypothesis")


def pytest_report_header(config):
    return f"hypothesis profile: {PROFILE} (set TINYLM_HYPOTHESIS_PROFILE=ci|thorough)"


# ---- global state ---------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def _run_in_an_empty_directory(tmp_path_factory, monkeypatch):
    """Every test starts in an empty temporary directory of its own (not its tmp_path), so
    nothing in the checkout (an `out/` left by README command 1, say) can change a result,
    and a command writing to its default location writes there, never into the checkout."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


@pytest.fixture(autouse=True)
def _restore_tinylm_globals():
    """A test that changes the default dtype or the active backend cannot leak it into the next."""
    dtype, backend = get_default_dtype(), backends.current()
    yield
    set_default_dtype(dtype)
    backends.set_backend(backend)


# ---- backends -------------------------------------------------------------------------------

@pytest.fixture(params=list(backends.REGISTRY))
def backend(request):
    """Each registered backend in turn, active for the test; unavailable ones skip with the reason."""
    usable, reason = backends.availability(request.param)
    if not usable:
        pytest.skip(f"{request.param} unavailable: {reason}")
    with backends.use(request.param) as active:
        yield active
