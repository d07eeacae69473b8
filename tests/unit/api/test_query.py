"""Finding events at the API (`api.query.find_events`): the query body, cursor paging, and when it stops."""

from __future__ import annotations

from datetime import UTC, datetime

from mqtt_bridge.api.query import PAGE_LIMIT, find_events
from mqtt_bridge.model.values import JsonDict, JsonValue


class _Pages:
    """A query API that answers from a list of event ids, `size` per page, with an offset cursor."""

    def __init__(self, ids: list[str], size: int = 3, repeat_cursor: bool = False) -> None:
        self.ids, self.size, self.repeat_cursor = ids, size, repeat_cursor
        self.bodies: list[JsonDict] = []

    def query_events(self, body: JsonDict) -> JsonDict:
        self.bodies.append(body)
        offset = 0 if self.repeat_cursor else int(str(body.get("cursor") or 0))
        end = offset + self.size
        events: list[JsonValue] = [{"eventId": i} for i in self.ids[offset:end]]
        more = end < len(self.ids)
        return {"events": events, "nextCursor": str(end) if more else None, "hasMore": more, "lookbackDays": 14}


START, END = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)


def test_find_events_pages_with_the_same_filters_until_every_id_is_seen() -> None:
    """Every page repeats the use case, window, types and limit, adding the previous page's cursor; paging stops
    as soon as every wanted id was seen."""
    api = _Pages([f"x{n}" for n in range(10)])
    found: list[int] = []
    sighting = find_events(api, "uc", {"x1", "x4"}, START, END, ["custom"], on_found=found.append)
    assert sighting.found == {"x1", "x4"} and sighting.pages == 2 and sighting.lookback_days == 14
    assert found == [1, 1]
    assert api.bodies[0] == {"useCaseId": "uc", "startTime": "2026-01-01T00:00:00.000Z",
                             "endTime": "2026-01-02T00:00:00.000Z", "limit": PAGE_LIMIT, "eventTypes": ["custom"]}
    assert api.bodies[1] == {**api.bodies[0], "cursor": "3"}


def test_find_events_reads_to_the_last_page_when_an_id_is_missing() -> None:
    """A missing id makes it read every page (hasMore false ends it) and report only what it saw."""
    api = _Pages([f"x{n}" for n in range(7)])
    sighting = find_events(api, "uc", {"x6", "gone"}, START, END)
    assert sighting.found == {"x6"} and sighting.pages == 3
    assert "eventTypes" not in api.bodies[0]


def test_find_events_stops_on_a_repeated_cursor() -> None:
    """A server that hands out the same cursor again cannot keep it paging forever."""
    api = _Pages([f"x{n}" for n in range(7)], repeat_cursor=True)
    assert find_events(api, "uc", {"gone"}, START, END).pages == 2
