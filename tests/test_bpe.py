"""Byte-level BPE: exact round trips, GPT-2's pre-tokenisation and files, training, JSON form."""

import json
import unicodedata

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinylm.bpe import (BPETokenizer, bytes_to_unicode, pretokenize, replace_pair, train_bpe)
from tinylm.errors import CheckpointError, ConfigError, DataError
from tinylm.gpt2 import load_gpt2_tokenizer, save_gpt2_tokenizer
from tinylm.tokenizers import load_tokenizer, save_tokenizer, tokenizer_from_dict

CORPUS = ("The quick brown fox jumps over the lazy dog. It's the fox's 2nd jump; they'll see.\n"
          "    def there(self):\n        return self.them + 12345\n"
          "Zwölf Boxkämpfer jagen Viktor quer über den großen Sylter Deich. 東京は雨です。\n") * 20
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


@pytest.fixture(scope="module")
def tok():
    return train_bpe(CORPUS, 350, special_tokens=("<|endoftext|>", "[PAD]"))


# -- round trips ---------------------------------------------------------------------------
@given(st.text())
def test_round_trip_any_text(tok, text):
    ids = tok.encode(text)
    assert ids.dtype == np.int64 and ids.ndim == 1
    assert tok.decode(ids) == text
    assert tok.decode(tok.encode_ordinary(text)) == text


@given(st.lists(st.sampled_from(["<|endoftext|>", "[PAD]", "\ud800", "\udfff", " the", "é", "\x00",
                                 "\U0001f600", "<|endof", "'s", "  \n"])))
def test_round_trip_specials_surrogates_and_fragments(tok, parts):
    text = "".join(parts)
    assert tok.decode(tok.encode(text)) == text


def test_special_tokens_become_their_ids_only_in_encode(tok):
    eot = tok.special_tokens["<|endoftext|>"]
    assert eot == tok.vocab_size - 2 and tok.special_tokens["[PAD]"] == tok.vocab_size - 1
    assert eot in tok.encode("a<|endoftext|>b").tolist()
    assert eot not in tok.encode_ordinary("a<|endoftext|>b").tolist()


def test_training_text_compresses(tok):
    assert len(tok.encode(CORPUS)) < 0.5 * len(CORPUS.encode("utf-8"))


def test_decode_of_invalid_utf8_replaces_and_checks_ids(tok):
    assert tok.decode([0xE2, 0x82]) == "\ufffd"          # a truncated 3-byte character
    assert tok.decode([0xED, 0xA0, 0x80]) == "\ud800"    # a lone surrogate, as encoded
    assert tok.decode([]) == ""
    with pytest.raises(DataError, match="out of range"):
        tok.decode([tok.vocab_size])
    with pytest.raises(DataError, match="1-D"):
        tok.decode([[1, 2]])


# -- pre-tokenisation ------------------------------------------------------------------------
@given(st.text())
def test_pieces_tile_the_text(text):
    assert "".join(pretokenize(text)) == text


@given(st.text(st.characters(exclude_categories=("Cs", "Cn"))))
def test_pieces_match_gpt2s_regex(text):
    regex = pytest.importorskip("regex")
    # the regex module may know newer Unicode than Python's database: compare on characters both assign
    text = "".join(c for c in text if unicodedata.category(c) != "Cn")
    assert pretokenize(text) == regex.findall(GPT2_PATTERN, text)


def test_pieces_on_known_examples():
    assert pretokenize("Hello world!! It's 2024 ") == ["Hello", " world", "!!", " It", "'s", " 2024", " "]
    assert pretokenize("a   b\n\n x²") == ["a", "  ", " b", "\n\n", " x", "²"]


# -- training ----------------------------------------------------------------------------------
def test_replace_pair_is_left_to_right_and_non_overlapping():
    assert replace_pair([1, 1, 1, 2, 1, 1], (1, 1), 9) == [9, 1, 2, 9]


def test_first_merge_is_the_most_frequent_pair():
    tok = train_bpe("ab ab ab cd cd", 257, special_tokens=())
    assert tok.merges == [(ord("a"), ord("b"))] and tok.tokens[256] == b"ab"


def test_training_is_deterministic_and_reaches_the_vocab_size(tok):
    again = train_bpe(CORPUS, 350, special_tokens=("<|endoftext|>", "[PAD]"))
    assert again == tok and tok.vocab_size == 350


def test_training_stops_when_no_pair_repeats():
    tok = train_bpe("abcd", 1000)
    assert tok.merges == [] and tok.vocab_size == 257


def test_special_tokens_are_not_learned_from_the_text():
    tok = train_bpe("<|endoftext|>" * 50 + "xy" * 3, 300)
    assert all(b"end" not in t for t in tok.tokens[256:-1])


@pytest.mark.parametrize("vocab_size, specials, message", [
    (256, ("<|endoftext|>",), "too small"),
    (300, ("a", "a"), "distinct"),
    (300, ("",), "non-empty"),
])
def test_training_rejects_bad_settings(vocab_size, specials, message):
    with pytest.raises(ConfigError, match=message):
        train_bpe("text", vocab_size, special_tokens=specials)


