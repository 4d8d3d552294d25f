"""Training text and batches: load a corpus, split it, sample (x, y) windows from it.

Everything here is host data (plain NumPy int64 arrays); moving batches to a
backend's device is the training loop's job.
"""

from __future__ import annotations

import os
import re
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tinylm.errors import CheckpointError, ConfigError, DataError
from tinylm.fileio import read_bounded

# Suffixes read when ``load_text`` is given a directory; other files (images,
# .pyc, archives) are skipped so a source tree can be used as it is.
TEXT_SUFFIXES = frozenset(
    {".txt", ".md", ".rst", ".py", ".json", ".jsonl", ".csv", ".tsv", ".html", ".xml",
     ".yaml", ".yml", ".toml", ".ini", ".cfg", ".tex", ".c", ".h", ".cpp", ".js", ".ts", ".sh"}
)

# ``load_text`` reads at most this much (TINYLM_MAX_DATA_BYTES overrides): the training
# text, its token ids and the model's copies of them must fit in memory.
DEFAULT_MAX_DATA_BYTES = 2**30

# Anything but printable ASCII, newline and tab (dropped from the default corpus).
_NOT_PLAIN_ASCII = re.compile(r"[^\x20-\x7e\n\t]")


@dataclass(frozen=True)
class Corpus:
    """A training text and a human-readable description of where it came from."""

    text: str = field(repr=False)
    source: str


def default_corpus(max_bytes: int = 1_000_000) -> Corpus:
    """The first ``max_bytes`` characters of the Python standard library's own source.

    Works offline on any machine with Python: the top-level ``*.py`` files of
    ``sysconfig.get_paths()["stdlib"]`` (no subpackages, tests or
    site-packages), sorted by name, read as UTF-8 (files that fail to decode
    or read are skipped), joined with a newline and cut at exactly
    ``max_bytes`` characters. Characters other than printable ASCII, ``\\n``
    and ``\\t`` are dropped, which keeps the character vocabulary under ~100
    and makes characters and bytes the same count. The text depends on the
    Python version, which ``source`` records.
    """
    if max_bytes < 1:
        raise ConfigError(f"max_bytes must be a positive number of characters, got {max_bytes}")
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    pieces, total, used = [], 0, 0
    for path in sorted(stdlib.glob("*.py")):
        if total >= max_bytes:
            break
        try:
            text = path.read_text(encoding="utf-8")  # text mode: \r\n -> \n on every platform
        except (UnicodeDecodeError, OSError):
            continue
        text = _NOT_PLAIN_ASCII.sub("", text)
        pieces.append(text)
        total += len(text) + 1  # + the separating newline
        used += 1
    if not pieces:
        raise DataError(
            f"no readable .py files in the Python standard library directory {stdlib} to use as the "
            "default corpus; pass --data FILE to train on your own text"
        )
    text = "\n".join(pieces)[:max_bytes]
    version = ".".join(map(str, sys.version_info[:3]))
    source = f"Python {version} standard library source: {used} files from {stdlib}, {len(text):,} characters"
    return Corpus(text, source)


def load_text(path: str | os.PathLike) -> Corpus:
    """Read a UTF-8 text file, or every text file under a directory.

    A directory is walked recursively in sorted order; hidden files and
    directories (name starting with ".") are skipped, and only files whose
    suffix is in ``TEXT_SUFFIXES`` are read; files are joined with a newline.
    Newlines are normalised to ``\\n`` (as Python's text mode does) and a
    leading byte-order mark is dropped. Raises ``DataError`` for a missing
    path, no text, undecodable bytes (naming file and byte offset), a file
    that cannot be read, one that is not a regular file (a FIFO, ``/dev/zero``),
    or more than ``max_data_bytes()`` in all.
    """
    path = Path(path)
    try:
        path.stat()
    except (FileNotFoundError, NotADirectoryError):
        raise DataError(f"data path {path} does not exist") from None
    except PermissionError:
        raise DataError(f"cannot read {path}: permission denied") from None
    if path.is_dir():
        files = _text_files_under(path)
        if not files:
            raise DataError(
                f"directory {path} contains no text files (looked for {', '.join(sorted(TEXT_SUFFIXES))}, "
                "skipping hidden files)"
            )
        budget = max_data_bytes()
        pieces = []
        for f in files:
            pieces.append(_read_utf8(f, budget))
            budget -= len(pieces[-1])  # characters <= bytes, so this under-counts, never over
        text = "\n".join(pieces)
        source = f"{len(files)} files under {path}, {len(text):,} characters"
    else:
        text = _read_utf8(path, max_data_bytes())
        source = f"{path}, {len(text):,} characters"
    if not text.strip():
        raise DataError(f"{path} contains no text; train on a non-empty file")
    return Corpus(text, source)


def _text_files_under(root: Path) -> list[Path]:
    """Non-hidden regular files with a text suffix under ``root``, sorted by relative path."""

    def unreadable(error: OSError) -> None:
        raise DataError(f"cannot read directory {error.filename}: {error.strerror or error}")

    found = []
    for directory, subdirs, names in os.walk(root, onerror=unreadable):
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]  # prune hidden directories
        for name in names:
            file = Path(directory, name)
            if not name.startswith(".") and file.suffix.lower() in TEXT_SUFFIXES and file.is_file():
                found.append(file)
    return sorted(found, key=lambda f: f.relative_to(root).parts)


