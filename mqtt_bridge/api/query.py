"""Finding events at the API: which of a set of eventIds `POST /vision-events/query` returns (for `verify`).

Owns: the query body for one use case and time window (the API has no filter by eventId, spec §2.4: the window,
the use case and the event types narrow it), cursor paging as the SDK does it (send the same filters with
`cursor=nextCursor`; stop on an empty page, an empty `nextCursor` or `hasMore: false`; also on a cursor the server
repeats), stopping early once every wanted id was seen, and the `lookbackDays` the answer reports. Raises the
client's `ApiError`s; never retries by itself.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Set
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from mqtt_bridge.model.values import JsonDict, JsonValue, format_timestamp

__all__ = ["PAGE_LIMIT", "QueryApi", "Sighting", "find_events"]

PAGE_LIMIT = 100  # the largest page we ask for; the docs give no maximum (spec §5 G13 assumes 100)
_MAX_EVENT_TYPES = 20  # §2.4: at most 20 `eventTypes` per query


class QueryApi(Protocol):
    """What finding events needs from the API client (`VisionEventsClient.query_events`)."""

    def query_events(self, body: JsonDict) -> JsonDict:
        """One page of the query answer."""


@dataclass(frozen=True, slots=True)
class Sighting:
    """What the pages of one query showed: the wanted ids found, pages read, and the retention in force."""

    found: frozenset[str]
    pages: int
    lookback_days: int | None


def _event_ids(page: JsonDict) -> list[str]:
    events = page.get("events")
    if not isinstance(events, list):
        return []
    return [str(event["eventId"]) for event in events if isinstance(event, dict) and "eventId" in event]


def find_events(api: QueryApi, use_case_id: str, wanted: Set[str], start: datetime, end: datetime,
                event_types: Collection[str] = (), on_found: Callable[[int], None] | None = None) -> Sighting:
    """Page through the use case's events in [start, end] until every id of `wanted` was seen or the pages end.

    `on_found(n)` is told after each page how many wanted ids it newly showed (for a progress bar).
    """
    body: JsonDict = {"useCaseId": use_case_id, "startTime": format_timestamp(start),
                      "endTime": format_timestamp(end), "limit": PAGE_LIMIT}
    types = sorted(set(event_types))
    if types and len(types) <= _MAX_EVENT_TYPES:
        body["eventTypes"] = list[JsonValue](types)
    found: set[str] = set()
    seen_cursors: set[str] = set()
    pages = 0
    lookback: int | None = None
    cursor: str | None = None
    while True:
        page = api.query_events(body if cursor is None else {**body, "cursor": cursor})
        pages += 1
        days = page.get("lookbackDays")
        if isinstance(days, int) and not isinstance(days, bool):
            lookback = days
        ids = _event_ids(page)
        new = {event_id for event_id in ids if event_id in wanted} - found
        found |= new
        if on_found is not None and new:
            on_found(len(new))
        next_cursor = page.get("nextCursor")
        if (not ids or len(found) == len(wanted) or page.get("hasMore") is False
                or not isinstance(next_cursor, str) or not next_cursor or next_cursor in seen_cursors):
            return Sighting(frozenset(found), pages, lookback)
        seen_cursors.add(next_cursor)
        cursor = next_cursor
