"""Fuzzing text: arbitrary Unicode (emoji, control characters, lone surrogates) and arbitrary
bytes at the tokenizers and the data loaders. Text round-trips exactly or is refused with one
line; a file that is not UTF-8 is a DataError naming the byte; the CLI never shows a traceback.
"""

import dataclasses
import json
import time
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from reliability import TEXT as TRAINED_TEXT, assert_clean, budget, invoke, report, tiny_run
from tinylm.bpe import train_bpe
from tinylm.checkpoint import load_checkpoint, save_checkpoint
from tinylm.data import load_text
from tinylm.errors import CheckpointError, DataError
from tinylm.tokenizers import CharTokenizer, tokenizer_from_dict

# Any code point: lone surrogates, controls, emoji, combining marks, private use, unassigned.
ANY_CHAR = st.characters()
TEXT = st.one_of(st.text(ANY_CHAR, max_size=40),
                 st.text(st.sampled_from("a\n\r\t \x00\x1b\u200b\u0301\ufeff😀👩‍👩‍👧\ud800\udfff"),
                         max_size=20))
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                      HealthCheck.function_scoped_fixture])


def _one_line(exc: Exception) -> str:
    message = str(exc)
    assert message and "\n" not in message and "\r" not in message, repr(message)
    return message


@settings(max_examples=budget(150, 1000), **SETTINGS)
@given(TEXT, TEXT)
def test_char_tokenizer_round_trips_any_text_and_names_unknown_characters(text, other):
    if not text:
        with pytest.raises(DataError):
            CharTokenizer.from_text(text)
        return
    tok = CharTokenizer.from_text(text)
    assert tok.decode(tok.encode(text)) == text
    if not any("\ud800" <= c <= "\udfff" for c in text):  # JSON pairs up lone surrogates
        restored = tokenizer_from_dict(json.loads(json.dumps(tok.to_dict())))  # as in a checkpoint
        assert restored == tok and restored.decode(restored.encode(text)) == text
    try:
        assert tok.decode(tok.encode(other)) == other
    except DataError as exc:
        assert "does not know" in _one_line(exc)
        assert set(other) - set(text)


@pytest.fixture(scope="module")
def bpe():
    return train_bpe("héllo wörld 😀 " * 20 + "the cat sat\n" * 20, vocab_size=256 + 1 + 24)


@settings(max_examples=budget(100, 500), **SETTINGS)
@given(text=TEXT, ids=st.lists(st.integers(-3, 300), max_size=12))
def test_bpe_round_trips_any_text_and_decodes_any_ids(bpe, text, ids):
    assert bpe.decode(bpe.encode(text)) == text
    try:
        assert isinstance(bpe.decode(ids), str)  # a model may generate any id sequence
    except DataError as exc:
        assert "out of range" in _one_line(exc)


@settings(max_examples=budget(100, 500), **SETTINGS)
@given(raw=st.one_of(st.binary(max_size=64),
                     TEXT.map(lambda t: t.encode("utf-8", "surrogatepass"))))
def test_load_text_gives_the_text_or_names_the_bad_byte(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("text") / "file.txt"
    path.write_bytes(raw)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:  # includes lone surrogates, which UTF-8 forbids
        with pytest.raises(DataError) as info:
            load_text(path)
        assert f"offset {exc.start}" in _one_line(info.value)
        return
    expected = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    if not expected.strip():
        with pytest.raises(DataError, match="no text"):
            load_text(path)
        return
    assert load_text(path).text == expected


def test_a_directory_of_odd_names_and_contents_loads_or_is_refused(tmp_path):
    root = tmp_path / "corpus 😀"
    (root / "sub\u200b").mkdir(parents=True)
    (root / "ä\tb.txt").write_text("ok 😀\n", encoding="utf-8")
    (root / "sub\u200b" / "z.md").write_bytes("more\r\n".encode())
    (root / ".hidden.txt").write_bytes(b"\xff")  # skipped: hidden
    assert load_text(root).text == "more\n\nok 😀\n"  # sorted by path: "sub…" < "ä…"
    (root / "bad.txt").write_bytes(b"fine\xed\xa0\x80")  # a lone surrogate, UTF-8 style
    with pytest.raises(DataError, match="bad.txt is not valid UTF-8: byte 0xed at offset 4"):
        load_text(root)


@settings(max_examples=budget(30, 200), **SETTINGS)
@given(chars=st.text(ANY_CHAR, min_size=1, max_size=12))
def test_a_checkpoint_keeps_any_tokenizer_or_refuses_it(trained_checkpoint, tmp_path_factory, chars):
    """Lone surrogates cannot be stored faithfully (JSON would pair them): refused, never altered."""
    ck = trained_checkpoint
    tok = CharTokenizer.from_text(chars)
    path = tmp_path_factory.mktemp("tok")
    try:
        save_checkpoint(path, dataclasses.replace(ck, tokenizer=tok.to_dict()))
    except CheckpointError as exc:
        assert "lone surrogate" in _one_line(exc)
        assert any("\ud800" <= c <= "\udfff" for c in chars)
        return
    assert tokenizer_from_dict(load_checkpoint(path).tokenizer) == tok


@pytest.fixture(scope="module")
def trained_checkpoint(trained):
    return load_checkpoint(trained)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("fuzztext")).out


def test_the_cli_takes_any_text(trained, tmp_path, capsys):
    tally, counter, start = Counter(), iter(range(10**9)), time.perf_counter()
    small = ["--n-layer", "1", "--n-head", "1", "--n-embd", "4", "--block-size", "4",
             "--batch-size", "2", "--max-iters", "1", "--eval-iters", "1", "--warmup-iters", "0"]

    odd = st.sampled_from("ab \n\t\x1b\x7f\u0301\u200b\ufeff😀👩‍👩‍👧")
    known = st.sampled_from(sorted(set(TRAINED_TEXT)))

    @settings(max_examples=budget(60, 400), **SETTINGS)
    @given(raw=st.one_of(st.binary(max_size=80),
                         st.text(ANY_CHAR, max_size=80).map(lambda t: t.encode("utf-8", "surrogatepass")),
                         st.text(odd, min_size=60, max_size=120).map(str.encode)),
           prompt=st.one_of(TEXT, st.text(known, min_size=1, max_size=8)), command=st.integers(0, 2))
    def case(raw, prompt, command):
        data = tmp_path / f"data{next(counter)}.txt"
        data.write_bytes(raw)
        if command == 0:
            result = invoke("train", "--data", data, "--out", tmp_path / data.stem, *small)
        elif command == 1:
            result = invoke("eval", "--ckpt", trained, "--data", data, "--batches", "1",
                            "--batch-size", "2")
        else:
            # (a NUL cannot reach argv from a shell: C strings end there)
            result = invoke("sample", "--ckpt", trained, "--prompt", prompt.replace("\x00", ""),
                            "--num-tokens", "3")
        assert_clean(result)
        tally[result.exit_code] += 1

    case()
    report(capsys, f"fuzz text at the CLI: {sum(tally.values())} inputs in "
                   f"{time.perf_counter() - start:.1f} s (exit 0: {tally[0]}, 1: {tally[1]}, "
                   f"2: {tally[2]}); 0 tracebacks")
