"""Labelled text for classification: read CSV or JSONL, keep every bad row's line number.

A CSV file has a header naming a ``text`` and a ``label`` column (any order,
other columns allowed); a JSONL file holds one ``{"text": ..., "label": ...}``
object per line. Labels are strings (a JSON integer label is read as its
decimal string). A row that cannot be used — undecodable bytes, wrong column
count, invalid JSON, a missing field, empty text — becomes a ``BadRow`` with
its line number, never silently dropped; the caller reports them (or refuses
with ``strict``), and a file with no usable row is a ``DataError``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from tinylm import jsonsafe
from tinylm.data import max_data_bytes
from tinylm.errors import DataError
from tinylm.fileio import read_bounded

JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")


@dataclass(frozen=True)
class Example:
    line: int       # 1-based line of the file where the row starts
    text: str
    label: str


@dataclass(frozen=True)
class BadRow:
    line: int
    reason: str


def describe_bad_rows(path, bad: list[BadRow], shown: int = 8) -> str:
    """One line: 'data.csv: 3 bad row(s): line 4: empty text; line 9: ...'."""
    parts = "; ".join(f"line {b.line}: {b.reason}" for b in bad[:shown])
    more = f"; and {len(bad) - shown} more" if len(bad) > shown else ""
    return f"{path}: {len(bad)} bad row(s): {parts}{more}"


def read_labelled(path) -> tuple[list[Example], list[BadRow]]:
    """(usable rows, bad rows) of a CSV or JSONL file; the format follows the suffix (.csv,
    .jsonl), else the first character ('{' means JSONL)."""
    path = Path(path)
    raw = read_bounded(path, max_data_bytes(), "labelled data file", DataError,
                       hint="; set TINYLM_MAX_DATA_BYTES to read more")
    lines, bad = _decode_lines(raw.removeprefix(b"\xef\xbb\xbf"))
    if path.suffix.lower() in JSONL_SUFFIXES or (
            path.suffix.lower() != ".csv" and "".join(lines).lstrip().startswith("{")):
        examples, more_bad = _read_jsonl(lines)
    else:
        examples, more_bad = _read_csv(path, lines)
    bad = sorted(bad + more_bad, key=lambda b: b.line)
    if not examples:
        why = describe_bad_rows(path, bad) if bad else f"{path}: no rows"
        raise DataError(f"no usable labelled rows: {why}")
    return examples, bad


def _decode_lines(raw: bytes) -> tuple[list[str], list[BadRow]]:
    """Each line decoded on its own (ends kept), so one bad byte costs one row, not the file.
    An undecodable line is replaced by an empty one, which keeps the line numbers."""
    lines, bad = [], []
    for number, chunk in enumerate(raw.splitlines(keepends=True), start=1):
        try:
            lines.append(chunk.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n"))
        except UnicodeDecodeError as exc:
            bad.append(BadRow(number, f"not valid UTF-8 (byte 0x{chunk[exc.start]:02x} at "
                                      f"column {exc.start + 1})"))
            lines.append("\n")
    return lines, bad


def _row(line: int, text, label) -> Example | BadRow:
    """The checks every format shares: text a non-blank string, label a non-blank string."""
    if isinstance(label, int) and not isinstance(label, bool):
        label = str(label)
    if not isinstance(text, str):
        return BadRow(line, f"text must be a string, got {type(text).__name__}")
    if not isinstance(label, str):
        return BadRow(line, f"label must be a string or an integer, got {type(label).__name__}")
    if not text.strip():
        return BadRow(line, "empty text")
    if not label.strip():
        return BadRow(line, "empty label")
    return Example(line, text, label.strip())


def _read_jsonl(lines: list[str]) -> tuple[list[Example], list[BadRow]]:
    examples, bad = [], []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = jsonsafe.parse(line, "the row", DataError)
        except DataError as exc:
            bad.append(BadRow(number, str(exc).removeprefix("the row ")))
            continue
        if not isinstance(obj, dict):
            bad.append(BadRow(number, f"expected a JSON object, got {type(obj).__name__}"))
            continue
        missing = [k for k in ("text", "label") if k not in obj]
        if missing:
            bad.append(BadRow(number, f"missing field {', '.join(map(repr, missing))}"))
            continue
        row = _row(number, obj["text"], obj["label"])
        (examples if isinstance(row, Example) else bad).append(row)
    return examples, bad


def _read_csv(path: Path, lines: list[str]) -> tuple[list[Example], list[BadRow]]:
    reader = csv.reader(lines)
    examples, bad, header, line_end = [], [], None, 0
    while True:
        start = line_end + 1  # a quoted field may span lines: a row starts after the last one
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            line_end = reader.line_num
            bad.append(BadRow(start, f"malformed CSV ({exc})"))
            continue
        line_end = reader.line_num
        if not row or not any(cell.strip() for cell in row):
            continue  # blank lines are not rows
        if header is None:
            header = [cell.strip().lower() for cell in row]
            if "text" not in header or "label" not in header:
                raise DataError(f"{path}: the CSV header must name a 'text' and a 'label' column, "
                                f"got {row!r:.120} on line {start}; or use JSONL "
                                '({"text": ..., "label": ...} per line)')
            text_at, label_at = header.index("text"), header.index("label")
            continue
        if len(row) != len(header):
            bad.append(BadRow(start, f"{len(row)} columns, the header has {len(header)}"))
            continue
        result = _row(start, row[text_at], row[label_at])
        (examples if isinstance(result, Example) else bad).append(result)
    if header is None:
        raise DataError(f"{path} is empty: expected a CSV header 'text,label' and rows")
    return examples, bad
