"""The SQLite database under the disk buffer, opened through diskcache the one safe way.

Owns: the instance lock (a second bridge on the same directory refuses to start), the integrity check that runs
before diskcache touches the file (a corrupt buffer must never start empty), the bytes-only `Disk` (nothing is ever
pickled or unpickled, CVE-2025-69872), and the diskcache settings of spec/reliability.md §2: no eviction, no
expiry, `synchronous=FULL`, every value inline in SQLite, a small page cache. Knows nothing of what the values mean
(`buffer` and `dead_letters` do).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from pathlib import Path
from typing import IO

import diskcache

from mqtt_bridge.errors import BufferCorrupt, BufferLocked, StorageError

__all__ = ["BytesOnlyDisk", "lock_directory", "open_database", "quick_check", "unlock_directory"]

_INLINE_LIMIT = 2**31 - 1  # every value stays inside SQLite (reliability.md §2.3, rollback with side files)


class BytesOnlyDisk(diskcache.Disk):  # type: ignore[misc]
    """A diskcache Disk that stores only bytes/str/int and never unpickles (CVE-2025-69872)."""

    def store(self, value: object, read: bool, key: object = diskcache.core.UNKNOWN) -> object:
        if not isinstance(value, bytes | str | int) or read:
            raise TypeError(f"the buffer stores bytes only, not {type(value).__name__}")
        return super().store(value, read, key)

    def fetch(self, mode: int, filename: str | None, value: object, read: bool) -> object:
        if mode == diskcache.core.MODE_PICKLE:
            raise BufferCorrupt("a pickled value was found in the buffer; refusing to load it")
        return super().fetch(mode, filename, value, read)


def quick_check(db_path: Path) -> None:
    """Run SQLite's quick_check before diskcache touches the file; a corrupt buffer must never start empty."""
    if not db_path.exists():
        return
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)) as con:
            rows = con.execute("PRAGMA quick_check").fetchall()
    except sqlite3.DatabaseError as exc:
        raise BufferCorrupt(f"{db_path} is not a readable SQLite database ({exc}); move it aside "
                            "to start with an empty buffer, or restore it from a backup") from exc
    if rows != [("ok",)]:
        raise BufferCorrupt(f"{db_path} failed its integrity check: {rows[:3]}")


def lock_directory(path: Path) -> IO[bytes]:
    """Create the private buffer directory and take its instance lock; returns the open lock file.

    Raises StorageError when the directory cannot be used, BufferLocked when another process holds it.
    """
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path, 0o700)
        lock_file = (path / "bridge.lock").open("a+b")
    except OSError as exc:
        raise StorageError(f"cannot use buffer directory {path}: {exc.strerror}") from exc
    try:
        fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock_file.close()
        raise BufferLocked(f"another bridge is using the buffer at {path}; "
                           "each instance needs its own buffer directory") from None
    return lock_file


def unlock_directory(lock_file: IO[bytes]) -> None:
    """Release the instance lock taken by `lock_directory`."""
    with contextlib.suppress(OSError):
        fcntl.flock(lock_file.fileno(), fcntl.LOCK_UN)
    lock_file.close()


def open_database(path: Path) -> diskcache.Cache:
    """Check, then open the database in `path` with the durable settings. Raises BufferCorrupt on a failed check;
    sqlite3 and OS errors of the open itself propagate (the caller maps them)."""
    quick_check(path / "cache.db")
    return diskcache.Cache(
        str(path), disk=BytesOnlyDisk, eviction_policy="none", cull_limit=0,
        sqlite_synchronous=2, disk_min_file_size=_INLINE_LIMIT, size_limit=2**62,
        # small page cache and no mmap: each thread has its own connection, and diskcache's defaults
        # (32 MiB cache, 64 MiB mmap) would count into RSS on an edge box with a big backlog
        sqlite_cache_size=1024, sqlite_mmap_size=0,
        statistics=False, tag_index=False, timeout=60,
    )
