"""Corpora, the train/val split, the batch sampler (determinism, exact resume) and the unigram baseline."""

import json
import math
import os
import string
from pathlib import Path

import numpy as np
import pytest

from tinylm import data, fileio
from tinylm.data import BatchSampler, Corpus, default_corpus, load_text, split_ids, unigram_entropy
from tinylm.errors import CheckpointError, ConfigError, DataError

ALLOWED = set(string.printable) - {"\r", "\x0b", "\x0c"}  # printable ASCII + \n + \t


# ---- default corpus --------------------------------------------------------------------------

def test_default_corpus_is_deterministic_and_substantial():
    corpus = default_corpus()
    assert corpus == default_corpus()
    assert len(corpus.text) == 1_000_000  # the stdlib has several MB of top-level .py files
    assert len(set(corpus.text)) < 110
    assert set(corpus.text) <= ALLOWED
    assert "def " in corpus.text and "standard library" in corpus.source
    assert "text" not in repr(corpus)  # the repr does not dump a megabyte


def test_default_corpus_is_cut_at_exactly_max_bytes():
    assert len(default_corpus(1000).text) == 1000
    assert default_corpus(1000).text == default_corpus(5000).text[:1000]


def use_as_stdlib(monkeypatch, directory):
    monkeypatch.setattr(data.sysconfig, "get_paths", lambda: {"stdlib": str(directory)})


def test_default_corpus_skips_undecodable_files_and_odd_characters(tmp_path, monkeypatch):
    (tmp_path / "a.py").write_text("x = 'é€'\r\n", encoding="utf-8")
    (tmp_path / "b.py").write_bytes(b"\xff\xfe not utf-8")
    (tmp_path / "c.py").write_text("y = 2\n", encoding="utf-8")
    (tmp_path / "d.txt").write_text("not python\n", encoding="utf-8")
    use_as_stdlib(monkeypatch, tmp_path)
    corpus = default_corpus()
    assert corpus.text == "x = ''\n\ny = 2\n"
    assert "2 files" in corpus.source


def test_default_corpus_without_python_files(tmp_path, monkeypatch):
    use_as_stdlib(monkeypatch, tmp_path)
    with pytest.raises(DataError, match=r"no readable \.py files .* pass --data FILE"):
        default_corpus()


def test_default_corpus_rejects_nonpositive_size():
    with pytest.raises(ConfigError, match="max_bytes must be a positive"):
        default_corpus(0)


# ---- load_text -------------------------------------------------------------------------------

def test_load_file(tmp_path):
    (tmp_path / "t.txt").write_bytes("\ufeffline one\r\nline two\rthree\n".encode())
    corpus = load_text(tmp_path / "t.txt")
    assert corpus == Corpus("line one\nline two\nthree\n", corpus.source)
    assert "t.txt" in corpus.source


def test_load_directory_recursive_sorted_skipping_hidden_and_binary(tmp_path):
    (tmp_path / "b.md").write_text("B")
    (tmp_path / "a.txt").write_text("A")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.py").write_text("C")
    (tmp_path / ".hidden.txt").write_text("H")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "x.txt").write_text("G")
    (tmp_path / "image.png").write_bytes(b"\x89PNG\xff")
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "c.cpython-311.pyc").write_bytes(b"\xff\x00")
    corpus = load_text(str(tmp_path))
    assert corpus.text == "A\nB\nC"
    assert corpus.source.startswith("3 files under")


def test_load_missing_path(tmp_path):
    with pytest.raises(DataError, match=r"data path .*missing\.txt does not exist"):
        load_text(tmp_path / "missing.txt")


