"""What a run leaves beside its checkpoint (metrics.jsonl, loss.png, `tinylm history`), the log
interval of a piped run, and a run that resumes from another directory or after being moved."""

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from tinylm.cli import cli
from tinylm.metrics import METRICS_FILE, PLOT_FILE, read_metrics
from tinylm.run import new_run, resume_run
from tinylm.train import TrainConfig

TEXT = "".join(f"line {i}: the quick brown fox jumps over the lazy dog {i * 7 % 13}\n"
               for i in range(300))
MODEL = dict(block_size=16, n_layer=1, n_head=2, n_embd=16, dropout=0.0, bias=True)
TINY = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16",
        "--batch-size", "4", "--warmup-iters", "1", "--eval-iters", "2"]
has_matplotlib = importlib.util.find_spec("matplotlib") is not None
needs_matplotlib = pytest.mark.skipif(not has_matplotlib, reason="matplotlib is not installed "
                                      "(pip install 'tinylm[plot]'); loss.png is not drawn")


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _config(max_iters):
    return TrainConfig(batch_size=4, max_iters=max_iters, warmup_iters=2, lr_decay_iters=12,
                       eval_interval=4, eval_iters=2, log_interval=3, seed=7)


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT)
    return str(path)


def _steps(records):
    return [(r["event"], r["step"]) for r in records]


def test_metrics_hold_every_logged_step_and_every_evaluation(corpus, tmp_path):
    run_ = new_run(MODEL, _config(10), corpus, 0.1, tmp_path / "run")
    run_.execute()
    records = read_metrics(tmp_path / "run")
    assert _steps(records) == [("step", 3), ("eval", 4), ("step", 6), ("eval", 8), ("step", 9),
                               ("step", 10), ("eval", 10)]
    assert set(records[0]) == {"event", "step", "loss", "lr", "ms_per_iter", "tokens_per_s"}
    evals = [(r["step"], r["train_loss"], r["val_loss"]) for r in records if r["event"] == "eval"]
    assert evals == [tuple(h) for h in run_.state.history]  # the same numbers as the checkpoint's
    assert (tmp_path / "run" / PLOT_FILE).exists() == has_matplotlib


def test_a_resumed_run_continues_the_record_without_repeating_a_step(corpus, tmp_path):
    straight = new_run(MODEL, _config(12), corpus, 0.1, tmp_path / "a")
    straight.execute()
    first = new_run(MODEL, _config(6), corpus, 0.1, tmp_path / "b")
    first.execute()
    # a run that went on past its last checkpoint (step 6) and then crashed left records behind
    with open(tmp_path / "b" / METRICS_FILE, "a") as fh:
        fh.write(json.dumps({"event": "step", "step": 7, "loss": 9.0, "lr": 0.0, "ms_per_iter": 1.0,
                             "tokens_per_s": 1.0}) + "\n" + '{"event": "st')  # cut mid-line
    resume_run(tmp_path / "b", {"max_iters": 12}).execute()
    resumed = read_metrics(tmp_path / "b")
    expected = read_metrics(tmp_path / "a")
    # the uninterrupted record, plus the evaluation the first run made at its last step (6)
    assert _steps(expected) == [("step", 3), ("eval", 4), ("step", 6), ("eval", 8), ("step", 9),
                                ("step", 12), ("eval", 12)]
    assert _steps(resumed) == [("step", 3), ("eval", 4), ("step", 6), ("eval", 6), ("eval", 8),
                               ("step", 9), ("step", 12), ("eval", 12)]
    losses = [(r["step"], r["loss"]) for r in resumed if r["event"] == "step"]
    assert losses == [(r["step"], r["loss"]) for r in expected if r["event"] == "step"]


def test_a_piped_run_logs_every_log_interval_steps(tmp_path):
    (tmp_path / "d.txt").write_text(TEXT)
    result = run("train", "--data", tmp_path / "d.txt", "--out", tmp_path / "run", *TINY,
                 "--max-iters", "20", "--eval-interval", "10", "--log-interval", "5")
    assert result.exit_code == 0, result.output
    logged = [line.split()[1] for line in result.stderr.splitlines() if line.startswith("step ") and "|" in line]
    assert logged == ["5/20", "10/20", "15/20", "20/20"]
    assert (tmp_path / "run" / METRICS_FILE).is_file()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("record")
    (root / "d.txt").write_text(TEXT)
    result = run("train", "--data", root / "d.txt", "--out", root / "run", *TINY, "--max-iters", "8",
                 "--eval-interval", "4", "--log-interval", "2")
    assert result.exit_code == 0, result.output
    return root / "run"


def test_history_prints_the_evaluations_and_the_logged_steps(trained):
    report = json.loads(run("history", "--ckpt", trained, "--json").stdout)
    assert [e["step"] for e in report["evaluations"]] == [4, 8]
    assert [s["step"] for s in report["steps"]] == [2, 4, 6, 8]
    assert report["unigram_baseline"] > 0
    text = run("history", "--ckpt", trained).stdout
    assert f"{report['evaluations'][1]['val_loss']:.4f}" in text and "4 logged steps" in text


@needs_matplotlib
def test_history_plots_a_run_later(trained, tmp_path):
    result = run("history", "--ckpt", trained, "--plot", tmp_path / "loss.png")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "loss.png").read_bytes().startswith(b"\x89PNG")


def test_history_without_matplotlib_says_how_to_get_it(trained, tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)
    result = run("history", "--ckpt", trained, "--plot", tmp_path / "loss.png")
    assert result.exit_code == 1 and "pip install 'tinylm[plot]'" in result.stderr
    assert not (tmp_path / "loss.png").exists()


# --------------------------------------------------------------------------- portable runs
def _train_in(directory: Path):
    """`tinylm train --data d.txt --out run` from inside ``directory`` (a relative data path)."""
    (directory / "d.txt").write_text(TEXT)
    result = run("train", "--data", "d.txt", "--out", directory / "run", *TINY, "--max-iters", "4",
                 "--eval-interval", "2")
    assert result.exit_code == 0, result.output


def test_resume_works_from_another_working_directory(tmp_path, monkeypatch):
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    _train_in(project)
    monkeypatch.chdir(tmp_path)
    result = run("train", "--resume", "--out", project / "run", "--max-iters", "6")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("done: 6 steps")


def test_a_moved_run_finds_its_data_beside_it(tmp_path, monkeypatch):
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    monkeypatch.chdir(old)
    _train_in(old)
    shutil.move(old, new)  # the absolute path is gone; the data is where it was relative to the run
    result = run("train", "--resume", "--out", new / "run", "--max-iters", "6")
    assert result.exit_code == 0, result.output
    assert run("eval", "--ckpt", new / "run", "--batches", "1").exit_code == 0


def test_missing_data_on_resume_is_one_line_naming_the_path_and_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _train_in(tmp_path)
    (tmp_path / "d.txt").unlink()
    result = run("train", "--resume", "--out", tmp_path / "run", "--max-iters", "6")
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1, result.stderr
    assert str(tmp_path / "d.txt") in lines[0] and "--data" in lines[0]
