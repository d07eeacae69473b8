"""The emulator's own JSON types and ISO 8601 times, so that it needs nothing of the bridge to read a request.

Owns: the `JsonValue`/`JsonDict` aliases, a deep copy of a JSON object, and the parsing and rendering of the times
the API carries (`timestamp`, `startTime`/`endTime`, `createdAt`). Must not do I/O.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Union

import orjson

__all__ = ["JsonDict", "JsonValue", "copy_json", "format_time", "parse_iso_time"]

JsonValue = Union[str, int, float, bool, None, list["JsonValue"], dict[str, "JsonValue"]]  # noqa: UP007

JsonDict = dict[str, JsonValue]


def copy_json(value: JsonDict) -> JsonDict:
    """Return a deep copy of a JSON object (what the emulator hands out must not alias what it stores)."""
    copied: JsonDict = orjson.loads(orjson.dumps(value))
    return copied


def parse_iso_time(value: JsonValue) -> datetime | None:
    """Read an ISO 8601 / RFC 3339 time string as an aware datetime; None for anything else.

    The docs show `2024-01-15T10:30:00Z` and `...00.000Z`; the Workflow block sends microseconds with a `+00:00`
    offset (spec §3.1 "Timestamp format"), so offsets and fractional seconds are accepted. A time without an
    offset is taken as UTC. Numbers (epoch seconds) are not ISO 8601 and are refused.
    """
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if text.endswith("z"):  # RFC 3339 §5.6 allows a lower-case Z; fromisoformat does not
        text = text[:-1] + "Z"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def format_time(moment: datetime) -> str:
    """Render as the docs' examples do: UTC with milliseconds, e.g. `2024-01-10T08:00:00.000Z` (spec §2.5)."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
