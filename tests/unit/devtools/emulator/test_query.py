"""Emulator query (E4): filters, newest first, cursor paging and refused requests."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from mqtt_bridge.devtools.emulator.server import Emulator
from mqtt_bridge.devtools.emulator.values import JsonDict
from tests.unit.devtools.emulator.helpers import (
    USE_CASE,
    make_event,
    post_batch,
)


def test_emulator_query_filters_newest_first_and_pages(emulator: Emulator, session: requests.Session) -> None:
    """Query returns matching events newest first, paged by an opaque cursor with hasMore/nextCursor."""
    now = datetime.now(UTC)
    events = [make_event(f"e{i}", timestamp=(now - timedelta(minutes=10 - i)).isoformat(),
                     deviceId="cam-a" if i % 2 else "cam-b", customMetadata={"temp": i * 10},
                     eventType="custom" if i == 4 else "quality_check") for i in range(6)]
    assert post_batch(session, emulator, events).status_code == 201
    url = f"{emulator.url}/vision-events/query"
    seen: list[str] = []
    cursor = None
    while True:
        page = session.post(url, json={"useCaseId": USE_CASE, "limit": 4, "cursor": cursor}, timeout=5).json()
        seen += [e["eventId"] for e in page["events"]]
        assert page["lookbackDays"] == 14
        if not page["hasMore"]:
            assert page["nextCursor"] is None
            break
        cursor = page["nextCursor"]
        assert base64.urlsafe_b64decode(cursor)
    assert seen == ["e5", "e4", "e3", "e2", "e1", "e0"]

    def ids(**filters: Any) -> list[str]:
        response = session.post(url, json={"useCaseId": USE_CASE, **filters}, timeout=5)
        assert response.status_code == 200, response.text
        return [e["eventId"] for e in response.json()["events"]]

    assert ids(deviceId={"operator": "eq", "value": "cam-a"}) == ["e5", "e3", "e1"]
    assert ids(deviceId={"operator": "neq", "value": "cam-a"}) == ["e4", "e2", "e0"]
    assert ids(eventType="custom") == ["e4"]
    assert ids(eventTypes=["quality_check"], limit=2) == ["e5", "e3"]
    assert ids(startTime=(now - timedelta(minutes=7, seconds=30)).isoformat(),
               endTime=(now - timedelta(minutes=5, seconds=30)).isoformat()) == ["e4", "e3"]
    hot = {"field": "temp", "operator": "gte", "value": 40, "type": "number"}
    assert ids(customMetadataFilters=[hot]) == ["e5", "e4"]
    assert ids(useCaseId="other") == []


def test_emulator_query_rejects_bad_requests(emulator: Emulator, session: requests.Session) -> None:
    """Query needs useCaseId, at most 20 eventTypes, a valid cursor and well-formed filters."""
    url = f"{emulator.url}/vision-events/query"
    bodies: list[JsonDict] = [
        {}, {"useCaseId": USE_CASE, "eventTypes": ["custom"] * 21}, {"useCaseId": USE_CASE, "cursor": "!!"},
        {"useCaseId": USE_CASE, "deviceId": {"operator": "like", "value": "x"}},
        {"useCaseId": USE_CASE, "limit": 0},
    ]
    assert [session.post(url, json=b, timeout=5).status_code for b in bodies] == [400] * len(bodies)
    assert session.post(url, data=b"{not json", timeout=5).json() == {"error": "body must be valid JSON"}


QUERY_CASES: list[tuple[str, Any, str]] = [
    ("query-use-case-required", {}, "useCaseId is required"),
    ("query-event-types-max-20", {"eventTypes": ["custom"] * 21}, "eventTypes must be a list of at most 20 types"),
    ("query-event-types-max-20", {"eventTypes": "custom"}, "eventTypes must be a list of at most 20 types"),
    ("query-time-iso-8601", {"startTime": "yesterday"}, "startTime must be an ISO 8601 time"),
    ("query-time-iso-8601", {"endTime": 1700000000}, "endTime must be an ISO 8601 time"),
    ("query-context-filter-operator", {"deviceId": {"operator": "like", "value": "x"}},
     'deviceId must be {"operator": "eq"|"neq", "value": ...}'),
    ("query-context-filter-operator", {"externalId": "x"}, 'externalId must be {"operator": "eq"|"neq", "value": ...}'),
    ("query-filter-list-shape", {"customMetadataFilters": {"field": "t"}}, "customMetadataFilters must be a list"),
    ("query-filter-list-shape", {"eventFieldFilters": [{"column": "result", "operator": "~", "value": 1}]},
     "eventFieldFilters items need column, operator and value"),
    ("query-limit-positive", {"limit": 0}, "limit must be a positive integer"),
    ("query-limit-positive", {"limit": "10"}, "limit must be a positive integer"),
    ("query-cursor-valid", {"cursor": "!!"}, "invalid cursor"),
    ("query-body-object", [], "body must be a JSON object"),
]


@pytest.mark.parametrize(("rule", "body", "message"), QUERY_CASES,
                         ids=[f"{c[0]}-{n}" for n, c in enumerate(QUERY_CASES)])
def test_query_breaking_a_rule_is_400_with_the_error_body(rule: str, body: Any, message: str, emulator: Emulator,
                                                          session: requests.Session) -> None:
    """Each documented query rule (spec §2.4, §5 G13) answers 400 with `{"error": message}`."""
    sent = {"useCaseId": USE_CASE, **body} if isinstance(body, dict) and rule != "query-use-case-required" else body
    response = session.post(f"{emulator.url}/vision-events/query", json=sent, timeout=5)
    assert (response.status_code, response.json()) == (400, {"error": message})


def test_query_limit_over_100_is_clamped_or_refused_in_strict_mode(session: requests.Session) -> None:
    """A `limit` over the assumed maximum of 100 (spec §5 G13) is clamped, or refused with 400 in strict mode."""
    body = {"useCaseId": USE_CASE, "limit": 500}
    for strict, expected in ((False, 200), (True, 400)):
        with Emulator(strict=strict, use_cases=[{"id": USE_CASE, "name": "x"}]) as emu:
            response = session.post(f"{emu.url}/vision-events/query", json=body, timeout=5)
            assert response.status_code == expected
    assert response.json() == {"error": "limit must be at most 100"}


def test_query_answer_has_the_documented_shape(emulator: Emulator, session: requests.Session) -> None:
    """200 with `events`, `nextCursor`, `hasMore` and `lookbackDays` (spec §2.4); externalId filters eventData."""
    events = [make_event("e1", eventData={"result": "pass", "externalId": "b-1"}), make_event("e2")]
    assert post_batch(session, emulator, events).status_code == 201
    body = {"useCaseId": USE_CASE, "externalId": {"operator": "eq", "value": "b-1"},
            "eventFieldFilters": [{"column": "result", "operator": "eq", "value": "pass"}]}
    response = session.post(f"{emulator.url}/vision-events/query", json=body, timeout=5)
    assert response.status_code == 200
    answer = response.json()
    assert set(answer) == {"events", "nextCursor", "hasMore", "lookbackDays"}
    assert ([e["eventId"] for e in answer["events"]], answer["nextCursor"], answer["hasMore"]) == (["e1"], None, False)


def test_query_skips_events_older_than_the_lookback_window(session: requests.Session) -> None:
    """Events older than `lookbackDays` are not returned (spec §2.4 retention)."""
    with Emulator(lookback_days=1, use_cases=[{"id": USE_CASE, "name": "x"}]) as emu:
        old = make_event("old", timestamp=(datetime.now(UTC) - timedelta(days=2)).isoformat())
        assert post_batch(session, emu, [old, make_event("new")]).status_code == 201
        answer = session.post(f"{emu.url}/vision-events/query", json={"useCaseId": USE_CASE}, timeout=5).json()
    assert ([e["eventId"] for e in answer["events"]], answer["lookbackDays"]) == (["new"], 1)


def test_query_cursor_pages_through_many_pages_with_the_same_filters(emulator: Emulator,
                                                                     session: requests.Session) -> None:
    """250 matching events come back over three pages of the default limit (50) plus one of 100: every event
    exactly once, newest first, `hasMore` false and `nextCursor` null only on the last page (spec §2.4)."""
    now = datetime.now(UTC)
    for chunk in range(3):
        events = [make_event(f"p{n:03d}", timestamp=(now - timedelta(seconds=300 - n)).isoformat())
                  for n in range(chunk * 100, chunk * 100 + 100)]
        assert post_batch(session, emulator, events).status_code == 201
    url = f"{emulator.url}/vision-events/query"
    window = {"useCaseId": USE_CASE, "startTime": (now - timedelta(seconds=250)).isoformat(),
              "endTime": now.isoformat()}
    pages: list[list[str]] = []
    cursor: str | None = None
    for limit in (None, None, None, 100):
        body: JsonDict = {**window, "cursor": cursor} if limit is None else {**window, "cursor": cursor,
                                                                              "limit": limit}
        page = session.post(url, json=body, timeout=5).json()
        pages.append([e["eventId"] for e in page["events"]])
        cursor = page["nextCursor"]
        assert page["hasMore"] is (cursor is not None)
    assert [len(p) for p in pages] == [50, 50, 50, 100]
    assert cursor is None
    assert [i for p in pages for i in p] == [f"p{n:03d}" for n in range(299, 49, -1)]
