"""The lab: head tools, each experiment's signature in a reduced run, the CLI, and JSON without matplotlib.

The reduced runs are the defaults shrunk to seconds; each asserts the direction of
its signature (the model beats its control), not the full-size thresholds, which
docs/lab/*.md records from real runs.
"""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tinylm.cli import cli
from tinylm.data import Corpus
from tinylm.lab.grokking import GrokkingConfig, modular_addition, run_grokking
from tinylm.lab.heads import ablation_table, attention_patterns, token_losses
from tinylm.lab.hooks import hooked, replacing_heads
from tinylm.lab.induction import (InductionConfig, induction_scores, previous_token_scores,
                                  region_masks, repeated_sequences, run_induction)
from tinylm.lab.scaling import ScalingConfig, fit_power_law, run_scaling
from tinylm.models import GPT, GPTConfig

TEXT = "".join(f"{i} little pigs went to market, {i * 3 % 7} came home\n" for i in range(300))
needs_matplotlib = pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None,
                                      reason="matplotlib is not installed (pip install 'tinylm[plot]'); "
                                             "the PNG figures are not drawn")


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def tiny_gpt(seed=0):
    return GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8), seed=seed).eval()


# --------------------------------------------------------------------------- head tools
def test_attention_patterns_are_causal_distributions(backend):
    idx = np.random.default_rng(0).integers(0, 11, size=(3, 8))
    patterns = attention_patterns(tiny_gpt(), idx)
    assert len(patterns) == 2 and patterns[0].shape == (3, 2, 8, 8)
    for p in patterns:
        np.testing.assert_allclose(p.sum(axis=-1), 1.0, rtol=1e-5)
        assert np.all(np.triu(p, k=1) == 0)


def test_a_hook_keeping_every_head_changes_nothing_and_zero_ablation_does():
    model = tiny_gpt()
    x = np.random.default_rng(1).integers(0, 11, size=(2, 8))
    before = model(x)[0].numpy()
    attn = model.blocks[1].attn
    with hooked([attn], [replacing_heads(np.ones((2, 1), np.float32), np.zeros((2, 4), np.float32))]):
        np.testing.assert_array_equal(model(x)[0].numpy(), before)
    second_head_off = np.array([[1.0], [0.0]], np.float32)
    with hooked([attn], [replacing_heads(second_head_off, np.zeros((2, 4), np.float32))]):
        assert np.abs(model(x)[0].numpy() - before).max() > 1e-6
    assert attn.hook is None
    np.testing.assert_array_equal(model(x)[0].numpy(), before)


def test_the_recorded_pattern_is_the_reference_softmax_and_the_hook_goes_even_on_error():
    model = tiny_gpt()
    idx = np.random.default_rng(3).integers(0, 11, size=(1, 8))
    attn, seen = model.blocks[0].attn, []
    with hooked([attn], [lambda qkv, y: seen.append(qkv.numpy()) or y]):
        model(idx)
    q, k, _ = seen[0].reshape(1, 8, 3, 2, 4).transpose(2, 0, 3, 1, 4)   # (B, H, T, D)
    s = q @ k.swapaxes(-1, -2) / 2.0 + np.triu(np.full((8, 8), -np.inf), 1)
    want = np.exp(s - s.max(-1, keepdims=True))
    np.testing.assert_allclose(attention_patterns(model, idx)[0], want / want.sum(-1, keepdims=True),
                               rtol=1e-5, atol=1e-7)
    with pytest.raises(RuntimeError), hooked([attn], [_failing_hook]):
        model(idx)
    assert attn.hook is None


def _failing_hook(qkv, y):
    raise RuntimeError("a failing hook")


@pytest.mark.parametrize("mode", ["zero", "mean"])
def test_ablation_table_has_one_entry_per_head_and_restores_the_model(mode):
    model = tiny_gpt()
    rng = np.random.default_rng(2)
    batches = [(rng.integers(0, 11, size=(4, 8)), rng.integers(0, 11, size=(4, 8))) for _ in range(2)]
    base = float(np.mean([token_losses(model, x, y).mean() for x, y in batches]))
    table = ablation_table(model, batches, mode)
    assert table["delta"].shape == (2, 2) and np.any(table["delta"] != 0)
    assert table["base_loss"] == pytest.approx(base)
    assert all(b.attn.hook is None for b in model.blocks)


