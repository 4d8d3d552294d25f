"""Where an experiment's results go: ``results.json`` always, PNG figures when matplotlib is there.

matplotlib is optional (``pip install 'tinylm[plot]'``); it is imported only
here, lazily, with the non-interactive Agg backend, so the lab runs on a
server without a display and the JSON is written whether or not plots can be.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Callable

from tinylm.fileio import atomic_write_bytes

PLOT_HINT = "no plots: matplotlib is not installed; get it with: pip install 'tinylm[plot]'"


def pyplot():
    """matplotlib.pyplot on the Agg backend, or None when matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _finite(value):
    """JSON has no NaN or Infinity: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_report(out, results: dict, figures: dict[str, Callable] | None = None) -> dict:
    """Write ``out/results.json`` and one PNG per figure; returns {"json": path, "plots": [...]}.

    ``figures`` maps a file stem to ``draw(plt, results) -> Figure``. "plots" is None
    when matplotlib is missing (the caller tells the user :data:`PLOT_HINT`).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "results.json"
    atomic_write_bytes(json_path, (json.dumps(_finite(results), indent=1) + "\n").encode())
    plt = pyplot() if figures else None
    if plt is None:
        return {"json": json_path, "plots": None if figures else []}
    plots = []
    for stem, draw in figures.items():
        plots.append(out / f"{stem}.png")
        save_png(plt, draw(plt, results), plots[-1])
    return {"json": json_path, "plots": plots}


def save_png(plt, fig, path) -> None:
    """Render ``fig`` to PNG in memory, close it, and replace ``path`` atomically."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
