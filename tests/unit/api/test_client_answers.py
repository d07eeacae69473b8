"""The API client against the emulator over real HTTP: the batch answer says which events were confirmed, and
402/423 are billing stops (BillingApiError with the API's message and Retry-After), never permanent rejections."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from mqtt_bridge.api.client import BatchAnswer, VisionEventsClient, error_message
from mqtt_bridge.devtools.emulator.server import Emulator
from mqtt_bridge.errors import BillingApiError
from mqtt_bridge.model.values import JsonDict


def _event(event_id: str) -> JsonDict:
    return {"eventId": event_id, "eventType": "quality_check", "useCaseId": "uc",
            "timestamp": datetime.now(UTC).isoformat(), "eventData": {"result": "pass"}}


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator(use_cases=[{"id": "uc", "name": "Line"}]) as emu:
        yield emu


@pytest.fixture
def client(emulator: Emulator) -> Iterator[VisionEventsClient]:
    api = VisionEventsClient(emulator.url, lambda: "demo-key", 2.0, 5.0)
    try:
        yield api
    finally:
        api.close()


def test_client_batch_answer_lists_the_confirmed_event_ids(emulator: Emulator, client: VisionEventsClient) -> None:
    """A partial 201 comes back as the confirmed subset, `created` and the answer's text."""
    emulator.set_faults(drop_event_ids={"e1"})
    answer = client.create_batch([_event("e0"), _event("e1"), _event("e2")])
    assert answer.event_ids == frozenset({"e0", "e2"}) and answer.created == 2 and answer.status == 201
    assert answer.is_confirmed("e0") and not answer.is_confirmed("e1")
    assert '"eventIds":["e0","e2"]' in answer.body


def test_client_batch_answer_keeps_its_text_only_when_it_left_events_out_and_redacted(
        emulator: Emulator, client: VisionEventsClient) -> None:
    """A 201 that confirms every sent event comes back without its text (nothing will be dead-lettered with it);
    one that leaves an event out keeps its text, with the API key masked even where the answer echoes it."""
    assert client.create_batch([_event("e0"), _event("e1")]).body == ""
    emulator.set_faults(drop_event_ids={"e1"})
    answer = client.create_batch([_event("e-demo-key-0"), _event("e1")])
    assert not answer.is_confirmed("e1") and answer.body
    assert "demo-key" not in answer.body and "e-" in answer.body


@pytest.mark.parametrize("status", [402, 423])
def test_client_billing_stop_raises_billing_api_error_with_message_and_retry_after(
        emulator: Emulator, client: VisionEventsClient, status: int) -> None:
    """402/423 raise BillingApiError (not PermanentApiError) carrying the body and the server's Retry-After."""
    emulator.set_faults(status_always=status, status_message="Billing paused", retry_after_s=120)
    with pytest.raises(BillingApiError) as info:
        client.create_batch([_event("e0")])
    assert info.value.status == status and info.value.retry_after_s == 120.0
    assert error_message(info.value.body) == "Billing paused"


def test_batch_answer_without_event_ids_confirms_everything() -> None:
    """An older answer (`created` only, or no JSON) cannot name events: every sent event counts as confirmed."""
    older = BatchAnswer.from_json({"created": 3})
    assert older.event_ids is None and older.created == 3 and older.is_confirmed("anything")
    assert BatchAnswer.from_json(None).is_confirmed("x")
    assert BatchAnswer.from_json({"eventIds": ["a", 1]}).event_ids is None  # not a list of strings
    assert BatchAnswer.from_json({"created": True, "eventIds": []}).created is None


def test_error_message_reads_the_documented_error_body() -> None:
    """`{"error": "..."}` (spec §4.1) gives its message; anything else gives ""."""
    assert error_message('{"error": "Monthly event quota reached"}') == "Monthly event quota reached"
    assert error_message('{"message": "quota"}') == "quota"
    assert error_message("<html>402</html>") == "" and error_message("") == ""
