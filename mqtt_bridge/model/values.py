"""JSON values, one dotted-path lookup and RFC 3339 timestamps: what every module passes around.

Owns: the `JsonValue`/`JsonDict` types, `lookup_path` (the only dotted-path reader) and timestamp parsing and
formatting. Must not do I/O.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Union

__all__ = ["JsonDict", "JsonValue", "format_timestamp", "lookup_path", "parse_timestamp"]


JsonValue = Union[str, int, float, bool, None, list["JsonValue"], dict[str, "JsonValue"]]  # noqa: UP007


JsonDict = dict[str, JsonValue]


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

