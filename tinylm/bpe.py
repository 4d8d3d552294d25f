"""Byte-level BPE (GPT-2's tokenizer): text -> UTF-8 bytes -> learned merges of frequent pairs.

    text  --pre-tokenise (GPT-2's regex)-->  pieces "Hello", " world", "!"
    piece --UTF-8 bytes-->  [72, 101, 108, 108, 111]
          --apply merges, lowest rank first-->  [15496]  (token ids)

Every string has a UTF-8 byte form and every byte is a token, so encoding never
fails and ``decode(encode(text)) == text`` for any ``str``: lone surrogates
(which UTF-8 cannot hold) are written with ``surrogatepass``, i.e. as the 3-byte
form CESU/WTF-8 use, and read back the same way. Decoding ids that do not form
valid UTF-8 (a model can generate any sequence) gives U+FFFD for the bad bytes.

Training (``train_bpe``) counts the pieces of a corpus, then repeatedly merges the
most frequent adjacent pair into a new token. The ids are: 0..255 the bytes,
then one id per merge in the order learned, then the special tokens.
tinylm/gpt2.py reads GPT-2's own ``vocab.json``/``merges.txt`` into this class
(the ids are GPT-2's: it numbers the byte tokens in its own order), so a GPT-2
checkpoint's token ids match.
"""

from __future__ import annotations

import codecs
import functools
import heapq
import re
import sys
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from tinylm.errors import CheckpointError, ConfigError, DataError
from tinylm.jsonsafe import is_int

DEFAULT_SPECIAL_TOKENS = ("<|endoftext|>",)  # GPT-2's; the masked-LM run adds its own [PAD] [MASK] [CLS]


# ---------------------------------------------------------------------------- bytes <-> text
def _surrogatepass_or_replace(exc: UnicodeDecodeError):
    """Decode error handler: a lone surrogate's 3 bytes back to it; any other bad bytes -> U+FFFD."""
    try:
        return codecs.lookup_error("surrogatepass")(exc)
    except UnicodeDecodeError:
        return codecs.replace_errors(exc)


DECODE_ERRORS = "tinylm.surrogatepass_or_replace"
codecs.register_error(DECODE_ERRORS, _surrogatepass_or_replace)


def utf8(text: str) -> bytes:
    """The UTF-8 bytes of any str; lone surrogates are kept (surrogatepass), not refused."""
    return text.encode("utf-8", "surrogatepass")


@functools.cache
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-in for every byte, as used in vocab.json and merges.txt.

    Printable Latin-1 bytes stand for themselves; the other 68 (control characters,
    space, ...) are shifted to U+0100.. so that no token string contains whitespace
    (the space byte 0x20 is written 'Ġ').
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    shifted = [b for b in range(256) if b not in printable]
    mapping = {b: chr(b) for b in printable}
    mapping.update({b: chr(256 + i) for i, b in enumerate(shifted)})
    return mapping


def token_to_str(token: bytes) -> str:
    """A token's bytes in GPT-2's printable form (b' the' -> 'Ġthe')."""
    table = bytes_to_unicode()
    return "".join(table[b] for b in token)


def str_to_token(text: str) -> bytes:
    """Inverse of ``token_to_str``; KeyError for a character that stands for no byte."""
    inverse = _unicode_to_bytes()
    return bytes(inverse[c] for c in text)


@functools.cache
def _unicode_to_bytes() -> dict[str, int]:
    return {c: b for b, c in bytes_to_unicode().items()}


# ---------------------------------------------------------------------------- pre-tokenisation
@functools.cache
def gpt2_pattern() -> re.Pattern:
    r"""GPT-2's split of text into pieces, written for the standard library's ``re``.

    GPT-2:  's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
    ``re`` has no \p{..}, so the classes are built from what it has:
      letters L = [^\W\d_] minus the non-decimal numbers (which \w counts as word characters)
      numbers N = \d plus the non-decimal numbers (categories Nl, No: '²', '½', 'Ⅻ')
      space  WS = \s minus \x1c-\x1f (str.isspace counts them; Unicode's White_Space does not)
      other   O = everything else
    Every character is in exactly one class, so the pieces tile the text. Merges
    never cross a piece boundary: " the" can become one token, "the." cannot.
    The split equals the ``regex`` module's on every code point Python's Unicode
    database assigns (checked against all of them; characters newer than that
    database may fall in another class). Building the number class scans the
    code points once (~0.1-0.2 s, on first use).
    """
    numeric = filter(str.isnumeric, map(chr, range(sys.maxunicode + 1)))  # every Nl, No is numeric
    extra_numbers = _char_class(c for c in numeric if unicodedata.category(c) in ("Nl", "No"))
    letter = rf"[^\W\d_{extra_numbers}]"
    number = rf"[\d{extra_numbers}]"
    space = r"[^\S\x1c-\x1f]"
    non_space = r"[\S\x1c-\x1f]"
    other = r"(?:[^\s\w]|[_\x1c-\x1f])"
    return re.compile(rf"'s|'t|'re|'ve|'m|'ll|'d| ?{letter}+| ?{number}+| ?{other}+"
                      rf"|{space}+(?!{non_space})|{space}+")


