"""The Numba backend's warm-up: creating the backend compiles (or loads) every kernel a
training step calls, so that no compilation happens inside training.

Run in a fresh process: Numba's compiled kernels live for the life of a process, so
in this one an earlier test may already have compiled what the warm-up missed.
"""

import json
import subprocess
import sys

import pytest

from tinylm import backends

ONE_STEP = r"""
import json
import numba
import numpy as np
from tinylm import backends
from tinylm.models import GPT, GPTConfig
from tinylm.train import TrainConfig, new_state, train

backends.set_backend("numba")  # creates the backend: the warm-up runs here
from tinylm.backends import numba_attention, numba_blas, numba_kernels, numba_math

def compiled():
    # every Numba dispatcher of the kernels' modules -> how many type signatures it holds
    return {f"{module.__name__}.{name}": len(f.signatures)
            for module in (numba_attention, numba_blas, numba_kernels, numba_math) for name, f in vars(module).items()
            if isinstance(f, numba.core.dispatcher.Dispatcher)}

# a 2^20-element embedding: big enough for the parallel AdamW kernel
cfg = GPTConfig(vocab_size=4096, block_size=8, n_layer=1, n_head=2, n_embd=256)
ids = np.random.default_rng(0).integers(0, 4096, 400)
tcfg = TrainConfig(batch_size=2, max_iters=1, eval_interval=1, eval_iters=1, warmup_iters=0)
model = GPT(cfg, seed=0)
before = compiled()
train(new_state(model, ids, tcfg), ids, tcfg)
after = compiled()
print(json.dumps({"largest": max(p.size for p in model.parameters()),
                  "parallel_min": max(numba_kernels.ADAMW_PARALLEL_MIN.values()),
                  "kernels": len(before),
                  "new": {k: after[k] - before[k] for k in after if after[k] != before[k]}}))
"""


def test_the_first_training_step_compiles_nothing(tmp_path):
    ok, reason = backends.availability("numba")
    if not ok:
        pytest.skip(f"numba unavailable: {reason}")
    done = subprocess.run([sys.executable, "-c", ONE_STEP], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["largest"] >= result["parallel_min"]  # the step takes the parallel AdamW path
    assert result["kernels"] >= 10
    assert result["new"] == {}, f"compiled during the first training step: {result['new']}"
