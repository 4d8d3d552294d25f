"""Read and write the safetensors format with NumPy only (no pickle, no extra dependency).

Layout of a file::

    [8 bytes]  N = header length, unsigned 64-bit little-endian
    [N bytes]  UTF-8 JSON object, padded with spaces to a multiple of 8:
               {"__metadata__": {str: str},                       (optional)
                "name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...}
    [rest]     raw little-endian C-contiguous tensor bytes; offsets are relative
               to the start of this section

Like the reference implementation, the reader insists that the tensors tile the
data section exactly (no overlaps, no gaps, no trailing bytes): anything else
means the file was truncated or tampered with.
"""

from __future__ import annotations

import collections
import json
import math
import os
import struct
from pathlib import Path

import numpy as np

from tinylm.errors import CheckpointError
from tinylm.fileio import atomic_writer

# safetensors dtype name -> little-endian NumPy dtype of the stored bytes.
_STORED_DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),  # raw bits; widened to float32 on load (NumPy has no bfloat16)
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
# NumPy dtype kind+size -> safetensors name, for saving (BF16 is read-only).
_SAVE_NAMES = {dt.str[1:]: name for name, dt in _STORED_DTYPES.items() if name != "BF16"}

_HEADER_LENGTH = struct.Struct("<Q")
_METADATA_KEY = "__metadata__"


def save_file(
    tensors: dict[str, np.ndarray],
    path: str | os.PathLike,
    metadata: dict[str, str] | None = None,
) -> None:
    """Write ``tensors`` (and optional string ``metadata``) to ``path`` atomically.

    Tensors are stored in the dict's order. Big-endian or non-contiguous arrays
    are converted; unsupported dtypes (complex, object, unsigned > 8 bits, ...)
    raise ``CheckpointError``. An ``OSError`` while writing propagates and
    leaves any previous file at ``path`` intact.
    """
    arrays, header = {}, {}
    if metadata:
        _check_metadata(metadata, f"cannot save {path}")
        header[_METADATA_KEY] = dict(metadata)
    offset = 0
    for name, value in tensors.items():
        if not isinstance(name, str) or name == _METADATA_KEY:
            raise CheckpointError(
                f"cannot save {path}: tensor name {name!r} must be a str other than {_METADATA_KEY!r}"
            )
        array = np.asarray(value)
        dtype_name = _SAVE_NAMES.get(array.dtype.str[1:])
        if dtype_name is None:
            raise CheckpointError(
                f"cannot save {path}: tensor {name!r} has dtype {array.dtype}, "
                f"supported: {', '.join(sorted(_SAVE_NAMES.values()))}"
            )
        # asarray(order="C"), not ascontiguousarray, which would turn a 0-d array into shape (1,).
        array = np.asarray(array, dtype=_STORED_DTYPES[dtype_name], order="C")
        arrays[name] = array
        header[name] = {
            "dtype": dtype_name,
            "shape": list(array.shape),
            "data_offsets": [offset, offset + array.nbytes],
        }
        offset += array.nbytes

    header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    header_bytes += b" " * (-len(header_bytes) % 8)  # pad so the data section starts 8-aligned
    with atomic_writer(path) as f:
        f.write(_HEADER_LENGTH.pack(len(header_bytes)))
        f.write(header_bytes)
        for array in arrays.values():
            f.write(array.reshape(-1).view(np.uint8).data)  # 1-D byte view: no copy, works for 0-d too


def load_file(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read a safetensors file; return ``(tensors, metadata)``.

    Every array is a writable, native-byte-order copy owned by the caller (BF16
    is widened to float32). Any inconsistency raises ``CheckpointError`` with a
    one-line message naming the file and the problem.
    """
    path = Path(path)
    blob = _read_all(path)
    if len(blob) < _HEADER_LENGTH.size:
        raise CheckpointError(
            f"{path}: not a safetensors file: only {len(blob)} bytes, shorter than the 8-byte header length"
        )
    (header_len,) = _HEADER_LENGTH.unpack_from(blob)
    data_start = _HEADER_LENGTH.size + header_len
    if data_start > len(blob):
        raise CheckpointError(
            f"{path}: header length {header_len} is larger than the {len(blob) - 8} bytes after it; "
            "file truncated or corrupt"
        )
    header = _parse_header(path, blob[_HEADER_LENGTH.size : data_start])
    metadata = header.pop(_METADATA_KEY, {})
    _check_metadata(metadata, str(path))

    entries = {name: _check_entry(path, name, entry) for name, entry in header.items()}
    _check_tiling(path, entries, data_size=len(blob) - data_start)

    tensors = {}
    for name, (dtype_name, shape, (begin, end)) in entries.items():
        stored = _STORED_DTYPES[dtype_name]
        count, offset = math.prod(shape), data_start + begin
        stored_view = np.frombuffer(blob, dtype=stored, count=count, offset=offset).reshape(shape)
        if dtype_name == "BF16":
            # bfloat16 is the top half of a float32: shift the 16 bits up, reinterpret.
            tensors[name] = (stored_view.astype(np.uint32) << 16).view(np.float32)
        else:
            tensors[name] = stored_view.astype(stored.newbyteorder("="))  # a writable copy, not a view on blob
    return tensors, metadata


def _read_all(path: Path) -> bytes:
    """Read the whole file in one go (one syscall-sized pass beats many small seeks)."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint file {path} does not exist") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path} is a directory, expected a .safetensors file") from None
    except PermissionError:
        raise CheckpointError(f"cannot read {path}: permission denied") from None
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror or e}") from None