def _char_class(chars: Iterable[str]) -> str:
    """The inside of a regex [...] matching exactly ``chars``, as ranges of \\U escapes."""
    codes = sorted(ord(c) for c in chars)
    ranges, start = [], None
    for i, code in enumerate(codes):
        start = code if start is None else start
        if i + 1 == len(codes) or codes[i + 1] != code + 1:
            ranges.append(f"\\U{start:08x}" + (f"-\\U{code:08x}" if code != start else ""))
            start = None
    return "".join(ranges)


def pretokenize(text: str) -> list[str]:
    """The pieces GPT-2 would split ``text`` into; ``"".join(pretokenize(t)) == t``."""
    return gpt2_pattern().findall(text)


# ---------------------------------------------------------------------------- merging
def replace_pair(ids: list[int], pair: tuple[int, int], new: int) -> list[int]:
    """``ids`` with every non-overlapping occurrence of ``pair`` (left to right) replaced by ``new``."""
    a, b = pair
    out, i, n = [], 0, len(ids)
    while i < n:
        if i + 1 < n and ids[i] == a and ids[i + 1] == b:
            out.append(new)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def train_bpe(text: str, vocab_size: int, special_tokens: Sequence[str] = DEFAULT_SPECIAL_TOKENS,
              on_progress: Callable[[int, int], None] | None = None) -> "BPETokenizer":
    """Learn ``vocab_size - 256 - len(special_tokens)`` merges from ``text``.

    Each merge is the most frequent adjacent pair of tokens inside the pieces
    (ties: the smallest pair of ids, so training is deterministic). Only the
    pieces that contain the merged pair are updated, and a heap with lazy
    deletion finds the next best pair. Training stops early when no pair occurs
    twice; the vocabulary is then smaller than asked. Special tokens in ``text``
    are cut out before counting. ``on_progress(done, total)`` reports merges.
    """
    special_tokens = _check_specials(special_tokens)
    n_merges = vocab_size - 256 - len(special_tokens)
    if n_merges < 0:
        raise ConfigError(f"vocab_size {vocab_size} is too small: 256 byte tokens and "
                          f"{len(special_tokens)} special tokens need at least {256 + len(special_tokens)}")
    pieces: Counter[str] = Counter()
    for chunk in _split_on(_special_pattern(special_tokens), text):
        pieces.update(pretokenize(chunk))
    words = [list(utf8(p)) for p in pieces]              # each distinct piece as byte ids
    freqs = list(pieces.values())
    pair_count: dict[tuple[int, int], int] = defaultdict(int)
    where: dict[tuple[int, int], set[int]] = defaultdict(set)   # pair -> pieces that (may) hold it
    for w, word in enumerate(words):
        for pair in zip(word, word[1:]):
            pair_count[pair] += freqs[w]
            where[pair].add(w)
    heap = [(-count, pair) for pair, count in pair_count.items()]
    heapq.heapify(heap)
    tokens = [bytes([b]) for b in range(256)]
    merges: list[tuple[int, int]] = []
    while len(merges) < n_merges and heap:
        negative_count, pair = heapq.heappop(heap)
        if pair_count.get(pair) != -negative_count:
            continue                                      # stale heap entry: the count changed
        if -negative_count < 2:
            break
        new = len(tokens)
        tokens.append(tokens[pair[0]] + tokens[pair[1]])
        merges.append(pair)
        changed = set()
        for w in where.pop(pair):
            word, f = words[w], freqs[w]
            merged = replace_pair(word, pair, new)
            for p in zip(word, word[1:]):
                pair_count[p] -= f
                changed.add(p)
            for p in zip(merged, merged[1:]):
                pair_count[p] += f
                where[p].add(w)
                changed.add(p)
            words[w] = merged
        for p in changed:
            if pair_count[p] > 0:
                heapq.heappush(heap, (-pair_count[p], p))
            else:
                del pair_count[p]
        if on_progress is not None and len(merges) % 50 == 0:
            on_progress(len(merges), n_merges)
    if on_progress is not None:
        on_progress(len(merges), n_merges)
    specials = {s: len(tokens) + i for i, s in enumerate(special_tokens)}
    return BPETokenizer(tokens + [utf8(s) for s in special_tokens], merges, specials)


