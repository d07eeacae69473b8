"""Emulator fault injection: scripted statuses, Retry-After, API down, delays, resets, poisoned ids."""

from __future__ import annotations

import time

import pytest
import requests

from mqtt_bridge.devtools.emulator.server import Emulator, Faults
from tests.helpers import wait_until
from tests.unit.devtools.emulator.helpers import (
    JPEG,
    USE_CASE,
    make_event,
    post_batch,
    post_upload,
)


def test_emulator_fault_statuses_consumed_per_write_with_retry_after(emulator: Emulator,
                                                                      session: requests.Session) -> None:
    """Scripted statuses answer the next writes in order, with Retry-After; reads do not consume them."""
    emulator.set_faults(statuses=[503, 429, 401], retry_after_s=2)
    first = post_batch(session, emulator, [make_event("e1")])
    assert (first.status_code, first.json(), first.headers["Retry-After"]) == (
        503, {"error": "Service Unavailable"}, "2")
    query = session.post(f"{emulator.url}/vision-events/query", json={"useCaseId": USE_CASE}, timeout=5)
    assert query.status_code == 200
    assert post_upload(session, emulator, JPEG).status_code == 429
    assert post_batch(session, emulator, [make_event("e1")]).status_code == 401
    assert emulator.events() == []
    assert post_batch(session, emulator, [make_event("e1")]).status_code == 201
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
    assert post_batch(session, emulator, [make_event("e1")]).headers["Retry-After"] == "0.25"


def test_emulator_status_always_until_cleared(emulator: Emulator, session: requests.Session) -> None:
    """status_always fails every API request, reads included, until the faults are cleared."""
    emulator.set_faults(status_always=502)
    assert post_batch(session, emulator, [make_event("e1")]).status_code == 502
    assert session.get(f"{emulator.url}/vision-events/use-cases", timeout=5).status_code == 502
    emulator.clear_faults()
    assert post_batch(session, emulator, [make_event("e1")]).status_code == 201


def test_emulator_delay_slows_replies(emulator: Emulator, session: requests.Session) -> None:
    """delay_s holds every API reply back; the request is still processed."""
    emulator.set_faults(delay_s=0.2)
    started = time.monotonic()
    assert post_batch(session, emulator, [make_event("e1")]).status_code == 201
    assert time.monotonic() - started >= 0.2
    with pytest.raises(requests.exceptions.ReadTimeout):
        session.post(f"{emulator.url}/vision-events/batch", json={"events": [make_event("e2")]}, timeout=0.05)
    wait_until(lambda: emulator.event("e2") is not None, timeout_s=2, message="late write stored")


def test_emulator_reset_after_commit_stores_then_resets(emulator: Emulator,
                                                        session: requests.Session) -> None:
    """reset_after_commit stores the batch, then resets the connection; the retry is an upsert."""
    emulator.set_faults(reset_after_commit=1)
    with pytest.raises(requests.exceptions.ConnectionError):
        post_batch(session, emulator, [make_event("e1")])
    assert emulator.event("e1") is not None
    assert emulator.faults.reset_after_commit == 0
    assert post_batch(session, emulator, [make_event("e1")]).status_code == 201
    assert emulator.write_counts() == {"e1": 2}
    assert [r.status for r in emulator.requests_log()] == [0, 201]


def test_emulator_fail_event_ids_rejects_wholepost_batch(emulator: Emulator, session: requests.Session) -> None:
    """A batch holding a poisoned eventId is 400 naming its index, and nothing is stored, every time."""
    emulator.set_faults(fail_event_ids={"bad"})
    for _ in range(2):
        response = post_batch(session, emulator, [make_event("ok"), make_event("bad")])
        assert response.json() == {"error": "events[1]: rejected by fault injection"}
    assert emulator.events() == []
    assert post_batch(session, emulator, [make_event("ok")]).status_code == 201


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


def test_emulator_forget_event_ids_confirms_but_never_keeps(emulator: Emulator, session: requests.Session) -> None:
    """A forgotten eventId is answered 201 and listed in `eventIds` like any other, but query never finds it, and
    an earlier write of it is lost too (what a delivery check must catch)."""
    assert post_batch(session, emulator, [make_event("lost")]).status_code == 201
    emulator.set_faults(forget_event_ids={"lost"})
    response = post_batch(session, emulator, [make_event("kept"), make_event("lost")])
    assert (response.status_code, response.json()) == (201, {"created": 2, "eventIds": ["kept", "lost"]})
    assert session.post(f"{emulator.url}/vision-events", json=make_event("lost"), timeout=5).status_code == 201
    query = session.post(f"{emulator.url}/vision-events/query", json={"useCaseId": USE_CASE}, timeout=5).json()
    assert [e["eventId"] for e in query["events"]] == ["kept"]
    assert emulator.event("lost") is None


def test_emulator_forget_events_count_is_consumed_per_event(emulator: Emulator, session: requests.Session) -> None:
    """`forget_events: n` drops the next n events written (over E1 and E2, in order), then keeps everything; it is
    scripted over the control API like every fault."""
    control = session.post(f"{emulator.url}/_emulator/faults", json={"forget_events": 3}, timeout=5)
    assert control.status_code == 200 and control.json()["forget_events"] == 3
    assert post_batch(session, emulator, [make_event(f"e{i}") for i in range(2)]).json()["created"] == 2
    assert post_batch(session, emulator, [make_event(f"e{i}") for i in range(2, 5)]).json()["created"] == 3
    assert [e["eventId"] for e in emulator.events()] == ["e3", "e4"]
    assert emulator.faults.forget_events == 0


def test_emulator_forget_faults_refuse_bad_values() -> None:
    """`forget_event_ids` must be a list of strings and `forget_events` a non-negative int."""
    with pytest.raises(ValueError, match="forget_events"):
        Faults(forget_events=-1)
    with pytest.raises(ValueError, match="forget_event_ids"):
        Faults.from_json({"forget_event_ids": "x"})
    with pytest.raises(ValueError, match="forget_events"):
        Faults.from_json({"forget_events": True})
    parsed = Faults.from_json({"forget_event_ids": ["a"], "forget_events": 2})
    assert Faults.from_json(parsed.to_json()) == parsed
