"""The capture file: live MQTT traffic written down, one message a line, to replay it later (issue 13 item 6).

Owns the value type `CapturedMessage` and the line format that `mqtt-bridge capture` (and `discover --record`)
writes and `mqtt-bridge decode --capture` reads. One JSON object per line (JSON Lines, UTF-8):

    {"t": 1764632590.123456, "topic": "factory/line1/cam1/detections", "payload_b64": "eyJkZXRlY3Rpb25zIjogW119",
     "qos": 0, "retain": false}

- `t`: when the capturing client received it, Unix seconds (float; the replay's receive time, which drives
  companion windows, debounce and receive-time timestamps);
- `topic`: the topic as text; a topic that is not valid UTF-8 has `topic_b64` (its raw bytes) instead;
- `payload_b64`: the payload bytes, base64 (standard alphabet, padded);
- `qos`: the QoS it was delivered with (0: discover and capture subscribe with QoS 0);
- `retain`: whether the broker replayed it as a retained message (a replay drops retained companion images,
  as the bridge does).

Unknown keys are ignored, so later versions may add some. Empty lines and lines starting with `#` are skipped.
Pure: no I/O (the commands open the files).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

import orjson

__all__ = ["CaptureFormatError", "CapturedMessage"]


class CaptureFormatError(ValueError):
    """A capture line that is not the documented format (the message says which key is wrong)."""


@dataclass(frozen=True, slots=True)
class CapturedMessage:
    """One message as a read-only listener heard it."""

    topic: bytes
    payload: bytes
    qos: int
    retain: bool
    received_at_s: float

    @property
    def topic_text(self) -> str:
        """The topic as text (undecodable bytes replaced), for grouping and printing."""
        return self.topic.decode("utf-8", errors="replace")

    def to_line(self) -> bytes:
        """The message as one capture line, with its newline."""
        document: dict[str, object] = {"t": round(self.received_at_s, 6)}
        try:
            document["topic"] = self.topic.decode("utf-8")
        except UnicodeDecodeError:
            document["topic_b64"] = base64.b64encode(self.topic).decode("ascii")
        document["payload_b64"] = base64.b64encode(self.payload).decode("ascii")
        document["qos"] = self.qos
        document["retain"] = self.retain
        return orjson.dumps(document) + b"\n"

    @classmethod
    def from_line(cls, line: bytes | str) -> CapturedMessage | None:
        """Parse one capture line; None for an empty or `#` comment line. Raises CaptureFormatError."""
        text = line.strip()
        if not text or text[:1] in ("#", b"#"):
            return None
        try:
            document = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise CaptureFormatError(f"not JSON: {exc}") from None
        if not isinstance(document, dict):
            raise CaptureFormatError("a line must hold a JSON object")
        try:
            if isinstance(document.get("topic"), str):
                topic = str(document["topic"]).encode("utf-8")
            elif isinstance(document.get("topic_b64"), str):
                topic = base64.b64decode(document["topic_b64"], validate=True)
            else:
                raise CaptureFormatError("topic (or topic_b64) is missing")
            if not isinstance(document.get("payload_b64"), str):
                raise CaptureFormatError("payload_b64 is missing")
            payload = base64.b64decode(document["payload_b64"], validate=True)
        except binascii.Error:
            raise CaptureFormatError("topic_b64/payload_b64 is not base64") from None
        received_at_s = document.get("t")
        if isinstance(received_at_s, bool) or not isinstance(received_at_s, int | float):
            raise CaptureFormatError("t (Unix seconds) is missing or not a number")
        qos = document.get("qos", 0)
        if qos not in (0, 1, 2) or isinstance(qos, bool):
            raise CaptureFormatError("qos must be 0, 1 or 2")
        retain = document.get("retain", False)
        if not isinstance(retain, bool):
            raise CaptureFormatError("retain must be true or false")
        return cls(topic, payload, int(qos), retain, float(received_at_s))
