"""The SQLite database under the disk buffer, opened through diskcache the one safe way.

Owns: the instance lock (a second bridge on the same directory refuses to start), the integrity check that runs
before diskcache touches the file (a corrupt buffer must never start empty), the bytes-only `Disk` (keys and values
are bytes, str or int; nothing is ever pickled or unpickled, CVE-2025-69872; no file outside the directory is ever
read or removed), the sweep that finds rows diskcache would unpickle or follow to a file (`unsafe_rows`, run on
open, before anything iterates the keys), and the diskcache settings of spec/reliability.md §2: no eviction, no
expiry, `synchronous=FULL`, every value inline in SQLite, a small page cache; and every plain-SQL read of the key
index (`text_keys`, `last_text_key`: what the raw log's processes use to find each other's segments). Knows nothing
of what the values mean (`buffer`, `raw_log` and `dead_letters` do).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import diskcache

from mqtt_bridge.errors import BufferCorrupt, BufferLocked, StorageError

__all__ = ["CHECK_BUSY_TIMEOUT_S", "BytesOnlyDisk", "UnsafeRow", "delete_rows", "last_text_key", "lock_directory",
           "open_database", "quick_check", "text_keys", "unlock_directory", "unsafe_rows"]

_INLINE_LIMIT = 2**31 - 1  # every value stays inside SQLite (reliability.md §2.3, rollback with side files)
# how long the integrity check waits for another process's lock before it refuses the buffer: start-up is bounded
CHECK_BUSY_TIMEOUT_S = 10.0
_MOVE_ASIDE = "move it aside to start with an empty buffer, or restore it from a backup"


_KEY_TYPES = (bytes, str, int)
_MODE_RAW = diskcache.core.MODE_RAW


def _is_inside(directory: str, filename: str) -> bool:
    """Whether `filename` (as stored in a row) names a path inside `directory`, symlinks resolved."""
    if not filename or os.path.isabs(filename) or "\x00" in filename:
        return False
    root = os.path.realpath(directory)
    full = os.path.realpath(os.path.join(root, filename))
    return os.path.commonpath([root, full]) == root and full != root


class BytesOnlyDisk(diskcache.Disk):  # type: ignore[misc]
    """A diskcache Disk whose keys and values are bytes/str/int only and that never unpickles (CVE-2025-69872).

    Every value is stored inline (raw mode); a row in any other mode, with a pickled key, or naming a file is refused
    on read (BufferCorrupt), and `remove` never touches a path outside the directory.
    """

    def put(self, key: object) -> tuple[object, bool]:
        if type(key) not in _KEY_TYPES:
            raise TypeError(f"buffer keys are bytes, str or int only, not {type(key).__name__}")
        db_key, raw = super().put(key)
        if not raw:  # pragma: no cover - diskcache stores these types raw
            raise TypeError("the buffer refuses to pickle a key")
        return db_key, raw

    def get(self, key: object, raw: bool) -> object:
        if not raw:
            raise BufferCorrupt("a pickled key was found in the buffer; refusing to load it")
        value = super().get(key, raw)
        if type(value) not in _KEY_TYPES:
            raise BufferCorrupt(f"a buffer key of type {type(value).__name__} was found; refusing it")
        return value

    def store(self, value: object, read: bool, key: object = diskcache.core.UNKNOWN) -> object:
        if type(value) not in _KEY_TYPES or read:
            raise TypeError(f"the buffer stores bytes only, not {type(value).__name__}")
        return super().store(value, read, key)

    def fetch(self, mode: int, filename: str | None, value: object, read: bool) -> object:
        if mode == diskcache.core.MODE_PICKLE:
            raise BufferCorrupt("a pickled value was found in the buffer; refusing to load it")
        if mode != _MODE_RAW or filename is not None:
            raise BufferCorrupt("a buffer row names a file; the buffer keeps every value inline, refusing to read it")
        return super().fetch(mode, filename, value, read)

    def remove(self, file_path: str) -> None:
        if not _is_inside(self._directory, file_path):
            return  # never delete what the buffer did not write (a planted row may name any file)
        super().remove(file_path)


@dataclass(frozen=True, slots=True)
class UnsafeRow:
    """A row diskcache would unpickle or follow to a file: what it is, never what it holds (nothing is loaded)."""

    rowid: int
    why: str
    data: bytes  # the row's inline bytes as stored (a pickled key stays an opaque blob), b"" when it names a file


_UNSAFE_SQL = ("SELECT rowid, key, raw, mode, filename, value FROM Cache WHERE raw != 1 OR mode != ? "
               "OR filename IS NOT NULL OR typeof(key) NOT IN ('integer', 'text', 'blob') ORDER BY rowid")


def unsafe_rows(cache: diskcache.Cache) -> list[UnsafeRow]:
    """Every row of the open cache that is not a raw key with an inline raw value (read with plain SQL)."""
    rows = cache._sql(_UNSAFE_SQL, (_MODE_RAW,)).fetchall()
    found = []
    for rowid, key, raw, mode, filename, value in rows:
        if raw != 1:
            why = "a row with a pickled key (never unpickled)"
        elif filename is not None:
            where = "outside" if not _is_inside(cache.directory, str(filename)) else "inside"
            why = f"a row naming a file {where} the buffer directory ({str(filename)[:200]!r}; not read, not deleted)"
        elif mode == diskcache.core.MODE_PICKLE:
            why = "a row with a pickled value (never unpickled)"
        else:
            why = f"a row with a key of SQLite type {type(key).__name__} or value mode {mode}"
        blob = value if raw == 1 else key
        found.append(UnsafeRow(int(rowid), why, bytes(blob) if isinstance(blob, bytes | memoryview) else b""))
    return found


def delete_rows(cache: diskcache.Cache, rowids: list[int]) -> None:
    """Delete rows by rowid inside the caller's transaction, without touching any file they name."""
    for rowid in rowids:
        cache._sql("DELETE FROM Cache WHERE rowid = ?", (rowid,))


