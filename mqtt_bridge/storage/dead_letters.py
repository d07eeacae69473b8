"""The dead letters inside the buffer's database: messages and events kept with the reason they were not delivered.

Owns: their keys (`dlq-<n>`, pushed in arrival order, after the queue's integer keys), writing them inside a
transaction the buffer opened (so that finishing a batch and dead-lettering part of it is one commit), reading,
deleting, and their count; and the quarantine of unsafe rows found on open (`storage.disk.unsafe_rows`: a pickled
key or value, a row naming a file), each replaced by a dead letter that says what it was, in one transaction.
`DiskBuffer` is the only user; callers go through it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator

import diskcache

from mqtt_bridge.errors import DeadLetterReason
from mqtt_bridge.model.record import DeadLetter
from mqtt_bridge.storage.disk import delete_rows, unsafe_rows

__all__ = ["DeadLetters"]

log = logging.getLogger(__name__)

_PREFIX = "dlq"


def _is_key(key: object) -> bool:
    return isinstance(key, str) and key.startswith(_PREFIX + "-")


class DeadLetters:
    """The dead-letter store of one open buffer. `db` returns the open database (raises when it is closed)."""

    def __init__(self, db: Callable[[], diskcache.Cache]) -> None:
        self._db = db
        self._lock = threading.Lock()
        self._count = 0

    @property
    def count(self) -> int:
        """Dead letters kept."""
        return self._count

    def load(self) -> None:
        """Count the stored dead letters (on open)."""
        self._count = sum(1 for key in self._db().iterkeys() if _is_key(key))

    def quarantine_unsafe_rows(self) -> int:
        """Replace every unsafe row by a dead letter (`unreadable_record`), nothing loaded; returns how many. Runs on
        open, before anything iterates the keys (diskcache would unpickle a pickled key while iterating)."""
        db = self._db()
        rows = unsafe_rows(db)
        if not rows:
            return 0
        now = time.time()
        letters = [DeadLetter(reason=DeadLetterReason.UNREADABLE_RECORD, detail=f"quarantined {row.why}", topic="",
                              route="", payload=row.data, received_at_s=0.0, dead_at_s=now) for row in rows]
        with db.transact(retry=True):
            delete_rows(db, [row.rowid for row in rows])
            self.write(letters)
        for row in rows:
            log.error("buffer row quarantined to the dead letters: %s", row.why)
        return len(rows)

    def write(self, letters: Iterable[DeadLetter]) -> int:
        """Push dead letters inside the caller's transaction; returns how many. Count them with `added` once
        that transaction has committed."""
        db = self._db()
        written = 0
        for letter in letters:
            db.push(letter.to_bytes(), prefix=_PREFIX, retry=True)
            written += 1
        return written

    def added(self, count: int) -> None:
        """`count` dead letters were committed."""
        with self._lock:
            self._count += count

    def removed(self, count: int) -> None:
        """`count` dead letters were deleted by a transaction of the caller's (replay)."""
        with self._lock:
            self._count -= count

    def all(self) -> Iterator[tuple[str, DeadLetter]]:
        """Every dead letter with its key, oldest first."""
        db = self._db()
        for key in db.iterkeys():
            if _is_key(key):
                value = db.get(key, retry=True)
                if isinstance(value, bytes):
                    yield key, DeadLetter.from_bytes(value)

    def get(self, key: str) -> DeadLetter | None:
        """One dead letter by key (`dlq-…`), or None."""
        if not _is_key(key):
            return None
        value = self._db().get(key, retry=True)
        return DeadLetter.from_bytes(value) if isinstance(value, bytes) else None

    def delete(self, keys: list[str]) -> int:
        """Delete dead letters by key, in one transaction; returns how many existed."""
        db = self._db()
        removed = 0
        with db.transact(retry=True):
            for key in keys:
                if _is_key(key):
                    removed += bool(db.delete(key, retry=True))
        self.removed(removed)
        return removed
