"""Divergence: a NaN or inf stops the run in one line naming the step and the parameter,
and the last good checkpoint stays; no checkpoint is ever written from a non-finite state."""

import warnings

import numpy as np
import pytest

import tinylm.train
from reliability import assert_one_line_error, invoke, write_corpus
from tinylm.checkpoint import FILENAME, load_checkpoint
from tinylm.divergence import DivergenceWatch
from tinylm.optim import clip_grad_norm

ARGS = ["--n-layer", "1", "--n-head", "2", "--n-embd", "8", "--block-size", "8",
        "--batch-size", "2", "--eval-iters", "1", "--warmup-iters", "0", "--max-iters", "12"]


def _run(tmp_path, *extra):
    out = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # NumPy's overflow warnings would be noise
        result = invoke("train", "--data", write_corpus(tmp_path), "--out", out, *ARGS, *extra)
    return result, out


def _poison_by_name(monkeypatch, step: int, name: str):
    """At optimizer step ``step``, parameter ``name`` gets a NaN gradient (as an overflow would)."""
    calls = {"n": 0}
    original_record = DivergenceWatch.record

    def record(self, at_step, lr, loss, grad_norm):
        calls["n"] += 1
        if calls["n"] == step:
            param = dict(self.model.named_parameters())[name]
            param.grad = param.grad * np.float32("nan")
            grad_norm = clip_grad_norm(self.model.parameters(), 0.0)
        return original_record(self, at_step, lr, loss, grad_norm)

    monkeypatch.setattr(DivergenceWatch, "record", record)


def test_a_nan_gradient_stops_at_its_step_naming_the_parameter(tmp_path, monkeypatch):
    _poison_by_name(monkeypatch, 7, "blocks.0.mlp.c_fc.weight")
    result, out = _run(tmp_path, "--eval-interval", "3")
    assert_one_line_error(result, "training diverged at step 7", "gradient norm nan",
                          "first non-finite: gradient of blocks.0.mlp.c_fc.weight",
                          "--learning-rate", "last good checkpoint (step 6)", "intact")
    ck = load_checkpoint(out)
    assert ck.train["step"] == 6
    assert all(np.isfinite(w).all() for w in ck.weights.values())


def test_a_nan_loss_is_reported_with_a_remedy(tmp_path, monkeypatch):
    original = tinylm.train.DivergenceWatch.record

    def record(self, step, lr, loss, grad_norm):
        return original(self, step, lr, loss * np.float32("nan") if step == 2 else loss, grad_norm)

    monkeypatch.setattr(DivergenceWatch, "record", record)
    result, out = _run(tmp_path, "--eval-interval", "5", "--grad-clip", "0")
    assert_one_line_error(result, "training diverged at step 2: loss nan", "--grad-clip 1.0",
                          "no checkpoint of this run was written")
    assert not (out / FILENAME).exists()


def test_on_a_device_the_check_waits_for_the_sync_but_never_saves_a_bad_state(tmp_path, monkeypatch):
    """With on_host False (a GPU), a bad step 4 is found at the next sync: the eval at step 6."""
    original_init = DivergenceWatch.__init__

    def init(self, *args):
        original_init(self, *args)
        self.on_host = False

    monkeypatch.setattr(DivergenceWatch, "__init__", init)
    _poison_by_name(monkeypatch, 4, "ln_f.weight")
    result, out = _run(tmp_path, "--eval-interval", "3", "--log-interval", "100")
    line = assert_one_line_error(result, "training diverged at step 4", "(step 3)", "intact")
    assert "first non-finite: parameter" in line  # by the sync the bad update has been applied
    ck = load_checkpoint(out)
    assert ck.train["step"] == 3 and all(np.isfinite(w).all() for w in ck.weights.values())


def test_a_huge_learning_rate_diverges_cleanly(tmp_path):
    result, out = _run(tmp_path, "--learning-rate", "1e6", "--min-lr", "0", "--grad-clip", "0",
                       "--eval-interval", "2", "--max-iters", "40")
    line = assert_one_line_error(result, "training diverged at step", "lower --learning-rate")
    if (out / FILENAME).exists():  # whatever was saved before is finite and loads
        ck = load_checkpoint(out)
        assert all(np.isfinite(w).all() for w in ck.weights.values()), line