def test_progress_is_reported():
    seen = []
    train_bpe(CORPUS, 350, on_progress=lambda done, total: seen.append((done, total)))
    assert seen == [(50, 93), (93, 93)]
    train_bpe("abab", 300, on_progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (1, 43)  # stopped early: no pair occurs twice any more


# -- JSON form ---------------------------------------------------------------------------------
def test_checkpoint_form_round_trips_through_json(tok, tmp_path):
    d = json.loads(json.dumps(tok.to_dict()))
    assert tokenizer_from_dict(d) == tok
    save_tokenizer(tok, tmp_path / "tok.json")
    assert load_tokenizer(tmp_path / "tok.json") == tok


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(type="char"), "type"),
    (lambda d: d.pop("merges"), "merges"),
    (lambda d: d["tokens"].__setitem__(5, d["tokens"][6]), "same bytes"),
    (lambda d: d["merges"].append([0, 10_000]), "merge"),
    (lambda d: d["tokens"].__setitem__(300, "\u4e00"), "KeyError"),
    (lambda d: d["special_tokens"].update({"[X]": d["special_tokens"]["[PAD]"]}), "distinct"),
])
def test_from_dict_rejects_malformed(tok, change, message):
    d = json.loads(json.dumps(tok.to_dict()))
    change(d)
    with pytest.raises(CheckpointError, match=message):
        BPETokenizer.from_dict(d)


def test_load_tokenizer_names_a_bad_file(tmp_path):
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(DataError, match="tokenizer train"):
        load_tokenizer(tmp_path / "bad.json")


# -- GPT-2's vocab.json / merges.txt -------------------------------------------------------------
def write_handmade_gpt2_files(directory):
    """256 byte tokens numbered in GPT-2's order ('!' = 0, 'Ġ' = 220), five merges, <|endoftext|>."""
    vocab = {c: i for i, c in enumerate(bytes_to_unicode().values())}
    merges = ["h e", "l l", "Ġ t", "he ll", "Ġt he"]
    for m in merges:
        vocab[m.replace(" ", "")] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (directory / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


def test_gpt2_files_give_gpt2s_ids(tmp_path):
    write_handmade_gpt2_files(tmp_path)
    tok = load_gpt2_tokenizer(tmp_path)
    assert bytes_to_unicode()[32] == "Ġ"
    # "hello": h e -> he, l l -> ll, he ll -> hell, then o (GPT-2 id 78); " the": Ġt he (260)
    assert tok.encode("hello the<|endoftext|>").tolist() == [259, 78, 260, 261]
    assert tok.decode([259, 78, 220, 260]) == "hello  the"


def test_gpt2_files_round_trip(tok, tmp_path):
    save_gpt2_tokenizer(tok, tmp_path)
    again = load_gpt2_tokenizer(tmp_path, special_tokens=("<|endoftext|>", "[PAD]"))
    assert again == tok


def test_gpt2_files_with_an_unknown_merge_are_refused(tmp_path):
    write_handmade_gpt2_files(tmp_path)
    with open(tmp_path / "merges.txt", "a", encoding="utf-8") as f:
        f.write("zz q\n")
    with pytest.raises(DataError, match="merges.txt:7"):
        load_gpt2_tokenizer(tmp_path)


@given(st.text(st.characters(exclude_categories=("Cs", "Cn")), max_size=40))
def test_ids_match_transformers_gpt2_tokenizer(hf_tokenizer, text):
    hf, tok = hf_tokenizer
    text = "".join(c for c in text if unicodedata.category(c) != "Cn")
    assert tok.encode(text).tolist() == hf.encode(text)


@pytest.fixture(scope="module")
def hf_tokenizer(tok, tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    directory = tmp_path_factory.mktemp("gpt2tok")
    save_gpt2_tokenizer(tok, directory)
    return transformers.GPT2Tokenizer(str(directory / "vocab.json"), str(directory / "merges.txt")), tok


# -- the CLI -----------------------------------------------------------------------------------
def test_cli_trains_a_tokenizer_and_a_model_that_uses_it(tmp_path):
    from click.testing import CliRunner

    from tinylm.checkpoint import load_model
    from tinylm.cli import cli

    (tmp_path / "data.txt").write_text(CORPUS, encoding="utf-8")
    runner = CliRunner()
    made = runner.invoke(cli, ["tokenizer", "train", "--data", str(tmp_path / "data.txt"),
                               "--vocab-size", "300", "--out", str(tmp_path / "tok.json")])
    assert made.exit_code == 0, made.output
    assert "vocab 300" in made.stdout and "merges 43/43" in made.stderr
    trained = runner.invoke(cli, ["train", "--data", str(tmp_path / "data.txt"), "--tokenizer",
                                  str(tmp_path / "tok.json"), "--out", str(tmp_path / "run"),
                                  "--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16",
                                  "--batch-size", "4", "--max-iters", "2", "--eval-interval", "2",
                                  "--eval-iters", "1", "--warmup-iters", "1"])
    assert trained.exit_code == 0, trained.output
    assert "vocab 300 tokens" in trained.stderr
    model, tokenizer, _ = load_model(tmp_path / "run")
    assert tokenizer == load_tokenizer(tmp_path / "tok.json") and model.config.vocab_size == 300
    # a BPE model's loss is per token, not per character
    scored = runner.invoke(cli, ["eval", "--ckpt", str(tmp_path / "run"), "--batches", "1"])
    assert scored.exit_code == 0, scored.output
    assert "bits/token" in scored.stdout and "bits/char" not in scored.stdout
    report = json.loads(runner.invoke(cli, ["eval", "--ckpt", str(tmp_path / "run"), "--batches", "1",
                                            "--json"]).stdout)
    assert report["unit"] == "token" and "bits_per_char" not in report
