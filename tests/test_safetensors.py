"""safetensors reader/writer: bit-exact round trips, the byte layout, and one test per corruption."""

import json
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tinylm import fileio
from tinylm.errors import CheckpointError
from tinylm.safetensors import load_file, save_file

SAVABLE = ["<f8", "<f4", "<f2", "<i8", "<i4", "<i2", "i1", "u1", "?", ">f4", ">i8"]


def write_raw(path, header, data=b"", header_bytes=None):
    """A hand-made file: header dict (or raw header bytes) and data section, no validation."""
    if header_bytes is None:
        header_bytes = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(header_bytes)) + header_bytes + data)
    return path


def assert_same(loaded, original):
    """Bit-exact equality (NaN payloads included), native byte order, writable copy."""
    original = np.asarray(original)
    assert loaded.shape == original.shape
    assert loaded.dtype == original.dtype.newbyteorder("=")
    assert loaded.tobytes() == original.astype(original.dtype.newbyteorder("=")).tobytes()
    assert loaded.flags.writeable and loaded.flags.c_contiguous


# ---- round trips -------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(
    arrays=st.lists(
        st.sampled_from(SAVABLE).flatmap(
            lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))
        ),
        max_size=4,
    ),
    metadata=st.dictionaries(st.text(max_size=5), st.text(max_size=10), max_size=3),
)
def test_round_trip(tmp_path_factory, arrays, metadata):
    path = tmp_path_factory.mktemp("st") / "m.safetensors"
    tensors = {f"layer.{i}": a for i, a in enumerate(arrays)}
    save_file(tensors, path, metadata)
    loaded, loaded_metadata = load_file(path)
    assert list(loaded) == list(tensors)
    for name, array in tensors.items():
        assert_same(loaded[name], array)
    assert loaded_metadata == metadata


def test_layout_matches_the_format(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file({"a": np.array([1.0, 2.0], np.float32), "b": np.array([[7]], np.int64)}, path, {"step": "3"})
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert n % 8 == 0
    header = json.loads(raw[8 : 8 + n])
    assert header == {
        "__metadata__": {"step": "3"},
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "I64", "shape": [1, 1], "data_offsets": [8, 16]},
    }
    assert raw[8 + n :] == struct.pack("<ff", 1.0, 2.0) + struct.pack("<q", 7)


def test_loaded_arrays_are_independent_writable_copies(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file({"a": np.zeros(3, np.float32), "b": np.zeros((2, 2))}, path)
    loaded, metadata = load_file(path)
    loaded["a"][:] = 1.0
    assert loaded["b"].sum() == 0 and metadata == {}
    assert loaded["a"].base is None  # owns its memory: no view on the file's bytes


def test_bf16_loads_as_float32(tmp_path):
    bits = struct.pack("<3H", 0x3F80, 0xC000, 0x3EAA)  # 1.0, -2.0, 0.33203125 in bfloat16
    header = {"w": {"dtype": "BF16", "shape": [3], "data_offsets": [0, 6]}}
    loaded, _ = load_file(write_raw(tmp_path / "bf16.safetensors", header, bits))
    assert loaded["w"].dtype == np.float32
    np.testing.assert_array_equal(loaded["w"], [1.0, -2.0, 0.33203125])


def test_failed_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    save_file({"w": np.arange(4.0)}, path)

    def disk_full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fileio.os, "replace", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_file({"w": np.ones(1000)}, path)
    monkeypatch.undo()
    np.testing.assert_array_equal(load_file(path)[0]["w"], np.arange(4.0))
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


# ---- save errors ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("tensors", "metadata", "message"),
    [
        ({"z": np.zeros(2, np.complex64)}, None, "tensor 'z' has dtype complex64, supported: "),
        ({"u": np.zeros(2, np.uint16)}, None, "dtype uint16"),
        ({"__metadata__": np.zeros(2)}, None, "must be a str other than '__metadata__'"),
        ({"w": np.zeros(2)}, {"step": 3}, "metadata 'step' -> 3 is not str -> str"),
    ],
)
def test_save_rejects(tmp_path, tensors, metadata, message):
    with pytest.raises(CheckpointError, match=message.replace("(", r"\(")):
        save_file(tensors, tmp_path / "m.safetensors", metadata)
    assert not list(tmp_path.iterdir())


# ---- load errors: one per way a file can be wrong --------------------------------------------

F32_2 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match=r"checkpoint file .*nope\.safetensors does not exist"):
        load_file(tmp_path / "nope.safetensors")


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(CheckpointError, match="is a directory"):
        load_file(tmp_path)


def test_shorter_than_8_bytes(tmp_path):
    (tmp_path / "m").write_bytes(b"\x01\x02\x03")
    with pytest.raises(CheckpointError, match="only 3 bytes, shorter than the 8-byte header length"):
        load_file(tmp_path / "m")


def test_header_length_larger_than_file(tmp_path):
    (tmp_path / "m").write_bytes(struct.pack("<Q", 1000) + b"{}")
    with pytest.raises(CheckpointError, match="header length 1000 is larger than the 2 bytes after it"):
        load_file(tmp_path / "m")


@pytest.mark.parametrize(
    ("header_bytes", "message"),
    [
        (b'{"a": "\xff"}', "header is not valid UTF-8"),
        (b"{not json", "header is not valid JSON"),
        (b"[1, 2]", "header must be a JSON object, got list"),
        (b'{"a": 1, "a": 2}', "duplicate key"),
    ],
)
def test_bad_header(tmp_path, header_bytes, message):
    with pytest.raises(CheckpointError, match=message):
        load_file(write_raw(tmp_path / "m", None, header_bytes=header_bytes))


@pytest.mark.parametrize(
    ("header", "data_size", "message"),
    [
        ({"w": {"dtype": "F8", "shape": [2], "data_offsets": [0, 8]}}, 8, "unknown dtype 'F8'; supported: F64"),
        ({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, 8,
         r"data_offsets \[0, 8\] span 8 bytes but shape \[3\] of F32 needs 12"),
        ({"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, 8, "shape must be a list of non-negative"),
        ({"w": {"dtype": "F32", "shape": [True], "data_offsets": [0, 4]}}, 4, "shape must be a list of non-negative"),
        ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [8]}}, 8, r"data_offsets must be \[begin, end\]"),
        ({"w": {"dtype": "F32", "shape": [2]}}, 8, "entry must be an object with dtype, shape and data_offsets"),
        ({"w": F32_2}, 4, r"data_offsets \[0, 8\] run past the 4-byte data section"),
        ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}, 8, "run past the 8-byte data section"),
        ({"a": F32_2, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, 12, "overlap tensor 'a'"),
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, 12, "4 unused bytes before tensor 'a'"),
        ({"w": F32_2}, 12, "4 trailing bytes after the last tensor"),
        ({"__metadata__": {"step": 3}, "w": F32_2}, 8, "metadata 'step' -> 3 is not str -> str"),
        ({"__metadata__": ["x"], "w": F32_2}, 8, "__metadata__ must be an object of strings"),
    ],
)
def test_inconsistent_header(tmp_path, header, data_size, message):
    path = write_raw(tmp_path / "m.safetensors", header, bytes(data_size))
    with pytest.raises(CheckpointError, match=message) as info:
        load_file(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)
