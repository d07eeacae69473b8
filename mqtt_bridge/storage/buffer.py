"""The durable disk buffer: the queue of accepted records, on diskcache (`storage/` is its only importer).

Owns: where accepted messages live between the broker's ack and the API's 201, and the rules of
spec/reliability.md §2 that keep them there: one transaction per group of messages (group commit), peek → send →
delete (never pop before send), one bad record or segment moved aside instead of blocking the queue, a high-water
mark that tells the caller to stop acking before the disk is full, and the upload cache. `DiskBuffer` is the one
interface of the subsystem; it opens the database through `storage.disk` (instance lock, integrity check,
bytes-only values, the durable settings) and keeps dead letters in `storage.dead_letters`.

Layout: one SQLite database, so that finishing a batch (delete what was delivered, add what was dead-lettered)
is one transaction, and so is the processor's commit (insert the events, delete the raw entries of `raw_log`).
The queue is a sequence of *segments* (format in `storage.segments`): each group commit writes the records it
received as one value (length-prefixed records), under the integer key `seq << 16 | record count`, so keys sort in
arrival order, before every string key, and the depth can be counted from the keys alone. The `head` key says
how many records of the first segment are already done. Dead letters have `dlq-<n>` keys; the
sourceIds of uploaded images are remembered under `img:<sha256>`. Compared with one row per record this writes,
reads and deletes about a hundred times fewer SQLite rows, which is what made the durable path as fast as the
naive batcher (issue 7, `mqtt-bridge bench`).
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import diskcache

from mqtt_bridge.errors import BufferCorrupt, DeadLetterReason, StorageError
from mqtt_bridge.model.record import DeadLetter, Record
from mqtt_bridge.storage.dead_letters import DeadLetters
from mqtt_bridge.storage.disk import lock_directory, open_database, unlock_directory
from mqtt_bridge.storage.raw_log import RawLog
from mqtt_bridge.storage.segments import COUNT_BITS, frame, group, key_count, record_at, split, split_records

__all__ = ["DiskBuffer"]

log = logging.getLogger(__name__)

_IMG_PREFIX = "img:"
_HEAD_KEY = "head"


class DiskBuffer:
    """A durable FIFO of `Record`s plus dead letters and an upload cache, in one directory.

    Thread safety: diskcache gives each thread its own SQLite connection; writers serialise on SQLite's lock.
    The receiver thread appends to the raw log (`raw`), the processor thread appends records, one flusher thread
    peeks and completes.
    """

    def __init__(self, path: Path, max_bytes: int, min_free_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.min_free_bytes = min_free_bytes
        self._lock_file: IO[bytes] | None = None
        self._cache: diskcache.Cache | None = None
        self._count_lock = threading.Lock()
        self._depth = 0
        self._letters = DeadLetters(lambda: self._db)
        self.raw = RawLog(lambda: self._db, self._letters)  # the raw messages, in the same database (design §3)
        self._next_seq = 0
        self._head_key: int | None = None  # segment the `head` index refers to
        self._head_index = 0  # records of that segment already done
        # raw records of the segments at the head (flusher thread only); decoded only when peeked, so that memory
        # stays small whatever the backlog (issue 7: RSS ≤ 80 MB with a million queued)
        self._segment_cache: dict[int, list[bytes]] = {}

    # --- lifecycle -------------------------------------------------------------------------------------------

    def open(self, *, take_lock: bool = True, load: bool = True) -> None:
        """Create the private directory, take the instance lock, check and open the database.

        In the bridge's child processes (`supervise`), `take_lock=False`: the supervisor holds the lock for all of
        them (they inherit its open file, so the lock lasts until the last of them ends) and checked the file.
        `load=False` opens the database without reading its keys (the receiver process only appends raw messages;
        the supervisor only checks the file before it starts the children)."""
        if take_lock:
            self._lock_file = lock_directory(self.path)
        try:
            self._cache = open_database(self.path, check=take_lock)  # whoever holds the lock checked the file
            if load:
                self._letters.quarantine_unsafe_rows()  # before any key is iterated (no pickle, no outside file)
                self._load_state()
        except StorageError:
            self.close()
            raise
        except (sqlite3.DatabaseError, OSError) as exc:
            self.close()
            raise BufferCorrupt(f"cannot open the buffer database in {self.path}: {exc}") from exc
        if load:
            log.info("buffer opened path=%s depth=%d dead_letters=%d", self.path, self._depth, self._letters.count)

    def close(self, *, keep_lock: bool = False) -> None:
        """Close the database and release the instance lock (`keep_lock`: the supervisor keeps it while its
        children, which open the database themselves, run)."""
        if self._cache is not None:
            self._cache.close()
            self._cache = None
        self._segment_cache.clear()
        if self._lock_file is not None and not keep_lock:
            unlock_directory(self._lock_file)
            self._lock_file = None

    def __enter__(self) -> DiskBuffer:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def _db(self) -> diskcache.Cache:
        if self._cache is None:
            raise StorageError("the buffer is not open")
        return self._cache

    def _segment_keys(self) -> Iterator[int]:
        """Segment keys in arrival order (integers sort before the string keys)."""
        for key in self._db.iterkeys():
            if not isinstance(key, int):
                return
            yield key

    def _load_state(self) -> None:
        depth = 0
        last_key = -1
        for key in self._segment_keys():
            depth += key_count(key)
            last_key = key
        self._next_seq = (last_key >> COUNT_BITS) + 1 if last_key >= 0 else 0
        head = self._db.get(_HEAD_KEY, retry=True)
        self._head_key, self._head_index = None, 0
        if isinstance(head, str) and ":" in head:
            key_text, index_text = head.split(":", 1)
            first = next(self._segment_keys(), None)
            if first is not None and first == int(key_text):
                self._head_key, self._head_index = first, int(index_text)
        self._depth = depth - self._head_index
        self._letters.load()
        self.raw.load()

    # --- ingest side ------------------------------------------------------------------------------------------

    def append(self, records: list[Record], dead_letters: list[DeadLetter], *, finish_raw: bool = False) -> None:
        """Commit records and dead letters in one transaction (one fsync for the whole group on a FULL-sync
        connection). With `finish_raw`, the same transaction deletes the raw entries marked finished (the
        processor's commit: what they became and their removal from the raw log commit together)."""
        if not records and not dead_letters and not (finish_raw and self.raw.has_finished):
            return
        segments = group(records)
        db = self._db
        finished: dict[int, frozenset[int]] = {}
        with db.transact(retry=True):
            seq = self._next_seq
            for count, segment in segments:
                db.set((seq << COUNT_BITS) | count, segment, retry=True)
                seq += 1
            self._letters.write(dead_letters)
            if finish_raw:
                finished = self.raw.write_finished()
        self._next_seq = seq
        self.raw.committed(finished)
        with self._count_lock:
            self._depth += len(records)
        self._letters.added(len(dead_letters))

    def is_over_high_water(self) -> bool:
        """True when the buffer is over `max_bytes` or the filesystem is short of `min_free_bytes`."""
        if self._db.volume() >= self.max_bytes:
            return True
        try:
            return shutil.disk_usage(self.path).free < self.min_free_bytes
        except OSError:
            return True

    # --- flusher side -----------------------------------------------------------------------------------------

    def _segment(self, key: int) -> list[bytes]:
        cached = self._segment_cache.get(key)
        if cached is not None:
            return cached
        value = self._db.get(key, retry=True)
        raw: list[bytes] = []
        if isinstance(value, bytes):
            try:
                raw = split(value)
                if len(raw) != key_count(key):  # complete() counts by the key: they must agree
                    raise ValueError(f"segment holds {len(raw)} records, its key says {key_count(key)}")
            except (ValueError, struct.error):
                log.exception("unreadable buffer segment key=%d; moving it to the dead letters", key)
                self._quarantine(key, value)
                return []
        self._segment_cache = {k: v for k, v in self._segment_cache.items() if k > key}
        if len(self._segment_cache) < 2:
            self._segment_cache[key] = raw
        return raw

    def _quarantine(self, key: int, value: bytes) -> None:
        letter = DeadLetter(reason=DeadLetterReason.UNREADABLE_RECORD, detail="a buffered segment could not be decoded",
                            topic="", route="", payload=value, received_at_s=0.0, dead_at_s=0.0)
        db = self._db
        with db.transact(retry=True):
            self._letters.write([letter])
            db.delete(key, retry=True)
            if self._head_key == key:
                db.delete(_HEAD_KEY, retry=True)
        lost = key_count(key) - (self._head_index if self._head_key == key else 0)
        if self._head_key == key:
            self._head_key, self._head_index = None, 0
        with self._count_lock:
            self._depth -= lost
        self._letters.added(1)

    def _drop_record(self, key: int, raw: list[bytes], index: int) -> None:
        """Move one undecodable record to the dead letters by rewriting its segment without it."""
        letter = DeadLetter(reason=DeadLetterReason.UNREADABLE_RECORD, detail="a buffered record could not be decoded",
                            topic="", route="", payload=raw[index], received_at_s=0.0, dead_at_s=0.0)
        rest = raw[:index] + raw[index + 1:]
        new_key = ((key >> COUNT_BITS) << COUNT_BITS) | len(rest)
        db = self._db
        with db.transact(retry=True):
            self._letters.write([letter])
            db.delete(key, retry=True)
            if rest:
                db.set(new_key, frame(rest), retry=True)
            if self._head_key == key:
                if rest:
                    db.set(_HEAD_KEY, f"{new_key}:{self._head_index}", retry=True)
                else:
                    db.delete(_HEAD_KEY, retry=True)
        self._segment_cache.pop(key, None)
        if self._head_key == key:
            self._head_key = new_key if rest else None
            self._head_index = self._head_index if rest else 0
        with self._count_lock:
            self._depth -= 1
        self._letters.added(1)

    def relax_sync_for_this_thread(self) -> None:
        """Let this thread's commits skip the fsync (`synchronous=NORMAL` on its own SQLite connection only).

        For the flusher: its commits only *remove* delivered records (and add the dead letters found among them).
        After a power loss such a commit may roll back; the records then come back and are sent again, which the
        API's upsert by eventId absorbs. Also for the processor: a lost commit of its leaves the raw entries in the
        raw log, and they are processed again (same eventIds). The receiver's raw log commits, which hold data the
        broker no longer has, keep `synchronous=FULL` (every other connection reads FULL from the settings table).
        A process crash loses nothing either way: WAL commits survive it whatever the sync mode (reliability.md §2.2).
        """
        self._db.reset("sqlite_synchronous", 1, update=False)

    def peek(self, max_events: int, max_bytes: int) -> list[Record]:
        """The oldest undelivered records, in order, without removing them: at most `max_events`, about
        `max_bytes` (always at least one). Finish them with `complete`."""
        out: list[Record] = []
        total = 0
        for key in self._segment_keys():
            raw = self._segment(key)
            start = self._head_index if key == self._head_key else 0
            for index in range(start, len(raw)):
                data = raw[index]
                if len(out) >= max_events or (out and total + len(data) > max_bytes):
                    return out
                try:
                    out.append(Record.from_bytes(data))
                except (ValueError, KeyError, TypeError):
                    # one bad record must not block the queue; it goes to the dead letters with its bytes
                    log.exception("unreadable buffer record key=%d index=%d; moving it aside", key, index)
                    self._drop_record(key, raw, index)
                    return out
                total += len(data)
            if len(out) >= max_events:
                break
        return out

    def complete(self, count: int, dead_letters: list[DeadLetter] | None = None,
                 forget_hashes: list[str] | None = None) -> None:
        """Mark the first `count` peeked records done, store `dead_letters` (records among them that could not be
        delivered) and forget upload entries, all in one transaction."""
        db = self._db
        remaining = count
        head_key, head_index = self._head_key, self._head_index
        deleted: list[int] = []
        with db.transact(retry=True):
            for key in self._segment_keys():
                if remaining <= 0:
                    break
                start = head_index if key == head_key else 0
                left = key_count(key) - start
                if remaining >= left:
                    db.delete(key, retry=True)
                    deleted.append(key)
                    remaining -= left
                    head_key, head_index = None, 0
                else:
                    head_key, head_index = key, start + remaining
                    remaining = 0
            if head_key is None:
                db.delete(_HEAD_KEY, retry=True)
            else:
                db.set(_HEAD_KEY, f"{head_key}:{head_index}", retry=True)
            self._letters.write(dead_letters or [])
            for image_hash in forget_hashes or []:
                db.delete(_IMG_PREFIX + image_hash, retry=True)
        self._head_key, self._head_index = head_key, head_index
        for key in deleted:
            self._segment_cache.pop(key, None)
        with self._count_lock:
            self._depth -= count - remaining
        self._letters.added(len(dead_letters or []))

    def source_id(self, image_hash: str) -> str | None:
        """The sourceId of an image already uploaded, by content hash."""
        value = self._db.get(_IMG_PREFIX + image_hash, retry=True)
        return value if isinstance(value, str) else None

    def remember_source_id(self, image_hash: str, source_id: str) -> None:
        """Remember an upload durably, so that a retry after a crash does not upload again."""
        self._db.set(_IMG_PREFIX + image_hash, source_id, retry=True)

    # --- inspection -------------------------------------------------------------------------------------------

    @property
    def depth(self) -> int:
        """Records waiting for delivery."""
        return self._depth

    @property
    def dead_letter_count(self) -> int:
        """Dead letters kept."""
        return self._letters.count

    def volume_bytes(self) -> int:
        """Bytes the database uses on disk."""
        return int(self._db.volume())

    def records(self) -> Iterator[Record]:
        """Every undelivered record, oldest first (reads segment by segment; for export and inspection)."""
        for key in self._segment_keys():
            value = self._db.get(key, retry=True)
            if isinstance(value, bytes):
                start = self._head_index if key == self._head_key else 0
                yield from split_records(value)[start:]

    def dead_letters(self) -> Iterator[tuple[str, DeadLetter]]:
        """Every dead letter, oldest first."""
        return self._letters.all()

    # --- operations (status page, `mqtt-bridge dlq|export|status`) ----------------------------------------------

    def oldest_received_at_s(self) -> float | None:
        """When the oldest undelivered record was received (None when empty). Reads one record of one segment;
        safe from another thread than the flusher's (a race only makes the answer one batch old)."""
        for key in self._segment_keys():
            value = self._db.get(key, retry=True)
            if not isinstance(value, bytes):
                return None
            start = self._head_index if key == self._head_key else 0
            try:
                record = Record.from_bytes(record_at(value, start))
            except (ValueError, KeyError, TypeError, struct.error):
                return None
            return record.received_at_s
        return None

    def dead_letter(self, key: str) -> DeadLetter | None:
        """One dead letter by key (`dlq-…`), or None."""
        return self._letters.get(key)

    def delete_dead_letters(self, keys: list[str]) -> int:
        """Delete dead letters by key, in one transaction; returns how many existed."""
        return self._letters.delete(keys)

    def requeue_dead_letters(self, items: list[tuple[str, list[Record]]]) -> None:
        """Replay: append each dead letter's records to the queue and delete the dead letter, in one transaction."""
        db = self._db
        next_seq, depth = self._next_seq, self._depth
        try:
            with db.transact(retry=True):  # diskcache transactions nest: append joins this one
                self.append([record for _, records in items for record in records], [])
                for key, _ in items:
                    db.delete(key, retry=True)
        except BaseException:
            # rolled back: so are append's in-memory counters (only `dlq replay` calls this, the bridge stopped)
            self._next_seq = next_seq
            with self._count_lock:
                self._depth = depth
            raise
        self._letters.removed(len(items))