def test_load_empty_file_and_directory(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DataError, match="empty.txt contains no text"):
        load_text(tmp_path / "empty.txt")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "photo.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(DataError, match=r"contains no text files \(looked for .*\.txt"):
        load_text(tmp_path / "dir")


def test_load_undecodable_file_names_file_and_offset(tmp_path):
    (tmp_path / "ok.txt").write_text("fine")
    (tmp_path / "latin1.txt").write_bytes("café au lait".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1\.txt is not valid UTF-8: byte 0xe9 at offset 3 "):
        load_text(tmp_path)


def test_load_permission_denied(tmp_path, monkeypatch):
    (tmp_path / "secret.txt").write_text("x")

    def denied(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(fileio.os, "open", denied)  # chmod is no barrier when tests run as root
    with pytest.raises(DataError, match=r"cannot read .*secret\.txt: permission denied"):
        load_text(tmp_path / "secret.txt")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_fifo_is_refused_by_name_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "pipe.txt")  # open() would wait forever for a writer
    with pytest.raises(DataError, match=r"pipe\.txt is a FIFO \(named pipe\), not a regular file"):
        load_text(tmp_path / "pipe.txt")
    (tmp_path / "ok.txt").write_text("text")
    assert load_text(tmp_path).text == "text"  # in a directory, a FIFO is not a text file


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero")
def test_character_device_is_refused_unread():
    with pytest.raises(DataError, match="/dev/zero is a character device, not a regular file"):
        load_text("/dev/zero")


def test_data_beyond_the_limit_is_refused_before_reading(tmp_path, monkeypatch):
    (tmp_path / "a.txt").write_text("x" * 60)
    (tmp_path / "b.txt").write_text("y" * 60)
    monkeypatch.setenv("TINYLM_MAX_DATA_BYTES", "100")
    with pytest.raises(DataError, match=r"b\.txt is 60 bytes, more than the 40 read .*TINYLM_MAX_DATA_BYTES"):
        load_text(tmp_path)
    assert load_text(tmp_path / "a.txt").text == "x" * 60
    monkeypatch.setenv("TINYLM_MAX_DATA_BYTES", "lots")
    with pytest.raises(ConfigError, match="TINYLM_MAX_DATA_BYTES must be a positive number"):
        load_text(tmp_path / "a.txt")


# ---- split_ids -------------------------------------------------------------------------------

def test_split_is_first_90_last_10():
    ids = np.arange(1000)
    train, val = split_ids(ids)
    assert len(train) == 900 and len(val) == 100
    np.testing.assert_array_equal(np.concatenate([train, val]), ids)


@pytest.mark.parametrize("fraction", [0, 1, -0.1, 1.5])
def test_split_rejects_bad_fraction(fraction):
    with pytest.raises(ConfigError, match=f"val_fraction must be strictly between 0 and 1, got {fraction}"):
        split_ids(np.arange(10), fraction)


# ---- BatchSampler ----------------------------------------------------------------------------

def test_batches_are_shifted_windows():
    ids = np.arange(100, 150)  # id = position + 100, so every window is a run of consecutive ints
    x, y = BatchSampler(ids, block_size=8, batch_size=16, seed=0).next()
    assert x.shape == y.shape == (16, 8) and x.dtype == y.dtype == np.int64
    np.testing.assert_array_equal(x, x[:, :1] + np.arange(8))
    np.testing.assert_array_equal(y, x + 1)
    assert x.min() >= 100 and y.max() <= 149


def test_every_start_is_reachable():
    ids = np.arange(10)
    sampler = BatchSampler(ids, block_size=8, batch_size=64, seed=1)  # starts 0 and 1 only
    starts = {int(s) for _ in range(3) for s in sampler.next()[0][:, 0]}
    assert starts == {0, 1}


def test_same_seed_same_batches_other_seed_other_batches():
    ids = np.arange(1000)
    a, b, c = (BatchSampler(ids, 16, 4, seed) for seed in (7, 7, 8))
    for _ in range(3):
        xa, ya = a.next()
        xb, yb = b.next()
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(a.next()[0], c.next()[0])


def test_exact_resume_through_json():
    ids = np.random.default_rng(0).integers(0, 65, size=5000)
    original = BatchSampler(ids, block_size=32, batch_size=8, seed=1234)
    for _ in range(5):
        original.next()
    saved = json.loads(json.dumps(original.state()))  # as stored in a checkpoint
    expected = [original.next() for _ in range(4)]

    resumed = BatchSampler(ids, block_size=32, batch_size=8, seed=999)
    resumed.set_state(saved)
    for x, y in expected:
        rx, ry = resumed.next()
        np.testing.assert_array_equal(rx, x)
        np.testing.assert_array_equal(ry, y)


def test_too_little_data():
    with pytest.raises(DataError) as info:
        BatchSampler(np.arange(8), block_size=8, batch_size=2, seed=0)
    assert str(info.value) == (
        "data has 8 tokens but block_size 8 needs at least 9; use more data or a smaller --block-size"
    )


@pytest.mark.parametrize(("block_size", "batch_size"), [(0, 4), (4, 0)])
def test_sampler_rejects_bad_sizes(block_size, batch_size):
    with pytest.raises(ConfigError, match="must both be at least 1"):
        BatchSampler(np.arange(100), block_size, batch_size, seed=0)


def test_sampler_rejects_non_integer_ids():
    with pytest.raises(DataError, match="1-D integer array"):
        BatchSampler(np.linspace(0, 1, 100), 4, 4, seed=0)


@pytest.mark.parametrize("state", [{}, {"bit_generator": "x"}, {"bit_generator": {"bit_generator": "MT19937"}},
                                   {"bit_generator": {"bit_generator": "PCG64", "state": {}}}, None])
def test_set_state_rejects_malformed(state):
    sampler = BatchSampler(np.arange(100), 4, 4, seed=0)
    with pytest.raises(CheckpointError, match="invalid batch sampler state"):
        sampler.set_state(state)


# ---- unigram baseline ------------------------------------------------------------------------

@pytest.mark.parametrize("vocab_size", [2, 65, 256])
def test_unigram_entropy_of_uniform_ids_is_log_v(vocab_size):
    ids = np.random.default_rng(0).permutation(np.repeat(np.arange(vocab_size), 50))
    assert unigram_entropy(ids, vocab_size) == pytest.approx(math.log(vocab_size))


def test_unigram_entropy_matches_definition():
    ids = np.array([0, 0, 0, 1, 2, 2])
    p = np.array([3, 1, 2]) / 6
    assert unigram_entropy(ids, 5) == pytest.approx(-(p * np.log(p)).sum())
    assert unigram_entropy(np.zeros(10, np.int64), 3) == 0.0


def test_unigram_entropy_rejects_bad_ids():
    with pytest.raises(DataError, match=r"range over \[0, 7\] but vocab_size is 5"):
        unigram_entropy(np.array([0, 7]), 5)
    with pytest.raises(DataError, match="zero tokens"):
        unigram_entropy(np.array([], np.int64), 5)
