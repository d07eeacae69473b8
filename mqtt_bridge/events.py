"""Value types shared by every module: the Vision Event body, its local validation, and the buffered records.

Owns: the rules of `spec/vision-events-api.md` §3 that the bridge checks before buffering (so that one bad event
never poisons a batch at the API), and the byte layout of what the disk buffer stores. Must not do I/O.

A buffered `Record` is `4-byte header length | JSON header | image bytes`. The header carries a schema version so
that a newer bridge can read an older buffer. Values are bytes only; nothing is ever pickled.
"""

from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Union

import orjson

__all__ = [
    "EVENT_TYPES",
    "MAX_ID_CHARS",
    "MAX_METADATA_KEYS",
    "MAX_PREDICTIONS_PER_LIST",
    "DeadLetter",
    "JsonDict",
    "JsonValue",
    "Record",
    "event_problems",
    "format_timestamp",
    "lookup_path",
    "parse_timestamp",
]

JsonValue = Union[str, int, float, bool, None, list["JsonValue"], dict[str, "JsonValue"]]  # noqa: UP007
JsonDict = dict[str, JsonValue]

EVENT_TYPES = ("quality_check", "inventory_count", "safety_alert", "custom", "operator_feedback")
MAX_ID_CHARS = 256
MAX_METADATA_KEYS = 100
MAX_METADATA_KEY_CHARS = 100
MAX_METADATA_VALUE_CHARS = 1000
MAX_EXTERNAL_ID_CHARS = 1000
MAX_PREDICTIONS_PER_LIST = 1000
PREDICTION_LISTS = ("objectDetections", "classifications", "instanceSegmentations", "keypoints")
_METADATA_KEY_RE = re.compile(r"^[a-zA-Z0-9_ -]+$")
_VALID_KEYS: set[str] = set()
_YEAR = timedelta(days=365)
_DAY = timedelta(days=1)
_ENUMS: dict[str, dict[str, tuple[str, ...]]] = {
    "quality_check": {"result": ("pass", "fail")},
    "safety_alert": {"severity": ("low", "medium", "high")},
    "operator_feedback": {"feedback": ("correct", "incorrect", "inconclusive")},
}
_RECORD_VERSION = 1
_HEADER_LEN = struct.Struct(">I")


