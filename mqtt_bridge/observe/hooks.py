"""Outcome hooks: how trace, receipts and anything else that watches the data path hear what became of a message.

Owns: the `Outcome` enum (where a message or event got to), the `OutcomeHook` base class (one documented no-op
method per outcome, so a subscriber overrides only what it needs) and `OutcomeHooks`, the emitter the pipeline
stages call: it calls every hook in turn and isolates each one, so that a failing hook is logged and never breaks
the data path or the hooks after it (modelled on dramatiq's `Middleware` and `Broker.emit_after`, but with one typed
method per outcome instead of a hook name looked up as a string). The stages (receiver, flusher) emit; they never
call trace or receipts directly. Hooks run on the stage's thread: they must be cheap (hand slow work to a thread).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from enum import StrEnum
from typing import TypeVar

from mqtt_bridge.model.record import DeadLetter, Record

__all__ = ["Outcome", "OutcomeHook", "OutcomeHooks"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")


class Outcome(StrEnum):
    """The stages of one message's path, in order (the trace's stages and the receipts' statuses)."""

    RECEIVED = "received"
    BUFFERED = "buffered"
    IMAGE_UPLOADED = "image_uploaded"
    DELIVERED = "delivered"
    DEAD_LETTERED = "dead_lettered"


class OutcomeHook:
    """A subscriber to outcomes. Every method is a no-op here; override the ones you need. Never called with a
    lock of the pipeline held."""

    def on_committed(self, records: Sequence[Record], dead_letters: Sequence[DeadLetter]) -> None:
        """The receiver committed a group (once per group, after its messages were acked): `records` are received
        and buffered, `dead_letters` are the messages ingest dead-lettered (kept with their raw bytes)."""

    def on_image_uploaded(self, record: Record) -> None:
        """The flusher uploaded the record's image (before creating its event)."""

    def on_delivered(self, record: Record) -> None:
        """The API accepted the record's event; it is gone from the buffer."""

    def on_delivered_many(self, records: Sequence[Record]) -> None:
        """The API accepted these records' events, in order (a run of one batch): `on_delivered` for each. A hook
        overrides it to take the run at once (the trace: one lock per batch instead of one per event)."""
        for record in records:
            self.on_delivered(record)

    def on_dead_lettered(self, record: Record, reason: str) -> None:
        """The flusher gave up on the record: `reason` is `<dead-letter reason>: <API answer or detail>`."""


class OutcomeHooks(OutcomeHook):
    """The emitter: an `OutcomeHook` that calls each of `hooks` in order, logging (never raising) a failure."""

    def __init__(self, hooks: Sequence[OutcomeHook] = ()) -> None:
        self._hooks = tuple(hooks)

    def on_committed(self, records: Sequence[Record], dead_letters: Sequence[DeadLetter]) -> None:
        """Tell every hook that a group was committed."""
        self._each("on_committed", lambda hook: hook.on_committed(records, dead_letters))

    def on_image_uploaded(self, record: Record) -> None:
        """Tell every hook that a record's image was uploaded."""
        self._each("on_image_uploaded", lambda hook: hook.on_image_uploaded(record))

    def on_delivered(self, record: Record) -> None:
        """Tell every hook that a record was delivered."""
        self._each("on_delivered", lambda hook: hook.on_delivered(record))

    def on_delivered_many(self, records: Sequence[Record]) -> None:
        """Tell every hook that these records were delivered: at once to a hook that takes a run at once, else
        record by record (each call isolated, as `on_delivered`)."""
        for hook in self._hooks:
            if type(hook).on_delivered_many is OutcomeHook.on_delivered_many:
                for record in records:
                    self._isolated(hook, "on_delivered", hook.on_delivered, record)
            else:
                self._isolated(hook, "on_delivered", hook.on_delivered_many, records)

    def on_dead_lettered(self, record: Record, reason: str) -> None:
        """Tell every hook that a record was dead-lettered by the flusher."""
        self._each("on_dead_lettered", lambda hook: hook.on_dead_lettered(record, reason))

    def _each(self, outcome: str, call: Callable[[OutcomeHook], None]) -> None:
        for hook in self._hooks:
            self._isolated(hook, outcome, call, hook)

    @staticmethod
    def _isolated(hook: OutcomeHook, outcome: str, call: Callable[[_T], None], argument: _T) -> None:
        try:
            call(argument)
        except Exception:  # an observer must never break the data path, nor the observers after it
            log.exception("outcome hook failed hook=%s outcome=%s", type(hook).__name__, outcome)
