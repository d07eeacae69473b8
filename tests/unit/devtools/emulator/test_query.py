"""Emulator query (E4): filters, newest first, cursor paging and refused requests."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

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
