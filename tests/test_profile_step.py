"""bench/profile_step.py runs end to end: the op table and the fused kernels inside it."""

import subprocess
import sys
from pathlib import Path

import pytest

from tinylm import backends

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "profile_step.py"


@pytest.mark.parametrize("name", ["numpy", "numba"])
def test_profile_splits_the_step_into_ops_and_kernels(name, tmp_path):
    ok, reason = backends.availability(name)
    if not ok:
        pytest.skip(f"{name} unavailable: {reason}")
    done = subprocess.run([sys.executable, str(SCRIPT), "--backends", name, "--steps", "2", "--warmup", "1"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert f"\n{name}: " in out and "causal_self_attention" in out and "linear" in out
    kernels = out.split("fused kernels", 1)[1].splitlines()[1:]
    times = {line.split()[0]: float(line.split()[-1]) for line in kernels if line.startswith("    ")}
    # every kernel a GPT step calls, once per layer or per norm, each with a measured time
    assert {"attention_forward", "attention_backward", "layernorm_forward", "gelu_backward",
            "softmax_xent_forward", "adamw_update_many"} <= set(times)
    assert all(t > 0 for t in times.values())
    assert "adamw_update" not in times  # the reference's per-tensor calls count in adamw_update_many
