"""Atomic writes: the target is the old file or the new one, never a torn mix; no temp files left."""

import errno
import os
import sys

import pytest

from tinylm import fileio
from tinylm.fileio import atomic_write_bytes, atomic_writer


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
