"""RMSNorm and rotary positions: proven with the toolkit as docs/testing.md teaches, then chosen
in a GPT's config (norm, pos_encoding), trained, cached, saved and refused where GPT-2 cannot go."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from tinylm import ConfigError, Tensor, kvcache
from tinylm.checkpoint import Checkpoint, build_model, load_model
from tinylm.cli import cli
from tinylm.models import GPT, EncoderConfig, GPTConfig
from tinylm.models.llama import RMSNorm, Rotary, rms_norm, rotary_qk, rotary_tables
from tinylm.models.sizes import gpt_parameters
from tinylm.testing import (check_backend_parity, check_batch_independent, check_causal,
                            check_gradients, check_module, check_permutation_equivariant)
from tinylm.testing import strategies as tst

x = np.random.default_rng(0).standard_normal((2, 5, 8))
qkv = np.random.default_rng(1).standard_normal((2, 5, 3 * 8))    # two heads of 4


# ---- RMSNorm ----------------------------------------------------------------------------------

def test_rms_norm_keeps_the_layer_contract():
    check_module(lambda: RMSNorm(8), x, output_shape=lambda shape: shape)


def test_rms_norm_is_position_wise():
    check_causal(RMSNorm(8), x)
    check_batch_independent(RMSNorm(8), x)


def test_rms_norm_on_every_backend():
    print(check_backend_parity(lambda: RMSNorm(8), (x,)))


@given(tst.float_arrays(st.tuples(st.integers(1, 3), st.integers(1, 4), st.just(6)), magnitude=10.0),
       tst.float_arrays((6,), magnitude=2.0))
def test_rms_norm_gradients(x, w):
    check_gradients(rms_norm, x, w)


# ---- rotary positions ------------------------------------------------------------------------

def rotary():
    return Rotary(head_dim=4, block_size=8)


def test_rotary_keeps_the_layer_contract_and_is_causal():
    check_module(lambda: _Heads2(rotary()), qkv, output_shape=lambda shape: shape)
    check_causal(_Heads2(rotary()), qkv)
    check_batch_independent(_Heads2(rotary()), qkv)


def test_rotary_on_every_backend():
    print(check_backend_parity(lambda: _Heads2(rotary()), (qkv,)))


@given(st.integers(1, 3), st.integers(1, 8), st.integers(1, 3), st.sampled_from([2, 4, 6]), st.data())
def test_rotary_gradients(B, T, H, D, data):
    cos, sin = rotary_tables(8, D)
    qkv, = data.draw(tst.same_shape_arrays(1, (B, T, 3 * H * D), magnitude=3.0))
    check_gradients(lambda a: rotary_qk(a, H, cos, sin), qkv)


def test_rotary_positions_are_relative_and_not_permutation_equivariant():
    """q_m · k_n after the rotation depends on m − n only; a plain attention layer's would not move."""
    out = _Heads2(rotary())(Tensor(np.tile(qkv[:, :1], (1, 5, 1)))).numpy()  # the same token at 5 places
    q, k = out[0, :, :4], out[0, :, 8:12]                                  # head 0's q and k, (T, 4)
    scores = q @ k.T                                                       # (T, T)
    for offset in range(-4, 5):
        diagonal = np.diagonal(scores, offset)
        np.testing.assert_allclose(diagonal, diagonal[0], rtol=1e-5, atol=1e-6)
    with pytest.raises(AssertionError):
        check_permutation_equivariant(_Heads2(rotary()), qkv)


class _Heads2(Rotary.__mro__[1]):  # a Module applying a Rotary to two heads
    def __init__(self, rot):
        self.rot = rot

    def forward(self, a):
        return self.rot(a, 2)


# ---- in the GPT ------------------------------------------------------------------------------

LLAMA = dict(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8, norm="rmsnorm",
             pos_encoding="rope")


def test_the_config_validates_the_choices():
    with pytest.raises(ConfigError, match=r"norm must be one of layernorm, rmsnorm, got 'batchnorm'"):
        GPTConfig(norm="batchnorm")
    with pytest.raises(ConfigError, match=r"pos_encoding must be one of learned, rope, got 'alibi'"):
        GPTConfig(pos_encoding="alibi")
    with pytest.raises(ConfigError, match=r"head size n_embd / n_head = 3 must be even"):
        GPTConfig(n_embd=6, n_head=2, pos_encoding="rope")
    with pytest.raises(ConfigError, match=r"the encoder has LayerNorm and learned positions only"):
        EncoderConfig(norm="rmsnorm")


@pytest.mark.parametrize("norm, pos", [("rmsnorm", "rope"), ("rmsnorm", "learned"), ("layernorm", "rope")])
def test_a_gpt_with_each_choice_keeps_the_contract_and_its_cache(norm, pos):
    cfg = GPTConfig(**{**LLAMA, "norm": norm, "pos_encoding": pos})
    model = GPT(cfg, seed=1)
    assert model.num_parameters() == gpt_parameters(cfg)
    assert (model.wpe is None) == (pos == "rope")
    idx = np.array([[1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 0, 1]])
    check_module(lambda: GPT(cfg, seed=1), (idx,), output_shape=(2, 6, 11))
    full, _ = model.eval()(idx)
    cache = kvcache.new_cache(model, batch_size=2)
    stepped = [kvcache.forward_step(model, idx[:, :3], cache)] + [
        kvcache.forward_step(model, idx[:, t:t + 1], cache) for t in range(3, 6)]
    np.testing.assert_allclose(np.concatenate(stepped, axis=1), full.numpy(), rtol=1e-4, atol=1e-5)


def test_a_checkpoint_without_the_new_fields_loads_with_the_defaults():
    old = GPTConfig(**{k: v for k, v in LLAMA.items() if k not in ("norm", "pos_encoding")})
    saved = {k: v for k, v in old.to_dict().items() if k not in ("norm", "pos_encoding")}
    model = build_model(Checkpoint("gpt", saved, {}, GPT(old).state_dict()))
    assert (model.config.norm, model.config.pos_encoding) == ("layernorm", "learned")


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_train_sample_and_export_a_llama_style_gpt(tmp_path):
    data = tmp_path / "pigs.txt"
    data.write_text("".join(f"{i} little pigs went to market\n" for i in range(300)))
    out = tmp_path / "run"
    result = run("train", "--data", data, "--out", out, "--norm", "rmsnorm", "--pos-encoding", "rope",
                 "--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16",
                 "--batch-size", "4", "--max-iters", "4", "--eval-interval", "2", "--eval-iters", "1")
    assert result.exit_code == 0, result.output
    assert '"norm": "rmsnorm", "pos_encoding": "rope"' in result.stderr
    model, _, _ = load_model(out)
    assert model.config.norm == "rmsnorm" and model.wpe is None
    assert run("sample", "--ckpt", out, "--num-tokens", "30").exit_code == 0
    assert json.loads(run("eval", "--ckpt", out, "--json", "--batches", "1").stdout)["loss"] > 0
    refused = run("export-gpt2", "--ckpt", out, "--out", tmp_path / "hf")
    assert refused.exit_code == 1 and refused.stderr.strip() == (
        "error: GPT-2 has LayerNorm and learned positions; this model has norm 'rmsnorm' and "
        "pos_encoding 'rope', which GPT-2 cannot express")
    bad = run("train", "--norm", "batchnorm", "--out", tmp_path / "bad")
    assert bad.exit_code == 2 and "norm must be one of layernorm, rmsnorm" in bad.stderr
