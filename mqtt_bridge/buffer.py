"""The durable disk buffer on diskcache: the only module that imports it.

Owns: where accepted messages live between the broker's ack and the API's 201, and the rules of
spec/reliability.md §2 that keep them there: no eviction, no expiry, `synchronous=FULL` with one transaction per
group of messages (group commit), bytes only (a Disk that refuses to pickle or unpickle), every value inline in
SQLite (no side files that a rollback or power loss could orphan), peek → send → delete (never pop before send),
a high-water mark that tells the caller to stop acking before the disk is full, a lock file so that a second
instance on the same directory refuses to start, and the dead-letter store.

Layout: one SQLite database, so that moving an event to the dead letters is one transaction. Queue rows have
integer keys in arrival order (they sort before every string key); dead letters have `dlq-<n>` keys; the
sourceIds of uploaded images are remembered under `img:<sha256>`.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import diskcache

from mqtt_bridge.errors import BufferCorrupt, BufferError_, BufferLocked
from mqtt_bridge.events import DeadLetter, Record

__all__ = ["DiskBuffer"]

log = logging.getLogger(__name__)

_DLQ_PREFIX = "dlq"
_IMG_PREFIX = "img:"
_INLINE_LIMIT = 2**31 - 1  # every value stays inside SQLite (reliability.md §2.3, rollback with side files)


class _BytesOnlyDisk(diskcache.Disk):  # type: ignore[misc]
    """A diskcache Disk that stores only bytes/str/int and never unpickles (CVE-2025-69872)."""

    def store(self, value: object, read: bool, key: object = diskcache.core.UNKNOWN) -> object:
        if not isinstance(value, bytes | str | int) or read:
            raise TypeError(f"the buffer stores bytes only, not {type(value).__name__}")
        return super().store(value, read, key)

    def fetch(self, mode: int, filename: str | None, value: object, read: bool) -> object:
        if mode == diskcache.core.MODE_PICKLE:
            raise BufferCorrupt("a pickled value was found in the buffer; refusing to load it")
        return super().fetch(mode, filename, value, read)


def _quick_check(db_path: Path) -> None:
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


class DiskBuffer:
    """A durable FIFO of `Record` bytes plus dead letters and an upload cache, in one directory.

    Thread safety: diskcache gives each thread its own SQLite connection; writers serialise on SQLite's lock.
    One ingest thread writes, one flusher thread peeks and deletes.
    """

    def __init__(self, path: Path, max_bytes: int, min_free_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.min_free_bytes = min_free_bytes
        self._lock_file: IO[bytes] | None = None
        self._cache: diskcache.Cache | None = None
        self._count_lock = threading.Lock()
        self._depth = 0
        self._dead = 0

    # --- lifecycle -------------------------------------------------------------------------------------------

    def open(self) -> None:
        """Create the private directory, take the instance lock, check and open the database."""
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.path, 0o700)
            lock_file = (self.path / "bridge.lock").open("a+b")
        except OSError as exc:
            raise BufferError_(f"cannot use buffer directory {self.path}: {exc.strerror}") from exc
        try:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock_file.close()
            raise BufferLocked(f"another bridge is using the buffer at {self.path}; "
                               "each instance needs its own buffer directory") from None
        self._lock_file = lock_file
        try:
            _quick_check(self.path / "cache.db")
            self._cache = diskcache.Cache(
                str(self.path), disk=_BytesOnlyDisk, eviction_policy="none", cull_limit=0,
                sqlite_synchronous=2, disk_min_file_size=_INLINE_LIMIT, size_limit=2**62,
                statistics=False, tag_index=False, timeout=60,
            )
            self._depth, self._dead = self._count()
        except BufferError_:
            self.close()
            raise
        except (sqlite3.DatabaseError, OSError) as exc:
            self.close()
            raise BufferCorrupt(f"cannot open the buffer database in {self.path}: {exc}") from exc
        log.info("buffer opened path=%s depth=%d dead_letters=%d", self.path, self._depth, self._dead)

    def close(self) -> None:
        """Close the database and release the instance lock."""
        if self._cache is not None:
            self._cache.close()
            self._cache = None
        if self._lock_file is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    def __enter__(self) -> DiskBuffer:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def _db(self) -> diskcache.Cache:
        if self._cache is None:
            raise BufferError_("the buffer is not open")
        return self._cache

    def _count(self) -> tuple[int, int]:
        depth = dead = 0
        for key in self._db.iterkeys():
            if isinstance(key, int):
                depth += 1
            elif key.startswith(_DLQ_PREFIX + "-"):
                dead += 1
        return depth, dead

    # --- ingest side ------------------------------------------------------------------------------------------

    def append(self, records: list[Record], dead_letters: list[DeadLetter]) -> None:
        """Commit records and dead letters durably in one transaction (one fsync for the whole group)."""
        if not records and not dead_letters:
            return
        db = self._db
        with db.transact(retry=True):
            for record in records:
                db.push(record.to_bytes(), retry=True)
            for letter in dead_letters:
                db.push(letter.to_bytes(), prefix=_DLQ_PREFIX, retry=True)
        with self._count_lock:
            self._depth += len(records)
            self._dead += len(dead_letters)

    def is_over_high_water(self) -> bool:
        """True when the buffer is over `max_bytes` or the filesystem is short of `min_free_bytes`."""
        if self._db.volume() >= self.max_bytes:
            return True
        try:
            return shutil.disk_usage(self.path).free < self.min_free_bytes
        except OSError:
            return True

    # --- flusher side -----------------------------------------------------------------------------------------

    def peek(self, max_events: int, max_bytes: int) -> list[tuple[int, Record]]:
        """The oldest records, in order, without removing them: at most `max_events` and about `max_bytes`."""
        db = self._db
        out: list[tuple[int, Record]] = []
        total = 0
        for key in db.iterkeys():
            if not isinstance(key, int) or len(out) >= max_events:
                break
            value = db.get(key, retry=True)
            if value is None:  # deleted between listing and reading
                continue
            if out and total + len(value) > max_bytes:
                break
            total += len(value)
            try:
                out.append((key, Record.from_bytes(value)))
            except (ValueError, KeyError, TypeError):
                log.exception("unreadable buffer record key=%d; moving it to the dead letters", key)
                self._quarantine(key, value)
        return out

    def _quarantine(self, key: int, value: bytes) -> None:
        letter = DeadLetter(reason="unreadable_record", detail="the buffered record could not be decoded",
                            topic="", route="", payload=value, received_at_s=0.0, dead_at_s=0.0)
        self.move_to_dead_letters([(key, letter)])

    def delete(self, keys: list[int]) -> None:
        """Remove delivered records, in one transaction."""
        db = self._db
        removed = 0
        with db.transact(retry=True):
            for key in keys:
                removed += bool(db.delete(key, retry=True))
        with self._count_lock:
            self._depth -= removed

    def move_to_dead_letters(self, items: list[tuple[int, DeadLetter]]) -> None:
        """Replace queued records by dead letters, atomically (one transaction)."""
        db = self._db
        removed = 0
        with db.transact(retry=True):
            for key, letter in items:
                db.push(letter.to_bytes(), prefix=_DLQ_PREFIX, retry=True)
                removed += bool(db.delete(key, retry=True))
        with self._count_lock:
            self._depth -= removed
            self._dead += len(items)

    def source_id(self, image_hash: str) -> str | None:
        """The sourceId of an image already uploaded, by content hash."""
        value = self._db.get(_IMG_PREFIX + image_hash, retry=True)
        return value if isinstance(value, str) else None

    def remember_source_id(self, image_hash: str, source_id: str) -> None:
        """Remember an upload durably, so that a retry after a crash does not upload again."""
        self._db.set(_IMG_PREFIX + image_hash, source_id, retry=True)

    def forget_source_ids(self, image_hashes: list[str]) -> None:
        """Drop upload entries no queued record needs any more."""
        db = self._db
        with db.transact(retry=True):
            for image_hash in image_hashes:
                db.delete(_IMG_PREFIX + image_hash, retry=True)

    # --- inspection -------------------------------------------------------------------------------------------

    @property
    def depth(self) -> int:
        """Records waiting for delivery."""
        return self._depth

    @property
    def dead_letter_count(self) -> int:
        """Dead letters kept."""
        return self._dead

    def volume_bytes(self) -> int:
        """Bytes the database uses on disk."""
        return int(self._db.volume())

    def dead_letters(self) -> Iterator[tuple[str, DeadLetter]]:
        """Every dead letter, oldest first."""
        db = self._db
        for key in db.iterkeys():
            if isinstance(key, str) and key.startswith(_DLQ_PREFIX + "-"):
                value = db.get(key, retry=True)
                if isinstance(value, bytes):
                    yield key, DeadLetter.from_bytes(value)
