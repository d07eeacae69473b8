"""The delivery receipt message: `{eventId, status, reason, sourceTopic, route, timestamp}` as UTF-8 JSON.

Owns: its fields, how it is written and how it is read back. The bridge publishes it (`observe.receipts`); the
publisher SDK reads it (`sdk.publisher`). No I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

__all__ = ["Receipt", "parse_receipt"]


@dataclass(frozen=True, slots=True)
class Receipt:
    """One delivery receipt as published (and as `sdk.publisher.Publisher` returns it)."""

    event_id: str
    status: str  # "delivered" or "dead_lettered"
    reason: str
    source_topic: str
    route: str = ""
    timestamp: str = ""

    def to_bytes(self) -> bytes:
        """The receipt message: UTF-8 JSON."""
        return orjson.dumps({"eventId": self.event_id, "status": self.status, "reason": self.reason,
                             "sourceTopic": self.source_topic, "route": self.route, "timestamp": self.timestamp})


def parse_receipt(payload: bytes) -> Receipt | None:
    """Read a receipt message; None when it is not one."""
    try:
        raw = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(raw, dict) or not isinstance(raw.get("eventId"), str):
        return None
    return Receipt(event_id=raw["eventId"], status=str(raw.get("status", "")), reason=str(raw.get("reason", "")),
                   source_topic=str(raw.get("sourceTopic", "")), route=str(raw.get("route", "")),
                   timestamp=str(raw.get("timestamp", "")))
