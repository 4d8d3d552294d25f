"""Resources: a config that cannot fit is refused before anything is allocated, with the
estimate and what to shrink; out-of-memory errors of any backend become one line."""

import time
import tracemalloc
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import tinylm.run
from reliability import TINY_ARGS, assert_one_line_error, invoke, tiny_run, write_corpus
from tinylm import resources
from tinylm.models import GPT, GPTConfig
from tinylm.optim import clip_grad_norm
from tinylm.train import TrainConfig, new_state


@settings(max_examples=25, deadline=None)
@given(V=st.integers(1, 40), T=st.integers(1, 12), L=st.integers(1, 3), H=st.integers(1, 3),
       D=st.integers(1, 4), bias=st.booleans())
def test_parameter_count_is_exact(V, T, L, H, D, bias):
    cfg = GPTConfig(vocab_size=V, block_size=T, n_layer=L, n_head=H, n_embd=H * D, bias=bias)
    assert resources.count_parameters(V, T, L, H * D, bias) == GPT(cfg).num_parameters()


@pytest.mark.parametrize("B,T,C,L,H,V,dropout", [(8, 32, 32, 2, 2, 64, 0.1), (4, 64, 16, 1, 4, 128, 0.0),
                                                (16, 16, 64, 3, 2, 32, 0.2)])
def test_estimate_is_within_35_percent_of_the_measured_peak(B, T, C, L, H, V, dropout):
    cfg = GPTConfig(vocab_size=V, block_size=T, n_layer=L, n_head=H, n_embd=C, dropout=dropout)
    ids = np.random.default_rng(0).integers(0, V, 4000)
    tracemalloc.start()  # NumPy reports its allocations to tracemalloc
    try:
        base = tracemalloc.get_traced_memory()[0]
        model = GPT(cfg)
        state = new_state(model, ids, TrainConfig(batch_size=B, max_iters=2))
        for _ in range(2):
            x, y = state.sampler.next()
            _, loss = model(x, y)
            state.optimizer.zero_grad()
            loss.backward()
            clip_grad_norm(state.optimizer.params, 1.0)
            state.optimizer.step(1e-3)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    ratio = resources.estimate_training(cfg, B).total / peak
    assert 0.65 < ratio < 1.35, f"estimate / measured = {ratio:.2f}"


def test_meminfo_is_read_in_bytes(tmp_path):
    fake = tmp_path / "meminfo"
    fake.write_text("MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   2048 kB\n")
    assert resources.meminfo_available(str(fake)) == 2048 * 1024
    assert resources.meminfo_available(str(tmp_path / "absent")) is None


def test_a_gpu_reports_its_free_memory_plus_the_pool():
    class Runtime:
        @staticmethod
        def memGetInfo():
            return 3 * 2**30, 80 * 2**30

    class Pool:
        @staticmethod
        def free_bytes():
            return 2**30

    cupy_like = SimpleNamespace(cuda=SimpleNamespace(runtime=Runtime),
                                get_default_memory_pool=lambda: Pool)
    assert resources.available_bytes(SimpleNamespace(xp=cupy_like)) == 4 * 2**30
    assert resources.available_bytes(SimpleNamespace(xp=SimpleNamespace())) is None  # cannot tell
    assert resources.available_bytes(SimpleNamespace(xp=np, memory_available=lambda: 7)) == 7


def test_a_model_far_too_big_is_refused_at_once_with_the_estimate(tmp_path):
    start = time.perf_counter()
    result = invoke("train", "--data", write_corpus(tmp_path), "--out", tmp_path / "run",
                    *TINY_ARGS, "--n-layer", "48", "--n-embd", "16384", "--n-head", "16",
                    "--block-size", "16")
    line = assert_one_line_error(result, "training this model needs about", "GiB",
                                 "parameters", "available; shrink --batch-size")
    assert time.perf_counter() - start < 5, "the model was allocated before the check"
    assert "154" in line or "155" in line  # 154.6k million parameters: 12 L C^2 dominates


def test_refusal_follows_the_available_memory(tmp_path, monkeypatch):
    args = ["train", "--data", write_corpus(tmp_path), "--out", tmp_path / "run", *TINY_ARGS]
    monkeypatch.setattr(resources, "meminfo_available", lambda: 10_240)
    assert_one_line_error(invoke(*args), "only 10.0 KiB is available")
    monkeypatch.setenv("TINYLM_SKIP_MEMORY_CHECK", "1")
    assert invoke(*args).exit_code == 0


def test_resume_is_checked_too(tmp_path, monkeypatch):
    run = tiny_run(tmp_path)
    monkeypatch.setattr(resources, "meminfo_available", lambda: 1000)
    assert_one_line_error(invoke("train", "--resume", "--out", run.out, "--max-iters", "4"),
                          "training this model needs about")


def test_eval_refuses_a_batch_that_cannot_fit(tmp_path):
    run = tiny_run(tmp_path)
    assert_one_line_error(invoke("eval", "--ckpt", run.out, "--batch-size", str(10**12)),
                          "evaluating this model needs about", "shrink --batch-size")


class OutOfMemoryError(Exception):
    """Named like cupy.cuda.memory.OutOfMemoryError (the CLI matches the name)."""


@pytest.mark.parametrize("error", [OutOfMemoryError("Out of memory allocating 8,589,934,592 bytes "
                                                    "(allocated so far: 70,000,000,000 bytes)."),
                                   MemoryError()], ids=["gpu", "host"])
def test_out_of_memory_while_training_is_one_line(tmp_path, monkeypatch, error):
    def exhausted(*args, **kwargs):
        raise error

    monkeypatch.setattr(tinylm.run, "new_state", exhausted)
    result = invoke("train", "--data", write_corpus(tmp_path), "--out", tmp_path / "run", *TINY_ARGS)
    line = assert_one_line_error(result, "out of", "memory", "--batch-size")
    if isinstance(error, OutOfMemoryError):
        assert "out of GPU memory (Out of memory allocating 8,589,934,592 bytes" in line


def test_other_exceptions_are_not_mistaken_for_out_of_memory(tmp_path, monkeypatch):
    monkeypatch.setattr(tinylm.run, "new_state", lambda *a: (_ for _ in ()).throw(RuntimeError("bug")))
    with pytest.raises(RuntimeError, match="bug"):  # a bug keeps its traceback
        invoke("train", "--data", write_corpus(tmp_path), "--out", tmp_path / "run", *TINY_ARGS)