def _check_specials(special_tokens: Sequence[str]) -> tuple[str, ...]:
    special_tokens = tuple(special_tokens)
    for s in special_tokens:
        if not isinstance(s, str) or not s:
            raise ConfigError(f"special tokens must be non-empty strings, got {s!r}")
    if len(set(special_tokens)) != len(special_tokens):
        raise ConfigError(f"special tokens must be distinct, got {list(special_tokens)}")
    return special_tokens


def _special_pattern(special_tokens: Iterable[str]) -> re.Pattern | None:
    """Matches any special token, longest first (so '<|a|>' wins over '<|a')."""
    ordered = sorted(special_tokens, key=len, reverse=True)
    return re.compile("|".join(map(re.escape, ordered))) if ordered else None


def _split_on(pattern: re.Pattern | None, text: str) -> list[str]:
    """``text`` without the matches of ``pattern``: the pieces between them."""
    return [text] if pattern is None else pattern.split(text)


# ---------------------------------------------------------------------------- the tokenizer
class BPETokenizer:
    """Byte-level BPE: ``tokens[i]`` is the bytes of id i; ``merges[r]`` the pair merged at rank r.

    ``special_tokens`` maps strings such as '<|endoftext|>' to their ids; ``encode``
    turns their occurrences in the text into those ids (``encode_ordinary`` does not).
    """

    type_name = "bpe"
    unit = "token"  # a token spans a variable number of characters

    def __init__(self, tokens: Sequence[bytes], merges: Sequence[tuple[int, int]],
                 special_tokens: dict[str, int]):
        self.tokens = list(tokens)
        self.merges = [tuple(m) for m in merges]
        self.special_tokens = dict(special_tokens)
        special_ids = set(self.special_tokens.values())
        problem = _vocabulary_problem(self.tokens, self.merges, self.special_tokens)
        if problem:
            raise ConfigError(f"inconsistent BPE vocabulary: {problem}")
        ids = {t: i for i, t in enumerate(self.tokens) if i not in special_ids}
        self._byte_ids = [ids[bytes([b])] for b in range(256)]
        self._rank = {pair: r for r, pair in enumerate(self.merges)}
        self._merged = {pair: ids[self.tokens[pair[0]] + self.tokens[pair[1]]] for pair in self.merges}
        self._specials = _special_pattern(self.special_tokens)
        self._cache: dict[str, list[int]] = {}

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    # -- encode / decode -------------------------------------------------------
    def encode(self, text: str) -> np.ndarray:
        """Token ids of ``text`` (int64); special-token strings become their ids."""
        if self._specials is None:
            return self.encode_ordinary(text)
        ids, start = [], 0
        for match in self._specials.finditer(text):
            ids.extend(self._encode_pieces(text[start:match.start()]))
            ids.append(self.special_tokens[match.group()])
            start = match.end()
        ids.extend(self._encode_pieces(text[start:]))
        return np.asarray(ids, dtype=np.int64)

    def encode_ordinary(self, text: str) -> np.ndarray:
        """Token ids of ``text`` treating special-token strings as plain text."""
        return np.asarray(self._encode_pieces(text), dtype=np.int64)

    def _encode_pieces(self, text: str) -> list[int]:
        ids: list[int] = []
        for piece in pretokenize(text):
            cached = self._cache.get(piece)
            if cached is None:
                cached = self._bpe([self._byte_ids[b] for b in utf8(piece)])
                if len(self._cache) < 100_000:  # bounded: a long generation must not grow it forever
                    self._cache[piece] = cached
            ids.extend(cached)
        return ids

    def _bpe(self, ids: list[int]) -> list[int]:
        """Merge the adjacent pair of lowest rank, again and again, until no pair has a rank."""
        rank, never = self._rank, len(self.merges)
        while len(ids) > 1:
            pair = min(zip(ids, ids[1:]), key=lambda p: rank.get(p, never))
            if pair not in rank:
                break
            ids = replace_pair(ids, pair, self._merged[pair])
        return ids

    def decode_bytes(self, ids: Sequence[int] | np.ndarray) -> bytes:
        """The bytes of a 1-D sequence of ids (for streaming: may end inside a character)."""
        ids = np.asarray(ids)
        if ids.size == 0:
            return b""
        if ids.ndim != 1 or ids.dtype.kind not in "iu":
            raise DataError(f"decode takes a 1-D sequence of integer ids, got shape {ids.shape} "
                            f"dtype {ids.dtype}")
        bad = (ids < 0) | (ids >= self.vocab_size)
        if bad.any():
            raise DataError(f"token id {ids[bad][0]} is out of range for a vocabulary of "
                            f"{self.vocab_size} tokens; was it made with another tokenizer?")
        return b"".join([self.tokens[i] for i in ids.tolist()])

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """The text of a 1-D sequence of ids; invalid UTF-8 becomes U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", DECODE_ERRORS)

    # -- JSON form (checkpoints, tokenizer files) ------------------------------
    def to_dict(self) -> dict:
        """``{"type": "bpe", "tokens": [GPT-2 printable strings], "merges": [[a, b], ...],
        "special_tokens": {str: id}}``; a special token's entry in ``tokens`` is the string itself."""
        names = {i: s for s, i in self.special_tokens.items()}
        return {"type": self.type_name,
                "tokens": [names.get(i) or token_to_str(t) for i, t in enumerate(self.tokens)],
                "merges": [list(m) for m in self.merges],
                "special_tokens": dict(self.special_tokens)}

    @classmethod
    def from_dict(cls, d: dict) -> "BPETokenizer":
        """Rebuild from ``to_dict()``; anything malformed is a ``CheckpointError``."""
        try:
            if d.get("type") != cls.type_name:
                raise ValueError(f"type is {d.get('type')!r}, expected {cls.type_name!r}")
            specials, texts, pairs = d["special_tokens"], d["tokens"], d["merges"]
            if not (isinstance(specials, dict) and all(is_int(i) for i in specials.values())):
                raise TypeError("special_tokens must map names to integer ids")
            if not (isinstance(texts, list) and all(isinstance(t, str) for t in texts)):
                raise TypeError("tokens must be a list of strings")
            if not (isinstance(pairs, list) and all(isinstance(m, list) and len(m) == 2
                                                    and all(map(is_int, m)) for m in pairs)):
                raise TypeError("merges must be a list of [id, id] pairs of integers")
            names = {i: s for s, i in specials.items()}
            tokens = [utf8(names[i]) if i in names else str_to_token(t) for i, t in enumerate(texts)]
            return cls(tokens, [tuple(m) for m in pairs], specials)
        except (AttributeError, KeyError, TypeError, ValueError, ConfigError) as exc:
            raise CheckpointError(f"malformed BPE tokenizer ({type(exc).__name__}: {exc})") from None

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, BPETokenizer) and other.tokens == self.tokens
                and other.merges == self.merges and other.special_tokens == self.special_tokens)

    def __hash__(self) -> int:
        return hash((self.type_name, len(self.tokens), len(self.merges)))

    def __repr__(self) -> str:
        return (f"BPETokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)}, "
                f"special_tokens={list(self.special_tokens)})")


