"""The Vision Events emulator over real HTTP: routes, auth, validation, storage, query and fault injection."""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from mqtt_bridge.devtools.emulator.server import ALL_SCOPES, Emulator, Faults, serve
from mqtt_bridge.devtools.emulator.multipart import sniff_image_ext
from mqtt_bridge.model.values import JsonDict
from tests.helpers import wait_until

USE_CASE = "uc-line-1"
JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) + b"\r\n--not-a-boundary\r\n\r\n"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    """A started emulator on a free port with one known use case."""
    with Emulator(use_cases=[{"id": USE_CASE, "name": "Line 1"}]) as emu:
        yield emu


@pytest.fixture
def session() -> Iterator[requests.Session]:
    """A requests session that sends the default key as a Bearer header."""
    with requests.Session() as s:
        s.headers["Authorization"] = "Bearer demo-key"
        yield s


def _event(event_id: str, **overrides: Any) -> JsonDict:
    event: JsonDict = {
        "eventId": event_id, "eventType": "quality_check", "useCaseId": USE_CASE,
        "timestamp": datetime.now(UTC).isoformat(), "eventData": {"result": "pass"},
    }
    event.update(overrides)
    return event


def _batch(session: requests.Session, emulator: Emulator, events: list[JsonDict]) -> requests.Response:
    return session.post(f"{emulator.url}/vision-events/batch", json={"events": events}, timeout=5)


def _upload(session: requests.Session, emulator: Emulator, data: bytes, **form: str) -> requests.Response:
    files = {"file": ("frame.jpg", data, "image/jpeg")}
    return session.post(f"{emulator.url}/vision-events/upload", files=files, data=form, timeout=5)


def _stored(emulator: Emulator, event_id: str) -> JsonDict:
    event = emulator.event(event_id)
    assert event is not None, f"{event_id} not stored"
    return event


def test_emulator_rejects_missing_and_unknown_key_with_401(emulator: Emulator) -> None:
    """No key, or a key the emulator does not know, gets 401 with an error body."""
    with requests.Session() as s:
        missing = s.post(f"{emulator.url}/vision-events/batch", json={"events": []}, timeout=5)
        wrong = s.post(f"{emulator.url}/vision-events/batch", json={"events": []}, timeout=5,
                       headers={"Authorization": "Bearer nope"})
    assert (missing.status_code, wrong.status_code) == (401, 401)
    assert "error" in missing.json()
    assert wrong.json() == {"error": "Invalid API key"}


def test_emulator_rejects_missing_scope_with_403() -> None:
    """A key without the write scope gets the documented 403 body on a write."""
    keys = {"reader": frozenset({"vision-events:read"}), "writer": ALL_SCOPES}
    with Emulator(api_keys=keys, use_cases=[{"id": USE_CASE, "name": "x"}]) as emu, requests.Session() as s:
        denied = s.post(f"{emu.url}/vision-events/batch", json={"events": [_event("e1")]}, timeout=5,
                        headers={"Authorization": "Bearer reader"})
        allowed = s.get(f"{emu.url}/vision-events/use-cases", headers={"Authorization": "Bearer reader"},
                        timeout=5)
    assert denied.status_code == 403
    assert denied.json() == {"error": "Insufficient permissions for this resource."}
    assert allowed.status_code == 200
    assert emu.events() == []


def test_emulator_accepts_api_key_query_parameter(emulator: Emulator) -> None:
    """`?api_key=` works in place of the Bearer header."""
    with requests.Session() as s:
        response = s.post(f"{emulator.url}/vision-events?api_key=demo-key", json=_event("e1"), timeout=5)
    assert response.status_code == 201
    assert response.json() == {"eventId": "e1", "created": True}
    assert emulator.requests_log()[-1].path == "/vision-events"  # the key is not logged


def test_emulator_batch_returns_201_with_ids_in_request_order(emulator: Emulator,
                                                              session: requests.Session) -> None:
    """A valid batch answers 201 with `created` and the ids in request order, and stores every event."""
    ids = [f"e{i}" for i in (3, 1, 2)]
    response = _batch(session, emulator, [_event(i) for i in ids])
    assert response.status_code == 201
    assert response.json() == {"created": 3, "eventIds": ids}
    assert sorted(str(e["eventId"]) for e in emulator.events()) == sorted(ids)
    assert _stored(emulator, "e1")["warnings"] == []


