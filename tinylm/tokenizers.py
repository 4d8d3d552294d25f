"""Tokenizers: text <-> int64 token ids, and their JSON form inside a checkpoint.

A tokenizer saves itself with ``to_dict()`` (a JSON-able dict with a ``"type"``
key) and is rebuilt by ``tokenizer_from_dict``, which dispatches on that type,
so a BPE tokenizer can be added later by registering one more class.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np

from tinylm.errors import CheckpointError, ConfigError, DataError
from tinylm import jsonsafe
from tinylm.fileio import atomic_write_bytes, read_bounded

# UTF-32 is one 4-byte unit per code point, so str <-> code-point arrays is a
# single vectorised encode/decode. "surrogatepass" lets lone surrogates round-trip.
_UTF32 = "utf-32-le"
_SURROGATES = "surrogatepass"
# GPT-2's 50,257-token vocabulary is ~1.5 MB as JSON; a tokenizer file 40 times that is not one.
MAX_TOKENIZER_BYTES = 64 * 2**20


def _code_points(text: str) -> np.ndarray:
    """Code point of every character of ``text``, shape (len(text),), uint32."""
    return np.frombuffer(text.encode(_UTF32, _SURROGATES), dtype="<u4")


class CharTokenizer:
    """One token per character: id i is the i-th character of ``chars``.

    ``from_text`` uses the sorted set of characters, as nanoGPT's
    shakespeare_char does, so the same text always gives the same ids.
    """

    type_name = "char"
    unit = "char"  # what one token is: losses read as nats (bits) per character

    def __init__(self, chars: str):
        if not isinstance(chars, str) or not chars:
            raise ConfigError(f"CharTokenizer needs a non-empty str of characters, got {chars!r:.60}")
        if len(set(chars)) != len(chars):
            raise ConfigError(f"CharTokenizer characters must be unique; {_describe_duplicates(chars)}")
        self.chars = chars
        codes = _code_points(chars)
        # Lookup for encode: sorted code points, and the id each one maps to.
        self._order = np.argsort(codes, kind="stable")
        self._sorted_codes = codes[self._order]
        self._codes = codes  # id -> code point, for decode

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """Vocabulary = the sorted set of characters occurring in ``text``."""
        if not text:
            raise DataError("cannot build a character vocabulary from empty text; check the training data")
        return cls("".join(sorted(set(text))))

    @property
    def vocab_size(self) -> int:
        """Number of distinct tokens (characters)."""
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        """Token ids of ``text``, shape (len(text),), int64."""
        codes = _code_points(text)
        # Binary search each code point in the sorted vocabulary; a miss is an unknown character.
        slot = np.searchsorted(self._sorted_codes, codes)
        slot = np.minimum(slot, len(self._sorted_codes) - 1)
        known = self._sorted_codes[slot] == codes
        if not known.all():
            raise DataError(self._unknown_message(codes[~known]))
        return self._order[slot].astype(np.int64)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """The text of a 1-D sequence of token ids (a list, tuple or integer array)."""
        ids = np.asarray(ids)
        if ids.size == 0:
            return ""
        if ids.ndim != 1:
            raise DataError(f"decode takes a 1-D sequence of ids, got shape {ids.shape}; decode each row separately")
        if ids.dtype.kind not in "iu":
            raise DataError(f"token ids must be integers, got dtype {ids.dtype}")
        bad = (ids < 0) | (ids >= self.vocab_size)
        if bad.any():
            raise DataError(
                f"token id {ids[bad][0]} is out of range for a vocabulary of {self.vocab_size} characters "
                f"(valid ids are 0..{self.vocab_size - 1}); was the text generated with another tokenizer?"
            )
        return self._codes[ids].astype("<u4").tobytes().decode(_UTF32, _SURROGATES)

    def to_dict(self) -> dict:
        """JSON-able form stored in checkpoints: ``{"type": "char", "chars": ...}``."""
        return {"type": self.type_name, "chars": self.chars}

    @classmethod
    def from_dict(cls, d: dict) -> CharTokenizer:
        """Rebuild from ``to_dict()`` output; a malformed dict raises ``CheckpointError``."""
        if not isinstance(d, dict) or d.get("type") != cls.type_name:
            raise CheckpointError(f"expected a tokenizer dict with type {cls.type_name!r}, got {d!r:.80}")
        chars = d.get("chars")
        if not isinstance(chars, str) or not chars:
            raise CheckpointError(f"char tokenizer 'chars' must be a non-empty string, got {chars!r:.80}")
        if len(set(chars)) != len(chars):
            raise CheckpointError(f"char tokenizer in checkpoint is corrupt: {_describe_duplicates(chars)}")
        return cls(chars)

    def _unknown_message(self, unknown_codes: np.ndarray) -> str:
        """Name up to 5 unknown characters, in order of first appearance."""
        distinct, first_seen = np.unique(unknown_codes, return_index=True)
        distinct = distinct[np.argsort(first_seen)]
        shown = ", ".join(repr(chr(c)) for c in distinct[:5])
        more = f" and {len(distinct) - 5} more" if len(distinct) > 5 else ""
        return (
            f"text contains {len(distinct)} character(s) the tokenizer does not know: {shown}{more}; "
            f"the tokenizer knows {self.vocab_size} characters"
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CharTokenizer) and other.chars == self.chars

    def __hash__(self) -> int:
        return hash((self.type_name, self.chars))

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"


def _describe_duplicates(chars: str) -> str:
    """'repeats 'a', 'b'' — for error messages about a non-unique vocabulary."""
    seen, repeated = set(), []
    for c in chars:
        if c in seen and c not in repeated:
            repeated.append(c)
        seen.add(c)
    return "repeats " + ", ".join(repr(c) for c in repeated[:5])


# type name (the "type" key of to_dict) -> tokenizer class; add BPE here.
TOKENIZERS: dict[str, type] = {CharTokenizer.type_name: CharTokenizer}


def tokenizer_from_dict(d: dict) -> CharTokenizer:
    """Rebuild any tokenizer from its ``to_dict()`` form, dispatching on ``d["type"]``."""
    if not isinstance(d, dict):
        raise CheckpointError(f"tokenizer must be stored as a JSON object, got {type(d).__name__}")
    type_name = d.get("type")
    cls = TOKENIZERS.get(type_name) if isinstance(type_name, str) else None
    if cls is None:
        raise CheckpointError(f"unknown tokenizer type {type_name!r}; known types: {', '.join(map(repr, TOKENIZERS))}")
    return cls.from_dict(d)


class WithSpecialTokens:
    """A tokenizer plus special tokens (``[PAD]``, ``[MASK]``, ``[CLS]``) numbered after its own ids.

    ``encode`` never produces a special id (text that spells "[MASK]" is six
    ordinary tokens); only code inserts them. ``decode`` writes each by name.
    The masked-LM encoder uses this over the character vocabulary, so its
    vocabulary is ``base.vocab_size + len(names)``.
    """

    type_name = "with_special_tokens"

    def __init__(self, base, names: Sequence[str] = ("[PAD]", "[MASK]", "[CLS]")):
        names = tuple(names)
        if not names or not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
            raise ConfigError(f"special token names must be distinct non-empty strings, got {names!r:.80}")
        self.base, self.names = base, names

    @property
    def vocab_size(self) -> int:
        return self.base.vocab_size + len(self.names)

    @property
    def unit(self) -> str:
        return self.base.unit

    def special_id(self, name: str) -> int:
        """The id of special token ``name`` (e.g. "[MASK]")."""
        if name not in self.names:
            raise ConfigError(f"no special token {name!r}; this tokenizer has {', '.join(self.names)}")
        return self.base.vocab_size + self.names.index(name)

    def encode(self, text: str) -> np.ndarray:
        return self.base.encode(text)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """Text of the ids, each special token written as its name."""
        ids = np.asarray(ids)
        if ids.ndim != 1 or ids.dtype.kind not in "iu":
            return self.base.decode(ids)  # the base tokenizer explains what is malformed
        if (ids >= self.vocab_size).any():
            raise DataError(f"token id {ids[ids >= self.vocab_size][0]} is out of range for a "
                            f"vocabulary of {self.vocab_size} (valid ids are 0..{self.vocab_size - 1})")
        n = self.base.vocab_size
        pieces, start = [], 0
        for i in np.flatnonzero(ids >= n):
            pieces += [self.base.decode(ids[start:i]), self.names[ids[i] - n]]
            start = i + 1
        return "".join(pieces) + self.base.decode(ids[start:])

    def to_dict(self) -> dict:
        return {"type": self.type_name, "base": self.base.to_dict(), "special_tokens": list(self.names)}

    @classmethod
    def from_dict(cls, d: dict) -> WithSpecialTokens:
        if not isinstance(d, dict) or d.get("type") != cls.type_name:
            raise CheckpointError(f"expected a tokenizer dict with type {cls.type_name!r}, got {d!r:.80}")
        names = d.get("special_tokens")
        if not isinstance(names, list):
            raise CheckpointError(f"'special_tokens' must be a list of names, got {names!r:.80}")
        try:
            return cls(tokenizer_from_dict(d.get("base")), names)
        except ConfigError as exc:
            raise CheckpointError(f"special tokens in checkpoint are corrupt: {exc}") from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WithSpecialTokens) and (other.base, other.names) == (self.base, self.names)

    def __hash__(self) -> int:
        return hash((self.type_name, self.base, self.names))

    def __repr__(self) -> str:
        return f"WithSpecialTokens({self.base!r}, {list(self.names)})"


TOKENIZERS[WithSpecialTokens.type_name] = WithSpecialTokens


# Byte-level BPE lives in its own module (tinylm/bpe.py); it does not import this one.
from tinylm.bpe import BPETokenizer  # noqa: E402

TOKENIZERS[BPETokenizer.type_name] = BPETokenizer


def save_tokenizer(tokenizer, path) -> None:
    """Write ``tokenizer.to_dict()`` to ``path`` as JSON, atomically (``tinylm tokenizer train --out``)."""
    atomic_write_bytes(path, json.dumps(tokenizer.to_dict(), ensure_ascii=False).encode("utf-8"))


def load_tokenizer(path):
    """The tokenizer in a JSON file written by ``save_tokenizer`` (``tinylm train --tokenizer``)."""
    raw = read_bounded(path, MAX_TOKENIZER_BYTES, "tokenizer file", DataError)
    try:
        d = jsonsafe.parse(raw, f"tokenizer file {path}", DataError)
    except DataError as exc:
        raise DataError(f"{exc}; make one with 'tinylm tokenizer train'") from None
    try:
        return tokenizer_from_dict(d)
    except CheckpointError as exc:
        raise DataError(f"{path}: {exc}") from None
