"""A run's record beside its checkpoint: ``metrics.jsonl`` and, with matplotlib, ``loss.png``.

``metrics.jsonl`` is append-only JSON lines, one per training event: every logged
step ``{"event": "step", "step", "loss", "lr", "ms_per_iter", "tokens_per_s"}`` and
every evaluation ``{"event": "eval", "step", "train_loss", "val_loss"}``. A resumed
run continues the same file from its checkpoint's step: records past that step
(written after the last checkpoint, by a run that then crashed) are dropped first,
so no step appears twice. A partial last line (a crash mid-write) is skipped on reading.

``loss.png`` (train and validation loss against step, the unigram baseline as a
line) is redrawn after each checkpoint save (that is, at each evaluation) and
replaced atomically.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from tinylm.fileio import atomic_write_bytes, remove_stale_temporaries

METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "loss.png"


def read_metrics(run_dir) -> list[dict]:
    """The records of ``run_dir/metrics.jsonl`` in order ([] if there is none)."""
    path = Path(run_dir) / METRICS_FILE
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a crash
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
    return records


def _ends_a_line(path: Path) -> bool:
    """Whether the file is empty or ends with a newline (no record cut short)."""
    with open(path, "rb") as fh:
        fh.seek(0, 2)
        if fh.tell() == 0:
            return True
        fh.seek(-1, 2)
        return fh.read(1) == b"\n"


def _finite(record: dict) -> dict:
    """JSON has no NaN or Infinity: such a value is written as null."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in record.items()}


class MetricsLog:
    """Appends training events to ``run_dir/metrics.jsonl``; ``draw`` redraws ``loss.png``."""

    def __init__(self, run_dir, step: int, baseline: float | None = None):
        """Continue the record of a run whose checkpoint is at ``step`` (0 for a new run)."""
        self.dir, self.baseline = Path(run_dir), baseline
        path = self.dir / METRICS_FILE
        for written in (path, self.dir / PLOT_FILE):  # temporaries of a writer killed mid-write
            remove_stale_temporaries(written)
        records = read_metrics(self.dir)
        self.records = [r for r in records if r["step"] <= step]
        if path.exists() and (len(self.records) < len(records) or not _ends_a_line(path)):
            # drop what a crashed run wrote after its last checkpoint, and a cut last line
            text = "".join(json.dumps(r) + "\n" for r in self.records)
            atomic_write_bytes(path, text.encode("utf-8"))

    def __call__(self, event: dict) -> None:
        if event["event"] not in ("step", "eval"):
            return
        record = _finite(event)
        self.records.append(record)
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / METRICS_FILE, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")

    def draw(self) -> bool:
        """Redraw loss.png from the records so far; False (nothing written) without matplotlib."""
        return plot_losses(self.records, self.baseline, self.dir / PLOT_FILE)


def plot_losses(records: list[dict], baseline: float | None, path) -> bool:
    """Draw train and val loss against step into the PNG ``path``; False without matplotlib."""
    from tinylm.lab.report import pyplot, save_png

    plt = pyplot()
    if plt is None:
        return False
    steps = [r for r in records if r.get("event", "step") == "step" and r.get("loss") is not None]
    evals = [r for r in records if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot([r["step"] for r in steps], [r["loss"] for r in steps], color="tab:blue", lw=0.8,
            alpha=0.45, label="training batch loss")
    ax.plot([r["step"] for r in evals], [r["train_loss"] for r in evals], "o-", color="tab:blue",
            label="train loss (evaluation)")
    ax.plot([r["step"] for r in evals], [r["val_loss"] for r in evals], "o-", color="tab:red",
            label="val loss (evaluation)")
    if baseline is not None:
        ax.axhline(baseline, color="tab:gray", ls="--", lw=1, label=f"unigram baseline {baseline:.3f}")
    ax.set(xlabel="step", ylabel="loss (nats per token)", title="training run")
    ax.legend(fontsize=8)
    save_png(plt, fig, path)
    return True