def test_emulator_batch_over_100_events_is_400(emulator: Emulator, session: requests.Session) -> None:
    """101 events in one batch are refused whole."""
    response = _batch(session, emulator, [_event(f"e{i}") for i in range(101)])
    assert response.status_code == 400
    assert "100" in response.json()["error"]
    assert emulator.events() == []


def test_emulator_invalid_event_fails_whole_batch_naming_index(emulator: Emulator,
                                                                session: requests.Session) -> None:
    """One event outside the timestamp window makes the batch 400, names its index, and stores nothing."""
    old = (datetime.now(UTC) - timedelta(days=400)).isoformat()
    events = [_event("e0"), _event("e1"), _event("e2"), _event("e3", timestamp=old)]
    response = _batch(session, emulator, events)
    assert response.status_code == 400
    assert response.json()["error"].startswith("events[3]: timestamp must lie")
    assert emulator.events() == []
    assert emulator.write_counts() == {}


def test_emulator_single_create_error_has_no_index(emulator: Emulator, session: requests.Session) -> None:
    """E1 reports a problem without an `events[i]` prefix."""
    response = session.post(f"{emulator.url}/vision-events", json=_event("e1", eventType="nope"), timeout=5)
    assert response.status_code == 400
    assert response.json()["error"].startswith("eventType must be one of")


def test_emulator_same_event_id_is_upserted_and_counted(emulator: Emulator,
                                                        session: requests.Session) -> None:
    """Writing an eventId twice keeps one event (the last) and counts two writes."""
    assert _batch(session, emulator, [_event("dup", eventData={"result": "pass"})]).status_code == 201
    assert _batch(session, emulator, [_event("dup", eventData={"result": "fail"})]).status_code == 201
    assert len(emulator.events()) == 1
    assert _stored(emulator, "dup")["eventData"] == {"result": "fail"}
    assert emulator.write_counts() == {"dup": 2}


def test_emulator_unknown_use_case_is_400(emulator: Emulator, session: requests.Session) -> None:
    """An event naming no existing use case is refused with its index."""
    response = _batch(session, emulator, [_event("e0"), _event("e1", useCaseId="missing")])
    assert response.status_code == 400
    assert response.json()["error"] == "events[1]: unknown useCaseId 'missing'"


def test_emulator_auto_creates_use_cases_when_asked() -> None:
    """With auto_create_use_cases an unknown useCaseId is created instead of refused."""
    with Emulator(auto_create_use_cases=True) as emu, requests.Session() as s:
        s.headers["Authorization"] = "Bearer demo-key"
        assert _batch(s, emu, [_event("e1", useCaseId="fresh")]).status_code == 201
    assert [uc["id"] for uc in emu.use_cases()] == ["fresh"]


def test_emulator_archived_use_case_rejected_only_when_configured(session: requests.Session) -> None:
    """Archived use cases accept writes by default and refuse them with reject_archived."""
    for reject, expected in ((False, 201), (True, 400)):
        with Emulator(use_cases=[{"id": USE_CASE, "name": "x", "status": "inactive"}],
                      reject_archived=reject) as emu:
            assert _batch(session, emu, [_event("e1")]).status_code == expected


def test_emulator_strict_mode_requires_event_data(session: requests.Session) -> None:
    """Strict mode refuses an event without eventData; lenient mode accepts it."""
    bare = _event("e1")
    del bare["eventData"]
    for strict, expected in ((False, 201), (True, 400)):
        with Emulator(strict=strict, use_cases=[{"id": USE_CASE, "name": "x"}]) as emu:
            assert _batch(session, emu, [bare]).status_code == expected