def text_keys(cache: diskcache.Cache, after: str, before: str) -> list[str]:
    """The text keys k with `after` < k < `before`, ascending (one range read of the key index, with plain SQL)."""
    rows = cache._sql("SELECT key FROM Cache WHERE key > ? AND key < ? ORDER BY key", (after, before)).fetchall()
    return [key for (key,) in rows if isinstance(key, str)]


def last_text_key(cache: diskcache.Cache, low: str, before: str) -> str | None:
    """The greatest text key k with `low` <= k < `before`, or None."""
    row = cache._sql("SELECT key FROM Cache WHERE key >= ? AND key < ? ORDER BY key DESC LIMIT 1",
                     (low, before)).fetchone()
    return row[0] if row is not None and isinstance(row[0], str) else None


def quick_check(db_path: Path, *, busy_timeout_s: float | None = None) -> None:
    """Run SQLite's quick_check before diskcache touches the file; a corrupt buffer must never start empty.

    Raises BufferCorrupt, in one line that names the file, when SQLite cannot read it or finds it damaged; and
    StorageError when another process keeps it locked past `busy_timeout_s` (default `CHECK_BUSY_TIMEOUT_S`;
    locked is not corrupt). Read-only: the file is never changed. quick_check sees the structure of the file
    (pages, b-trees, overflow chains), never the bytes inside a value: a value damaged in place is found only when
    it is read (`buffer` moves a segment it cannot split to the dead letters).
    """
    if not db_path.exists():
        return
    timeout_s = CHECK_BUSY_TIMEOUT_S if busy_timeout_s is None else busy_timeout_s
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=timeout_s)) as con:
            rows = con.execute("PRAGMA quick_check").fetchall()
    except sqlite3.DatabaseError as exc:
        if isinstance(exc, sqlite3.OperationalError) and _is_busy(exc):
            raise StorageError(f"{db_path} stayed locked by another process for {timeout_s:g} s ({exc}); "
                               "stop whatever holds it open (a backup, an sqlite3 shell) and start again") from exc
        raise BufferCorrupt(f"{db_path} is not a readable SQLite database ({exc}); {_MOVE_ASIDE}") from exc
    if rows != [("ok",)]:
        problems = [line.strip() for (text,) in rows for line in str(text).splitlines()
                    if line.strip() and not line.startswith("***")]
        first = "; ".join(problems[:2])[:300]
        raise BufferCorrupt(f"{db_path} failed its integrity check ({len(problems)} problem(s), first: {first}); "
                            f"{_MOVE_ASIDE}")


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    """Whether SQLite gave up waiting for another connection's lock (SQLITE_BUSY/LOCKED), not a damaged file."""
    return (exc.sqlite_errorcode & 0xFF) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)  # extended codes too


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


def open_database(path: Path, *, check: bool = True) -> diskcache.Cache:
    """Check (unless `check` is False: a child process of a supervisor that checked it), then open the database in
    `path` with the durable settings. Raises BufferCorrupt on a failed check; sqlite3 and OS errors of the open
    itself propagate (the caller maps them)."""
    if check:
        quick_check(path / "cache.db")
    return diskcache.Cache(
        str(path), disk=BytesOnlyDisk, eviction_policy="none", cull_limit=0,
        sqlite_synchronous=2, disk_min_file_size=_INLINE_LIMIT, size_limit=2**62,
        # small page cache and no mmap: each thread has its own connection, and diskcache's defaults
        # (32 MiB cache, 64 MiB mmap) would count into RSS on an edge box with a big backlog
        sqlite_cache_size=1024, sqlite_mmap_size=0,
        statistics=False, tag_index=False, timeout=60,
    )
