"""Companion images: joining raw image messages on a topic of their own to the detection messages they belong to.

Owns: the correlation state of one route with `routes[].image.companion` (what is parked, under which key, until
when) and its rules. Detections and images are paired by key, oldest first; one that finds no partner waits
`window_s`. Then a detection is released without its image (`window_expired`, counted, noted on the event) and an
image is dropped (counted). When more than `max_parked` messages wait, the oldest is released the same way
(`too_many_parked`), and likewise while the parked images hold more than `max_parked_bytes`.

A redelivered copy of a parked message (same topic and payload, another raw log entry: the broker resent it when
its ack was lost) takes the place of the old one instead of waiting beside it; the old one is handed back as
`superseded` (its raw entry is finished, nothing is buffered for it): released later without its image it would
overwrite the paired copy's event at the API (same eventId).

**Why waiting here is safe.** Parking happens in the processor, after the broker's ack: every parked message is
in the raw log on disk (`storage.raw_log`) until what it became is committed, so a kill -9 loses nothing and a
restart reads it again and re-pairs it. `max_parked` and `max_parked_bytes` only bound this process's memory; they
no longer touch the broker's in-flight window (issue 14).

Pure state, no threads and no clock of its own: `references` calls it under its lock with `time.monotonic()`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["CompanionJoin", "JoinOutcome"]

M = TypeVar("M")

WINDOW_EXPIRED = "window_expired"
TOO_MANY_PARKED = "too_many_parked"


@dataclass(slots=True)
class _Parked(Generic[M]):
    message: M | None  # None once done: a finished entry may linger in `_order` behind an older one
    key: str
    deadline: float
    is_image: bool
    size: int = 0
    is_done: bool = False


@dataclass(slots=True)
class JoinOutcome(Generic[M]):
    """What one step released. `paired`: (detection, image message); `unpaired`: (detection, why no image);
    `dropped`: images no detection claimed (ack them, nothing is buffered); `superseded`: parked messages a
    redelivered copy replaced (ack them, nothing is buffered)."""

    paired: list[tuple[M, M]] = field(default_factory=list)
    unpaired: list[tuple[M, str]] = field(default_factory=list)
    dropped: list[M] = field(default_factory=list)
    superseded: list[M] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.paired or self.unpaired or self.dropped or self.superseded)


class CompanionJoin(Generic[M]):
    """The parked detections and images of one route. Not thread-safe: the caller serialises."""

    def __init__(self, window_s: float, max_parked: int, max_parked_bytes: int = 64 * 2**20,
                 supersedes: Callable[[M, M], bool] | None = None) -> None:
        """`supersedes(new, old)`: True when `new` is a redelivered copy of the parked `old`."""
        self.window_s = window_s
        self.max_parked = max_parked
        self.max_parked_bytes = max_parked_bytes
        self._supersedes = supersedes
        self.parked_bytes = 0
        self._detections: dict[str, deque[_Parked[M]]] = {}
        self._images: dict[str, deque[_Parked[M]]] = {}
        self._order: deque[_Parked[M]] = deque()  # arrival order = deadline order (one window per route)
        self.parked = 0

    def add_detection(self, message: M, key: str, now: float) -> JoinOutcome[M]:
        """A detection arrived: pair it with the oldest waiting image of its key, or park it."""
        outcome: JoinOutcome[M] = JoinOutcome()
        image = self._take(self._images, key)
        if image is not None:
            outcome.paired.append((message, image))
        else:
            self._park(_Parked(message, key, now + self.window_s, is_image=False), outcome)
        return outcome

    def add_image(self, message: M, key: str, now: float, size: int = 0) -> JoinOutcome[M]:
        """An image (of `size` bytes) arrived: pair it with the oldest waiting detection of its key, or park it."""
        outcome: JoinOutcome[M] = JoinOutcome()
        detection = self._take(self._detections, key)
        if detection is not None:
            outcome.paired.append((detection, message))
        else:
            self._park(_Parked(message, key, now + self.window_s, is_image=True, size=size), outcome)
        return outcome

    def expire(self, now: float) -> JoinOutcome[M]:
        """Release everything whose window has ended."""
        outcome: JoinOutcome[M] = JoinOutcome()
        while self._order and (self._order[0].is_done or self._order[0].deadline <= now):
            entry = self._order.popleft()
            if not entry.is_done:
                self._release(entry, WINDOW_EXPIRED, outcome)
        return outcome

    def next_deadline(self) -> float | None:
        """When the oldest parked message runs out of time (None when nothing is parked)."""
        while self._order and self._order[0].is_done:
            self._order.popleft()
        return self._order[0].deadline if self._order else None

    def _take(self, table: dict[str, deque[_Parked[M]]], key: str) -> M | None:
        waiting = table.get(key)
        while waiting:
            entry = waiting.popleft()
            if not entry.is_done:
                if not waiting:
                    del table[key]
                return self._forget(entry)
        table.pop(key, None)
        return None

    def _forget(self, entry: _Parked[M]) -> M:
        """Mark done and hand back the message, dropping the entry's reference to it (an image can be big)."""
        message = entry.message
        assert message is not None
        entry.message = None
        entry.is_done = True
        self.parked -= 1
        self.parked_bytes -= entry.size
        return message

    def _park(self, entry: _Parked[M], outcome: JoinOutcome[M]) -> None:
        table = self._images if entry.is_image else self._detections
        waiting = table.setdefault(entry.key, deque())
        if self._supersedes is not None:
            for old in waiting:
                if not old.is_done and old.message is not None and entry.message is not None \
                        and self._supersedes(entry.message, old.message):
                    outcome.superseded.append(self._forget(old))  # a redelivered copy: the old one is never released
        waiting.append(entry)
        self._order.append(entry)
        self.parked += 1
        self.parked_bytes += entry.size
        while (self.parked > self.max_parked or self.parked_bytes > self.max_parked_bytes) and self._order:
            oldest = self._order.popleft()
            if not oldest.is_done:
                self._release(oldest, TOO_MANY_PARKED, outcome)

    def _release(self, entry: _Parked[M], why: str, outcome: JoinOutcome[M]) -> None:
        message = self._forget(entry)
        table = self._images if entry.is_image else self._detections
        waiting = table.get(entry.key)
        if waiting is not None:
            while waiting and waiting[0].is_done:
                waiting.popleft()
            if not waiting:
                del table[entry.key]
        if entry.is_image:
            outcome.dropped.append(message)
        else:
            outcome.unpaired.append((message, why))