def test_emulator_upload_round_trip_serves_image(emulator: Emulator, session: requests.Session) -> None:
    """An upload answers 201 with a sourceId and URL; the bytes are kept exactly and served without auth."""
    response = _upload(session, emulator, JPEG, name="frame-1", metadata='{"line": "A1", "temp": 72.5}')
    assert response.status_code == 201
    body = response.json()
    assert body["success"] is True
    assert body["sourceId"].startswith("ve-img-")
    assert body["url"] == f"{emulator.url}/images/{body['sourceId']}.jpg"
    assert emulator.uploads() == {body["sourceId"]: JPEG}
    with requests.Session() as anonymous:
        image = anonymous.get(body["url"], timeout=5)
    assert image.status_code == 200
    assert image.headers["Content-Type"] == "image/jpeg"
    assert image.content == JPEG


def test_emulator_upload_rejects_bad_forms(emulator: Emulator, session: requests.Session) -> None:
    """Unknown image bytes, a missing file, bad metadata and a non-multipart body are 400."""
    assert _upload(session, emulator, b"GIF-not-really").json() == {"error": "unsupported image format"}
    no_file = session.post(f"{emulator.url}/vision-events/upload", files={"name": (None, "x")}, timeout=5)
    assert no_file.json() == {"error": "file is required"}
    assert _upload(session, emulator, PNG, metadata="[1]").status_code == 400
    assert _upload(session, emulator, PNG, metadata='{"bad key!": 1}').status_code == 400
    assert session.post(f"{emulator.url}/vision-events/upload", json={}, timeout=5).status_code == 400
    assert emulator.uploads() == {}


def test_emulator_sniffs_image_formats() -> None:
    """Magic bytes name every accepted format."""
    samples = {b"\xff\xd8\xff\xdb": "jpg", PNG: "png", b"GIF89a..": "gif", b"BM....": "bmp",
               b"II*\x00....": "tiff", b"MM\x00*....": "tiff", b"RIFF\x00\x00\x00\x00WEBPVP8 ": "webp",
               b"\x00\x00\x00\x18ftypheic": "heic", b"\x00\x00\x00\x18ftypavif": "avif", b"hello": None}
    assert {data: sniff_image_ext(data) for data in samples} == samples


def test_emulator_image_event_gets_url(emulator: Emulator, session: requests.Session) -> None:
    """An event referencing a known upload keeps its image, with the image URL added."""
    source_id = _upload(session, emulator, PNG).json()["sourceId"]
    boxes = [{"class": "scratch", "x": 10, "y": 10, "width": 4, "height": 4, "confidence": 0.9}]
    image = {"sourceId": source_id, "label": "workflow", "objectDetections": boxes}
    assert _batch(session, emulator, [_event("e1", images=[image])]).status_code == 201
    stored = _stored(emulator, "e1")
    assert stored["images"] == [{**image, "url": f"{emulator.url}/images/{source_id}.png"}]
    assert stored["warnings"] == []


def test_emulator_unknown_source_id_warns_and_drops_images(emulator: Emulator,
                                                           session: requests.Session) -> None:
    """An unknown sourceId is accepted (201) but the event gets a warning and loses its images."""
    response = _batch(session, emulator, [_event("e1", images=[{"sourceId": "ve-img-unknown"}])])
    assert response.status_code == 201
    stored = _stored(emulator, "e1")
    assert stored["images"] == []
    assert stored["warnings"] == ["images[0].sourceId 've-img-unknown' is not a known upload"]


def test_emulator_prediction_overflow_warns_and_drops_images(emulator: Emulator,
                                                             session: requests.Session) -> None:
    """More than 1000 detections in a list is a warning, not a 400."""
    source_id = _upload(session, emulator, JPEG).json()["sourceId"]
    box = {"class": "a", "x": 1, "y": 1, "width": 1, "height": 1, "confidence": 0.5}
    image = {"sourceId": source_id, "objectDetections": [box] * 1001}
    assert _batch(session, emulator, [_event("e1", images=[image])]).status_code == 201
    stored = _stored(emulator, "e1")
    assert stored["images"] == []
    assert "has 1001 items" in str(stored["warnings"])


def test_emulator_query_filters_newest_first_and_pages(emulator: Emulator, session: requests.Session) -> None:
    """Query returns matching events newest first, paged by an opaque cursor with hasMore/nextCursor."""
    now = datetime.now(UTC)
    events = [_event(f"e{i}", timestamp=(now - timedelta(minutes=10 - i)).isoformat(),
                     deviceId="cam-a" if i % 2 else "cam-b", customMetadata={"temp": i * 10},
                     eventType="custom" if i == 4 else "quality_check") for i in range(6)]
    assert _batch(session, emulator, events).status_code == 201
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


