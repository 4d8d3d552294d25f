"""A run directory before the work starts: writable (probed, not assumed), and one writer at a time.

Two ``tinylm train`` runs on the same ``--out`` would each save over the other's
checkpoint and both report success. So the writer holds an exclusive
``fcntl.flock`` on ``OUT/.lock`` for the whole run, with its pid and host written
in the file for the message a second writer gets. The kernel drops the lock when
the process ends, however it ends (``kill -9`` included), so a lock left by a
dead writer is simply taken over: the stale pid in the file is overwritten.
(flock is advisory and local to one machine's kernel; on NFS it may not exclude
a writer on another host. Without fcntl, on Windows, no lock is taken.)

An unwritable ``--out`` (read-only, ``/dev/null``, ``/proc``, a symlink loop)
is found by creating the directory and writing, renaming and removing a probe
file in it, before any data is read, not at the first save steps later. (A full
disk can still surface only at a save: the probe writes 6 bytes.)
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

from tinylm.errors import ConfigError, TinyLMError
from tinylm.fileio import file_kind, remove_stale_temporaries

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

LOCK_NAME = ".lock"


class RunDirectoryBusy(TinyLMError):
    """Another process is writing to this run directory."""


_CAUSES = {errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
           errno.EPERM: "permission denied", errno.ENOTDIR: "a part of the path is not a directory",
           errno.ELOOP: "the path is a symlink loop", errno.ENOSPC: "no space left on the device",
           errno.EDQUOT: "the disk quota is exceeded", errno.ENOENT: "it cannot be created there",
           errno.EEXIST: "a file of that name is in the way", errno.ENAMETOOLONG: "the name is too long"}


def _cannot(out, exc: OSError) -> ConfigError:
    cause = _CAUSES.get(exc.errno, exc.strerror or str(exc))
    return ConfigError(f"cannot write the run directory --out {out}: {cause}; pass another --out")


def prepare(out) -> Path:
    """Create ``out`` and prove that files can be written and renamed in it; ConfigError if not."""
    if not str(out).strip():
        raise ConfigError("--out is empty; name a run directory (e.g. --out out)")
    out = Path(out)
    try:
        mode = os.stat(out).st_mode  # follows symlinks: a loop is ELOOP here
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise _cannot(out, exc) from None
    if mode is not None and not stat.S_ISDIR(mode):
        kind = "a file" if stat.S_ISREG(mode) else file_kind(mode)
        raise ConfigError(f"--out {out} is {kind}, not a directory; pass another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(out / "probe")  # left by a run killed while it probed
        # named like atomic_writer's temporaries, so that remove_stale_temporaries knows them
        probe = out / f".probe.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            os.write(fd, b"tinylm")
        finally:
            os.close(fd)
        renamed = probe.with_suffix(".renamed.tmp")
        os.replace(probe, renamed)  # checkpoints are saved by a rename within the directory
        os.unlink(renamed)
    except OSError as exc:
        raise _cannot(out, exc) from None
    return out


@contextlib.contextmanager
def exclusive(out) -> Iterator[Path]:
    """Hold ``out``'s lock for the block; RunDirectoryBusy naming the holder if another has it."""
    out = prepare(out)
    if fcntl is None:
        yield out
        return
    path = out / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise _cannot(out, exc) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                raise _cannot(out, exc) from None
            raise RunDirectoryBusy(f"{out} is in use by {_holder(fd)} (lock {path}); wait for it "
                                   "to finish, stop it, or pass another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield out
    finally:
        os.close(fd)  # releases the lock; the file stays (removing it would race a new writer)


def _holder(fd: int) -> str:
    """'pid 123 on host' as the holder wrote it, or a description when it has not yet."""
    text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    return text if text.startswith("pid ") else "another tinylm process"
