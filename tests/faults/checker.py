"""The checker of the fault harness: ledger (what the broker acked) against the API (what the emulator stored).

Owns: the Jepsen-style verdict of reliability.md §5 for one run:

- **lost**: PUBACKed by the broker, never stored at the API and not dead-lettered;
- **duplicated**: one message stored as more than one event (distinct eventIds for the same message id);
- **rewrites**: extra writes of an eventId the API already had (a retry or redelivery that overwrote: harmless,
  bounded per fault);
- **unexpected**: events that no published message explains;
- **dead-lettered**: our messages in the bridge's dead letters, by reason;
- **recovered**: not acknowledged to the publisher, delivered anyway.

A message is recognised by its expected eventId (computed by the bridge's own ingest over the same routes) and,
independently, by the `run`/`seq` tags in its metadata, so that a second event for the same message is seen even
under another eventId. Must not start or stop anything.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mqtt_bridge.config.load import parse_config
from mqtt_bridge.model.record import DeadLetter
from mqtt_bridge.routing.router import Router
from mqtt_bridge.transform.ingest import Ingestor
from tests.faults.ledger import Ledger, Outgoing

__all__ = ["EventIdOracle", "Report", "assert_exactly_once", "check"]


class EventIdOracle:
    """The eventId the bridge gives a message (or None when it dead-letters it), from the bridge's config."""

    def __init__(self, raw_config: Mapping[str, object]) -> None:
        config = parse_config(dict(raw_config), env={})
        self._ingestor = Ingestor(Router(list(config.routes)), config.mqtt.max_payload_bytes)

    def event_id(self, message: Outgoing) -> str | None:
        """The eventId of the message's event, or None when ingest turns it into a dead letter (or no event)."""
        result = self._ingestor.process(message.topic.encode(), message.payload, time.time())
        return result.records[0].event_id if result.records else None


@dataclass(frozen=True)
class Report:
    """The verdict for one run. Id tuples are sorted; counts are what the README table shows."""

    published: int
    acked: int
    delivered: int
    lost: tuple[str, ...]
    duplicated: tuple[str, ...]
    rewrites: int
    unexpected: int
    dead_lettered: dict[str, int] = field(default_factory=dict)
    dead_lettered_ids: frozenset[str] = frozenset()
    dead_letter_reasons: dict[str, str] = field(default_factory=dict)  # msg_id -> reason
    delivered_ids: frozenset[str] = frozenset()
    unknown_dead_letters: int = 0
    recovered: int = 0
    unsure_missing: int = 0

    @property
    def dead_lettered_count(self) -> int:
        """Our messages in the dead letters, over all reasons."""
        return sum(self.dead_lettered.values())

    def summary(self) -> str:
        """One line for assertion messages and logs."""
        reasons = ",".join(f"{k}:{v}" for k, v in sorted(self.dead_lettered.items())) or "-"
        return (f"published={self.published} acked={self.acked} delivered={self.delivered} lost={len(self.lost)} "
                f"duplicated={len(self.duplicated)} rewrites={self.rewrites} unexpected={self.unexpected} "
                f"dead_lettered={self.dead_lettered_count} ({reasons}) unknown_dead_letters="
                f"{self.unknown_dead_letters} recovered={self.recovered} unsure_missing={self.unsure_missing}"
                + (f" lost_e.g.={list(self.lost[:5])}" if self.lost else "")
                + (f" duplicated_e.g.={list(self.duplicated[:5])}" if self.duplicated else ""))


def _tags(event: Mapping[str, Any]) -> str | None:
    metadata = event.get("customMetadata")
    if not isinstance(metadata, dict):
        return None
    run, seq = metadata.get("run"), metadata.get("seq")
    return f"{run}:{seq}" if isinstance(run, str) and isinstance(seq, int) else None


def check(ledger: Ledger, events: Sequence[Mapping[str, Any]], write_counts: Mapping[str, int],
          dead_letters: Sequence[DeadLetter], oracle: EventIdOracle) -> Report:
    """Compare the ledger with the API's events and writes and the bridge's dead letters."""
    by_event_id: dict[str, str] = {}
    by_bytes: dict[tuple[str, bytes], str] = {}
    for known_id, message in ledger.messages.items():
        expected = oracle.event_id(message)
        if expected is not None:
            by_event_id[expected] = known_id
        by_bytes[(message.topic, message.payload)] = known_id

    stored: dict[str, set[str]] = {}
    unexpected = 0
    for event in events:
        event_id = str(event.get("eventId"))
        msg_id: str | None = by_event_id.get(event_id)
        tagged = _tags(event)
        if msg_id is None and tagged in ledger.messages:
            msg_id = tagged
        if msg_id is None:
            unexpected += 1
            continue
        stored.setdefault(msg_id, set()).add(event_id)
        if tagged is not None and tagged != msg_id and tagged in ledger.messages:
            stored.setdefault(tagged, set()).add(event_id)  # an event carrying another message's tags
    rewrites = sum(max(0, write_counts.get(event_id, 0) - 1) for event_id in by_event_id)

    dead_ids: set[str] = set()
    reasons: dict[str, int] = {}
    by_id: dict[str, str] = {}
    unknown = 0
    for letter in dead_letters:
        msg_id = by_event_id.get(letter.event_id) if letter.event_id else by_bytes.get((letter.topic, letter.payload))
        if msg_id is None:
            unknown += 1
            continue
        dead_ids.add(msg_id)
        by_id[msg_id] = letter.reason
        reasons[letter.reason] = reasons.get(letter.reason, 0) + 1

    lost = sorted(m for m in ledger.acked if m not in stored and m not in dead_ids)
    duplicated = sorted(m for m, ids in stored.items() if len(ids) > 1)
    unsure = ledger.unsure
    return Report(
        published=len(ledger.messages), acked=len(ledger.acked), delivered=len(stored), lost=tuple(lost),
        duplicated=tuple(duplicated), rewrites=rewrites, unexpected=unexpected, dead_lettered=reasons,
        dead_lettered_ids=frozenset(dead_ids), dead_letter_reasons=by_id, delivered_ids=frozenset(stored),
        unknown_dead_letters=unknown,
        recovered=sum(1 for m in unsure if m in stored),
        unsure_missing=sum(1 for m in unsure if m not in stored and m not in dead_ids),
    )


def assert_exactly_once(report: Report, *, max_rewrites: int | None = None, dead_lettered: int = 0) -> None:
    """Lost 0, duplicated 0, unexpected 0, the stated number of dead letters, rewrites within the stated bound."""
    assert report.lost == (), f"lost: {report.summary()}"
    assert report.duplicated == (), f"duplicated: {report.summary()}"
    assert report.unexpected == 0, f"unexpected events: {report.summary()}"
    assert report.dead_lettered_count == dead_lettered, f"dead letters: {report.summary()}"
    assert report.unknown_dead_letters == 0, f"dead letters of unknown messages: {report.summary()}"
    if max_rewrites is not None:
        assert report.rewrites <= max_rewrites, f"rewrites over the bound {max_rewrites}: {report.summary()}"
