"""Every documented event rule on its own: the emulator answers each as spec/vision-events-api.md says the API does.

Each case is named for the rule it breaks. It is sent over HTTP to E1 (and to E2, where the message gets the
`events[i]: ` prefix) and must get 400 with the documented error body `{"error": "<message>"}` (spec §4.1,
§4.5), while the same event without the fault is accepted. The rule tables are also checked directly: each case
trips exactly its own rule, and every rule in the tables has a case.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import requests

from mqtt_bridge.devtools.emulator.rules import (
    EVENT_RULES,
    EVENT_TYPES,
    MAX_ID_CHARS,
    EventContext,
    Rule,
)
from mqtt_bridge.devtools.emulator.server import Emulator
from mqtt_bridge.devtools.emulator.values import JsonDict
from tests.unit.devtools.emulator.helpers import USE_CASE, make_event


@dataclass(frozen=True)
class Case:
    """One broken event: the rule it breaks, the change that breaks it, and the documented answer's message."""

    rule: str
    change: dict[str, Any]
    message: str
    drop: tuple[str, ...] = ()  # keys removed from the valid event
    options: dict[str, Any] = field(default_factory=dict)  # Emulator(...) keyword arguments

    def event(self) -> JsonDict:
        """The valid event with this case's change applied."""
        event = make_event("e1", **self.change)
        for key in self.drop:
            del event[key]
        return event


def _in_days(days: float) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()


_STRICT = {"strict": True}
_ARCHIVED = {"reject_archived": True, "use_cases": [{"id": USE_CASE, "name": "x"},
                                                   {"id": "uc-old", "name": "y", "status": "inactive"}]}
_IMAGE = {"sourceId": "ve-img-1"}
CASES = [
    Case("event-id-required", {}, "eventId is required", drop=("eventId",)),
    Case("event-id-required", {"eventId": ""}, "eventId must be a non-empty string"),
    Case("event-type-enum", {"eventType": "nope"}, f"eventType must be one of {', '.join(EVENT_TYPES)}"),
    Case("event-type-enum", {}, f"eventType must be one of {', '.join(EVENT_TYPES)}", drop=("eventType",)),
    Case("use-case-id-required", {}, "useCaseId is required", drop=("useCaseId",)),
    Case("use-case-id-required", {"useCaseId": 7}, "useCaseId must be a non-empty string"),
    Case("use-case-id-length", {"useCaseId": "u" * 257}, "useCaseId is longer than 256 characters"),
    Case("use-case-exists", {"useCaseId": "missing"}, "unknown useCaseId 'missing'"),
    Case("use-case-active", {"useCaseId": "uc-old"}, "use case 'uc-old' is archived", options=_ARCHIVED),
    Case("timestamp-iso-8601", {}, "timestamp must be an ISO 8601 string", drop=("timestamp",)),
    Case("timestamp-iso-8601", {"timestamp": 1700000000}, "timestamp must be an ISO 8601 string"),
    Case("timestamp-iso-8601", {"timestamp": "yesterday"}, "timestamp must be an ISO 8601 string"),
    Case("timestamp-window", {"timestamp": _in_days(-400)}, "timestamp must lie between one year ago and tomorrow"),
    Case("timestamp-window", {"timestamp": _in_days(2)}, "timestamp must lie between one year ago and tomorrow"),
    Case("event-data-object", {"eventData": "pass"}, "eventData must be an object"),
    Case("event-data-required", {}, "eventData is required", drop=("eventData",), options=_STRICT),
    Case("quality-check-result-enum", {"eventData": {"result": "maybe"}}, "eventData.result must be one of pass, fail"),
    Case("safety-alert-severity-enum",
         {"eventType": "safety_alert", "eventData": {"alertType": "fire", "severity": "extreme"}},
         "eventData.severity must be one of low, medium, high"),
    Case("operator-feedback-enum",
         {"eventType": "operator_feedback", "eventData": {"relatedEventId": "e0", "feedback": "meh"}},
         "eventData.feedback must be one of correct, incorrect, inconclusive"),
    Case("event-data-field-types", {"eventType": "inventory_count", "eventData": {"itemCount": "3"}},
         "eventData.itemCount must be an integer"),
    Case("event-data-field-types", {"eventType": "inventory_count", "eventData": {"itemCount": True}},
         "eventData.itemCount must be an integer"),
    Case("event-data-field-types", {"eventType": "custom", "eventData": {"value": 5}},
         "eventData.value must be a string"),
    Case("event-data-field-types", {"eventData": {"result": "pass", "externalId": 12}},
         "eventData.externalId must be a string"),
    Case("external-id-length", {"eventData": {"result": "pass", "externalId": "x" * 1001}},
         "eventData.externalId is longer than 1000 characters"),
    Case("device-id-length", {"deviceId": "d" * 257}, "deviceId is longer than 256 characters"),
    Case("device-id-length", {"deviceId": 3}, "deviceId must be a non-empty string"),
    Case("stream-id-length", {"streamId": "s" * 257}, "streamId is longer than 256 characters"),
    Case("workflow-id-length", {"workflowId": "w" * 257}, "workflowId is longer than 256 characters"),
    Case("custom-metadata-object", {"customMetadata": [1]}, "customMetadata must be an object"),
    Case("images-list", {"images": {}}, "images must be a list"),
    Case("images-list", {"images": [1]}, "images[0] must be an object"),
    Case("annotation-lists", {"images": [{**_IMAGE, "objectDetections": {}}]},
         "images[0].objectDetections must be a list"),
    Case("display-image-position-integer", {"displayImagePosition": "0"},
         "displayImagePosition must be a non-negative integer (an index into images)"),
    Case("display-image-position-integer", {"displayImagePosition": -1},
         "displayImagePosition must be a non-negative integer (an index into images)"),
    Case("comment-string", {"comment": 5}, "comment must be a string"),
    Case("image-id-length", {"images": [{"sourceId": "s" * 257}]}, "images[0].sourceId is longer than 256 characters",
         options=_STRICT),
    Case("image-id-length", {"images": [{**_IMAGE, "label": "l" * 257}]},
         "images[0].label is longer than 256 characters", options=_STRICT),
    Case("annotation-class-length",
         {"images": [{**_IMAGE, "classifications": [{"class": "c" * 257, "confidence": 0.5}]}]},
         "images[0].classifications class is longer than 256 characters", options=_STRICT),
]
_IDS = [f"{case.rule}-{n}" for n, case in enumerate(CASES)]


