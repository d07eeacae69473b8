"""The delivery ledger: the eventIds the API confirmed lately, with their times, for `mqtt-bridge verify`.

Owns: a bounded record on disk of the last `max_entries` delivered events (eventId, useCaseId, eventType, the
event's own timestamp, when it was delivered, its route), in its own diskcache directory under the buffer path
(`<buffer>/ledger`), so that `verify` can read it while the bridge runs (the buffer itself is locked by the running
bridge; only the lock holder writes the ledger). Layout, like the buffer's segments: one value per write (a JSON
list of entries, bytes only, never pickled), under the integer key `seq << 16 | entry count`, so keys sort in write
order and the size is counted from the keys alone; the oldest values are deleted, in the same transaction, once
the ledger holds more than `max_entries`. Must not know about the API or threads (`observe.ledger_recorder` writes
it, `cli.verify` reads it).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import diskcache
import orjson

from mqtt_bridge.errors import BufferCorrupt, StorageError
from mqtt_bridge.model.record import Record
from mqtt_bridge.storage.disk import open_database

__all__ = ["LEDGER_DIRECTORY", "DeliveryLedger", "LedgerEntry", "ledger_path"]

log = logging.getLogger(__name__)

LEDGER_DIRECTORY = "ledger"
_COUNT_BITS = 16
_MAX_PER_VALUE = (1 << _COUNT_BITS) - 1


def ledger_path(buffer_path: Path) -> Path:
    """Where the ledger of the buffer at `buffer_path` lives."""
    return buffer_path / LEDGER_DIRECTORY


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One delivered event, as `verify` needs it to ask the API for it."""

    event_id: str
    use_case_id: str
    event_type: str
    timestamp: str  # the event's own ISO 8601 time: what the API's query window filters on
    delivered_at_s: float
    route: str

    @classmethod
    def of(cls, record: Record, delivered_at_s: float) -> LedgerEntry:
        """The entry of a delivered record."""
        event = record.event
        return cls(record.event_id, str(event.get("useCaseId", "")), str(event.get("eventType", "")),
                   str(event.get("timestamp", "")), delivered_at_s, record.route)

    def to_json(self) -> list[str | float]:
        """The compact form stored in the ledger."""
        return [self.event_id, self.use_case_id, self.event_type, self.timestamp, self.delivered_at_s, self.route]

    @classmethod
    def from_json(cls, item: object) -> LedgerEntry | None:
        """Inverse of `to_json`; None for anything else (a value of a future layout is skipped, not fatal)."""
        if not isinstance(item, list) or len(item) < 6:
            return None
        event_id, use_case_id, event_type, timestamp, delivered_at_s, route = item[:6]
        if not isinstance(delivered_at_s, int | float) or not all(
                isinstance(v, str) for v in (event_id, use_case_id, event_type, timestamp, route)):
            return None
        return cls(event_id, use_case_id, event_type, timestamp, float(delivered_at_s), route)


class DeliveryLedger:
    """The last `max_entries` delivered events, on disk. One writer (the bridge); readers may open it meanwhile."""

    def __init__(self, path: Path, max_entries: int) -> None:
        self.path = path
        self.max_entries = max_entries
        self._cache: diskcache.Cache | None = None
        self._count = 0
        self._next_seq = 0

    def open(self, *, create: bool = True) -> DeliveryLedger:
        """Open (with `create`, make the private directory first). Raises StorageError when it cannot be used or,
        without `create`, does not exist; BufferCorrupt when its database fails the integrity check."""
        if not create and not (self.path / "cache.db").is_file():
            raise StorageError(f"no delivery ledger at {self.path}")
        try:
            if create:
                self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._cache = open_database(self.path)
            keys = list(self._keys())
        except (sqlite3.DatabaseError, OSError) as exc:
            self.close()
            raise BufferCorrupt(f"cannot open the delivery ledger in {self.path}: {exc}") from exc
        self._count = sum(key & _MAX_PER_VALUE for key in keys)
        self._next_seq = (keys[-1] >> _COUNT_BITS) + 1 if keys else 0
        return self

    def close(self) -> None:
        """Close the database."""
        if self._cache is not None:
            self._cache.close()
            self._cache = None

    def __enter__(self) -> DeliveryLedger:
        return self if self._cache is not None else self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def _db(self) -> diskcache.Cache:
        if self._cache is None:
            raise StorageError("the delivery ledger is not open")
        return self._cache

    @property
    def count(self) -> int:
        """Entries held (as of this process's last write or open)."""
        return self._count

    def _keys(self) -> Iterator[int]:
        for key in self._db.iterkeys():
            if isinstance(key, int):
                yield key

    def record(self, entries: Sequence[LedgerEntry]) -> None:
        """Add `entries` and drop the oldest beyond `max_entries`, in one transaction."""
        if not entries or self.max_entries <= 0:
            return
        entries = entries[-self.max_entries:]
        db = self._db
        with db.transact(retry=True):
            for start in range(0, len(entries), _MAX_PER_VALUE):
                chunk = entries[start:start + _MAX_PER_VALUE]
                db.set((self._next_seq << _COUNT_BITS) | len(chunk),
                       orjson.dumps([entry.to_json() for entry in chunk]), retry=True)
                self._next_seq += 1
                self._count += len(chunk)
            if self._count > self.max_entries:
                for key in self._keys():  # oldest first; paged, so deleting while iterating is safe
                    if self._count <= self.max_entries:
                        break
                    db.delete(key, retry=True)
                    self._count -= key & _MAX_PER_VALUE

    def entries(self, since_s: float | None = None) -> list[LedgerEntry]:
        """Every entry, oldest first; with `since_s`, only those delivered at or after it."""
        out: list[LedgerEntry] = []
        for key in list(self._keys()):
            value = self._db.get(key, retry=True)  # None when the writer pruned it meanwhile
            if not isinstance(value, bytes):
                continue
            try:
                items = orjson.loads(value)
            except orjson.JSONDecodeError:
                log.warning("ledger value unreadable key=%d; skipped", key)
                continue
            for item in items if isinstance(items, list) else []:
                entry = LedgerEntry.from_json(item)
                if entry is not None and (since_s is None or entry.delivered_at_s >= since_s):
                    out.append(entry)
        return out
