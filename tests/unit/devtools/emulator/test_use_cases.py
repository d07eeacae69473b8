"""Emulator use cases (E5-E9) and the inferred custom-metadata schema (E10)."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from mqtt_bridge.devtools.emulator.server import Emulator
from tests.unit.devtools.emulator.helpers import (
    USE_CASE,
    make_event,
    post_batch,
)


def test_emulator_use_cases_create_duplicate_list_rename_archive(emulator: Emulator,
                                                                  session: requests.Session) -> None:
    """Use cases are created (trimmed, unique), listed by status, renamed, archived and unarchived."""
    emulator.lists_unused_use_cases = True  # this test lists use cases that never recorded an event
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
    events = [make_event("e1", customMetadata={"line": "A1", "temp": 72.5}),
              make_event("e2", customMetadata={"temp": "hot", "ok": True})]
    assert post_batch(session, emulator, events).status_code == 201
    schema = session.get(f"{emulator.url}/vision-events/custom-metadata-schema/{USE_CASE}", timeout=5).json()
    assert schema == {"fields": {"line": {"types": ["string"]}, "ok": {"types": ["boolean"]},
                                 "temp": {"types": ["number", "string"]}}}
    missing = session.get(f"{emulator.url}/vision-events/custom-metadata-schema/nope", timeout=5)
    assert missing.status_code == 404


USE_CASE_CASES: list[tuple[str, str, str, dict[str, Any], int, str]] = [
    ("use-case-name-length", "POST", "/use-cases", {"json": {"name": "n" * 257}}, 400,
     "name must be a string of 1 to 256 characters"),
    ("use-case-name-length", "POST", "/use-cases", {"json": {}}, 400, "name must be a string of 1 to 256 characters"),
    ("use-case-name-unique", "POST", "/use-cases", {"json": {"name": " Line 1 "}}, 400,
     "A solution with this name already exists"),
    ("use-case-name-unique", "PUT", "/use-cases/uc-2", {"json": {"name": "Line 1"}}, 400,
     "A solution with this name already exists"),
    ("use-case-id-known", "PUT", "/use-cases/nope", {"json": {"name": "x"}}, 404, "not found"),
    ("use-case-id-known", "POST", "/use-cases/nope/unarchive", {}, 404, "not found"),
    ("use-case-id-known", "GET", "/custom-metadata-schema/nope", {}, 404, "not found"),
    ("use-case-list-status", "GET", "/use-cases", {"params": {"status": "archived"}}, 400,
     "status must be active or inactive"),
]


@pytest.mark.parametrize(("rule", "method", "path", "request_kwargs", "status", "message"), USE_CASE_CASES,
                         ids=[f"{c[0]}-{n}" for n, c in enumerate(USE_CASE_CASES)])
def test_emulator_use_case_rule_answers_documented_status_and_body(
        rule: str, method: str, path: str, request_kwargs: dict[str, Any], status: int, message: str,
        session: requests.Session) -> None:
    """Use-case names are 1..256 chars after trimming and unique (spec §2.5); an unknown id is 404 `not found`."""
    with Emulator(use_cases=[{"id": USE_CASE, "name": "Line 1"}, {"id": "uc-2", "name": "Line 2"}]) as emu:
        response = session.request(method, f"{emu.url}/vision-events{path}", timeout=5, **request_kwargs)
        assert (response.status_code, response.json()) == (status, {"error": message})
        assert [uc["name"] for uc in emu.use_cases()] == ["Line 1", "Line 2"]


def test_emulator_use_case_list_has_the_documented_fields(emulator: Emulator, session: requests.Session) -> None:
    """E5 items carry id, name, status, workspaceId, createdAt and updatedAt (spec §2.5), plus lookbackDays."""
    assert post_batch(session, emulator, [make_event("e1")]).status_code == 201  # listed once it has an event
    answer = session.get(f"{emulator.url}/vision-events/use-cases", timeout=5).json()
    assert answer["lookbackDays"] == 14
    item = answer["useCases"][0]
    assert set(item) == {"id", "name", "status", "workspaceId", "createdAt", "updatedAt"}
    assert (item["id"], item["status"]) == (USE_CASE, "active")
    assert item["createdAt"].endswith("Z")


def test_emulator_use_case_list_shows_only_use_cases_that_have_recorded_events(session: requests.Session) -> None:
    """E5 lists a use case only after its first event (spec §6); the switch lists every one, at run time."""
    with Emulator(use_cases=[{"id": USE_CASE, "name": "Line 1"}, {"id": "uc-2", "name": "Line 2"}]) as emu:
        session.headers["Authorization"] = "Bearer demo-key"
        base = f"{emu.url}/vision-events/use-cases"
        assert session.get(base, timeout=5).json()["useCases"] == []
        assert post_batch(session, emu, [make_event("e1")]).status_code == 201
        assert [uc["id"] for uc in session.get(base, timeout=5).json()["useCases"]] == [USE_CASE]
        emu.lists_unused_use_cases = True
        assert [uc["id"] for uc in session.get(base, timeout=5).json()["useCases"]] == [USE_CASE, "uc-2"]
        emu.lists_unused_use_cases = False
        emu.reset()  # the events are gone, so is the use case from the list
        assert session.get(base, timeout=5).json()["useCases"] == []
        assert [uc["id"] for uc in emu.use_cases()] == [USE_CASE, "uc-2"]  # inspection shows every one
