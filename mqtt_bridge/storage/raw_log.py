"""The raw log: every MQTT message as the broker handed it over, durable before its ack (design §3).

Owns: the raw entries inside the buffer's database (the same SQLite file, so that the processor's one transaction
can insert the events and delete the raw entries they came from), their byte layout (`RawMessage`), what is
finished, and the processor's cursor. Must not decode, route or look at payloads: it stores bytes.

Layout: each receiver group commit writes its messages as one value, a segment of length-prefixed entries
(`storage.segments.frame`), under the text key `raw:<seq, 16 digits>:<entry count>:<receive time, ms>`, so that the
depth and the oldest entry's age are known from the keys alone, and string keys never mix with the event queue's
integer keys. An entry is finished when the processor committed what it became (events, a dead letter, or nothing:
an image no detection claimed); a segment whose entries are all finished is deleted, a segment only partly finished
(a detection still waiting for its companion image) keeps `rawdone:<seq>`, one byte per entry (1 = finished). A
lost processor transaction leaves its entries unfinished: they are processed again (deterministic eventIds make
that idempotent). An unreadable segment or entry goes to the dead letters with its bytes. Old buffers without raw
keys open as an empty log. Thread safety: one lock guards the in-memory state; the receiver thread appends, the
processor thread takes and commits, any thread may `finish`.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import diskcache

from mqtt_bridge.errors import DeadLetterReason
from mqtt_bridge.model.raw import (
    DONE_PREFIX,
    PREFIX,
    PREFIX_END,
    RawEntry,
    RawMessage,
    done_key,
    parse_key,
    segment_key,
    seq_floor_key,
    seq_of,
)
from mqtt_bridge.model.record import DeadLetter
from mqtt_bridge.storage.dead_letters import DeadLetters
from mqtt_bridge.storage.disk import last_text_key, text_keys
from mqtt_bridge.storage.segments import frame_pieces, split

__all__ = ["RawEntry", "RawLog", "RawMessage"]

log = logging.getLogger(__name__)

_CACHED_BYTES = 8 * 2**20  # payloads of just-committed segments handed to the processor in memory, at most


@dataclass(slots=True)
class _Segment:
    key: str
    count: int
    received_at_s: float
    done: bytearray  # committed as finished
    has_progress: bool = False  # a `rawdone:` key exists for it
    marked: set[int] = field(default_factory=set)  # finished, not yet committed
    sizes: list[int] | None = None  # payload sizes once taken (in-flight accounting)


class RawLog:
    """The durable log of raw messages of one open buffer. `db` returns the open database (raises when closed)."""

    def __init__(self, db: Callable[[], diskcache.Cache], letters: DeadLetters) -> None:
        self._db = db
        self._letters = letters
        self._lock = threading.Lock()
        self._segments: dict[int, _Segment] = {}  # seq -> segment, ascending
        self._untaken: deque[int] = deque()  # the processor's cursor: segments it has not read yet
        self._marked: set[int] = set()  # segments with entries finished but not yet committed
        # the messages of segments just committed, for `take` (no read back from disk while the processor keeps
        # up); past `_CACHED_BYTES` a segment is read from disk instead
        self._cached: dict[int, list[RawMessage]] = {}
        self._cached_bytes = 0
        self._next_seq = 0
        self._append_only = False  # a receiver in its own process: append, keep no index (`start_appending`)
        self._seen_key = PREFIX  # the newest raw key this log knows of (`discover` looks after it)
        self._rewinds = 0  # `rewind` calls, so that a `discover` running meanwhile does not undo one
        self._depth = 0
        self._in_flight = 0
        self._in_flight_bytes = 0

    # --- lifecycle -------------------------------------------------------------------------------------------

    def load(self) -> None:
        """Read the keys on open: every segment in the log is unprocessed (the processor starts from the first)."""
        self._segments.clear()
        self._untaken.clear()
        self._marked.clear()
        self._cached.clear()
        self._depth = self._in_flight = self._in_flight_bytes = self._cached_bytes = 0
        self._next_seq = 0
        db = self._db()
        bad: list[str] = []
        progress: dict[int, bytes] = {}
        for key in db.iterkeys():
            if not isinstance(key, str):
                continue
            if key.startswith(DONE_PREFIX):
                value = db.get(key, retry=True)
                if isinstance(value, bytes) and key[len(DONE_PREFIX):].isdigit():
                    progress[int(key[len(DONE_PREFIX):])] = value
            elif key.startswith(PREFIX):
                parsed = parse_key(key)
                if parsed is None:
                    bad.append(key)
                    continue
                seq, count, received = parsed
                self._segments[seq] = _Segment(key, count, received, bytearray(count))
        for seq, value in progress.items():
            segment = self._segments.get(seq)
            if segment is None:
                db.delete(done_key(seq), retry=True)  # progress of no segment (never written so): drop it
            elif len(value) == segment.count:
                segment.done[:] = bytes(1 if b else 0 for b in value)
                segment.has_progress = True
        self._segments = dict(sorted(self._segments.items()))
        self._untaken.extend(self._segments)
        self._depth = sum(s.count - sum(s.done) for s in self._segments.values())
        self._next_seq = max(self._segments, default=-1) + 1
        self._seen_key = max((s.key for s in self._segments.values()), default=PREFIX)
        for key in bad:
            self._quarantine_key(key, "a raw log key that could not be parsed")

    # --- receiver side ----------------------------------------------------------------------------------------

    def append(self, messages: list[RawMessage]) -> None:
        """Commit `messages` as one segment, durably (one transaction, one fsync on a FULL-sync connection)."""
        if not messages:
            return
        value = frame_pieces(message.pieces() for message in messages)
        with self._lock:
            seq = self._next_seq
            self._next_seq += 1
        key = segment_key(seq, len(messages), messages[0].received_at_s)
        self._db().set(key, value, retry=True)
        del value
        if self._append_only:
            return
        size = sum(len(message.payload) for message in messages)
        with self._lock:
            self._segments[seq] = _Segment(key, len(messages), messages[0].received_at_s, bytearray(len(messages)))
            self._untaken.append(seq)
            self._depth += len(messages)
            if self._cached_bytes + size <= _CACHED_BYTES:
                self._cached[seq] = messages
                self._cached_bytes += size

    def start_appending(self) -> int:
        """For a receiver in its own process, instead of `load`: only `append` from now on, keeping no index (the
        processor's process reads the log). Sequence numbers go on after every segment on disk and after the wall
        clock in microseconds, so that a restarted receiver never reuses one the processor has already seen and
        deleted. Returns the first sequence number (`rewind`'s argument on the processor's side)."""
        last = seq_of(last_text_key(self._db(), PREFIX, PREFIX_END))
        with self._lock:
            self._append_only = True
            self._next_seq = max(last + 1, time.time_ns() // 1000)
            return self._next_seq

    def discover(self) -> int:
        """For a processor whose receiver runs in another process: adopt the segments committed after the newest
        one this log knows of (one index range read). Returns how many entries were added."""
        with self._lock:
            after, rewinds = self._seen_key, self._rewinds
        keys = text_keys(self._db(), after, PREFIX_END)
        added = 0
        with self._lock:
            for key in keys:
                parsed = parse_key(key)
                if parsed is None:
                    continue  # quarantined by the next `load`
                seq, count, received = parsed
                if self._rewinds == rewinds:
                    self._seen_key = max(self._seen_key, key)
                if seq in self._segments:
                    continue
                self._segments[seq] = _Segment(key, count, received, bytearray(count))
                self._untaken.append(seq)
                self._depth += count
                added += count
        return added

    def rewind(self, first_seq: int) -> None:
        """A receiver (re)started with `first_seq`: the next `discover` looks from there again, in case the clock
        went back and its sequence numbers lie below keys this log has seen (known segments are not adopted twice)."""
        with self._lock:
            self._seen_key = min(self._seen_key, seq_floor_key(first_seq))
            self._rewinds += 1

    # --- processor side ---------------------------------------------------------------------------------------

    def take(self) -> list[RawEntry]:
        """The unfinished entries of the next segment the processor has not read ([] when there is none).

        A segment or entry that cannot be read goes to the dead letters with its bytes (and is finished)."""
        while True:
            with self._lock:
                if not self._untaken:
                    return []
                seq = self._untaken.popleft()
                segment = self._segments.get(seq)
                cached = self._cached.pop(seq, None)
                if cached is not None:
                    self._cached_bytes -= sum(len(message.payload) for message in cached)
            if segment is not None and cached is not None:
                entries = [RawEntry(seq, index, message) for index, message in enumerate(cached)]
                self._taken(segment, entries, 0)
                return entries
            if segment is not None:
                try:
                    entries = self._read(seq, segment)
                except BaseException:
                    with self._lock:
                        self._untaken.appendleft(seq)  # read again next time; the cursor must not skip it
                    raise
                if entries:
                    return entries

    def _read(self, seq: int, segment: _Segment) -> list[RawEntry]:
        value = self._db().get(segment.key, retry=True)
        try:
            if not isinstance(value, bytes):
                raise ValueError("the segment is missing")
            raw = split(memoryview(value))  # slices, not copies: each message's fields are copied once below
            if len(raw) != segment.count:
                raise ValueError(f"segment holds {len(raw)} entries, its key says {segment.count}")
        except (ValueError, struct.error) as exc:
            log.error("unreadable raw log segment key=%s error=%s; moving it to the dead letters", segment.key, exc)
            self._quarantine_key(segment.key, f"a raw log segment could not be read ({exc})",
                                 value if isinstance(value, bytes) else b"")
            return []
        entries: list[RawEntry] = []
        broken: list[tuple[int, bytes]] = []
        for index, data in enumerate(raw):
            if segment.done[index]:
                continue
            try:
                entries.append(RawEntry(seq, index, RawMessage.from_bytes(data)))
            except ValueError:
                broken.append((index, bytes(data)))
        self._taken(segment, entries, len(broken))  # the broken ones are finished below
        if broken:
            self._dead_letter_entries(seq, broken)
        return entries

    def _taken(self, segment: _Segment, entries: list[RawEntry], broken: int) -> None:
        """Count what the processor took as in flight until it is finished."""
        with self._lock:
            segment.sizes = [0] * segment.count
            for entry in entries:
                segment.sizes[entry.index] = len(entry.message.payload)
            self._in_flight += len(entries) + broken
            self._in_flight_bytes += sum(segment.sizes)

    def finish(self, seq: int, index: int) -> bool:
        """Mark one entry finished; it is deleted by the next `write_finished` transaction. Any thread."""
        with self._lock:
            segment = self._segments.get(seq)
            if segment is None or segment.done[index] or index in segment.marked:
                return False
            segment.marked.add(index)
            self._marked.add(seq)
            if segment.sizes is not None:
                self._in_flight -= 1
                self._in_flight_bytes -= segment.sizes[index]
        return True

    @property
    def has_finished(self) -> bool:
        """Whether entries are marked finished but not yet committed."""
        with self._lock:
            return bool(self._marked)

    def write_finished(self) -> dict[int, frozenset[int]]:
        """Inside the caller's transaction: delete the finished entries (a segment, or record its progress).

        Returns what was written, for `committed` once that transaction succeeded."""
        with self._lock:
            snapshot = {seq: frozenset(self._segments[seq].marked) for seq in sorted(self._marked)
                        if seq in self._segments}
            plans = [(seq, self._segments[seq], bytearray(self._segments[seq].done)) for seq in snapshot]
        db = self._db()
        for seq, segment, done in plans:
            for index in snapshot[seq]:
                done[index] = 1
            if all(done):
                db.delete(segment.key, retry=True)
                if segment.has_progress:
                    db.delete(done_key(seq), retry=True)
            else:
                db.set(done_key(seq), bytes(done), retry=True)
        return snapshot

    def committed(self, snapshot: dict[int, frozenset[int]]) -> None:
        """The transaction that ran `write_finished` committed: forget those entries."""
        with self._lock:
            for seq, indexes in snapshot.items():
                segment = self._segments.get(seq)
                if segment is None:  # quarantined meanwhile
                    continue
                for index in indexes:
                    segment.done[index] = 1
                segment.marked -= indexes
                if not segment.marked:
                    self._marked.discard(seq)
                self._depth -= len(indexes)
                if all(segment.done):
                    del self._segments[seq]
                else:
                    segment.has_progress = True

    # --- inspection -------------------------------------------------------------------------------------------

    @property
    def depth(self) -> int:
        """Raw entries not yet finished (waiting for the processor, or in it)."""
        return self._depth

    @property
    def untaken(self) -> int:
        """Segments the processor has not read yet."""
        return len(self._untaken)

    @property
    def in_flight(self) -> tuple[int, int]:
        """Entries (and their payload bytes) the processor took and has not finished."""
        with self._lock:
            return self._in_flight, self._in_flight_bytes

    def oldest_received_at_s(self) -> float | None:
        """When the oldest segment still in the log was received (None when the log is empty)."""
        with self._lock:
            first = next(iter(self._segments.values()), None)
            return first.received_at_s if first is not None else None

    def messages(self) -> Iterator[RawMessage]:
        """Every unfinished raw message, oldest first (for inspection; reads segment by segment)."""
        with self._lock:
            segments = [(s.key, bytes(s.done)) for s in self._segments.values()]
        for key, done in segments:
            value = self._db().get(key, retry=True)
            if isinstance(value, bytes):
                for index, data in enumerate(split(value)):
                    if index >= len(done) or not done[index]:
                        yield RawMessage.from_bytes(data)

    # --- quarantine -------------------------------------------------------------------------------------------

    def _dead_letter_entries(self, seq: int, broken: list[tuple[int, bytes]]) -> None:
        """Dead-letter unreadable entries and finish them, in one transaction."""
        now = time.time()
        letters = [DeadLetter(reason=DeadLetterReason.UNREADABLE_RECORD, detail="a raw log entry could not be read",
                              topic="", route="", payload=data, received_at_s=0.0, dead_at_s=now)
                   for _, data in broken]
        for index, _ in broken:
            self.finish(seq, index)
        db = self._db()
        with db.transact(retry=True):
            self._letters.write(letters)
            snapshot = self.write_finished()
        self.committed(snapshot)
        self._letters.added(len(letters))
        log.error("unreadable raw log entries moved to the dead letters count=%d", len(letters))

    def _quarantine_key(self, key: str, detail: str, value: bytes | None = None) -> None:
        """Replace a whole raw segment (or a key that is not one) by a dead letter holding its bytes."""
        db = self._db()
        if value is None:
            stored = db.get(key, retry=True)
            value = stored if isinstance(stored, bytes) else b""
        letter = DeadLetter(reason=DeadLetterReason.UNREADABLE_RECORD, detail=detail, topic="", route="",
                            payload=value, received_at_s=0.0, dead_at_s=time.time())
        with self._lock:
            seqs = [seq for seq, segment in self._segments.items() if segment.key == key]
        with db.transact(retry=True):
            self._letters.write([letter])
            db.delete(key, retry=True)
            for seq in seqs:
                db.delete(done_key(seq), retry=True)
        with self._lock:
            for seq in seqs:
                segment = self._segments.pop(seq)
                self._marked.discard(seq)
                cached = self._cached.pop(seq, None)
                self._cached_bytes -= sum(len(message.payload) for message in cached or [])
                self._depth -= segment.count - sum(segment.done)
        self._letters.added(1)