# --------------------------------------------------------------------------- induction
def test_repeated_sequences_copy_a_span_and_the_masks_find_it():
    x, y, start, copy_len = repeated_sequences(np.random.default_rng(0), 50, 20, 30, 2, 10)
    random, copied = region_masks(20, start, copy_len)
    b, t = np.nonzero(copied)
    assert np.all(x[b, t] == x[b, t - copy_len[b]])          # the current token occurred L back
    assert np.all(y[b, t] == x[b, t - copy_len[b] + 1])      # and the answer followed it
    assert not np.any(random & copied)
    perfect = np.zeros((50, 1, 20, 20))
    perfect[b, 0, t, t - copy_len[b] + 1] = 1.0
    assert induction_scores([perfect], start, copy_len)[0, 0] == pytest.approx(1.0)
    previous = np.zeros((2, 1, 20, 20))
    previous[:, 0, np.arange(1, 20), np.arange(19)] = 1.0
    assert previous_token_scores([previous])[0, 0] == pytest.approx(1.0)


def test_reduced_induction_run_copies_only_with_two_layers():
    cfg = InductionConfig(n_head=2, n_embd=32, vocab_size=32, seq_len=24, max_copy=12,
                          learning_rate=1e-3, max_iters=1000, cooldown_iters=200, eval_interval=100,
                          eval_size=64)
    results = run_induction(cfg)
    sig = results["signature"]
    assert sig["copied_over_random"] < sig["control_copied_over_random"] - 0.2
    control_scores = results["runs"]["control"]["history"][-1]["induction_scores"]
    assert sig["best_induction_score"] > max(control_scores[-1]) + 0.2


# --------------------------------------------------------------------------- grokking
def test_modular_addition_covers_every_pair_once():
    (xt, yt), (xv, yv) = modular_addition(7, 0.4, seed=0)
    pairs = {tuple(r) for r in np.concatenate([xt, xv])[:, :2]}
    assert len(pairs) == 49 and len(xt) == round(0.4 * 49)
    assert np.all(np.concatenate([yt, yv])[:, 2] == np.concatenate([xt, xv])[:, :2].sum(1) % 7)


def test_reduced_grokking_generalises_late_and_only_with_weight_decay():
    cfg = GrokkingConfig(p=31, train_fraction=0.4, n_embd=32, max_iters=700, eval_interval=20)
    sig = run_grokking(cfg)["signature"]
    assert sig["train_99_step"] is not None and sig["val_95_step"] is not None
    assert sig["val_95_step"] >= 2 * sig["train_99_step"]
    assert sig["control_best_val_acc"] < 0.8 * sig["final_val_acc"]


# --------------------------------------------------------------------------- scaling
def test_power_law_fit_recovers_its_parameters():
    n = np.array([1e3, 3e3, 1e4, 3e4, 1e5])
    fit = fit_power_law(n, 5.0 * n ** -0.3 + 1.2)
    assert fit["alpha"] == pytest.approx(0.3, rel=0.02) and fit["c"] == pytest.approx(1.2, abs=0.01)
    assert fit["r2"] > 0.9999


def test_reduced_scaling_run_loss_falls_with_size():
    cfg = ScalingConfig(block_size=16, batch_size=8, max_iters=120, warmup_iters=10, eval_iters=8)
    ladder = (("a", 1, 1, 4), ("b", 1, 2, 16), ("c", 2, 2, 32))
    results = run_scaling(cfg, Corpus(TEXT, "pigs"), ladder)
    losses = [r["val_loss"] for r in results["models"]]
    assert losses[0] > losses[-1]
    assert results["models"][-1]["params"] > 30 * results["models"][0]["params"]


# --------------------------------------------------------------------------- CLI
TINY_TRAIN = ["--n-layer", "2", "--n-head", "2", "--n-embd", "16", "--block-size", "16",
              "--batch-size", "4", "--max-iters", "4", "--eval-interval", "4", "--eval-iters", "1",
              "--warmup-iters", "1"]
TINY_LAB = {
    "induction": ["--n-head", "2", "--n-embd", "16", "--vocab-size", "16", "--seq-len", "12",
                  "--max-copy", "6", "--batch-size", "4", "--max-iters", "4", "--eval-interval", "2",
                  "--eval-size", "4", "--cooldown-iters", "1"],
    "grokking": ["--p", "7", "--n-embd", "16", "--max-iters", "4", "--eval-interval", "2"],
    "scaling": ["--sizes", "3", "--block-size", "8", "--batch-size", "2", "--max-iters", "2",
                "--warmup-iters", "1", "--eval-iters", "1"],
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("lab")
    (root / "pigs.txt").write_text(TEXT)
    result = run("train", "--data", root / "pigs.txt", "--out", root / "run", *TINY_TRAIN)
    assert result.exit_code == 0, result.output
    return root


@needs_matplotlib
def test_inspect_attention_writes_the_patterns_and_a_grid(checkpoint, tmp_path):
    result = run("inspect", "attention", "--ckpt", checkpoint / "run", "--prompt", "3 little pigs",
                 "--out", tmp_path)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "results.json").read_text())
    assert report["tokens"] == list("3 little pigs")
    assert np.array(report["patterns"]).shape == (2, 2, 13, 13)
    assert (tmp_path / "attention.png").stat().st_size > 0