def _parse_header(path: Path, raw: bytes) -> dict:
    """Decode the JSON header; duplicate keys are rejected (JSON would silently keep the last)."""

    def no_duplicates(pairs: list[tuple[str, object]]) -> dict:
        counts = collections.Counter(k for k, _ in pairs)
        duplicates = sorted(k for k, n in counts.items() if n > 1)
        if duplicates:
            raise CheckpointError(f"{path}: header has duplicate key(s) {', '.join(map(repr, duplicates))}")
        return dict(pairs)

    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=no_duplicates)
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{path}: header is not valid UTF-8 (byte {e.start} of the header)") from None
    except json.JSONDecodeError as e:
        where = f"line {e.lineno} column {e.colno}"
        raise CheckpointError(f"{path}: header is not valid JSON ({e.msg} at {where})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: header must be a JSON object, got {type(header).__name__}")
    return header


def _check_metadata(metadata: object, where: str) -> None:
    """Metadata is a flat str -> str mapping (the format allows nothing else)."""
    if not isinstance(metadata, dict):
        raise CheckpointError(
            f"{where}: {_METADATA_KEY} must be an object of strings, got {type(metadata).__name__}"
        )
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise CheckpointError(
                f"{where}: metadata {key!r} -> {value!r} is not str -> str; "
                "convert values with str() or json.dumps()"
            )


def _is_count(x: object) -> bool:
    """A non-negative JSON integer (bool is an int subclass in Python, but not a count)."""
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _check_entry(path: Path, name: str, entry: object) -> tuple[str, tuple[int, ...], tuple[int, int]]:
    """Validate one tensor's header entry; return (dtype name, shape, (begin, end))."""
    where = f"{path}: tensor {name!r}"
    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
        raise CheckpointError(
            f"{where}: entry must be an object with dtype, shape and data_offsets, got {entry!r:.100}"
        )
    dtype_name, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype_name not in _STORED_DTYPES:
        raise CheckpointError(f"{where}: unknown dtype {dtype_name!r}; supported: {', '.join(_STORED_DTYPES)}")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise CheckpointError(f"{where}: shape must be a list of non-negative integers, got {shape!r:.100}")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(o) for o in offsets):
        raise CheckpointError(
            f"{where}: data_offsets must be [begin, end] with non-negative integers, got {offsets!r:.100}"
        )
    begin, end = offsets
    expected = math.prod(shape) * _STORED_DTYPES[dtype_name].itemsize  # bytes = elements × itemsize
    if end - begin != expected:
        raise CheckpointError(
            f"{where}: data_offsets {offsets} span {end - begin} bytes "
            f"but shape {shape} of {dtype_name} needs {expected}"
        )
    return dtype_name, tuple(shape), (begin, end)


def _check_tiling(path: Path, entries: dict, data_size: int) -> None:
    """The tensors must cover the data section exactly: in range, no overlap, no gap, nothing after."""
    position, previous = 0, None
    for name, (_, _, (begin, end)) in sorted(entries.items(), key=lambda item: item[1][2]):
        if end > data_size:
            raise CheckpointError(
                f"{path}: tensor {name!r} data_offsets [{begin}, {end}] run past "
                f"the {data_size}-byte data section; file truncated?"
            )
        if begin < position:
            raise CheckpointError(
                f"{path}: tensor {name!r} bytes [{begin}, {end}] overlap tensor {previous!r} (ends at {position})"
            )
        if begin > position:
            raise CheckpointError(f"{path}: {begin - position} unused bytes before tensor {name!r} at offset {position}")
        position, previous = end, name
    if position != data_size:
        raise CheckpointError(f"{path}: {data_size - position} trailing bytes after the last tensor; file corrupt?")
