"""How the process's C library keeps freed memory: a setting for the CPU backends.

Not a kernel: it changes how glibc's allocator returns freed buffers to the
operating system, for every array the process allocates.
"""

from __future__ import annotations

import ctypes
import ctypes.util


def keep_freed_memory() -> None:
    """Ask glibc to keep freed buffers for reuse instead of returning them to the OS.

    A training step allocates the same large temporaries every time; by default
    glibc unmaps each one on free, and the next step pays page faults to map it
    again (about a third of a small model's step here). Process-wide; a no-op
    where the C library is not glibc.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024)   # glibc's maximum
    mallopt(M_TRIM_THRESHOLD, 512 * 1024 * 1024)
