"""Shared pieces of the emulator tests: the use case, sample images, a valid event and request shortcuts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import requests

from mqtt_bridge.devtools.emulator.server import Emulator
from mqtt_bridge.devtools.emulator.values import JsonDict

__all__ = ["JPEG", "PNG", "USE_CASE", "make_event", "post_batch", "post_upload", "stored_event"]

USE_CASE = "uc-line-1"
JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) + b"\r\n--not-a-boundary\r\n\r\n"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def make_event(event_id: str, **overrides: Any) -> JsonDict:
    """A valid quality_check event for USE_CASE, stamped now, with `overrides` applied."""
    event: JsonDict = {
        "eventId": event_id, "eventType": "quality_check", "useCaseId": USE_CASE,
        "timestamp": datetime.now(UTC).isoformat(), "eventData": {"result": "pass"},
    }
    event.update(overrides)
    return event


def post_batch(session: requests.Session, emulator: Emulator, events: list[JsonDict]) -> requests.Response:
    """POST /vision-events/batch with `events`."""
    return session.post(f"{emulator.url}/vision-events/batch", json={"events": events}, timeout=5)


def post_upload(session: requests.Session, emulator: Emulator, data: bytes, **form: str) -> requests.Response:
    """POST /vision-events/upload with `data` as the file and `form` as the other fields."""
    files = {"file": ("frame.jpg", data, "image/jpeg")}
    return session.post(f"{emulator.url}/vision-events/upload", files=files, data=form, timeout=5)


def stored_event(emulator: Emulator, event_id: str) -> JsonDict:
    """The stored event `event_id`, failing the test when it is not stored."""
    event = emulator.event(event_id)
    assert event is not None, f"{event_id} not stored"
    return event
