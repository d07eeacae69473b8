"""Emulator server: the control API, the page, 404/405/413, lifecycle and `serve()`."""

from __future__ import annotations

import logging
import threading

import pytest
import requests

from mqtt_bridge.devtools.emulator.faults import Faults
from mqtt_bridge.devtools.emulator.server import Emulator, serve
from tests.helpers import wait_until
from tests.unit.devtools.emulator.helpers import (
    USE_CASE,
    make_event,
    post_batch,
)


def test_emulator_control_api_over_http(emulator: Emulator, session: requests.Session) -> None:
    """The /_emulator endpoints set/clear faults, show events, stats and requests, add use cases, reset."""
    control = f"{emulator.url}/_emulator"
    with requests.Session() as anonymous:
        faults = {"statuses": [500], "retry_after_s": 1}
        set_reply = anonymous.post(f"{control}/faults", json=faults, timeout=5)
        assert set_reply.status_code == 200
        assert anonymous.get(f"{control}/faults", timeout=5).json()["statuses"] == [500]
        assert anonymous.post(f"{control}/faults", json={"statuses": ["x"]}, timeout=5).status_code == 400
        assert post_batch(session, emulator, [make_event("e0")]).status_code == 500
        assert anonymous.delete(f"{control}/faults", timeout=5).json()["statuses"] == []
        added = anonymous.post(f"{control}/use-cases", json={"id": "uc-2", "name": "Two"}, timeout=5)
        assert added.status_code == 201
        assert post_batch(session, emulator, [make_event("e1"), make_event("e2", useCaseId="uc-2")]).status_code == 201
        dumped = anonymous.get(f"{control}/events", timeout=5).json()
        assert [e["eventId"] for e in dumped["events"]] == ["e1", "e2"]
        assert dumped["writes"] == {"e1": 1, "e2": 1}
        stats = anonymous.get(f"{control}/stats", timeout=5).json()
        assert stats == {"requests": {"POST /vision-events/batch": {"201": 1, "500": 1}}, "total": 2}
        logged = anonymous.get(f"{control}/requests", timeout=5).json()["requests"]
        assert [(r["method"], r["path"], r["status"]) for r in logged] == [
            ("POST", "/vision-events/batch", 500), ("POST", "/vision-events/batch", 201)]
        assert anonymous.post(f"{control}/reset", json={}, timeout=5).json() == {"success": True}
        assert anonymous.get(f"{control}/events", timeout=5).json() == {"events": [], "writes": {}}
    assert {uc["id"] for uc in emulator.use_cases()} == {USE_CASE, "uc-2"}
    assert emulator.requests_log() == []


@pytest.mark.parametrize(("method", "path"), [("POST", "/faults"), ("POST", "/use-cases"), ("POST", "/reset")])
def test_emulator_control_api_refuses_a_post_that_is_not_json(emulator: Emulator, method: str, path: str) -> None:
    """A control POST without Content-Type: application/json (a cross-site form's) is 415 and changes nothing."""
    emulator.apply_faults(Faults(statuses=(503,)))
    url = f"{emulator.url}/_emulator{path}"
    with requests.Session() as s:
        for headers in ({"Content-Type": "text/plain"}, {"Content-Type": "application/x-www-form-urlencoded"}, {}):
            reply = s.request(method, url, data=b'{"name": "Evil", "statuses": [500]}', headers=headers, timeout=5)
            assert reply.status_code == 415, headers
        charset = s.post(f"{emulator.url}/_emulator/faults", data=b'{"statuses": [502]}', timeout=5,
                         headers={"Content-Type": "application/json; charset=utf-8"})
    assert charset.status_code == 200
    assert emulator.faults.statuses == (502,)
    assert {uc["name"] for uc in emulator.use_cases()} == {"Line 1"}


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://127.0.0.1:1", "https://127.0.0.1"])
def test_emulator_control_api_refuses_a_cross_origin_request(emulator: Emulator, origin: str) -> None:
    """A control request whose Origin is another page's is 403 (for every method); the own origin passes."""
    control = f"{emulator.url}/_emulator"
    with requests.Session() as s:
        assert s.post(f"{control}/faults", json={"statuses": [500]}, headers={"Origin": origin},
                      timeout=5).status_code == 403
        assert s.delete(f"{control}/faults", headers={"Origin": origin}, timeout=5).status_code == 403
        assert s.get(f"{control}/events", headers={"Origin": origin}, timeout=5).status_code == 403
        assert emulator.faults.to_json()["statuses"] == []
        own = s.post(f"{control}/faults", json={"statuses": [500]}, headers={"Origin": emulator.url}, timeout=5)
        page = s.get(f"{control}/events", timeout=5, headers={"Host": f"localhost:{emulator.port}",
                                                              "Origin": f"http://localhost:{emulator.port}"})
    assert own.status_code == 200 and emulator.faults.statuses == (500,)
    assert page.status_code == 200  # the page, opened as localhost, polls its own origin


def test_emulator_control_api_refuses_a_rebound_dns_name(emulator: Emulator) -> None:
    """Host and Origin both a foreign name (DNS rebinding onto 127.0.0.1) is 403: the name is not the emulator's."""
    with requests.Session() as s:
        rebound = f"evil.example:{emulator.port}"
        reply = s.post(f"{emulator.url}/_emulator/reset", json={}, timeout=5,
                       headers={"Host": rebound, "Origin": f"http://{rebound}"})
    assert reply.status_code == 403


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
        assert post_batch(session, emu, [make_event("e1")]).status_code == 201  # same connection still usable


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
                              kwargs={"stop": stop, "list_unused_use_cases": True}, name="test-serve")
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
