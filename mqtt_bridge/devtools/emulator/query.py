"""E4 query: the request's filters compiled into one predicate, the page size, and the opaque cursor.

Owns: the query rules of spec §2.4 (`useCaseId` required, at most 20 `eventTypes`, ISO 8601 `startTime`/`endTime`,
context filters with `eq`/`neq`, `customMetadataFilters` and `eventFieldFilters`), the page size of §5 G13
(default 50, at most 100) and the cursor, an opaque base64 offset (spec §4.5). Every malformed request is a 400
with `{"error": ...}`. Pure: the store runs the predicate over its events and sorts them newest first.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from .messages import RequestRejected
from .values import JsonDict, JsonValue, parse_iso_time

__all__ = ["DEFAULT_QUERY_LIMIT", "MAX_QUERY_EVENT_TYPES", "MAX_QUERY_LIMIT", "Query", "compile_query",
           "encode_cursor"]

MAX_QUERY_EVENT_TYPES = 20  # §2.4
DEFAULT_QUERY_LIMIT = 50  # §5 G13
MAX_QUERY_LIMIT = 100
_CONTEXT_FILTERS = ("deviceId", "streamId", "workflowId", "externalId")  # externalId lives in eventData
_OPERATORS = ("eq", "neq", "gt", "gte", "lt", "lte", "contains")


@dataclass(frozen=True, slots=True)
class Query:
    """A compiled E4 request: which events match, and which page of them to answer."""

    matches: Callable[[JsonDict, datetime], bool]  # (stored event, its timestamp)
    offset: int
    limit: int


def encode_cursor(offset: int) -> str:
    """The `nextCursor` that continues at `offset`."""
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode("ascii")


def _decode_cursor(cursor: JsonValue) -> int:
    if cursor is None or cursor == "":
        return 0
    try:
        text = base64.urlsafe_b64decode(str(cursor).encode("ascii")).decode("ascii")
        prefix, _, number = text.partition(":")
        if prefix == "offset" and number.isdigit():
            return int(number)
    except (binascii.Error, UnicodeError, ValueError):
        pass  # falls through to the 400 below
    raise RequestRejected(400, "invalid cursor")


def _limit(body: JsonDict, *, is_strict: bool) -> int:
    limit = body.get("limit", DEFAULT_QUERY_LIMIT)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise RequestRejected(400, "limit must be a positive integer")
    if limit > MAX_QUERY_LIMIT and is_strict:
        raise RequestRejected(400, f"limit must be at most {MAX_QUERY_LIMIT}")
    return min(limit, MAX_QUERY_LIMIT)


def _compare(actual: JsonValue, operator_name: str, expected: JsonValue) -> bool:
    if operator_name == "eq":
        return actual == expected
    if operator_name == "neq":
        return actual != expected
    if operator_name == "contains":
        return isinstance(actual, str) and isinstance(expected, str) and expected in actual
    if isinstance(actual, bool) or isinstance(expected, bool):
        return False
    # two branches, not one `or`, so that mypy narrows each pair to one comparable type
    if isinstance(actual, int | float) and isinstance(expected, int | float):  # noqa: SIM114
        sign = (actual > expected) - (actual < expected)
    elif isinstance(actual, str) and isinstance(expected, str):
        sign = (actual > expected) - (actual < expected)
    else:
        return False
    return sign in {"gt": (1,), "gte": (0, 1), "lt": (-1,), "lte": (-1, 0)}[operator_name]


def _event_types(body: JsonDict) -> set[JsonValue]:
    types: set[JsonValue] = set()
    listed = body.get("eventTypes")
    if listed is not None:
        if not isinstance(listed, list) or len(listed) > MAX_QUERY_EVENT_TYPES:
            raise RequestRejected(400, f"eventTypes must be a list of at most {MAX_QUERY_EVENT_TYPES} types")
        types.update(t for t in listed if isinstance(t, str))
    if isinstance(body.get("eventType"), str):  # the SDK's single-type form
        types.add(body["eventType"])
    return types


def _window(body: JsonDict) -> tuple[datetime | None, datetime | None]:
    moments: list[datetime | None] = []
    for key in ("startTime", "endTime"):
        value = body.get(key)
        moment = None if value is None else parse_iso_time(value)
        if value is not None and moment is None:
            raise RequestRejected(400, f"{key} must be an ISO 8601 time")
        moments.append(moment)
    return moments[0], moments[1]


def _field_checks(body: JsonDict) -> list[tuple[str, str, str, JsonValue]]:
    """(where, key, operator, value) for every context, metadata and eventData filter; '' is the top level."""
    checks: list[tuple[str, str, str, JsonValue]] = []
    for key in _CONTEXT_FILTERS:
        spec = body.get(key)
        if spec is None:
            continue
        if not isinstance(spec, dict) or spec.get("operator") not in ("eq", "neq"):
            raise RequestRejected(400, f'{key} must be {{"operator": "eq"|"neq", "value": ...}}')
        checks.append(("eventData" if key == "externalId" else "", key, str(spec["operator"]), spec.get("value")))
    for list_key, name_key, where in (("customMetadataFilters", "field", "customMetadata"),
                                      ("eventFieldFilters", "column", "eventData")):
        filters = body.get(list_key) or []
        if not isinstance(filters, list):
            raise RequestRejected(400, f"{list_key} must be a list")
        for item in filters:
            if not (isinstance(item, dict) and isinstance(item.get(name_key), str)
                    and item.get("operator") in _OPERATORS):
                raise RequestRejected(400, f"{list_key} items need {name_key}, operator and value")
            checks.append((where, str(item[name_key]), str(item["operator"]), item.get("value")))
    return checks


def compile_query(body: JsonValue, oldest: datetime, *, is_strict: bool = False) -> Query:
    """Compile an E4 body; events older than `oldest` (the lookback window) never match.

    Raises RequestRejected(400) for a malformed request. `is_strict` refuses a `limit` over 100 instead of
    clamping it.
    """
    if not isinstance(body, dict):
        raise RequestRejected(400, "body must be a JSON object")
    use_case_id = body.get("useCaseId")
    if not isinstance(use_case_id, str) or not use_case_id:
        raise RequestRejected(400, "useCaseId is required")
    limit = _limit(body, is_strict=is_strict)
    offset = _decode_cursor(body.get("cursor"))
    types = _event_types(body)
    start, end = _window(body)
    checks = _field_checks(body)

    def matches(event: JsonDict, stamp: datetime) -> bool:
        if event.get("useCaseId") != use_case_id or stamp < oldest:
            return False
        if (types and event.get("eventType") not in types) or (start and stamp < start) or (end and stamp > end):
            return False
        for where, key, operator_name, expected in checks:
            scope = event.get(where) if where else event
            actual = scope.get(key) if isinstance(scope, dict) else None
            if not _compare(actual, operator_name, expected):
                return False
        return True

    return Query(matches, offset, limit)
