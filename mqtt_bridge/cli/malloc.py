"""glibc's allocator tuned for the long-running `run` process.

Owns: one call at start that makes glibc serve allocations of 16 KiB and more from their own memory maps, returned to
the system when freed (`mallopt(M_MMAP_THRESHOLD, 16384)`, what `MALLOC_MMAP_THRESHOLD_=16384` does). With glibc's
default (a threshold that grows up to 32 MiB), freed payloads, images and long topics of tens of KiB stay in the heap
between small long-lived objects and the process's RSS keeps the high-water mark of a burst for good (measured: ~200
MiB kept after a flood of 48 KiB topics, see `tests/faults/test_slow_servers.py`). The container image and the systemd
unit set the variable; this call gives a `pip install` the same. A threshold the environment already sets is left as
it is; on a C library other than glibc nothing is done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

__all__ = ["MMAP_THRESHOLD_BYTES", "tune_malloc"]

log = logging.getLogger(__name__)

MMAP_THRESHOLD_BYTES = 16 * 1024
_M_MMAP_THRESHOLD = -3  # glibc's malloc.h
_ENV = "MALLOC_MMAP_THRESHOLD_"


def tune_malloc(threshold_bytes: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Set glibc's mmap threshold unless the environment sets it; True when this call set it."""
    if os.environ.get(_ENV):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        log.debug("malloc tuning skipped: not glibc")
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    if mallopt(_M_MMAP_THRESHOLD, threshold_bytes) != 1:
        log.debug("malloc tuning refused threshold_bytes=%d", threshold_bytes)
        return False
    return True