def _vocabulary_problem(tokens: list[bytes], merges: list[tuple], specials: dict[str, int]) -> str | None:
    """What is wrong with a vocabulary (None if nothing): ids, byte tokens, merges, specials."""
    n = len(tokens)
    special_ids = set(specials.values())
    if len(special_ids) != len(specials) or any(not (0 <= i < n) for i in special_ids):
        return f"special token ids {specials} must be distinct and in 0..{n - 1}"
    ordinary = [t for i, t in enumerate(tokens) if i not in special_ids]
    if not all(isinstance(t, bytes) and t for t in ordinary):
        return "every ordinary token must be a non-empty bytes string"
    if len(set(ordinary)) != len(ordinary):
        return "two ordinary tokens have the same bytes"
    known = set(ordinary)
    missing = [b for b in range(256) if bytes([b]) not in known]
    if missing:
        return f"{len(missing)} of the 256 single bytes have no token (e.g. byte {missing[0]})"
    for r, pair in enumerate(merges):
        if len(pair) != 2 or not all(0 <= i < n and i not in special_ids for i in pair):
            return f"merge {r} {pair} names an id that is not an ordinary token"
        if tokens[pair[0]] + tokens[pair[1]] not in known:
            return f"merge {r} {pair} makes a token that is not in the vocabulary"
    return None
