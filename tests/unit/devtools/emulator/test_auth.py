"""Emulator auth: keys by Bearer header or `?api_key=`, 401 and the documented 403 (spec §1.2, §4.1)."""

from __future__ import annotations

import pytest
import requests

from mqtt_bridge.devtools.emulator.server import ALL_SCOPES, Emulator
from tests.unit.devtools.emulator.helpers import (
    USE_CASE,
    make_event,
)


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
        denied = s.post(f"{emu.url}/vision-events/batch", json={"events": [make_event("e1")]}, timeout=5,
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
        response = s.post(f"{emulator.url}/vision-events?api_key=demo-key", json=make_event("e1"), timeout=5)
    assert response.status_code == 201
    assert response.json() == {"eventId": "e1", "created": True}
    assert emulator.requests_log()[-1].path == "/vision-events"  # the key is not logged


@pytest.mark.parametrize(("scope", "route", "expected"), [
    ("vision-events:write", "write", 201), ("device:update", "write", 201),
    ("visionEvents.write", "write", 201), ("device.update", "write", 201),
    ("vision-events:read", "write", 403), ("vision-events:manage", "write", 403),
    ("vision-events:read", "read", 200), ("device:read", "read", 200),
    ("vision-events:write", "read", 403), ("device:update", "read", 403),
    ("vision-events:manage", "manage", 201), ("vision-events:write", "manage", 403),
    ("vision-events:read", "manage", 403),
])
def test_emulator_scopes_allow_exactly_the_documented_routes(scope: str, route: str, expected: int) -> None:
    """Writes need write or device:update (either spelling, spec §1.2, §6), reads read or device:read, use-case
    creation manage; anything else is the documented 403."""
    with Emulator(api_keys={"k": frozenset({scope})}, use_cases=[{"id": USE_CASE, "name": "x"}]) as emu, \
            requests.Session() as s:
        s.headers["Authorization"] = "Bearer k"
        if route == "write":
            response = s.post(f"{emu.url}/vision-events", json=make_event("e1"), timeout=5)
        elif route == "read":
            response = s.post(f"{emu.url}/vision-events/query", json={"useCaseId": USE_CASE}, timeout=5)
        else:
            response = s.post(f"{emu.url}/vision-events/use-cases", json={"name": "New"}, timeout=5)
    assert response.status_code == expected
    if expected == 403:
        assert response.json() == {"error": "Insufficient permissions for this resource."}


def test_emulator_every_api_route_needs_a_key(emulator: Emulator) -> None:
    """All of E1-E10 answer 401 `{"error": ...}` without a key; the page and control API stay open."""
    routes = [("POST", "/vision-events"), ("POST", "/vision-events/batch"), ("POST", "/vision-events/upload"),
              ("POST", "/vision-events/query"), ("GET", "/vision-events/use-cases"),
              ("POST", "/vision-events/use-cases"), ("PUT", f"/vision-events/use-cases/{USE_CASE}"),
              ("POST", f"/vision-events/use-cases/{USE_CASE}/archive"),
              ("POST", f"/vision-events/use-cases/{USE_CASE}/unarchive"),
              ("GET", f"/vision-events/custom-metadata-schema/{USE_CASE}")]
    with requests.Session() as s:
        answers = [s.request(method, f"{emulator.url}{path}", timeout=5) for method, path in routes]
        assert s.get(f"{emulator.url}/", timeout=5).status_code == 200
    assert [a.status_code for a in answers] == [401] * len(routes)
    assert all(set(a.json()) == {"error"} for a in answers)
    assert emulator.use_cases()[0]["status"] == "active"
