"""Generation: the KV cache gives forward's logits and the same tokens; sampling knobs; stop strings."""

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from tinylm.bpe import train_bpe
from tinylm.checkpoint import Checkpoint, save_checkpoint
from tinylm.cli import cli
from tinylm.errors import ConfigError
from tinylm.generate import (KVCacheContext, RecomputeContext, RepetitionControl, Sampling, TextStream,
                             context_start, generate, generate_text, sample_next)
from tinylm.kvcache import forward_step, new_cache
from tinylm.models import GPT, GPTConfig
from tinylm.tensor import no_grad
from tinylm.tokenizers import CharTokenizer

CONFIG = GPTConfig(vocab_size=40, block_size=12, n_layer=2, n_head=2, n_embd=16)


def small_gpt(dtype="float64", **config):
    cfg = GPTConfig(**{**CONFIG.to_dict(), **config})
    return GPT(cfg, seed=3).to(dtype=dtype).eval()


# -- the KV cache ----------------------------------------------------------------------------
@given(st.lists(st.integers(1, 4), min_size=1, max_size=6))
def test_forward_step_gives_forwards_logits_whatever_the_chunks(chunks):
    """Feeding T tokens in chunks (prefill, then steps) equals one forward over all T."""
    model = small_gpt()
    idx = np.random.default_rng(0).integers(0, CONFIG.vocab_size, (2, CONFIG.block_size))
    with no_grad():
        full, _ = model(idx)
    cache, t, pieces = new_cache(model, batch_size=2), 0, []
    for n in chunks:
        n = min(n, CONFIG.block_size - t)
        if n:
            pieces.append(forward_step(model, idx[:, t:t + n], cache))
            t += n
    assert cache.length == t
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), full.data[:, :t], atol=1e-12)


def test_forward_step_matches_on_every_backend(backend):
    model = small_gpt(dtype="float32")
    idx = np.arange(10)[None, :] % CONFIG.vocab_size
    with no_grad():
        full, _ = model(idx)
    cache = new_cache(model)
    steps = [forward_step(model, idx[:, :4], cache)] + [forward_step(model, idx[:, t:t + 1], cache)
                                                         for t in range(4, 10)]
    got = backend.to_host(backend.xp.concatenate(steps, axis=1))
    np.testing.assert_allclose(got, backend.to_host(full.data), atol=2e-5)


def test_forward_step_refuses_to_overflow_the_cache():
    model = small_gpt()
    cache = new_cache(model)
    forward_step(model, np.zeros((1, 12), dtype=np.int64), cache)
    with pytest.raises(ValueError, match="exceed block_size 12"):
        forward_step(model, np.zeros((1, 1), dtype=np.int64), cache)
    cache.clear()
    assert forward_step(model, np.zeros((1, 1), dtype=np.int64), cache).shape == (1, 1, 40)


def test_the_window_grows_then_restarts_on_the_last_half():
    assert context_start(0, 12, 12) == 0                   # fits
    assert context_start(0, 13, 12) == 7                   # overflow: keep the last 6
    assert context_start(7, 19, 12) == 7 and context_start(7, 20, 12) == 14
    assert context_start(0, 100, 12) == 94                 # a long prompt
    assert context_start(0, 2, 1) == 1                     # block 1: the last token only


SETTINGS = [
    dict(temperature=0),
    dict(temperature=1.0),
    dict(temperature=0.8, top_k=5),
    dict(temperature=1.2, top_p=0.8),
    dict(temperature=1.0, repetition_penalty=1.5, no_repeat_ngram_size=2),
]


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()))
def test_cache_and_recompute_give_the_same_tokens(settings):
    """Same seed, same tokens, within the block and across several window restarts (block 12, 40 tokens)."""
    model = small_gpt()
    cached = generate(model, [1, 2, 3], 40, seed=7, **settings)
    recomputed = generate(model, [1, 2, 3], 40, seed=7, context=RecomputeContext, **settings)
    assert cached.tolist() == recomputed.tolist()
    assert cached[:3].tolist() == [1, 2, 3] and len(cached) == 43


def test_cache_and_recompute_agree_in_float32():
    model = small_gpt(dtype="float32", block_size=64)
    cached = generate(model, [5], 60, seed=1)
    assert cached.tolist() == generate(model, [5], 60, seed=1, context=RecomputeContext).tolist()


def test_contexts_give_the_logits_of_the_window():
    model = small_gpt()
    ids = list(np.random.default_rng(1).integers(0, 40, 30))
    kv, re = KVCacheContext(model), RecomputeContext(model)
    for n in range(3, 30):  # the cache path sees the window restart at 13 and 19 and 25
        np.testing.assert_allclose(kv.next_logits(ids[:n]), re.next_logits(ids[:n]), atol=1e-12)
        assert kv.start == re.start


def test_generate_checks_its_arguments():
    model = small_gpt()
    with pytest.raises(ConfigError, match="at least one token"):
        generate(model, [], 3)
    with pytest.raises(ConfigError, match=">= 0"):
        generate(model, [1], -1)


