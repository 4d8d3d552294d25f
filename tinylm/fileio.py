"""Atomic file writes (a file on disk is either the old version or the new one, never half),
and bounded reads of files that may be anything.

A checkpoint written while the disk fills up, or while the process is killed,
must not destroy the previous checkpoint. So we write to a temporary file in
the same directory (same filesystem, so the rename is atomic), flush it to the
disk with ``fsync``, and only then ``os.replace`` it onto the target. Errors are
re-raised as the original ``OSError``: the caller decides whether that is a
``CheckpointError`` or something else.

Reading is the other way round: a path from a user may name a FIFO (a plain
``open`` waits forever for a writer), ``/dev/zero`` (endless) or a file of any
size. ``read_bounded`` opens without blocking, refuses anything but a regular
file by name, and refuses more than a given number of bytes before reading them.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see ``atomic_writer``)."""
    with atomic_writer(path) as f:
        f.write(data)


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Yield a binary file whose contents replace ``path`` only if the block succeeds.

    Use it for large files that are written piece by piece, so the whole
    payload never has to exist as one ``bytes`` object. If anything raises
    inside the block or while writing (``ENOSPC``, ``EIO``, a bug in the
    caller), the temporary file is removed, the exception propagates unchanged
    and the previous file at ``path`` is left as it was.
    """
    path = Path(path)
    # Dot-prefixed and random, so it neither shows up in listings nor collides
    # with a concurrent writer of the same target.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # os.open with 0o666 lets the umask decide permissions, as for a plain open()
    # (tempfile.mkstemp would force 0o600 on every checkpoint).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())  # data on disk before the rename makes it visible
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    """Persist a rename by syncing its directory; best effort (not possible on Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the rename itself succeeded
    finally:
        os.close(fd)


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files of writers of ``path`` that were killed mid-write.

    ``atomic_writer`` names its temporary ``.NAME.PID.RANDOM.tmp``; a process
    killed with SIGKILL cannot remove it. One whose PID no longer runs is
    stale. POSIX only (elsewhere the PID test is not safe); returns what was removed.
    """
    path = Path(path)
    if os.name != "posix":
        return []
    removed = []
    prefix = f".{path.name}."
    try:
        candidates = [p for p in path.parent.iterdir()
                      if p.name.startswith(prefix) and p.name.endswith(".tmp")]
    except OSError:
        return []
    for tmp in candidates:
        pid = tmp.name[len(prefix):].split(".")[0]
        if pid.isdigit() and not _process_alive(int(pid)):
            with contextlib.suppress(OSError):
                tmp.unlink()
                removed.append(tmp)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # exists but is not ours, or not a PID at all: leave the file alone
    return True


# ---------------------------------------------------------------------------- reading
_NOT_REGULAR = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                (stat.S_ISSOCK, "a socket"))


def file_kind(mode: int) -> str:
    """'a FIFO (named pipe)', 'a character device', ... for a stat mode that is not a regular file."""
    return next((name for test, name in _NOT_REGULAR if test(mode)), "not a regular file")


@contextlib.contextmanager
def open_regular(path: str | os.PathLike, what: str, error: type[Exception]) -> Iterator[BinaryIO]:
    """Open ``path`` for reading only if it is a regular file; else ``error`` naming what it is.

    Opened with O_NONBLOCK and then checked with ``fstat`` on the open descriptor:
    a FIFO would block a plain ``open()`` forever, and checking the name first
    would leave a gap in which the file could be swapped for one.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist") from None
    except PermissionError:
        raise error(f"cannot read {what} {path}: permission denied") from None
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except ValueError:  # a NUL byte or a lone surrogate: no file can have that name
        raise error(f"cannot read {what} {str(path)!r:.200}: not a valid file name") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise error(f"{what} {path} is {file_kind(mode)}, not a regular file")
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    with os.fdopen(fd, "rb") as fh:
        yield fh


def read_bounded(path: str | os.PathLike, limit: int, what: str, error: type[Exception],
                 hint: str = "") -> bytes:
    """The bytes of the regular file ``path``, refused (``error``) if it holds more than ``limit``."""
    with open_regular(path, what, error) as fh:
        size = os.fstat(fh.fileno()).st_size
        if size > limit:
            raise error(f"{what} {path} is {size:,} bytes, more than the {limit:,} read{hint}")
        try:
            # read() allocates what it is asked for: ask for the size, not the limit
            data = fh.read(size + 1)
            while len(data) <= limit and len(data) > size:  # it grew (or is a /proc file of size 0)
                more = fh.read(min(2**20, limit + 1 - len(data)))
                if not more:
                    break
                data += more
        except OSError as exc:
            raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise error(f"{what} {path} grew past the {limit:,} bytes read{hint}")
    return data