@needs_matplotlib
@pytest.mark.parametrize("mode", ["zero", "mean"])
def test_inspect_ablate_prints_a_layer_by_head_table(checkpoint, tmp_path, mode):
    result = run("inspect", "ablate", "--ckpt", checkpoint / "run", "--mode", mode, "--batches", "2",
                 "--batch-size", "4", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "results.json").read_text())
    assert np.array(report["delta"]).shape == (2, 2) and report["mode"] == mode
    assert "head 2" in result.stdout and (tmp_path / "ablation.png").exists()


@needs_matplotlib
@pytest.mark.parametrize("experiment", sorted(TINY_LAB))
def test_lab_command_writes_results_and_a_plot(experiment, tmp_path):
    result = run("lab", experiment, "--out", tmp_path, "--seed", "1", *TINY_LAB[experiment])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "results.json").read_text())
    assert report["experiment"] == experiment and "holds" in report["signature"]
    assert (tmp_path / f"{experiment}.png").exists()
    assert "signature" in result.stdout and len(result.stderr.splitlines()) >= 2  # progress shown


@pytest.mark.parametrize("experiment", sorted(TINY_LAB))
def test_lab_command_runs_on_every_backend(experiment, backend, tmp_path):
    result = run("lab", experiment, "--out", tmp_path, "--backend", backend.name, *TINY_LAB[experiment])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "results.json").read_text())
    assert report["backend"] == backend.name and "holds" in report["signature"]


def test_inspect_and_lab_write_under_runs_by_default(checkpoint):
    """Without --out, the commands write into runs/ (which .gitignore covers), nothing else."""
    assert run("inspect", "attention", "--ckpt", checkpoint / "run", "--prompt", "3 pigs").exit_code == 0
    assert run("lab", "grokking", *TINY_LAB["grokking"]).exit_code == 0
    cwd = Path.cwd()
    assert [p.name for p in cwd.iterdir()] == ["runs"]
    for folder in ("inspect/attention", "lab/grokking"):
        assert (cwd / "runs" / folder / "results.json").is_file()
    ignored = (Path(__file__).resolve().parents[1] / ".gitignore").read_text().split()
    assert "/runs/" in ignored and "/out/" in ignored


def test_lab_runs_are_seeded(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        assert run("lab", "grokking", "--out", out, *TINY_LAB["grokking"]).exit_code == 0
    history = [json.loads((d / "results.json").read_text())["runs"] for d in (a, b)]
    assert history[0] == history[1]


def test_without_matplotlib_the_json_is_still_written(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    result = run("lab", "grokking", "--out", tmp_path, *TINY_LAB["grokking"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "results.json").read_text())["experiment"] == "grokking"
    assert not list(tmp_path.glob("*.png"))
    assert "pip install 'tinylm[plot]'" in result.stderr


@pytest.mark.parametrize("args, fragment", [
    (["lab", "induction", "--max-copy", "40"], "max_copy"),
    (["lab", "grokking", "--train-fraction", "1.5"], "train_fraction"),
    (["lab", "scaling", "--sizes", "12"], "--sizes"),
    (["inspect", "ablate", "--ckpt", "/nonexistent/run"], "no checkpoint"),
])
def test_lab_bad_input_is_one_line(args, fragment):
    result = run(*args)
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.stderr


@pytest.mark.parametrize("command", [["lab", "induction"], ["lab", "grokking"], ["lab", "scaling"],
                                     ["inspect", "attention"], ["inspect", "ablate"]])
def test_lab_help_has_an_example(command):
    result = run(*command, "--help")
    assert result.exit_code == 0 and "Example" in result.output


# --------------------------------------------------------------------------- the LSTM control
def test_the_lstm_control_has_about_the_models_parameter_count():
    from tinylm.lab.induction import attention_model, lstm_control
    cfg = InductionConfig()
    n_model = attention_model(cfg, cfg.n_layer).num_parameters()
    assert abs(lstm_control(cfg, n_model).num_parameters() - n_model) < 0.02 * n_model


@needs_matplotlib
def test_lab_induction_with_the_lstm_control(tmp_path):
    result = run("lab", "induction", "--control", "lstm", "--out", tmp_path, *TINY_LAB["induction"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "results.json").read_text())
    control = report["runs"]["control"]
    assert control["label"].startswith("LSTM (hidden ") and "copied_loss" in control["history"][-1]
    assert "LSTM (hidden" in result.stdout and (tmp_path / "induction.png").exists()
    bad = run("lab", "induction", "--control", "gru")
    assert bad.exit_code != 0 and bad.stderr.strip() == \
        "error: control must be one of attention, lstm, got 'gru'"