def test_emulator_use_cases_create_duplicate_list_rename_archive(emulator: Emulator,
                                                                  session: requests.Session) -> None:
    """Use cases are created (trimmed, unique), listed by status, renamed, archived and unarchived."""
    base = f"{emulator.url}/vision-events/use-cases"
    created = session.post(base, json={"name": "  Packing  "}, timeout=5)
    assert created.status_code == 201
    new_id = created.json()["id"]
    assert created.json() == {"id": new_id, "name": "Packing"}
    duplicate = session.post(base, json={"name": "Packing"}, timeout=5)
    assert duplicate.status_code == 400
    assert duplicate.json() == {"error": "A solution with this name already exists"}
    assert session.post(base, json={"name": "   "}, timeout=5).status_code == 400
    assert {uc["id"] for uc in session.get(base, timeout=5).json()["useCases"]} == {USE_CASE, new_id}
    renamed = session.put(f"{base}/{new_id}", json={"name": "Boxing"}, timeout=5)
    assert (renamed.status_code, renamed.json()) == (200, {"id": new_id, "name": "Boxing"})
    assert session.post(f"{base}/{new_id}/archive", timeout=5).json() == {"success": True}
    listed = session.get(base, timeout=5).json()
    assert [uc["id"] for uc in listed["useCases"]] == [USE_CASE]
    inactive = session.get(base, params={"status": "inactive"}, timeout=5).json()["useCases"]
    assert [(uc["id"], uc["name"], uc["status"]) for uc in inactive] == [(new_id, "Boxing", "inactive")]
    assert session.post(f"{base}/{new_id}/unarchive", timeout=5).status_code == 200
    assert session.post(f"{base}/nope/archive", timeout=5).json() == {"error": "not found"}
    assert emulator.add_use_case("Third", "uc-3") == "uc-3"
    with pytest.raises(ValueError, match="already exists"):
        emulator.add_use_case("Third")


def test_emulator_metadata_schema_infers_types(emulator: Emulator, session: requests.Session) -> None:
    """E10 lists each customMetadata key with every type seen for it."""
    events = [_event("e1", customMetadata={"line": "A1", "temp": 72.5}),
              _event("e2", customMetadata={"temp": "hot", "ok": True})]
    assert _batch(session, emulator, events).status_code == 201
    schema = session.get(f"{emulator.url}/vision-events/custom-metadata-schema/{USE_CASE}", timeout=5).json()
    assert schema == {"fields": {"line": {"types": ["string"]}, "ok": {"types": ["boolean"]},
                                 "temp": {"types": ["number", "string"]}}}
    missing = session.get(f"{emulator.url}/vision-events/custom-metadata-schema/nope", timeout=5)
    assert missing.status_code == 404


def test_emulator_fault_statuses_consumed_per_write_with_retry_after(emulator: Emulator,
                                                                      session: requests.Session) -> None:
    """Scripted statuses answer the next writes in order, with Retry-After; reads do not consume them."""
    emulator.set_faults(statuses=[503, 429, 401], retry_after_s=2)
    first = _batch(session, emulator, [_event("e1")])
    assert (first.status_code, first.json(), first.headers["Retry-After"]) == (
        503, {"error": "Service Unavailable"}, "2")
    query = session.post(f"{emulator.url}/vision-events/query", json={"useCaseId": USE_CASE}, timeout=5)
    assert query.status_code == 200
    assert _upload(session, emulator, JPEG).status_code == 429
    assert _batch(session, emulator, [_event("e1")]).status_code == 401
    assert emulator.events() == []
    assert _batch(session, emulator, [_event("e1")]).status_code == 201
    assert emulator.faults.statuses == ()
    statuses = [(r.path, r.status) for r in emulator.requests_log()]
    assert statuses == [("/vision-events/batch", 503), ("/vision-events/query", 200),
                        ("/vision-events/upload", 429), ("/vision-events/batch", 401),
                        ("/vision-events/batch", 201)]
    times = [r.at_s for r in emulator.requests_log()]
    assert times == sorted(times)


