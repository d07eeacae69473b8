"""The byte layout of what the disk buffer stores: a buffered event (`Record`) and a dead letter.

A buffered `Record` is `4-byte header length | JSON header | image bytes`. The header carries a schema version so
that a newer bridge can read an older buffer. Values are bytes only; nothing is ever pickled. Must not do I/O.

Headers written before issue 11 also hold an `"extra": {}` (a field nothing ever filled): it is ignored on reading,
and no longer written (a bridge of the previous version reads a header without it as `{}`, so a downgrade reads
this buffer too).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import orjson

from mqtt_bridge.model.values import JsonDict

__all__ = ["DeadLetter", "Record"]


_RECORD_VERSION = 1


_HEADER_LEN = struct.Struct(">I")


@dataclass(frozen=True, slots=True)
class Record:
    """One buffered Vision Event with what the flusher needs to deliver it.

    `event` is the complete request body except `images[i].sourceId`, which the flusher fills in after uploading
    `image` (the picture's bytes, kept in the buffer so that a source that changes later does not matter).
    """

    event: JsonDict
    route: str
    topic: str
    received_at_s: float
    image: bytes = b""
    image_name: str = ""

    @property
    def event_id(self) -> str:
        """The event's id, chosen once at ingest."""
        return str(self.event["eventId"])

    def to_bytes(self) -> bytes:
        """Serialise for the buffer: length-prefixed JSON header, then the raw image bytes."""
        header = orjson.dumps({
            "v": _RECORD_VERSION, "event": self.event, "route": self.route, "topic": self.topic,
            "received_at_s": self.received_at_s, "image_name": self.image_name,
        })
        return _HEADER_LEN.pack(len(header)) + header + self.image

    @classmethod
    def from_bytes(cls, data: bytes) -> Record:
        """Inverse of `to_bytes`. Raises ValueError on bytes that are not a record."""
        if len(data) < _HEADER_LEN.size:
            raise ValueError("record too short")
        (length,) = _HEADER_LEN.unpack_from(data)
        header = orjson.loads(data[_HEADER_LEN.size:_HEADER_LEN.size + length])
        if not isinstance(header, dict) or header.get("v") != _RECORD_VERSION:
            raise ValueError("unknown record version")
        return cls(
            event=header["event"], route=header["route"], topic=header["topic"],
            received_at_s=float(header["received_at_s"]), image=bytes(data[_HEADER_LEN.size + length:]),
            image_name=header.get("image_name", ""),
        )


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message or event that cannot be delivered, kept with the reason and the original bytes.

    `reason` is a `DeadLetterReason`, held as its plain text: what is stored and read back (a dead letter of any
    version reads, whatever reasons it knew), what metrics label and receipts carry, and what `dlq list --reason`
    matches.
    """

    reason: str
    detail: str
    topic: str
    route: str
    payload: bytes
    received_at_s: float
    dead_at_s: float
    event_id: str = ""
    api_status: int | None = None
    api_body: str = ""

    def __post_init__(self) -> None:
        # a DeadLetterReason member becomes its text, so that it is the same value after a round trip through the
        # buffer (and a dict keyed by reasons stays serialisable: orjson refuses str subclasses as keys)
        object.__setattr__(self, "reason", str(self.reason))

    def to_bytes(self) -> bytes:
        """Serialise as JSON with the payload base64-encoded (JSON cannot hold raw bytes)."""
        import base64  # noqa: PLC0415 - only dead letters need it

        return orjson.dumps({
            "v": _RECORD_VERSION, "reason": self.reason, "detail": self.detail, "topic": self.topic,
            "route": self.route, "payload_b64": base64.b64encode(self.payload).decode("ascii"),
            "received_at_s": self.received_at_s, "dead_at_s": self.dead_at_s, "event_id": self.event_id,
            "api_status": self.api_status, "api_body": self.api_body,
        })

    @classmethod
    def from_bytes(cls, data: bytes) -> DeadLetter:
        """Inverse of `to_bytes`."""
        import base64  # noqa: PLC0415 - only dead letters need it

        raw = orjson.loads(data)
        return cls(
            reason=raw["reason"], detail=raw["detail"], topic=raw["topic"], route=raw["route"],
            payload=base64.b64decode(raw["payload_b64"]), received_at_s=raw["received_at_s"],
            dead_at_s=raw["dead_at_s"], event_id=raw.get("event_id", ""), api_status=raw.get("api_status"),
            api_body=raw.get("api_body", ""),
        )