def lookup_path(document: JsonValue, path: str) -> JsonValue:
    """Follow a dotted path (`a.b.0.c`; '' is the document itself) through objects and lists; None when missing."""
    if not path:
        return document
    node = document
    for part in path.split("."):
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def format_timestamp(moment: datetime) -> str:
    """Render an aware datetime as RFC 3339 UTC with milliseconds, e.g. `2024-01-15T10:30:00.000Z`."""
    # isoformat is several times faster than strftime, and this runs once per message
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_timestamp(value: JsonValue) -> datetime | None:
    """Parse an ISO 8601 string or a Unix epoch number (seconds, or milliseconds when > 1e11).

    Returns None for anything else. A naive ISO time is taken as UTC.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        seconds = float(value) / 1000.0 if value > 1e11 else float(value)
        try:
            return datetime.fromtimestamp(seconds, tz=UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str) and 0 < len(value) <= 64:
        text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def _string_problem(event: JsonDict, key: str, limit: int, *, required: bool) -> str | None:
    value = event.get(key)
    if value is None:
        return f"{key} is required" if required else None
    if not isinstance(value, str) or not value:
        return f"{key} must be a non-empty string"
    if len(value) > limit:
        return f"{key} is longer than {limit} characters"
    return None


def _is_valid_key(key: str) -> bool:
    """A customMetadata key the API accepts. The same few keys come with every message: remember them."""
    if key in _VALID_KEYS:
        return True
    if len(key) > MAX_METADATA_KEY_CHARS or not _METADATA_KEY_RE.match(key):
        return False
    if len(_VALID_KEYS) < 10_000:
        _VALID_KEYS.add(key)
    return True


def _metadata_problems(metadata: JsonValue, where: str) -> list[str]:
    if not isinstance(metadata, dict):
        return [f"{where} must be an object"]
    problems = []
    if len(metadata) > MAX_METADATA_KEYS:
        problems.append(f"{where} has {len(metadata)} keys, at most {MAX_METADATA_KEYS} are allowed")
    for key, value in metadata.items():
        if not _is_valid_key(key):
            problems.append(f"{where} key {key[:40]!r} must match [a-zA-Z0-9_ -]+ and be at most 100 characters")
        if isinstance(value, str):
            if len(value) > MAX_METADATA_VALUE_CHARS:
                problems.append(f"{where}.{key[:40]} is longer than {MAX_METADATA_VALUE_CHARS} characters")
        elif isinstance(value, float):
            if not math.isfinite(value):
                problems.append(f"{where}.{key[:40]} must be a finite number")
        elif not isinstance(value, bool | int):
            problems.append(f"{where}.{key[:40]} must be a string, number or boolean")
    return problems


def _event_data_problems(event_type: str, data: JsonValue) -> list[str]:
    if data is None:
        return []
    if not isinstance(data, dict):
        return ["eventData must be an object"]
    problems = []
    for key, allowed in _ENUMS.get(event_type, {}).items():
        if key in data and data[key] not in allowed:
            problems.append(f"eventData.{key} must be one of {', '.join(allowed)}")
    external = data.get("externalId")
    if external is not None and (not isinstance(external, str) or len(external) > MAX_EXTERNAL_ID_CHARS):
        problems.append(f"eventData.externalId must be a string of at most {MAX_EXTERNAL_ID_CHARS} characters")
    if event_type == "inventory_count" and "itemCount" in data:
        count = data["itemCount"]
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            problems.append("eventData.itemCount must be a non-negative integer")
    return problems


def _image_problems(images: JsonValue) -> list[str]:
    if not isinstance(images, list):
        return ["images must be a list"]
    problems = []
    for index, image in enumerate(images):
        if not isinstance(image, dict):
            problems.append(f"images[{index}] must be an object")
            continue
        for name in PREDICTION_LISTS:
            items = image.get(name)
            if items is None:
                continue
            if not isinstance(items, list):
                problems.append(f"images[{index}].{name} must be a list")
            elif len(items) > MAX_PREDICTIONS_PER_LIST:
                problems.append(f"images[{index}].{name} has {len(items)} items, at most "
                                f"{MAX_PREDICTIONS_PER_LIST} are allowed")
    return problems


def event_problems(event: JsonDict, now: datetime) -> list[str]:
    """List every reason the Vision Events API would refuse `event` (empty when it is valid).

    Checks the rules of spec §3: required fields, the event type enum, per-type `eventData` enums, the timestamp
    window (one year back, one day ahead of `now`), id string limits, `customMetadata` key and value rules and the
    1000-item cap per prediction list.
    """
    problems = [p for p in (
        _string_problem(event, "eventId", MAX_ID_CHARS, required=True),
        _string_problem(event, "useCaseId", MAX_ID_CHARS, required=True),
        _string_problem(event, "deviceId", MAX_ID_CHARS, required=False),
        _string_problem(event, "streamId", MAX_ID_CHARS, required=False),
        _string_problem(event, "workflowId", MAX_ID_CHARS, required=False),
    ) if p]
    event_type = event.get("eventType")
    if event_type not in EVENT_TYPES:
        problems.append(f"eventType must be one of {', '.join(EVENT_TYPES)}")
    else:
        assert isinstance(event_type, str)
        problems.extend(_event_data_problems(event_type, event.get("eventData")))
    stamp = parse_timestamp(event.get("timestamp")) if isinstance(event.get("timestamp"), str) else None
    if stamp is None:
        problems.append("timestamp must be an ISO 8601 string")
    elif not now - _YEAR <= stamp <= now + _DAY:
        problems.append("timestamp must lie between one year ago and tomorrow")
    if "customMetadata" in event:
        problems.extend(_metadata_problems(event["customMetadata"], "customMetadata"))
    if "images" in event:
        problems.extend(_image_problems(event["images"]))
    return problems


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
    extra: JsonDict = field(default_factory=dict)

    @property
    def event_id(self) -> str:
        """The event's id, chosen once at ingest."""
        return str(self.event["eventId"])

    def to_bytes(self) -> bytes:
        """Serialise for the buffer: length-prefixed JSON header, then the raw image bytes."""
        header = orjson.dumps({
            "v": _RECORD_VERSION, "event": self.event, "route": self.route, "topic": self.topic,
            "received_at_s": self.received_at_s, "image_name": self.image_name, "extra": self.extra,
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
            image_name=header.get("image_name", ""), extra=header.get("extra", {}),
        )


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message or event that cannot be delivered, kept with the reason and the original bytes."""

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
