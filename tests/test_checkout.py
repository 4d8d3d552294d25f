"""A plain checkout explains itself: `python -c "import tinylm"` works in a clone that was never
installed (backends/ and cli.py are found beside the package, as an install maps them)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROBE = """
import tinylm, tinylm.cli
from tinylm import backends
backends.set_backend("numpy")
print(tinylm.__file__)
print(backends.__file__)
print(tinylm.cli.__file__)
"""


def test_import_tinylm_works_in_an_uninstalled_checkout(tmp_path):
    clone = tmp_path / "clone"
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for part in ("tinylm", "backends"):
        shutil.copytree(ROOT / part, clone / part, symlinks=True, ignore=skip)
    shutil.copy2(ROOT / "cli.py", clone / "cli.py")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # `python -c` puts the working directory first on sys.path: the clone, not the installed tinylm
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=clone, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    paths = [Path(line) for line in result.stdout.split()]
    assert len(paths) == 3 and all(p.resolve().is_relative_to(clone.resolve()) for p in paths), paths
