"""Atomic writes: the target is the old file or the new one, never a torn mix; no temp files left.
Bounded reads and the one JSON parser for untrusted files (tinylm/jsonsafe.py)."""

import errno
import os
import sys

import pytest

from tinylm import fileio, jsonsafe
from tinylm.errors import DataError
from tinylm.fileio import atomic_write_bytes, atomic_writer, read_bounded


def disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def assert_only(directory, *names):
    """No temporary files were left behind next to the target."""
    assert sorted(os.listdir(directory)) == sorted(names)


def test_write_then_overwrite(tmp_path):
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"first")
    atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second"
    assert_only(tmp_path, "f.bin")


def test_atomic_writer_writes_in_pieces(tmp_path):
    target = tmp_path / "f.bin"
    with atomic_writer(target) as f:
        f.write(b"ab")
        f.write(memoryview(b"cd"))
    assert target.read_bytes() == b"abcd"


@pytest.mark.parametrize("failing", ["replace", "fsync"])
def test_failure_keeps_previous_file(tmp_path, monkeypatch, failing):
    target = tmp_path / "f.bin"
    target.write_bytes(b"precious")
    monkeypatch.setattr(fileio.os, failing, disk_full)
    with pytest.raises(OSError) as info:
        atomic_write_bytes(target, b"new contents")
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert target.read_bytes() == b"precious"
    assert_only(tmp_path, "f.bin")


def test_failing_write_keeps_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "f.bin"
    target.write_bytes(b"precious")
    real_fdopen = os.fdopen

    class FullDisk:
        """A file whose every write fails with ENOSPC, like a full disk."""

        def __init__(self, fd, mode):
            self.real = real_fdopen(fd, mode)

        def write(self, data):
            disk_full()

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.real.close()

    monkeypatch.setattr(fileio.os, "fdopen", FullDisk)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_bytes(target, b"new contents")
    assert target.read_bytes() == b"precious"
    assert_only(tmp_path, "f.bin")


def test_exception_inside_block_keeps_previous_file(tmp_path):
    target = tmp_path / "f.bin"
    target.write_bytes(b"precious")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_writer(target) as f:
            f.write(b"half a checkp")
            raise RuntimeError("boom")
    assert target.read_bytes() == b"precious"
    assert_only(tmp_path, "f.bin")


def test_missing_directory_raises_oserror(tmp_path):
    with pytest.raises(FileNotFoundError):
        atomic_write_bytes(tmp_path / "no" / "such" / "dir.bin", b"x")


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_permissions_follow_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "f.bin", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "f.bin").stat().st_mode & 0o777 == 0o644


# --------------------------------------------------------------------------- untrusted reads
def test_depth_is_measured_outside_strings_before_parsing():
    assert jsonsafe.nesting_depth('{"a": [[1], {"b": "[[[[{{"}]}') == 3
    assert jsonsafe.nesting_depth('"\\"[[[" [') == 1  # an escaped quote does not end the string
    with pytest.raises(DataError, match=r"^f nests JSON 100000 levels deep \(at most 64 are read\)$"):
        jsonsafe.parse("[" * 100_000 + "]" * 100_000, "f", DataError)


@pytest.mark.parametrize("text, message", [
    ("9" * 41, "holds an integer of 41 digits (at most 40)"),
    ('{"a": NaN}', "holds NaN, which is not JSON"),
    ("[1e999]", "holds the number 1e999, which overflows a float"),
    ('{"a": 1, "a": 2}', "holds a duplicate key 'a'"),
    ('{"a": ', "is not valid JSON (Expecting value at line 1 column 7)"),
    (b"\xff", "is not valid UTF-8 (byte 0)"),
])
def test_parse_refuses_in_one_line_naming_the_source(text, message):
    with pytest.raises(DataError) as info:
        jsonsafe.parse(text, "tok.json", DataError)
    assert str(info.value) == f"tok.json {message}"


def test_field_checks_types_and_never_takes_a_bool_for_an_int():
    doc = {"step": True, "lr": 1, "name": "x"}
    assert jsonsafe.field(doc, "lr", float, "ck", DataError) == 1
    assert jsonsafe.field(doc, "missing", int, "ck", DataError, default=7) == 7
    with pytest.raises(DataError, match="ck: field 'step' must be an integer, got true or false True"):
        jsonsafe.field(doc, "step", int, "ck", DataError)
    with pytest.raises(DataError, match="ck: missing field 'missing'"):
        jsonsafe.field(doc, "missing", int, "ck", DataError)


def test_read_bounded_refuses_by_size_and_kind_without_reading(tmp_path):
    (tmp_path / "f").write_bytes(b"x" * 10)
    assert read_bounded(tmp_path / "f", 10, "file", DataError) == b"x" * 10
    with pytest.raises(DataError, match=r"file .*f is 10 bytes, more than the 9 read"):
        read_bounded(tmp_path / "f", 9, "file", DataError)
    with pytest.raises(DataError, match="is a directory, not a regular file"):
        read_bounded(tmp_path, 10, "file", DataError)
    with pytest.raises(DataError, match="not a valid file name"):
        read_bounded("a\0b", 10, "file", DataError)
