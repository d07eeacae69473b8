"""Scripted faults of the emulator: the value that describes them and the script that hands them out.

Owns: `Faults` (statuses, "API down", `Retry-After`, delays, a reset after commit, poisoned event ids: the fault
list of spec §4.5; the message of an injected status, e.g. a 402/423 billing or quota stop; and a partial batch
success, spec §6: a 201 whose `eventIds` leave some events out, unstored; and events confirmed but not kept,
which a delivery check must catch), its JSON form for the control API, and
`FaultScript`, which gives each request its faults atomically so that concurrent writes consume scripted statuses
in order. Must not open sockets.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field, replace
from http import HTTPStatus

from .values import JsonDict, JsonValue

__all__ = ["FaultScript", "Faults"]

logger = logging.getLogger(__name__)

_FIELDS = {"statuses", "status_always", "retry_after_s", "delay_s", "reset_after_commit", "fail_event_ids",
           "status_message", "drop_event_ids", "partial", "partial_once",
           "forget_event_ids", "forget_events"}


@dataclass(frozen=True, slots=True)
class Faults:
    """Scripted faults of the emulator. Immutable: the emulator swaps in a new value as faults are consumed.

    Attributes:
        statuses: answered one per write request (E1, E2, E3), in order, instead of processing it.
        status_always: answered to every API request until cleared ("API down"); wins over `statuses`.
        retry_after_s: when set, injected status answers carry `Retry-After` (integer seconds when whole).
        delay_s: wait this long before answering any API request (the request is processed after the wait).
        reset_after_commit: for this many successful event writes (E1, E2), store the events and then reset
            the TCP connection instead of answering.
        fail_event_ids: an event write containing one of these ids is refused whole with 400.
        status_message: the `{"error": ...}` text of injected statuses (default: the status phrase), e.g.
            `status_always=402` with "Monthly event quota reached" plays a billing stop until cleared.
        drop_event_ids: a batch write (E2) answers 201 without these events: not stored, not in `eventIds`, not
            counted in `created` (the other events are stored and confirmed).
        partial: a batch write (E2) of more than this many events stores and confirms only its first `partial`.
        partial_once: `partial` applies to the next batch it shortens only, and each id of `drop_event_ids` is
            dropped from the next batch that holds it only; otherwise both last until cleared.
        forget_event_ids: events with these ids are accepted and confirmed (201, listed in `eventIds`) but never
            kept, as if the service lost them after answering: what `mqtt-bridge verify` must catch.
        forget_events: the next this many events written (E1, E2) are confirmed but not kept, likewise.
    """

    statuses: tuple[int, ...] = ()
    status_always: int | None = None
    retry_after_s: float | None = None
    delay_s: float = 0.0
    reset_after_commit: int = 0
    fail_event_ids: frozenset[str] = field(default_factory=frozenset)
    status_message: str | None = None
    drop_event_ids: frozenset[str] = field(default_factory=frozenset)
    partial: int | None = None
    partial_once: bool = False
    forget_event_ids: frozenset[str] = field(default_factory=frozenset)
    forget_events: int = 0

    def __post_init__(self) -> None:
        for status in (*self.statuses, *(() if self.status_always is None else (self.status_always,))):
            if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
                raise ValueError(f"fault status {status!r} must be an int in 400..599")
            HTTPStatus(status)  # raises ValueError for a code http.server cannot phrase
        if self.retry_after_s is not None and self.retry_after_s < 0:
            raise ValueError("retry_after_s must be >= 0")
        if self.delay_s < 0:
            raise ValueError("delay_s must be >= 0")
        if self.reset_after_commit < 0:
            raise ValueError("reset_after_commit must be >= 0")
        if self.partial is not None and (isinstance(self.partial, bool) or self.partial < 0):
            raise ValueError("partial must be an int >= 0")
        if self.forget_events < 0:
            raise ValueError("forget_events must be >= 0")

    @classmethod
    def from_json(cls, data: JsonValue) -> Faults:
        """Build from the control API body (same field names). Raises ValueError on a bad value."""
        if not isinstance(data, dict):
            raise ValueError("faults must be a JSON object")
        unknown = set(data) - _FIELDS
        if unknown:
            raise ValueError(f"unknown fault fields: {', '.join(sorted(unknown))}")
        statuses, ids = data.get("statuses") or [], data.get("fail_event_ids") or []
        always, retry = data.get("status_always"), data.get("retry_after_s")
        delay, resets = data.get("delay_s") or 0.0, data.get("reset_after_commit") or 0
        if not isinstance(statuses, list) or not all(isinstance(s, int) for s in statuses):
            raise ValueError("statuses must be a list of ints")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ValueError("fail_event_ids must be a list of strings")
        if not (always is None or isinstance(always, int)) or not isinstance(resets, int):
            raise ValueError("status_always and reset_after_commit must be ints")
        if not (retry is None or isinstance(retry, int | float)) or not isinstance(delay, int | float):
            raise ValueError("retry_after_s and delay_s must be numbers")
        message, drops = data.get("status_message"), data.get("drop_event_ids") or []
        partial, once = data.get("partial"), data.get("partial_once") or False
        if not (message is None or isinstance(message, str)):
            raise ValueError("status_message must be a string")
        if not isinstance(drops, list) or not all(isinstance(i, str) for i in drops):
            raise ValueError("drop_event_ids must be a list of strings")
        if not (partial is None or (isinstance(partial, int) and not isinstance(partial, bool))):
            raise ValueError("partial must be an int")
        if not isinstance(once, bool):
            raise ValueError("partial_once must be a boolean")
        forget_ids, forget_count = data.get("forget_event_ids") or [], data.get("forget_events") or 0
        if not isinstance(forget_ids, list) or not all(isinstance(i, str) for i in forget_ids):
            raise ValueError("forget_event_ids must be a list of strings")
        if isinstance(forget_count, bool) or not isinstance(forget_count, int):
            raise ValueError("forget_events must be an int")
        return cls(statuses=tuple(s for s in statuses if isinstance(s, int)), status_always=always,
                   retry_after_s=None if retry is None else float(retry), delay_s=float(delay),
                   reset_after_commit=resets, fail_event_ids=frozenset(i for i in ids if isinstance(i, str)),
                   status_message=message, drop_event_ids=frozenset(i for i in drops if isinstance(i, str)),
                   partial=partial, partial_once=once,
                   forget_event_ids=frozenset(i for i in forget_ids if isinstance(i, str)),
                   forget_events=forget_count)

    def to_json(self) -> JsonDict:
        """Render with the field names `from_json` accepts."""
        return {"statuses": list[JsonValue](self.statuses), "status_always": self.status_always,
                "retry_after_s": self.retry_after_s, "delay_s": self.delay_s,
                "reset_after_commit": self.reset_after_commit,
                "fail_event_ids": list[JsonValue](sorted(self.fail_event_ids)),
                "status_message": self.status_message,
                "drop_event_ids": list[JsonValue](sorted(self.drop_event_ids)), "partial": self.partial,
                "partial_once": self.partial_once,
                "forget_event_ids": list[JsonValue](sorted(self.forget_event_ids)),
                "forget_events": self.forget_events}

    def retry_after_headers(self) -> tuple[tuple[str, str], ...]:
        """The `Retry-After` header of an injected status, if one is scripted (a decimal when not whole)."""
        seconds = self.retry_after_s
        if seconds is None:
            return ()
        return (("Retry-After", str(int(seconds)) if seconds == int(seconds) else str(seconds)),)


class FaultScript:
    """The faults in force, shared by every request thread. Thread-safe."""

    def __init__(self) -> None:
        """Start with no faults."""
        self._lock = threading.Lock()
        self._faults = Faults()

    @property
    def current(self) -> Faults:
        """The faults still scripted (consumed statuses and resets are gone)."""
        with self._lock:
            return self._faults

    def apply(self, faults: Faults) -> None:
        """Replace the script."""
        with self._lock:
            self._faults = faults
        logger.info("emulator faults set faults=%s", faults)

    def take(self, *, is_write: bool) -> tuple[Faults, int | None]:
        """The faults for one API request and the status to inject (consuming a scripted one for a write)."""
        with self._lock:
            faults = self._faults
            status = faults.status_always
            if status is None and is_write and faults.statuses:
                status = faults.statuses[0]
                self._faults = replace(faults, statuses=faults.statuses[1:])
            return faults, status

    def take_drops(self, event_ids: list[str]) -> set[int]:
        """The positions of a batch write's events to leave out of the answer (consuming a `partial_once` fault)."""
        with self._lock:
            faults = self._faults
            drop = {index for index, event_id in enumerate(event_ids) if event_id in faults.drop_event_ids}
            is_shortened = faults.partial is not None and len(event_ids) > faults.partial
            if is_shortened and faults.partial is not None:
                drop |= set(range(faults.partial, len(event_ids)))
            if faults.partial_once and drop:
                dropped_ids = {event_ids[index] for index in drop}
                self._faults = replace(faults, partial=None if is_shortened else faults.partial,
                                       drop_event_ids=faults.drop_event_ids - dropped_ids)
            return drop

    def take_forget(self, event_id: str) -> bool:
        """Whether this accepted event is confirmed but not kept (consuming one of `forget_events` if it counts)."""
        with self._lock:
            if event_id in self._faults.forget_event_ids:
                return True
            if self._faults.forget_events <= 0:
                return False
            self._faults = replace(self._faults, forget_events=self._faults.forget_events - 1)
            return True

    def take_reset(self) -> bool:
        """Whether this committed event write is answered with a reset (consuming one scripted reset)."""
        with self._lock:
            if self._faults.reset_after_commit <= 0:
                return False
            self._faults = replace(self._faults, reset_after_commit=self._faults.reset_after_commit - 1)
            return True
