"""Reading JSON that came from someone else: bounded size, depth and integers, checked types.

Every JSON file tinylm reads (checkpoint headers and metadata, tokenizer files,
labelled JSONL, GPT-2's config.json, vocab.json and index files) goes through
``parse``. Python's ``json`` module alone would let such a file

- recurse until ``RecursionError`` (``[[[[...`` 100,000 deep),
- build integers of any size (``10**100000``: seconds of CPU, then Python's own
  4,300-digit ``ValueError``), or accept ``NaN`` and ``Infinity``,
- keep the last of two duplicate keys, so two readers may disagree on a value.

So before ``json.loads`` runs, one linear scan measures the nesting depth (of the
brackets outside strings), and the decoder's hooks refuse integers longer than
``MAX_INT_DIGITS``, the non-standard constants and duplicate keys. Failures are
one line naming the file (and field) in the error class the caller passes, so a
checkpoint reader raises ``CheckpointError`` and a data reader ``DataError``.

``field`` then checks a parsed value's type, where ``bool`` is never an ``int``.
"""

from __future__ import annotations

import json
import math
import re

MAX_DEPTH = 64          # a tinylm checkpoint nests 5 levels; GPT-2's files 2
MAX_INT_DIGITS = 40     # PCG64 generator states in checkpoints are 128-bit: 39 digits
# Strings (with their escapes) are skipped by the depth scan; written without a nested
# quantifier, so an unterminated string cannot make the regex backtrack.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")


def nesting_depth(text: str) -> int:
    """The deepest nesting of [ ] and { } outside strings, in one pass (no recursion)."""
    depth = deepest = 0
    for match in _BRACKET.finditer(_STRING.sub('""', text)):
        if match.group() in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _parse_int(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_INT_DIGITS:
        raise _Refused(f"an integer of {len(digits.lstrip('-'))} digits (at most {MAX_INT_DIGITS})")
    return int(digits)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 reads as inf
        raise _Refused(f"the number {text[:30]}, which overflows a float")
    return value


def _parse_constant(name: str):
    raise _Refused(f"{name}, which is not JSON")


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen = set()
        duplicate = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise _Refused(f"a duplicate key {duplicate!r:.60}")
    return result


class _Refused(ValueError):
    """Raised inside the decoder's hooks; ``parse`` turns it into the caller's error class."""


def parse(text: str | bytes, where: str, error: type[Exception], max_depth: int = MAX_DEPTH):
    """The JSON value in ``text`` (bytes are decoded as UTF-8), or ``error`` in one line.

    ``where`` names the source in messages ("tok.json", "OUT/checkpoint.safetensors: header").
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise error(f"{where} is not valid UTF-8 (byte {exc.start})") from None
    depth = nesting_depth(text)
    if depth > max_depth:
        raise error(f"{where} nests JSON {depth} levels deep (at most {max_depth} are read)")
    try:
        return json.loads(text, parse_int=_parse_int, parse_float=_parse_float,
                          parse_constant=_parse_constant, object_pairs_hook=_unique_keys)
    except _Refused as exc:
        raise error(f"{where} holds {exc}") from None
    except json.JSONDecodeError as exc:
        raise error(f"{where} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") \
            from None
    except RecursionError:  # cannot happen below MAX_DEPTH; kept so a caller's depth cannot crash
        raise error(f"{where} nests JSON too deeply") from None


_KINDS = {int: "an integer", float: "a number", str: "a string", list: "a list",
          dict: "an object", bool: "true or false", type(None): "null"}


def is_int(value) -> bool:
    """A JSON integer (Python's bool is an int subclass, but true is not a count)."""
    return isinstance(value, int) and not isinstance(value, bool)


def field(obj, name: str, kinds: type | tuple, where: str, error: type[Exception], default=...):
    """``obj[name]``, checked to be one of ``kinds`` (``float`` admits integers; ``int`` never bools).

    A missing field is an error unless a ``default`` is given.
    """
    if not isinstance(obj, dict):
        raise error(f"{where}: expected an object, got {kind_of(obj)}")
    if name not in obj:
        if default is ...:
            raise error(f"{where}: missing field {name!r}")
        return default
    value = obj[name]
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    if not any(_is_kind(value, k) for k in kinds):
        wanted = " or ".join(_KINDS.get(k, k.__name__) for k in kinds)
        raise error(f"{where}: field {name!r} must be {wanted}, got {kind_of(value)} {value!r:.40}")
    return value


def _is_kind(value, kind: type) -> bool:
    if kind is int:
        return is_int(value)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, kind)


def kind_of(value) -> str:
    """'an integer', 'a string', ... for messages."""
    return _KINDS.get(type(value), type(value).__name__)
