"""bench/gpu.py runs end to end on the CPU (its smoke mode) and refuses clearly without a GPU.

The GPU measurements themselves need a GPU session (bench/gpu_session.sh); this
checks the script's plumbing: one process per measurement, both models built
from the same weights, the JSON and the markdown table.
"""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tinylm import backends

BENCH = Path(__file__).resolve().parents[1] / "bench"


def bench(*args, cwd, script="gpu.py"):
    return subprocess.run([sys.executable, str(BENCH / script), *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="PyTorch not installed (pip install torch)")
def test_cpu_smoke_mode_measures_both_sides_and_writes_the_table(tmp_path):
    result = bench("--device", "cpu", "--tiny", "--steps", 1, "--warmup", 0,
                   "--sides", "tinylm-fp32,torch-fp32", "--out", tmp_path / "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [(r["config"], r["side"]) for r in report["rows"]] == [("tiny", "tinylm-fp32"), ("tiny", "torch-fp32")]
    for row in report["rows"]:
        assert "error" not in row, row
        assert row["ms_per_iter"] > 0 and row["tokens_per_s"] > 0
    assert set(report["rows"][0]["phases_ms"]) == {"forward", "backward", "clip", "adamw"}
    table = (tmp_path / "out" / "results.md").read_text()
    assert "| tiny | torch-fp32 |" in table and report["device"] in table and "tiny tinylm-fp32: forward" in table


@pytest.mark.skipif(backends.availability("cupy")[0], reason="a GPU is present")
@pytest.mark.parametrize("script", ["gpu.py", "gpu_attention.py", "gpu_graph_probe.py"])
def test_without_a_gpu_it_says_so_in_one_line(tmp_path, script):
    args = () if script == "gpu_graph_probe.py" else ("--out", tmp_path / "out")
    result = bench(*args, cwd=tmp_path, script=script)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: bench/{script} needs an NVIDIA GPU: "), result.stderr
    assert not (tmp_path / "out").exists()
