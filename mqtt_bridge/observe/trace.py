"""The message trace: where the last few thousand messages are (received → buffered → image uploaded → delivered or
dead-lettered), for the status page's search by eventId or topic, plus the most recent dead letters.

Owns: a bounded in-memory index (`capacity` entries and `TRACE_MAX_BYTES` accounted bytes at most, least recently
updated out first, evictions counted as `cache="trace"`), an `OutcomeHook` (`observe.hooks`) that costs one
call per committed group (receiver) and one per outcome (flusher). It is a diagnostic aid, not a record: it starts
empty after a restart and forgets old messages; the buffer and the dead letters stay the source of truth. Never
raises into its callers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from mqtt_bridge.model.bounded import ByteLRU, text_bytes
from mqtt_bridge.model.record import DeadLetter, Record
from mqtt_bridge.model.values import JsonDict
from mqtt_bridge.observe.hooks import Outcome, OutcomeHook
from mqtt_bridge.observe.redact import redact

__all__ = ["STAGES", "TRACE_MAX_BYTES", "MessageTrace", "TraceEntry"]

log = logging.getLogger(__name__)

STAGES = tuple(outcome.value for outcome in Outcome)
_DETAIL_CHARS = 300
TRACE_MAX_BYTES = 16 * 2**20  # a topic may be 64 KiB: 10,000 of them would be 640 MiB
_STAGES_BYTES = 100 * len(STAGES)  # the stages dict once every stage is stamped


def _entry_bytes(key: str, entry: TraceEntry) -> int:
    """Accounted bytes of one entry, with room for what it may still get (every stage, a reason)."""
    return text_bytes(key, entry.event_id, entry.topic, entry.route) + _STAGES_BYTES + _DETAIL_CHARS


@dataclass(slots=True)
class TraceEntry:
    """What is known about one event (or one message that was dead-lettered at ingest)."""

    key: str
    event_id: str
    topic: str
    route: str
    stages: dict[str, float] = field(default_factory=dict)
    reason: str = ""

    @property
    def status(self) -> str:
        """The latest stage reached."""
        return max(self.stages, key=STAGES.index) if self.stages else "unknown"

    def to_json(self) -> JsonDict:
        """A JSON view for the status page (times are Unix seconds)."""
        stages: JsonDict = {stage: self.stages[stage] for stage in STAGES if stage in self.stages}
        return {"eventId": self.event_id, "topic": self.topic, "route": self.route, "status": self.status,
                "reason": self.reason, "stages": stages}


class MessageTrace(OutcomeHook):
    """A bounded, thread-safe trace. `capacity` entries at most; 0 turns tracing off."""

    def __init__(self, capacity: int = 10_000, recent_dead_letters: int = 50) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self._entries: ByteLRU[str, TraceEntry] = ByteLRU("trace", TRACE_MAX_BYTES, _entry_bytes,
                                                          max(capacity, 1))
        self._recent_dead: deque[JsonDict] = deque(maxlen=recent_dead_letters)
        self._anonymous = 0

    # --- outcome hooks (called through `OutcomeHooks` by the receiver and the flusher; never raise) ---------------

    def on_committed(self, records: Sequence[Record], dead_letters: Sequence[DeadLetter]) -> None:
        """A group was committed: its records are buffered, its dead letters kept."""
        try:
            now = time.time()
            with self._lock:
                for record in records:
                    if self.capacity:
                        entry = self._entry(record.event_id, record.event_id, record.topic, record.route)
                        entry.stages[Outcome.RECEIVED.value] = record.received_at_s
                        entry.stages[Outcome.BUFFERED.value] = now
                for letter in dead_letters:
                    self._dead_locked(letter.event_id, letter.topic, letter.route, letter.reason, letter.detail,
                                      letter.received_at_s, now)
        except Exception:  # a diagnostic aid must never break intake
            log.exception("trace on_committed failed")

    def on_image_uploaded(self, record: Record) -> None:
        """The flusher uploaded the record's image."""
        self._reached(record, Outcome.IMAGE_UPLOADED)

    def on_delivered(self, record: Record) -> None:
        """The flusher delivered the record."""
        self._reached(record, Outcome.DELIVERED)

    def on_delivered_many(self, records: Sequence[Record]) -> None:
        """The flusher delivered these records (one lock for the run)."""
        try:
            now = time.time()
            received, delivered = Outcome.RECEIVED.value, Outcome.DELIVERED.value
            with self._lock:
                if not self.capacity:
                    return
                for record in records:
                    event_id = record.event_id
                    stages = self._entry(event_id, event_id, record.topic, record.route).stages
                    stages.setdefault(received, record.received_at_s)
                    stages[delivered] = now
        except Exception:  # a diagnostic aid must never break delivery
            log.exception("trace outcome failed outcome=%s", Outcome.DELIVERED.value)

    def on_dead_lettered(self, record: Record, reason: str) -> None:
        """The flusher dead-lettered the record (`reason` is `<reason>: <detail>`)."""
        try:
            now = time.time()
            with self._lock:
                self._dead_locked(record.event_id, record.topic, record.route, reason.split(":", 1)[0],
                                  reason, record.received_at_s, now)
        except Exception:  # a diagnostic aid must never break delivery
            log.exception("trace on_dead_lettered failed")

    def _reached(self, record: Record, outcome: Outcome) -> None:
        try:
            now = time.time()
            with self._lock:
                if self.capacity:
                    entry = self._entry(record.event_id, record.event_id, record.topic, record.route)
                    entry.stages.setdefault(Outcome.RECEIVED.value, record.received_at_s)
                    entry.stages[outcome.value] = now
        except Exception:  # a diagnostic aid must never break delivery
            log.exception("trace outcome failed outcome=%s", outcome.value)

    def _entry(self, key: str, event_id: str, topic: str, route: str) -> TraceEntry:
        entry = self._entries.get(key)
        if entry is None:
            entry = TraceEntry(key, event_id, topic, route)
            self._entries.put(key, entry)  # may not be kept (too big alone): then it is only updated, not stored
        return entry

    def _dead_locked(self, event_id: str, topic: str, route: str, reason: str, detail: str, received_at_s: float,
                     now: float) -> None:
        detail = redact(detail[:_DETAIL_CHARS])  # the one redaction step (the API client already applied it)
        self._recent_dead.appendleft({"at": now, "eventId": event_id, "topic": topic[:300], "route": route,
                                      "reason": reason, "detail": detail[:_DETAIL_CHARS]})
        if not self.capacity:
            return
        if not event_id:
            self._anonymous += 1
        key = event_id or f"dead-{self._anonymous}"
        entry = self._entry(key, event_id, topic, route)
        entry.stages.setdefault(Outcome.RECEIVED.value, received_at_s)
        entry.stages[Outcome.DEAD_LETTERED.value] = now
        entry.reason = detail[:_DETAIL_CHARS] or reason

    # --- queries (status page) ------------------------------------------------------------------------------------

    def search(self, query: str, limit: int = 50) -> list[JsonDict]:
        """Entries whose eventId equals `query`, or whose topic equals or starts with it; newest first."""
        query = query.strip()
        if not query:
            return []
        with self._lock:
            exact = self._entries.get(query)
            if exact is not None:
                return [exact.to_json()]
            found = []
            for entry in reversed(list(self._entries.values())):
                if query in (entry.event_id, entry.topic) or entry.topic.startswith(query):
                    found.append(entry.to_json())
                    if len(found) >= limit:
                        break
            return found

    def recent_dead_letters(self) -> list[JsonDict]:
        """The most recent dead letters, newest first."""
        with self._lock:
            return list(self._recent_dead)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
