"""Exact resume and determinism: stopping at any step and resuming changes nothing, bit for bit."""

import platform

import numpy as np
import pytest

import tinylm
from reliability import TINY_ARGS, invoke, same_arrays, write_corpus
from tinylm.checkpoint import load_checkpoint, optimizer_state
from tinylm.run import new_run, resume_run
from tinylm.train import TrainConfig

MODEL = dict(n_layer=2, n_head=2, n_embd=16, block_size=8, dropout=0.2, bias=True)
STEPS = 9


def _config(**overrides):
    # eval every 4 steps: resumes start from checkpoints saved at an evaluation and between them
    return TrainConfig(**{**dict(batch_size=3, max_iters=STEPS, warmup_iters=3, eval_interval=4,
                                 eval_iters=1, log_interval=1, seed=11), **overrides})


def _train(run, stop_at=None):
    """Execute ``run`` (stopping after ``stop_at`` steps if given); returns {step: loss}."""
    losses = {}
    run.execute(on_event=lambda e: losses.update({e["step"]: e["loss"]}) if e["event"] == "step" else None,
                stop_requested=(lambda: run.state.step >= stop_at) if stop_at else (lambda: False))
    return losses


def _everything(run) -> dict:
    """Every array and number the run's future depends on."""
    opt_arrays, opt_scalars = optimizer_state(run.state.optimizer)
    return {"weights": run.state.model.state_dict(), "moments": opt_arrays, "optim": opt_scalars,
            "sampler": run.state.sampler.state(), "step": run.state.step,
            "history": run.state.history, "dropout": tinylm.backends.current().rng_state()}


def _assert_same(a: dict, b: dict, where: str):
    assert same_arrays(a["weights"], b["weights"]), f"{where}: weights differ"
    assert same_arrays(a["moments"], b["moments"]), f"{where}: AdamW moments differ"
    for key in ("optim", "sampler", "step", "history", "dropout"):
        assert a[key] == b[key], f"{where}: {key} differs"


@pytest.mark.parametrize("overrides", [{}, {"grad_accum": 2, "grad_clip": 0.0}],
                         ids=["dropout", "grad-accum-no-clip"])
def test_stopping_at_any_step_and_resuming_is_bitwise_the_uninterrupted_run(tmp_path, overrides):
    data = str(write_corpus(tmp_path))
    straight = new_run(MODEL, _config(**overrides), data, 0.1, tmp_path / "straight")
    straight_losses = _train(straight)
    reference = _everything(straight)
    for k in range(1, STEPS):
        first = new_run(MODEL, _config(**overrides), data, 0.1, tmp_path / f"stop{k}")
        _train(first, stop_at=k)
        assert load_checkpoint(first.out).train["step"] == k
        resumed = resume_run(first.out, {})
        assert resumed.state.step == k
        losses = _train(resumed)
        assert losses == {s: v for s, v in straight_losses.items() if s > k}, f"resumed at {k}"
        _assert_same(_everything(resumed), reference, f"resumed at step {k}")


def test_resuming_twice_in_a_row_is_still_exact(tmp_path):
    data = str(write_corpus(tmp_path))
    straight = new_run(MODEL, _config(), data, 0.1, tmp_path / "straight")
    _train(straight)
    run = new_run(MODEL, _config(), data, 0.1, tmp_path / "hops")
    _train(run, stop_at=2)
    for stop in (5, 7, None):
        run = resume_run(tmp_path / "hops", {})
        _train(run, stop_at=stop)
    _assert_same(_everything(run), _everything(straight), "after three resumes")


def test_same_seed_same_losses_other_seed_other_losses(tmp_path):
    data = str(write_corpus(tmp_path))
    runs = [_train(new_run(MODEL, _config(seed=seed), data, 0.1, tmp_path / f"r{i}"))
            for i, seed in enumerate((5, 5, 6))]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_train_records_seed_versions_and_backend(tmp_path):
    out = tmp_path / "run"
    result = invoke("train", "--data", write_corpus(tmp_path), "--out", out, "--seed", "42",
                    *TINY_ARGS)
    assert result.exit_code == 0, result.output
    ck = load_checkpoint(out)
    assert ck.info["seed"] == 42 and ck.train["config"]["seed"] == 42
    assert ck.info["backend"] == "numpy"
    assert ck.info["tinylm"] == tinylm.__version__
    assert ck.info["numpy"] == np.__version__
    assert ck.info["python"] == platform.python_version()


def test_resume_on_every_backend(backend, tmp_path):
    """Bitwise on the host backends (NumPy, Numba); on a GPU within float32 rounding, and
    without dropout, whose CuPy generator state cannot be saved (docs/reliability.md)."""
    exact = backend.xp is np
    model = MODEL if exact else {**MODEL, "dropout": 0.0}
    data = str(write_corpus(tmp_path))
    straight = new_run(model, _config(), data, 0.1, tmp_path / "straight")
    _train(straight)
    reference = straight.state.model.state_dict()
    for k in (3, 6):
        first = new_run(model, _config(), data, 0.1, tmp_path / f"stop{k}")
        _train(first, stop_at=k)
        resumed = resume_run(first.out, {})
        _train(resumed)
        weights = resumed.state.model.state_dict()
        if exact:
            assert same_arrays(weights, reference), f"{backend.name}: resumed at {k}"
        else:
            for name, w in weights.items():
                np.testing.assert_allclose(w, reference[name], rtol=1e-4, atol=1e-6, err_msg=name)