# -- choosing the token ------------------------------------------------------------------------
@pytest.mark.parametrize("settings, message", [
    (dict(temperature=-1), "temperature"), (dict(temperature=float("nan")), "temperature"),
    (dict(top_k=0), "top_k"), (dict(top_p=0), "top_p"), (dict(top_p=1.5), "top_p"),
    (dict(repetition_penalty=0), "repetition_penalty"), (dict(no_repeat_ngram_size=-1), "no_repeat"),
])
def test_sampling_settings_are_validated(settings, message):
    with pytest.raises(ConfigError, match=message):
        Sampling(**settings)


def test_top_k_and_top_p_keep_only_the_likeliest():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    rng = np.random.default_rng(0)
    assert {sample_next(logits, rng, top_k=2) for _ in range(300)} == {0, 1}
    assert {sample_next(logits, rng, top_p=0.7) for _ in range(300)} == {0, 1}   # 0.5 < 0.7 <= 0.8
    assert {sample_next(logits, rng, top_p=0.5) for _ in range(100)} == {0}
    assert {sample_next(logits, rng, top_p=0.81) for _ in range(300)} == {0, 1, 2}
    assert sample_next(logits, rng, temperature=0) == 0


def test_top_p_one_changes_nothing():
    logits = np.random.default_rng(2).normal(size=50)
    a = [sample_next(logits, np.random.default_rng(5), top_p=1.0) for _ in range(5)]
    b = [sample_next(logits, np.random.default_rng(5)) for _ in range(5)]
    assert a == b


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits():
    control = RepetitionControl(Sampling(repetition_penalty=2.0), [0, 1])
    out = control.apply(np.array([4.0, -1.0, 3.0]))
    np.testing.assert_array_equal(out, [2.0, -2.0, 3.0])


def test_no_repeat_ngram_bans_the_tokens_that_followed_the_last_n_minus_1():
    control = RepetitionControl(Sampling(no_repeat_ngram_size=3), [5, 6, 7, 5, 6])
    out = control.apply(np.zeros(10))
    assert np.isneginf(out[7]) and np.isfinite(np.delete(out, 7)).all()
    control.add(8)  # ... 5 6 8: now "6 8" is new, nothing banned
    assert np.isfinite(control.apply(np.zeros(10))).all()


def test_generated_text_never_repeats_an_ngram():
    ids = generate(small_gpt(vocab_size=40), [1, 2], 40, temperature=0, no_repeat_ngram_size=2)
    bigrams = list(zip(ids[:-1].tolist(), ids[1:].tolist()))
    assert len(set(bigrams)) == len(bigrams)


# -- text, streaming, stop strings ---------------------------------------------------------------
def test_byte_level_stream_waits_for_whole_characters():
    tok = train_bpe("plain ascii text", 260)
    stream = TextStream(tok)
    assert [stream.push(b) for b in "é€".encode()] == ["", "é", "", "", "€"]
    assert stream.push(0xE2) == "" and stream.flush() == "\ufffd"


@pytest.mark.parametrize("stop_at", [5, 17, 30])
def test_stop_strings_cut_the_text_and_are_never_streamed(stop_at):
    tok = CharTokenizer("abcdefghij")
    model = small_gpt(vocab_size=10)
    full = generate_text(model, tok, tok.encode("ab"), 40, Sampling(temperature=1.0), seed=4)
    stop = full[stop_at:stop_at + 3]
    pieces = []
    text = generate_text(model, tok, tok.encode("ab"), 40, Sampling(temperature=1.0), seed=4,
                         stop=["zzz", stop], on_text=pieces.append)
    assert text == full[:full.index(stop)] == "".join(pieces)


def test_text_without_stop_is_streamed_whole():
    tok = CharTokenizer("abcdefghij")
    pieces = []
    text = generate_text(small_gpt(vocab_size=10), tok, tok.encode("a"), 25, on_text=pieces.append)
    assert len(text) == 25 and "".join(pieces) == text and len(pieces) == 25


# -- the CLI -------------------------------------------------------------------------------------
def test_cli_sample_with_every_knob_and_a_stop(tmp_path):
    tok = CharTokenizer("abcdefghij\n")
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8), seed=0)
    save_checkpoint(tmp_path, Checkpoint("gpt", model.config.to_dict(), tok.to_dict(), model.state_dict()))
    args = ["sample", "--ckpt", str(tmp_path), "--prompt", "abc", "--num-tokens", "60", "--top-k", "8",
            "--top-p", "0.9", "--repetition-penalty", "1.3", "--no-repeat-ngram-size", "3"]
    full = CliRunner().invoke(cli, args)
    assert full.exit_code == 0, full.output
    stop = full.stdout[10:12]
    cut = CliRunner().invoke(cli, args + ["--stop", stop])
    assert cut.exit_code == 0 and cut.stdout == full.stdout[:full.stdout.index(stop, 3)] + "\n"
    bad = CliRunner().invoke(cli, args + ["--top-p", "0"])
    assert bad.exit_code == 2 and "--top-p" in bad.stderr


def test_a_model_without_a_causal_path_is_refused_by_name():
    class Encoder:
        model_type = "encoder"
    with pytest.raises(ConfigError, match="'encoder' model, which does not generate"):
        KVCacheContext(Encoder())
