"""Emulator faults of issue 12: a partial batch success (201 whose eventIds leave events out) and 402/423 billing
or quota stops with the API's message, each switched at run time."""

from __future__ import annotations

import pytest
import requests

from mqtt_bridge.devtools.emulator.server import Emulator, Faults
from tests.unit.devtools.emulator.helpers import JPEG, make_event, post_batch, post_upload


def _ids(*numbers: int) -> list[str]:
    return [f"e{n}" for n in numbers]


def test_emulator_drop_event_ids_answers_201_without_them_every_time(emulator: Emulator,
                                                                     session: requests.Session) -> None:
    """Dropped ids are left out of `eventIds` and `created` and are not stored; the others are, on every batch."""
    emulator.set_faults(drop_event_ids={"e1", "e3"})
    for _ in range(2):
        answer = post_batch(session, emulator, [make_event(i) for i in _ids(0, 1, 2, 3)])
        assert (answer.status_code, answer.json()) == (201, {"created": 2, "eventIds": ["e0", "e2"]})
    assert sorted(str(event["eventId"]) for event in emulator.events()) == ["e0", "e2"]
    assert emulator.faults.drop_event_ids == frozenset({"e1", "e3"})
    emulator.clear_faults()
    assert post_batch(session, emulator, [make_event("e1")]).json() == {"created": 1, "eventIds": ["e1"]}


def test_emulator_drop_once_confirms_the_same_event_when_sent_again(emulator: Emulator,
                                                                    session: requests.Session) -> None:
    """With partial_once each dropped id is dropped from the next batch holding it only; a re-send stores it."""
    emulator.set_faults(drop_event_ids={"e1"}, partial_once=True)
    assert post_batch(session, emulator, [make_event("e0")]).json() == {"created": 1, "eventIds": ["e0"]}
    assert emulator.faults.drop_event_ids == frozenset({"e1"})  # not consumed by a batch without it
    first = post_batch(session, emulator, [make_event(i) for i in _ids(1, 2)])
    assert first.json() == {"created": 1, "eventIds": ["e2"]}
    assert emulator.event("e1") is None
    assert emulator.faults.drop_event_ids == frozenset()
    again = post_batch(session, emulator, [make_event("e1")])
    assert again.json() == {"created": 1, "eventIds": ["e1"]}
    assert emulator.event("e1") is not None


def test_emulator_partial_keeps_only_the_first_k_of_a_batch(emulator: Emulator, session: requests.Session) -> None:
    """`partial: k` stores and confirms the first k events of every longer batch until cleared; shorter ones whole."""
    emulator.set_faults(partial=2)
    assert post_batch(session, emulator, [make_event(i) for i in _ids(0, 1, 2, 3)]).json() == {
        "created": 2, "eventIds": ["e0", "e1"]}
    assert post_batch(session, emulator, [make_event(i) for i in _ids(4, 5)]).json() == {
        "created": 2, "eventIds": ["e4", "e5"]}
    assert post_batch(session, emulator, [make_event(i) for i in _ids(6, 7, 8)]).json() == {
        "created": 2, "eventIds": ["e6", "e7"]}
    assert sorted(str(event["eventId"]) for event in emulator.events()) == _ids(0, 1, 4, 5, 6, 7)


def test_emulator_partial_once_shortens_one_batch_only(emulator: Emulator, session: requests.Session) -> None:
    """`partial` with partial_once applies to the next batch it shortens, then the fault is gone."""
    emulator.set_faults(partial=98, partial_once=True)
    first = post_batch(session, emulator, [make_event(f"e{n}") for n in range(100)]).json()
    assert first["created"] == 98 and first["eventIds"] == [f"e{n}" for n in range(98)]
    assert emulator.faults.partial is None
    second = post_batch(session, emulator, [make_event("e98"), make_event("e99")]).json()
    assert second == {"created": 2, "eventIds": ["e98", "e99"]}
    assert len(emulator.events()) == 100


def test_emulator_partial_zero_stores_nothing_and_answers_201(emulator: Emulator,
                                                              session: requests.Session) -> None:
    """`partial: 0` answers 201 with created 0 and no eventIds: the worst case a client must survive."""
    emulator.set_faults(partial=0)
    answer = post_batch(session, emulator, [make_event("e0")])
    assert (answer.status_code, answer.json()) == (201, {"created": 0, "eventIds": []})
    assert emulator.events() == []


def test_emulator_partial_success_still_refuses_an_invalid_batch_whole(emulator: Emulator,
                                                                       session: requests.Session) -> None:
    """A partial fault does not weaken validation: an invalid batch is still 400 and nothing is stored."""
    emulator.set_faults(partial=1)
    answer = post_batch(session, emulator, [make_event("e0"), make_event("e1", eventType="nope")])
    assert answer.status_code == 400
    assert emulator.events() == []


@pytest.mark.parametrize("status", [402, 423])
def test_emulator_billing_stop_answers_with_its_message_until_lifted(emulator: Emulator, session: requests.Session,
                                                                     status: int) -> None:
    """402/423 with the API's message (and Retry-After when scripted) answer every API request until cleared;
    nothing is stored meanwhile."""
    emulator.set_faults(status_always=status, status_message="Monthly event quota reached", retry_after_s=5)
    for _ in range(2):
        answer = post_batch(session, emulator, [make_event("e0")])
        assert (answer.status_code, answer.json()) == (status, {"error": "Monthly event quota reached"})
        assert answer.headers["Retry-After"] == "5"
    assert post_upload(session, emulator, JPEG).status_code == status
    assert emulator.events() == []
    emulator.clear_faults()
    assert post_batch(session, emulator, [make_event("e0")]).status_code == 201


def test_emulator_new_faults_are_switched_through_the_control_api(emulator: Emulator,
                                                                  session: requests.Session) -> None:
    """POST /_emulator/faults takes the new fields (validated) and DELETE lifts them, at run time."""
    control = f"{emulator.url}/_emulator/faults"
    body = {"status_always": 402, "status_message": "Billing paused"}
    assert session.post(control, json=body, timeout=5).json()["status_message"] == "Billing paused"
    assert post_batch(session, emulator, [make_event("e0")]).json() == {"error": "Billing paused"}
    assert session.delete(control, timeout=5).status_code == 200
    set_partial = session.post(control, json={"drop_event_ids": ["e1"], "partial": 5, "partial_once": True},
                               timeout=5).json()
    assert (set_partial["drop_event_ids"], set_partial["partial"], set_partial["partial_once"]) == (["e1"], 5, True)
    assert post_batch(session, emulator, [make_event("e0"), make_event("e1")]).json()["eventIds"] == ["e0"]
    assert session.post(control, json={"partial": "2"}, timeout=5).status_code == 400
    assert session.post(control, json={"partial_once": 1}, timeout=5).status_code == 400


def test_emulator_new_fault_fields_round_trip_and_refuse_bad_values() -> None:
    """Faults validates the new fields, from Python and from JSON, and renders them back."""
    with pytest.raises(ValueError, match="partial"):
        Faults(partial=-1)
    with pytest.raises(ValueError, match="drop_event_ids"):
        Faults.from_json({"drop_event_ids": [1]})
    with pytest.raises(ValueError, match="status_message"):
        Faults.from_json({"status_message": 402})
    parsed = Faults.from_json({"status_always": 423, "status_message": "locked", "drop_event_ids": ["a"],
                               "partial": 3, "partial_once": True})
    assert parsed == Faults(status_always=423, status_message="locked", drop_event_ids=frozenset({"a"}),
                            partial=3, partial_once=True)
    assert Faults.from_json(parsed.to_json()) == parsed
