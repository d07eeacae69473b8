"""Emulator use cases (E5-E9) and the inferred custom-metadata schema (E10)."""

from __future__ import annotations

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