def _context(case: Case) -> EventContext:
    """The context the emulator of `case` judges with (its use case, its mode)."""
    use_cases = case.options.get("use_cases", [{"id": USE_CASE}])
    statuses = {str(uc["id"]): str(uc.get("status", "active")) for uc in use_cases}
    return EventContext(now=datetime.now(UTC), is_strict=bool(case.options.get("strict")),
                        use_case_status=statuses.get, is_rejecting_archived=bool(case.options.get("reject_archived")))


def _fired(rules: tuple[Rule[JsonDict], ...], event: JsonDict, context: EventContext) -> set[str]:
    return {rule.name for rule in rules if (context.is_strict or not rule.is_strict_only)
            and list(rule.check(event, context))}


@pytest.mark.parametrize("case", CASES, ids=_IDS)
def test_rules_event_breaking_one_rule_trips_only_that_rule(case: Case) -> None:
    """The broken event trips exactly the rule it is named for, and the valid event trips none."""
    context = _context(case)
    assert _fired(EVENT_RULES, case.event(), context) == {case.rule}
    assert _fired(EVENT_RULES, make_event("e1"), context) == set()


@pytest.mark.parametrize("case", CASES, ids=_IDS)
def test_rules_event_breaking_one_rule_is_400_with_the_error_body(case: Case, session: requests.Session) -> None:
    """E1 answers 400 `{"error": message}` and E2 the same message prefixed `events[i]: `; nothing is stored."""
    with Emulator(**{"use_cases": [{"id": USE_CASE, "name": "Line 1"}], **case.options}) as emu:
        single = session.post(f"{emu.url}/vision-events", json=case.event(), timeout=5)
        batch = session.post(f"{emu.url}/vision-events/batch", json={"events": [make_event("ok"), case.event()]},
                             timeout=5)
        assert (single.status_code, single.json()) == (400, {"error": case.message})
        assert (batch.status_code, batch.json()) == (400, {"error": f"events[1]: {case.message}"})
        assert emu.events() == []
        assert session.post(f"{emu.url}/vision-events", json=make_event("e1"), timeout=5).status_code == 201


