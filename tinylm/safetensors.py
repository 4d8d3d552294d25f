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

import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinylm import jsonsafe
from tinylm.errors import CheckpointError
from tinylm.fileio import atomic_writer, open_regular

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


# Bounds a file from a stranger must respect before anything is allocated. The
# reference implementation also caps the header at 100 MB; NumPy 1.x arrays had
# at most 32 dimensions; and a shape's extent (its non-zero dimensions multiplied
# together) beyond the file's size, or 1 GiB for an empty tensor, is not a tensor
# anyone wrote.
MAX_HEADER_BYTES = 100 * 2**20
MAX_DIMS = 32
_EMPTY_EXTENT = 2**30


@dataclass(frozen=True)
class Header:
    """What the first 8 + N bytes of a file say, checked against the file's size."""

    raw: bytes                # the JSON as stored, padding included
    metadata: dict[str, str]
    entries: dict[str, tuple[str, tuple[int, ...], tuple[int, int]]]  # name -> dtype, shape, offsets
    data_start: int           # file offset of the data section

    def element_count(self) -> int:
        return sum(math.prod(shape) for _, shape, _ in self.entries.values())


def read_header(path: str | os.PathLike) -> Header:
    """The checked header of a safetensors file, without reading any tensor."""
    path = Path(path)
    with open_regular(path, "checkpoint file", CheckpointError) as fh:
        return _read_header(fh, path)


def load_file(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read a safetensors file; return ``(tensors, metadata)``.

    The header is read and checked first (its length, its JSON, every entry's
    dtype, shape and offsets against the file's size), then each tensor is read
    into an array of exactly its declared size: a file can make tinylm allocate
    no more than it holds. Every array is a writable, native-byte-order copy
    owned by the caller (BF16 is widened to float32). Any inconsistency raises
    ``CheckpointError`` with a one-line message naming the file and the problem.
    """
    header, tensors = read_file(path)
    return tensors, header.metadata


def read_file(path: str | os.PathLike) -> tuple[Header, dict[str, np.ndarray]]:
    """(header, tensors) of a safetensors file; see ``load_file``."""
    path = Path(path)
    with open_regular(path, "checkpoint file", CheckpointError) as fh:
        header = _read_header(fh, path)
        tensors = {name: _read_tensor(fh, path, name, entry, header.data_start)
                   for name, entry in header.entries.items()}
    return header, tensors


def _read_header(fh, path: Path) -> Header:
    size = os.fstat(fh.fileno()).st_size
    if size < _HEADER_LENGTH.size:
        raise CheckpointError(
            f"{path}: not a safetensors file: only {size} bytes, shorter than the 8-byte header length"
        )
    (header_len,) = _HEADER_LENGTH.unpack(fh.read(_HEADER_LENGTH.size))
    data_start = _HEADER_LENGTH.size + header_len
    if data_start > size:
        raise CheckpointError(
            f"{path}: header length {header_len} is larger than the {size - 8} bytes after it; "
            "file truncated or corrupt"
        )
    if header_len > MAX_HEADER_BYTES:
        raise CheckpointError(f"{path}: header length {header_len:,} is over the "
                              f"{MAX_HEADER_BYTES:,} bytes a safetensors header may have")
    raw = fh.read(header_len)
    if len(raw) != header_len:
        raise CheckpointError(f"{path}: file shrank while its header was read")
    header = _parse_header(path, raw)
    metadata = header.pop(_METADATA_KEY, {})
    _check_metadata(metadata, str(path))
    data_size = size - data_start
    entries = {name: _check_entry(path, name, entry, data_size) for name, entry in header.items()}
    _check_tiling(path, entries, data_size)
    return Header(raw, metadata, entries, data_start)


def _read_tensor(fh, path: Path, name: str, entry, data_start: int) -> np.ndarray:
    """One tensor's bytes, read into an array of its declared (already bounded) size."""
    dtype_name, shape, (begin, end) = entry
    stored = _STORED_DTYPES[dtype_name]
    try:
        array = np.empty(shape, dtype=stored)
    except MemoryError:  # the size is the file's own: say so, not "try a smaller batch"
        raise CheckpointError(f"{path}: not enough memory to read tensor {name!r} "
                              f"({end - begin:,} bytes)") from None
    fh.seek(data_start + begin)
    if fh.readinto(array.reshape(-1).view(np.uint8)) != end - begin:
        raise CheckpointError(f"{path}: file shrank while tensor {name!r} was read")
    if dtype_name == "BF16":
        # bfloat16 is the top half of a float32: shift the 16 bits up, reinterpret.
        return (array.astype(np.uint32) << 16).view(np.float32)
    return array.astype(stored.newbyteorder("="), copy=False)


def _parse_header(path: Path, raw: bytes) -> dict:
    """Decode the JSON header (bounded depth and integers, no duplicate keys)."""
    header = jsonsafe.parse(raw, f"{path}: header", CheckpointError)
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


def _check_entry(path: Path, name: str, entry: object,
                 data_size: int) -> tuple[str, tuple[int, ...], tuple[int, int]]:
    """Validate one tensor's header entry; return (dtype name, shape, (begin, end))."""
    where = f"{path}: tensor {name!r}"
    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
        raise CheckpointError(
            f"{where}: entry must be an object with dtype, shape and data_offsets, got {entry!r:.100}"
        )
    dtype_name, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype_name, str) or dtype_name not in _STORED_DTYPES:
        raise CheckpointError(f"{where}: unknown dtype {dtype_name!r}; supported: {', '.join(_STORED_DTYPES)}")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise CheckpointError(f"{where}: shape must be a list of non-negative integers, got {shape!r:.100}")
    if len(shape) > MAX_DIMS:
        raise CheckpointError(f"{where}: shape has {len(shape)} dimensions, more than {MAX_DIMS}")
    extent = math.prod(max(d, 1) for d in shape) * _STORED_DTYPES[dtype_name].itemsize
    if extent > max(data_size, _EMPTY_EXTENT):
        raise CheckpointError(f"{where}: shape {shape!r:.100} describes more bytes than the "
                              f"{data_size:,}-byte data section holds")
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
