"""Emulator auth: keys by Bearer header or `?api_key=`, 401 and the documented 403 (spec §1.2, §4.1)."""

from __future__ import annotations

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