def test_emulator_fractional_retry_after_is_sent_as_decimal(emulator: Emulator,
                                                            session: requests.Session) -> None:
    """A non-whole retry_after_s is sent as a decimal so tests can stay fast."""
    emulator.set_faults(statuses=[429], retry_after_s=0.25)
    assert _batch(session, emulator, [_event("e1")]).headers["Retry-After"] == "0.25"


def test_emulator_status_always_until_cleared(emulator: Emulator, session: requests.Session) -> None:
    """status_always fails every API request, reads included, until the faults are cleared."""
    emulator.set_faults(status_always=502)
    assert _batch(session, emulator, [_event("e1")]).status_code == 502
    assert session.get(f"{emulator.url}/vision-events/use-cases", timeout=5).status_code == 502
    emulator.clear_faults()
    assert _batch(session, emulator, [_event("e1")]).status_code == 201


def test_emulator_delay_slows_replies(emulator: Emulator, session: requests.Session) -> None:
    """delay_s holds every API reply back; the request is still processed."""
    emulator.set_faults(delay_s=0.2)
    started = time.monotonic()
    assert _batch(session, emulator, [_event("e1")]).status_code == 201
    assert time.monotonic() - started >= 0.2
    with pytest.raises(requests.exceptions.ReadTimeout):
        session.post(f"{emulator.url}/vision-events/batch", json={"events": [_event("e2")]}, timeout=0.05)
    wait_until(lambda: emulator.event("e2") is not None, timeout_s=2, message="late write stored")


def test_emulator_reset_after_commit_stores_then_resets(emulator: Emulator,
                                                        session: requests.Session) -> None:
    """reset_after_commit stores the batch, then resets the connection; the retry is an upsert."""
    emulator.set_faults(reset_after_commit=1)
    with pytest.raises(requests.exceptions.ConnectionError):
        _batch(session, emulator, [_event("e1")])
    assert emulator.event("e1") is not None
    assert emulator.faults.reset_after_commit == 0
    assert _batch(session, emulator, [_event("e1")]).status_code == 201
    assert emulator.write_counts() == {"e1": 2}
    assert [r.status for r in emulator.requests_log()] == [0, 201]


def test_emulator_fail_event_ids_rejects_whole_batch(emulator: Emulator, session: requests.Session) -> None:
    """A batch holding a poisoned eventId is 400 naming its index, and nothing is stored, every time."""
    emulator.set_faults(fail_event_ids={"bad"})
    for _ in range(2):
        response = _batch(session, emulator, [_event("ok"), _event("bad")])
        assert response.json() == {"error": "events[1]: rejected by fault injection"}
    assert emulator.events() == []
    assert _batch(session, emulator, [_event("ok")]).status_code == 201


def test_emulator_faults_refuse_bad_values() -> None:
    """Faults validates its fields, from Python and from JSON."""
    with pytest.raises(ValueError, match=r"400\.\.599"):
        Faults(statuses=(200,))
    with pytest.raises(ValueError, match="delay_s"):
        Faults(delay_s=-1)
    with pytest.raises(ValueError, match="unknown fault fields"):
        Faults.from_json({"status": 503})
    parsed = Faults.from_json({"statuses": [503], "retry_after_s": 1, "fail_event_ids": ["x"]})
    assert parsed == Faults(statuses=(503,), retry_after_s=1.0, fail_event_ids=frozenset({"x"}))
    assert Faults.from_json(parsed.to_json()) == parsed


