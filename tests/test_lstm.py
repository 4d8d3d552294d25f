"""The LSTM language model: the op's gradients, the layer contract, generation with a carried
state, and `tinylm train --model lstm` with sample, eval and --resume as a user runs them."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from tinylm import ConfigError, Tensor, set_default_dtype
from tinylm.checkpoint import load_model
from tinylm.cli import cli
from tinylm.generate import RecomputeContext, generate
from tinylm.models import LSTM, LSTMConfig
from tinylm.models.lstm import LSTMLayer, lstm
from tinylm.resources import estimate_inference, estimate_training
from tinylm.testing import check_gradients, check_module
from tinylm.testing import strategies as tst

CFG = LSTMConfig(vocab_size=9, block_size=8, n_layer=2, n_embd=5)
TEXT = "".join(f"{i} little pigs went to market, {i * 3 % 7} came home\n" for i in range(200))
TINY = ["--n-layer", "1", "--n-embd", "16", "--block-size", "16", "--batch-size", "4",
        "--max-iters", "6", "--eval-interval", "3", "--eval-iters", "2", "--warmup-iters", "1"]


def _np_lstm(xw, w_hh, h, c):
    """The LSTM recurrence step by step in plain NumPy: gates [i f g o], σ = 1 / (1 + e^-x)."""
    sigma = lambda a: 1.0 / (1.0 + np.exp(-a))
    H = h.shape[-1]
    hs, cs = [], []
    for t in range(xw.shape[1]):
        a = xw[:, t] + h @ w_hh
        i, f, g, o = sigma(a[:, :H]), sigma(a[:, H:2 * H]), np.tanh(a[:, 2 * H:3 * H]), sigma(a[:, 3 * H:])
        c = f * c + i * g
        h = o * np.tanh(c)
        hs.append(h)
        cs.append(c)
    return np.stack(hs, axis=1), np.stack(cs, axis=1)


@given(st.integers(1, 3), st.integers(1, 6), st.integers(1, 3), st.data())
def test_lstm_is_the_recurrence_step_by_step(B, T, H, data):
    xw, = data.draw(tst.same_shape_arrays(1, (B, T, 4 * H), magnitude=3.0))
    h0, c0 = data.draw(tst.same_shape_arrays(2, (B, H), magnitude=2.0))
    w_hh = data.draw(tst.float_arrays((H, 4 * H), magnitude=1.0))
    for got, want, name in zip(lstm(*map(Tensor, (xw, w_hh, h0, c0))), _np_lstm(xw, w_hh, h0, c0), "hc"):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-10, atol=1e-12, err_msg=name)
    # the gradients of (h, c): the check projects both on random directions
    check_gradients(lstm, xw, w_hh, h0, c0, names=("xw", "w_hh", "h0", "c0"))


def test_lstm_layer_and_model_keep_the_layer_contract():
    x = np.random.default_rng(0).standard_normal((2, 4, 3))
    check_module(lambda: LSTMLayer(3, 4, np.random.default_rng(0)), x, output_shape=(2, 4, 4))
    idx = np.array([[1, 2, 3, 8], [0, 4, 4, 7]])
    check_module(lambda: LSTM(CFG), (idx,), output_shape=(2, 4, 9))


def test_lstm_model_gradients_pass_check_gradients():
    set_default_dtype("float64")
    model = LSTM(LSTMConfig(vocab_size=5, block_size=4, n_layer=2, n_embd=2), seed=3)
    idx = np.array([[1, 2, 0], [4, 4, 3]])
    check_gradients(lambda: model(idx, idx)[1], params=model)


def test_the_parameter_count_is_exact():
    assert LSTM(CFG).num_parameters() == CFG.count_parameters()
    assert estimate_training(CFG, 4).parameters == CFG.count_parameters()
    assert estimate_training(CFG, 8).activation_bytes > estimate_inference(CFG, 8).activation_bytes


def test_the_config_says_what_is_wrong():
    with pytest.raises(ConfigError, match=r"n_embd must be a positive integer, got 0"):
        LSTMConfig(n_embd=0)
    with pytest.raises(ConfigError, match=r"unknown LSTM config field\(s\) \['n_head'\]"):
        LSTMConfig.from_dict({"n_head": 2})


def test_generation_carrying_the_state_equals_recomputing_the_window():
    model = LSTM(CFG, seed=1).eval()
    prompt = [1, 2, 3]
    carried = generate(model, prompt, 20, temperature=0.9, seed=4)  # past block_size: restarts
    recomputed = generate(model, prompt, 20, temperature=0.9, seed=4, context=RecomputeContext)
    assert np.array_equal(carried, recomputed)
    cache = model.new_cache()
    step_logits = [model.forward_step(np.array([[t]]), cache)[0, -1] for t in prompt]
    full, _ = model(np.array([prompt]))
    np.testing.assert_allclose(np.stack(step_logits), full.numpy()[0], rtol=1e-5, atol=1e-6)


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_train_model_lstm_then_sample_eval_and_resume(tmp_path):
    data = tmp_path / "pigs.txt"
    data.write_text(TEXT)
    out = tmp_path / "lstm"
    result = run("train", "--model", "lstm", "--data", data, "--out", out, *TINY)
    assert result.exit_code == 0, result.output
    assert '"n_embd": 16' in result.stderr and "n_head" not in result.stderr
    model, _, ckpt = load_model(out)
    assert isinstance(model, LSTM) and ckpt.model_type == "lstm"

    sampled = run("sample", "--ckpt", out, "--prompt", "3 little", "--num-tokens", "20")
    assert sampled.exit_code == 0, sampled.output
    assert sampled.stdout.startswith("3 little") and len(sampled.stdout) >= len("3 little") + 20

    evaluated = run("eval", "--ckpt", out, "--json", "--batches", "2")
    assert evaluated.exit_code == 0, evaluated.output
    assert 0 < json.loads(evaluated.stdout)["loss"] < 10

    resumed = run("train", "--resume", "--out", out, "--max-iters", "9")
    assert resumed.exit_code == 0, resumed.output
    assert "resuming" in resumed.stderr and "done: 9 steps" in resumed.stdout
    refused = run("train", "--resume", "--out", out, "--max-iters", "12", "--model", "gpt")
    assert refused.exit_code == 2 and "holds a lstm model; drop --model" in refused.stderr


def test_gpt_only_options_are_refused_for_the_lstm(tmp_path):
    result = run("train", "--model", "lstm", "--n-head", "4", "--out", tmp_path / "x")
    assert result.exit_code == 2
    assert result.stderr.strip() == ("error: n_head is not a field of the lstm model (its fields: "
                                     "block_size, dropout, n_embd, n_layer); drop --n-head")
    mlm = run("train", "--model", "lstm", "--objective", "mlm", "--out", tmp_path / "y", *TINY)
    assert mlm.exit_code == 2 and "--model lstm trains next-token prediction only" in mlm.stderr
