"""A training run end to end: save -> load gives the same logits; resume gives the same losses."""

import numpy as np
import pytest

from tinylm.checkpoint import load_model
from tinylm.run import new_run, resume_run
from tinylm.train import TrainConfig

TEXT = "".join(f"line {i}: the quick brown fox jumps over the lazy dog {i * 7 % 13}\n"
               for i in range(300))


@pytest.fixture
def corpus_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT)
    return str(path)


MODEL = dict(block_size=16, n_layer=2, n_head=2, n_embd=32, dropout=0.1, bias=True)


def _config(max_iters):
    # the schedule is fixed to 12 steps, so a run stopped at 6 is the first half of one of 12
    return TrainConfig(batch_size=4, max_iters=max_iters, warmup_iters=2, lr_decay_iters=12,
                       eval_interval=5, eval_iters=2, log_interval=1, seed=7)


def _losses(run):
    losses = []
    run.execute(on_event=lambda e: losses.append(e["loss"]) if e["event"] == "step" else None)
    return losses


def test_save_then_load_gives_identical_logits(corpus_file, tmp_path):
    run = new_run(MODEL, _config(5), corpus_file, 0.1, tmp_path / "run")
    run.execute()
    model, tokenizer, _ = load_model(tmp_path / "run")
    x = tokenizer.encode(TEXT[:16])[None, :]
    run.state.model.eval()
    expected, _ = run.state.model(x)
    got, _ = model(x)
    np.testing.assert_array_equal(got.numpy(), expected.numpy())


def test_resumed_run_repeats_the_uninterrupted_losses_exactly(corpus_file, tmp_path):
    straight = _losses(new_run(MODEL, _config(12), corpus_file, 0.1, tmp_path / "a"))

    first = new_run(MODEL, _config(6), corpus_file, 0.1, tmp_path / "b")
    head = _losses(first)
    tail = _losses(resume_run(tmp_path / "b", {"max_iters": 12}))

    assert head + tail == straight  # bitwise: dropout and sampler RNG states resume too
