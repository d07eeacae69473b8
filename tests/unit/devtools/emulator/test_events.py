"""Emulator event writes over HTTP: E1 and E2 answers, upserts, all-or-nothing batches, use cases, warnings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import requests

from mqtt_bridge.devtools.emulator.server import Emulator
from tests.unit.devtools.emulator.helpers import (
    JPEG,
    PNG,
    USE_CASE,
    make_event,
    post_batch,
    post_upload,
    stored_event,
)


def test_emulator_batch_returns_201_with_ids_in_request_order(emulator: Emulator,
                                                              session: requests.Session) -> None:
    """A valid batch answers 201 with `created` and the ids in request order, and stores every event."""
    ids = [f"e{i}" for i in (3, 1, 2)]
    response = post_batch(session, emulator, [make_event(i) for i in ids])
    assert response.status_code == 201
    assert response.json() == {"created": 3, "eventIds": ids}
    assert sorted(str(e["eventId"]) for e in emulator.events()) == sorted(ids)
    assert stored_event(emulator, "e1")["warnings"] == []


def test_emulator_batch_over_100_events_is_400(emulator: Emulator, session: requests.Session) -> None:
    """101 events in one batch are refused whole."""
    response = post_batch(session, emulator, [make_event(f"e{i}") for i in range(101)])
    assert response.status_code == 400
    assert "100" in response.json()["error"]
    assert emulator.events() == []


def test_emulator_invalid_event_fails_whole_batch_naming_index(emulator: Emulator,
                                                                session: requests.Session) -> None:
    """One event outside the timestamp window makes the batch 400, names its index, and stores nothing."""
    old = (datetime.now(UTC) - timedelta(days=400)).isoformat()
    events = [make_event("e0"), make_event("e1"), make_event("e2"), make_event("e3", timestamp=old)]
    response = post_batch(session, emulator, events)
    assert response.status_code == 400
    assert response.json()["error"].startswith("events[3]: timestamp must lie")
    assert emulator.events() == []
    assert emulator.write_counts() == {}


def test_emulator_single_create_error_has_no_index(emulator: Emulator, session: requests.Session) -> None:
    """E1 reports a problem without an `events[i]` prefix."""
    response = session.post(f"{emulator.url}/vision-events", json=make_event("e1", eventType="nope"), timeout=5)
    assert response.status_code == 400
    assert response.json()["error"].startswith("eventType must be one of")


def test_emulator_same_event_id_is_upserted_and_counted(emulator: Emulator,
                                                        session: requests.Session) -> None:
    """Writing an eventId twice keeps one event (the last) and counts two writes."""
    assert post_batch(session, emulator, [make_event("dup", eventData={"result": "pass"})]).status_code == 201
    assert post_batch(session, emulator, [make_event("dup", eventData={"result": "fail"})]).status_code == 201
    assert len(emulator.events()) == 1
    assert stored_event(emulator, "dup")["eventData"] == {"result": "fail"}
    assert emulator.write_counts() == {"dup": 2}


def test_emulator_unknown_use_case_is_400(emulator: Emulator, session: requests.Session) -> None:
    """An event naming no existing use case is refused with its index."""
    response = post_batch(session, emulator, [make_event("e0"), make_event("e1", useCaseId="missing")])
    assert response.status_code == 400
    assert response.json()["error"] == "events[1]: unknown useCaseId 'missing'"


def test_emulator_auto_creates_use_cases_when_asked() -> None:
    """With auto_create_use_cases an unknown useCaseId is created instead of refused."""
    with Emulator(auto_create_use_cases=True) as emu, requests.Session() as s:
        s.headers["Authorization"] = "Bearer demo-key"
        assert post_batch(s, emu, [make_event("e1", useCaseId="fresh")]).status_code == 201
    assert [uc["id"] for uc in emu.use_cases()] == ["fresh"]


def test_emulator_archived_use_case_rejected_only_when_configured(session: requests.Session) -> None:
    """Archived use cases accept writes by default and refuse them with reject_archived."""
    for reject, expected in ((False, 201), (True, 400)):
        with Emulator(use_cases=[{"id": USE_CASE, "name": "x", "status": "inactive"}],
                      reject_archived=reject) as emu:
            assert post_batch(session, emu, [make_event("e1")]).status_code == expected


def test_emulator_strict_mode_requires_event_data(session: requests.Session) -> None:
    """Strict mode refuses an event without eventData; lenient mode accepts it."""
    bare = make_event("e1")
    del bare["eventData"]
    for strict, expected in ((False, 201), (True, 400)):
        with Emulator(strict=strict, use_cases=[{"id": USE_CASE, "name": "x"}]) as emu:
            assert post_batch(session, emu, [bare]).status_code == expected


def test_emulator_image_event_gets_url(emulator: Emulator, session: requests.Session) -> None:
    """An event referencing a known upload keeps its image, with the image URL added."""
    source_id = post_upload(session, emulator, PNG).json()["sourceId"]
    boxes = [{"class": "scratch", "x": 10, "y": 10, "width": 4, "height": 4, "confidence": 0.9}]
    image = {"sourceId": source_id, "label": "workflow", "objectDetections": boxes}
    assert post_batch(session, emulator, [make_event("e1", images=[image])]).status_code == 201
    stored = stored_event(emulator, "e1")
    assert stored["images"] == [{**image, "url": f"{emulator.url}/images/{source_id}.png"}]
    assert stored["warnings"] == []


def test_emulator_unknown_source_id_warns_and_drops_images(emulator: Emulator,
                                                           session: requests.Session) -> None:
    """An unknown sourceId is accepted (201) but the event gets a warning and loses its images."""
    response = post_batch(session, emulator, [make_event("e1", images=[{"sourceId": "ve-img-unknown"}])])
    assert response.status_code == 201
    stored = stored_event(emulator, "e1")
    assert stored["images"] == []
    assert stored["warnings"] == ["images[0].sourceId 've-img-unknown' is not a known upload"]


def test_emulator_prediction_overflow_warns_and_drops_images(emulator: Emulator,
                                                             session: requests.Session) -> None:
    """More than 1000 detections in a list is a warning, not a 400."""
    source_id = post_upload(session, emulator, JPEG).json()["sourceId"]
    box = {"class": "a", "x": 1, "y": 1, "width": 1, "height": 1, "confidence": 0.5}
    image = {"sourceId": source_id, "objectDetections": [box] * 1001}
    assert post_batch(session, emulator, [make_event("e1", images=[image])]).status_code == 201
    stored = stored_event(emulator, "e1")
    assert stored["images"] == []
    assert "has 1001 items" in str(stored["warnings"])
