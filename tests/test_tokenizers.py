"""CharTokenizer: exact round trips, its checkpoint form, and the messages for bad input."""

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinylm.errors import CheckpointError, DataError
from tinylm.tokenizers import CharTokenizer, tokenizer_from_dict


@given(st.text(min_size=1))
def test_round_trip_any_text(text):
    tok = CharTokenizer.from_text(text)
    ids = tok.encode(text)
    assert ids.dtype == np.int64 and ids.shape == (len(text),)
    assert tok.decode(ids) == text


@given(st.text(min_size=1), st.data())
def test_round_trip_substrings_of_known_text(text, data):
    tok = CharTokenizer.from_text(text)
    part = data.draw(st.text(alphabet=st.sampled_from(sorted(set(text)))))
    assert tok.decode(tok.encode(part)) == part


def test_lone_surrogates_round_trip():
    text = "a\ud800b\udfff"
    tok = CharTokenizer.from_text(text)
    assert tok.decode(tok.encode(text)) == text


def test_vocabulary_is_the_sorted_character_set():
    tok = CharTokenizer.from_text("hello world")
    assert tok.chars == " dehlorw"
    assert tok.vocab_size == 8
    assert tok.encode("hello").tolist() == [3, 2, 4, 4, 5]
    assert tok.encode("").shape == (0,)


@pytest.mark.parametrize("ids", [[3, 2, 4, 4, 5], (3, 2, 4, 4, 5), np.array([3, 2, 4, 4, 5], np.int32),
                                 np.array([3, 2, 4, 4, 5], np.uint8)])
def test_decode_accepts_int_sequences(ids):
    assert CharTokenizer.from_text("hello world").decode(ids) == "hello"


def test_decode_empty():
    tok = CharTokenizer.from_text("abc")
    assert tok.decode([]) == "" and tok.decode(np.array([], np.int64)) == ""


def test_encode_names_unknown_characters():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(DataError) as info:
        tok.encode("abxé\n")
    assert str(info.value) == (
        "text contains 3 character(s) the tokenizer does not know: 'x', 'é', '\\n'; the tokenizer knows 3 characters"
    )


def test_encode_names_at_most_five_unknown_characters():
    with pytest.raises(DataError, match=r"7 character\(s\) .*: 'g', 'f', 'e', 'd', 'c' and 2 more; .*knows 2 char"):
        CharTokenizer.from_text("xy").encode("gfedcbaaxg")


@pytest.mark.parametrize("bad_id", [-1, 3, 1000])
def test_decode_out_of_range(bad_id):
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(DataError, match=rf"token id {bad_id} is out of range .* 3 characters \(valid ids are 0..2\)"):
        tok.decode([0, bad_id, 1])


def test_decode_rejects_non_integers_and_2d():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(DataError, match="must be integers, got dtype float64"):
        tok.decode([0.0, 1.0])
    with pytest.raises(DataError, match=r"1-D sequence of ids, got shape \(1, 2\)"):
        tok.decode([[0, 1]])


def test_from_text_rejects_empty_text():
    with pytest.raises(DataError, match="empty text"):
        CharTokenizer.from_text("")


def test_checkpoint_form_round_trips_through_json():
    tok = CharTokenizer.from_text("To be, or not to be")
    d = json.loads(json.dumps(tok.to_dict()))
    assert d == {"type": "char", "chars": " ,Tbenort"}
    assert CharTokenizer.from_dict(d) == tok
    assert tokenizer_from_dict(d) == tok
    assert tokenizer_from_dict(d).encode("be").tolist() == tok.encode("be").tolist()


def test_from_dict_keeps_stored_order():
    # ids come from the checkpoint, not from re-sorting: the model's embedding rows depend on it
    tok = CharTokenizer.from_dict({"type": "char", "chars": "cba"})
    assert tok.encode("abc").tolist() == [2, 1, 0]


@pytest.mark.parametrize(
    ("d", "message"),
    [
        ({"type": "char", "chars": "abca"}, "corrupt: repeats 'a'"),
        ({"type": "char", "chars": ""}, "must be a non-empty string"),
        ({"type": "char", "chars": ["a", "b"]}, "must be a non-empty string"),
        ({"type": "char"}, "must be a non-empty string"),
        ({"type": "bpe", "chars": "ab"}, "expected a tokenizer dict with type 'char'"),
    ],
)
def test_from_dict_rejects(d, message):
    with pytest.raises(CheckpointError, match=message):
        CharTokenizer.from_dict(d)


@pytest.mark.parametrize(
    ("d", "message"),
    [
        ({"type": "wordpiece", "vocab": []}, "unknown tokenizer type 'wordpiece'; known types: 'char'"),
        ({"chars": "ab"}, "unknown tokenizer type None"),
        ({"type": ["char"]}, "unknown tokenizer type"),
        ("char", "must be stored as a JSON object, got str"),
    ],
)
def test_tokenizer_from_dict_rejects(d, message):
    with pytest.raises(CheckpointError, match=message):
        tokenizer_from_dict(d)