def test_emulator_control_api_over_http(emulator: Emulator, session: requests.Session) -> None:
    """The /_emulator endpoints set/clear faults, show events, stats and requests, add use cases, reset."""
    control = f"{emulator.url}/_emulator"
    with requests.Session() as anonymous:
        faults = {"statuses": [500], "retry_after_s": 1}
        set_reply = anonymous.post(f"{control}/faults", json=faults, timeout=5)
        assert set_reply.status_code == 200
        assert anonymous.get(f"{control}/faults", timeout=5).json()["statuses"] == [500]
        assert anonymous.post(f"{control}/faults", json={"statuses": ["x"]}, timeout=5).status_code == 400
        assert _batch(session, emulator, [_event("e0")]).status_code == 500
        assert anonymous.delete(f"{control}/faults", timeout=5).json()["statuses"] == []
        added = anonymous.post(f"{control}/use-cases", json={"id": "uc-2", "name": "Two"}, timeout=5)
        assert added.status_code == 201
        assert _batch(session, emulator, [_event("e1"), _event("e2", useCaseId="uc-2")]).status_code == 201
        dumped = anonymous.get(f"{control}/events", timeout=5).json()
        assert [e["eventId"] for e in dumped["events"]] == ["e1", "e2"]
        assert dumped["writes"] == {"e1": 1, "e2": 1}
        stats = anonymous.get(f"{control}/stats", timeout=5).json()
        assert stats == {"requests": {"POST /vision-events/batch": {"201": 1, "500": 1}}, "total": 2}
        logged = anonymous.get(f"{control}/requests", timeout=5).json()["requests"]
        assert [(r["method"], r["path"], r["status"]) for r in logged] == [
            ("POST", "/vision-events/batch", 500), ("POST", "/vision-events/batch", 201)]
        assert anonymous.post(f"{control}/reset", timeout=5).json() == {"success": True}
        assert anonymous.get(f"{control}/events", timeout=5).json() == {"events": [], "writes": {}}
    assert {uc["id"] for uc in emulator.use_cases()} == {USE_CASE, "uc-2"}
    assert emulator.requests_log() == []


def test_emulator_page_served_as_html(emulator: Emulator) -> None:
    """GET / returns the self-contained HTML page without auth."""
    with requests.Session() as s:
        page = s.get(f"{emulator.url}/", timeout=5)
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert "<title>Vision Events emulator</title>" in page.text
    assert "/_emulator/events" in page.text
    assert "http" not in page.text.replace("http://www.w3.org/2000/svg", "")  # no external resources


def test_emulator_unknown_path_404_wrong_method_405_and_body_limit_413(session: requests.Session) -> None:
    """Unknown paths are 404, a known path with another method 405, and an oversized body 413."""
    with Emulator(max_body_bytes=1000, use_cases=[{"id": USE_CASE, "name": "x"}]) as emu:
        assert session.get(f"{emu.url}/nope", timeout=5).json() == {"error": "not found"}
        assert session.get(f"{emu.url}/vision-events/batch", timeout=5).status_code == 405
        big = session.post(f"{emu.url}/vision-events/batch", data=b"x" * 5000, timeout=5)
        assert big.status_code == 413
        assert _batch(session, emu, [_event("e1")]).status_code == 201  # same connection still usable


def test_emulator_stop_is_idempotent_and_port_needs_start() -> None:
    """Port and url need a started emulator; stop twice is harmless."""
    emu = Emulator()
    with pytest.raises(RuntimeError):
        _ = emu.port
    emu.start()
    assert emu.url == f"http://127.0.0.1:{emu.port}"
    emu.stop()
    emu.stop()


def test_emulator_serve_runs_until_stopped(caplog: pytest.LogCaptureFixture) -> None:
    """serve() blocks, answers with the given key and use cases, and returns when `stop` is set."""
    stop = threading.Event()
    caplog.set_level(logging.INFO, logger="mqtt_bridge.devtools.emulator.server")
    thread = threading.Thread(target=serve, args=("127.0.0.1", 0, "k1", ["uc-a", "uc-b=Line B"]),
                              kwargs={"stop": stop}, name="test-serve")
    thread.start()
    try:
        record = wait_until(lambda: next((r for r in caplog.records if "serving" in r.getMessage()), None),
                            message="emulator serving")
        assert record is not None
        url = str(record.args[0]) if isinstance(record.args, tuple) else ""
        with requests.Session() as s:
            s.headers["Authorization"] = "Bearer k1"
            listed = s.get(f"{url}/vision-events/use-cases", timeout=5)
        assert [(uc["id"], uc["name"]) for uc in listed.json()["useCases"]] == [("uc-a", "uc-a"),
                                                                               ("uc-b", "Line B")]
    finally:
        stop.set()
        thread.join(timeout=5)
    assert not thread.is_alive()