def test_rules_every_event_rule_has_a_case() -> None:
    """Each row of EVENT_RULES is exercised by at least one named case, and no case names an unknown rule."""
    assert {case.rule for case in CASES} == {rule.name for rule in EVENT_RULES}


def test_rules_every_rule_names_its_spec_section() -> None:
    """Rule names are unique and each row says which section of the spec it comes from."""
    names = [rule.name for rule in EVENT_RULES]
    assert len(names) == len(set(names))
    assert all(rule.section.startswith("§") for rule in EVENT_RULES)


_STAMPS: dict[str, Callable[[datetime], str]] = {
    "workflow-block-microseconds-offset": lambda now: now.isoformat(),
    "docs-z": lambda now: now.strftime("%Y-%m-%dT%H:%M:%SZ"),
    "rfc3339-lower-case-z": lambda now: now.strftime("%Y-%m-%dT%H:%M:%Sz"),
    "docs-milliseconds-z": lambda now: now.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
    "other-offset": lambda now: now.astimezone(timezone(timedelta(hours=2))).isoformat(),
}


@pytest.mark.parametrize("form", sorted(_STAMPS))
def test_rules_timestamp_accepts_rfc3339_forms(form: str, session: requests.Session) -> None:
    """Offsets, `Z` and fractional seconds are accepted (spec §3.1: the docs' and the Workflow block's forms)."""
    text = _STAMPS[form](datetime.now(UTC))
    with Emulator(use_cases=[{"id": USE_CASE, "name": "x"}]) as emu:
        response = session.post(f"{emu.url}/vision-events", json=make_event("e1", timestamp=text), timeout=5)
    assert response.status_code == 201, response.text


def test_rules_limits_are_inclusive(session: requests.Session) -> None:
    """A value at each documented limit is accepted: 256-char ids, a 1000-char externalId, strict mode too."""
    event = make_event("e1", deviceId="d" * MAX_ID_CHARS, streamId="s" * MAX_ID_CHARS,
                       workflowId="w" * MAX_ID_CHARS, eventData={"result": "fail", "externalId": "x" * 1000},
                       timestamp=_in_days(0.9))
    long_id = "u" * MAX_ID_CHARS
    with Emulator(strict=True, use_cases=[{"id": USE_CASE, "name": "x"}, {"id": long_id, "name": "y"}]) as emu:
        assert session.post(f"{emu.url}/vision-events", json=event, timeout=5).status_code == 201
        other = make_event("e2", useCaseId=long_id, timestamp=_in_days(-364))
        assert session.post(f"{emu.url}/vision-events", json=other, timeout=5).status_code == 201


def test_rules_documented_optional_fields_and_unknown_keys_are_stored(session: requests.Session) -> None:
    """Every documented optional field is accepted, and unknown keys are stored as they are (spec §5 G9)."""
    feedback = make_event("e1", eventType="operator_feedback", comment="looks wrong", extraTopLevel={"a": 1},
                          eventData={"relatedEventId": "e0", "feedback": "incorrect", "extra": [1, 2]})
    inventory = make_event("e2", eventType="inventory_count", deviceId="cam", streamId="s", workflowId="w",
                           eventData={"location": "dock", "itemCount": -1, "itemType": "box", "externalId": "x"},
                           customMetadata={"line": "A1", "temp": 72.5, "ok": True})
    alert = make_event("e3", eventType="safety_alert",
                       eventData={"alertType": "no_hardhat", "severity": "high", "description": "zone 4"})
    with Emulator(use_cases=[{"id": USE_CASE, "name": "x"}]) as emu:
        for event in (feedback, inventory, alert, make_event("e4", eventType="custom", eventData={"value": "v"})):
            response = session.post(f"{emu.url}/vision-events", json=event, timeout=5)
            assert response.status_code == 201, response.text
        stored = emu.event("e1")
    assert stored is not None
    assert stored["extraTopLevel"] == {"a": 1}
    assert stored["comment"] == "looks wrong"


def test_rules_missing_event_data_is_accepted_outside_strict_mode(session: requests.Session) -> None:
    """Without strict mode an event with no eventData is accepted, as the Workflow block relies on (spec §5 G1)."""
    event = make_event("e1")
    del event["eventData"]
    with Emulator(use_cases=[{"id": USE_CASE, "name": "x"}]) as emu:
        assert session.post(f"{emu.url}/vision-events", json=event, timeout=5).status_code == 201