def max_data_bytes() -> int:
    """How much text ``load_text`` reads at most: 1 GiB, or TINYLM_MAX_DATA_BYTES."""
    value = os.environ.get("TINYLM_MAX_DATA_BYTES", "")
    if not value:
        return DEFAULT_MAX_DATA_BYTES
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"TINYLM_MAX_DATA_BYTES must be a positive number of bytes, got {value!r:.40}")
    return int(value)


def _read_utf8(path: Path, limit: int) -> str:
    """Decode one regular file of at most ``limit`` bytes as UTF-8, with ``DataError`` naming
    the file and byte offset on failure (FIFOs, devices and sockets are refused unread)."""
    raw = read_bounded(path, max(limit, 0), "data file", DataError,
                       hint=" (all --data files together); set TINYLM_MAX_DATA_BYTES to read more")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path} is not valid UTF-8: byte 0x{raw[e.start]:02x} at offset {e.start} ({e.reason}); "
            "convert it to UTF-8 or leave it out"
        ) from None
    return text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


def split_ids(ids: np.ndarray, val_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Split token ids into (train, val): the first ``1 - val_fraction``, then the rest.

    A contiguous split like nanoGPT's (not shuffled), so validation text is
    text the model never saw as context. Returns views of ``ids``.
    """
    if not 0 < val_fraction < 1:
        raise ConfigError(f"val_fraction must be strictly between 0 and 1, got {val_fraction}")
    ids = _as_token_ids(ids)
    n_train = int(len(ids) * (1 - val_fraction))
    return ids[:n_train], ids[n_train:]


class BatchSampler:
    """Random training windows: ``next()`` gives x, y of shape (batch_size, block_size), y = x shifted by 1.

    Window starts are drawn uniformly from [0, len(ids) - block_size - 1] by a
    PCG64 generator seeded with ``seed``. ``state()`` / ``set_state()`` save and
    restore the generator, so a resumed run sees exactly the batches the
    original run would have seen.
    """

    def __init__(self, ids: np.ndarray, block_size: int, batch_size: int, seed: int):
        if block_size < 1 or batch_size < 1:
            raise ConfigError(f"block_size ({block_size}) and batch_size ({batch_size}) must both be at least 1")
        ids = _as_token_ids(ids)
        n = len(ids)
        if n < block_size + 1:
            raise DataError(
                f"data has {n} tokens but block_size {block_size} needs at least {block_size + 1}; "
                "use more data or a smaller --block-size"
            )
        self.ids = ids.astype(np.int64, copy=False)
        self.block_size = block_size
        self.batch_size = batch_size
        self._n_starts = n - block_size  # valid starts: 0 .. n - block_size - 1
        self._offsets = np.arange(block_size + 1)  # one window = block_size inputs + 1 target
        self._rng = np.random.Generator(np.random.PCG64(seed))

    def next(self) -> tuple[np.ndarray, np.ndarray]:
        """One batch (x, y), both int64 of shape (batch_size, block_size)."""
        starts = self._rng.integers(0, self._n_starts, size=self.batch_size)  # (B,)
        windows = self.ids[starts[:, None] + self._offsets]  # (B, T+1), one gather
        # Copies, so that x and y do not alias each other's memory.
        return windows[:, :-1].copy(), windows[:, 1:].copy()

    def state(self) -> dict:
        """JSON-serialisable generator state (Python ints, however large)."""
        return {"bit_generator": self._rng.bit_generator.state}

    def set_state(self, state: dict) -> None:
        """Continue from a ``state()`` snapshot; a malformed one raises ``CheckpointError``."""
        try:
            generator_state = state["bit_generator"]
        except (KeyError, TypeError) as e:
            raise CheckpointError(f"invalid batch sampler state in checkpoint: {e}") from None
        self._rng = generator_from_state(generator_state, "batch sampler")


def generator_from_state(state, what: str) -> np.random.Generator:
    """A PCG64 generator continuing from a ``bit_generator.state`` snapshot saved in a checkpoint.

    A malformed snapshot raises ``CheckpointError`` naming ``what`` it belonged to.
    """
    try:
        if state.get("bit_generator") != "PCG64":
            raise ValueError(f"expected a PCG64 state, got {state.get('bit_generator')!r}")
        bit_generator = np.random.PCG64()
        bit_generator.state = state
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise CheckpointError(f"invalid {what} state in checkpoint: {e}") from None
    return np.random.Generator(bit_generator)


def unigram_entropy(ids: np.ndarray, vocab_size: int) -> float:
    """Cross-entropy (nats/token) of ids under their own unigram frequencies.

    H = -Σ_v p_v log p_v with p_v = count(v) / N: the loss of a model that
    ignores context, which a trained model should beat. Uniform ids over V
    symbols give log V.
    """
    ids = _as_token_ids(ids)
    if len(ids) == 0:
        raise DataError("cannot compute the unigram entropy of zero tokens")
    if ids.min() < 0 or ids.max() >= vocab_size:
        raise DataError(f"token ids range over [{ids.min()}, {ids.max()}] but vocab_size is {vocab_size}")
    counts = np.bincount(ids, minlength=vocab_size)
    p = counts[counts > 0] / len(ids)  # 0 log 0 = 0, so unseen symbols drop out
    return float(-(p * np.log(p)).sum())


def _as_token_ids(ids: np.ndarray) -> np.ndarray:
    """Check that ``ids`` is a 1-D integer array (lists are converted)."""
    ids = np.asarray(ids)
    if ids.ndim != 1 or (ids.dtype.kind not in "iu" and ids.size > 0):
        raise DataError(f"token ids must be a 1-D integer array, got shape {ids.shape} and dtype {ids.dtype}")
    return ids
