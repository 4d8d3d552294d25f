"""pytest plugin: tinylm's hypothesis profiles in every test session, for ``--hypothesis-profile``.

Installed with tinylm as the entry point ``tinylm`` of the ``pytest11`` group
(pyproject.toml), so in any project where tinylm and hypothesis are installed::

    pytest --hypothesis-profile=tinylm-ci

runs hypothesis tests without per-example deadlines (tinylm/testing/profiles.py).
It registers the profiles and activates none: a session that does not ask for
one keeps hypothesis's defaults. Without hypothesis it does nothing.
"""

from __future__ import annotations

try:
    from tinylm.testing.profiles import register_profiles
except ImportError:  # hypothesis is not installed: nothing to register
    register_profiles = None

# At import: pytest imports entry-point plugins before hypothesis's own plugin reads
# --hypothesis-profile (in its pytest_configure), so the names exist by then.
if register_profiles is not None:
    register_profiles()
