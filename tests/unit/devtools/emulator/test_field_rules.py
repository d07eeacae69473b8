"""The metadata, batch and ingestion-warning rules, each on its own, answered as the spec says the API does.

customMetadata rules (spec §3.1) apply to events and, by spec §2.3, to upload `metadata` too; both must get 400
`{"error": ...}`. Batch rules (spec §2.2) refuse the whole E2 body. Ingestion warnings (spec §3.3, §3.4, §5 G8,
§6) accept the event with 201 but store a warning and drop its images.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import requests

from mqtt_bridge.devtools.emulator.ingestion import IMAGE_WARNINGS
from mqtt_bridge.devtools.emulator.rules import BATCH_RULES, METADATA_RULES
from mqtt_bridge.devtools.emulator.server import Emulator
from mqtt_bridge.devtools.emulator.values import JsonDict
from tests.unit.devtools.emulator.helpers import PNG, make_event, post_batch, post_upload, stored_event

METADATA_CASES: list[tuple[str, JsonDict, str]] = [
    ("metadata-max-keys", {f"k{i}": i for i in range(101)}, "{where} has 101 keys, at most 100 are allowed"),
    ("metadata-key-pattern", {"bad key!": 1}, "{where} key 'bad key!' must match [a-zA-Z0-9_ -]+"),
    ("metadata-key-pattern", {"": 1}, "{where} key '' must match [a-zA-Z0-9_ -]+"),
    ("metadata-key-length", {"k" * 101: 1}, f"{{where}} key {'k' * 40!r}... is longer than 100 characters"),
    ("metadata-value-type", {"nested": {"a": 1}}, "{where}.nested must be a string, number or boolean"),
    ("metadata-value-type", {"empty": None}, "{where}.empty must be a string, number or boolean"),
    ("metadata-value-type", {"list": [1]}, "{where}.list must be a string, number or boolean"),
    ("metadata-string-length", {"s": "x" * 1001}, "{where}.s is longer than 1000 characters"),
]
_METADATA_IDS = [f"{rule}-{n}" for n, (rule, _, _) in enumerate(METADATA_CASES)]


def test_field_rules_every_metadata_rule_has_a_case() -> None:
    """Each row of METADATA_RULES is exercised by a named case."""
    assert {rule for rule, _, _ in METADATA_CASES} == {rule.name for rule in METADATA_RULES}


@pytest.mark.parametrize(("rule", "metadata", "message"), METADATA_CASES, ids=_METADATA_IDS)
def test_field_rules_event_custom_metadata_breaking_a_rule_is_400(rule: str, metadata: JsonDict, message: str,
                                                                  emulator: Emulator,
                                                                  session: requests.Session) -> None:
    """An event whose customMetadata breaks one rule gets 400 with that rule's message."""
    response = session.post(f"{emulator.url}/vision-events", json=make_event("e1", customMetadata=metadata),
                            timeout=5)
    assert (response.status_code, response.json()) == (400, {"error": message.format(where="customMetadata")})


@pytest.mark.parametrize(("rule", "metadata", "message"), METADATA_CASES, ids=_METADATA_IDS)
def test_field_rules_upload_metadata_breaking_a_rule_is_400(rule: str, metadata: JsonDict, message: str,
                                                            emulator: Emulator, session: requests.Session) -> None:
    """Upload metadata has the customMetadata limits (spec §2.3): the same rule refuses it with 400."""
    response = post_upload(session, emulator, PNG, metadata=orjson.dumps(metadata).decode())
    assert (response.status_code, response.json()) == (400, {"error": message.format(where="metadata")})
    assert emulator.uploads() == {}


def test_field_rules_metadata_at_every_limit_is_accepted(emulator: Emulator, session: requests.Session) -> None:
    """100 keys, a 100-char key, `[a-zA-Z0-9_ -]` keys, a 1000-char string, numbers and booleans are accepted."""
    metadata: JsonDict = {f"k{i}": i for i in range(97)}
    metadata.update({"k" * 100: 1.5, "a B-c_9": True, "long": "x" * 1000})
    response = session.post(f"{emulator.url}/vision-events", json=make_event("e1", customMetadata=metadata),
                            timeout=5)
    assert response.status_code == 201, response.text
    assert post_upload(session, emulator, PNG, metadata='{"line": "A1", "ok": false}').status_code == 201


BATCH_CASES: list[tuple[str, Any, str]] = [
    ("batch-events-list", {}, "events is required and must be a list"),
    ("batch-events-list", {"events": {"eventId": "e1"}}, "events is required and must be a list"),
    ("batch-size", {"events": []}, "events must hold 1 to 100 events, got 0"),
    ("batch-size", {"events": [make_event(f"e{i}") for i in range(101)]}, "events must hold 1 to 100 events, got 101"),
]


def test_field_rules_every_batch_rule_has_a_case() -> None:
    """Each row of BATCH_RULES is exercised by a named case."""
    assert {rule for rule, _, _ in BATCH_CASES} == {rule.name for rule in BATCH_RULES}


@pytest.mark.parametrize(("rule", "body", "message"), BATCH_CASES,
                         ids=[f"{c[0]}-{n}" for n, c in enumerate(BATCH_CASES)])
def test_field_rules_batch_breaking_a_rule_is_400(rule: str, body: Any, message: str, emulator: Emulator,
                                                  session: requests.Session) -> None:
    """An E2 body that breaks one batch rule is refused whole with 400 and stores nothing."""
    response = session.post(f"{emulator.url}/vision-events/batch", json=body, timeout=5)
    assert (response.status_code, response.json()) == (400, {"error": message})
    assert emulator.events() == []


def test_field_rules_batch_of_exactly_100_is_accepted(emulator: Emulator, session: requests.Session) -> None:
    """100 events are the documented maximum (spec §2.2), so 100 are accepted."""
    response = post_batch(session, emulator, [make_event(f"e{i}") for i in range(100)])
    assert (response.status_code, response.json()["created"]) == (201, 100)


def test_field_rules_batch_body_not_an_object_is_400(emulator: Emulator, session: requests.Session) -> None:
    """A JSON array in place of `{"events": [...]}` is a 400."""
    response = session.post(f"{emulator.url}/vision-events/batch", json=[make_event("e1")], timeout=5)
    assert (response.status_code, response.json()) == (400, {"error": "body must be a JSON object"})


_BOX: JsonDict = {"class": "a", "x": 1, "y": 1, "width": 1, "height": 1, "confidence": 0.5}
WARNING_CASES: list[tuple[str, JsonDict, str]] = [
    ("image-reference-known", {"sourceId": "ve-img-unknown"},
     "images[0].sourceId 've-img-unknown' is not a known upload"),
    ("image-reference-known", {"sourceId": "KNOWN", "inputSourceId": "ve-img-gone"},
     "images[0].inputSourceId 've-img-gone' is not a known upload"),
    ("image-reference-known", {"label": "workflow"}, "images[0] has neither sourceId nor inputSourceId"),
    ("annotation-list-cap", {"sourceId": "KNOWN", "classifications": [{"class": "a", "confidence": 1}] * 1001},
     "images[0].classifications has 1001 items, more than 1000"),
    ("annotation-item-shape", {"sourceId": "KNOWN", "objectDetections": [{**_BOX, "x": "1"}]},
     "images[0].objectDetections[0] needs numeric x"),
    ("annotation-item-shape", {"sourceId": "KNOWN", "classifications": [{"confidence": 0.5}]},
     "images[0].classifications[0] needs a string class"),
    ("annotation-item-shape", {"sourceId": "KNOWN", "instanceSegmentations": [{**_BOX, "points": [[1, 2, 3]]}]},
     "images[0].instanceSegmentations[0] needs points as [[x, y], ...]"),
    ("annotation-item-shape", {"sourceId": "KNOWN", "keypoints": [{**_BOX, "keypoints": [{"x": 1, "y": 2}]}]},
     'images[0].keypoints[0] needs keypoints as [{"id", "x", "y"}, ...]'),
]


def test_field_rules_every_warning_rule_has_a_case() -> None:
    """Each row of IMAGE_WARNINGS is exercised by a named case."""
    assert {rule for rule, _, _ in WARNING_CASES} == {rule.name for rule in IMAGE_WARNINGS}


@pytest.mark.parametrize(("rule", "image", "warning"), WARNING_CASES,
                         ids=[f"{c[0]}-{n}" for n, c in enumerate(WARNING_CASES)])
def test_field_rules_image_breaking_a_warning_rule_is_201_with_warning_and_no_images(
        rule: str, image: JsonDict, warning: str, emulator: Emulator, session: requests.Session) -> None:
    """The event is accepted (201), gets exactly that warning, and loses its images, as production does."""
    source_id = post_upload(session, emulator, PNG).json()["sourceId"]
    sent = {key: source_id if value == "KNOWN" else value for key, value in image.items()}
    assert post_batch(session, emulator, [make_event("e1", images=[sent])]).status_code == 201
    stored = stored_event(emulator, "e1")
    assert (stored["images"], stored["warnings"]) == ([], [warning])


def test_field_rules_image_with_only_input_source_id_is_kept(emulator: Emulator, session: requests.Session) -> None:
    """The Workflow block sends an image with only `inputSourceId` when it has no output image (spec §6)."""
    source_id = post_upload(session, emulator, PNG).json()["sourceId"]
    image = {"inputSourceId": source_id, "label": "workflow", "objectDetections": [_BOX] * 1000}
    assert post_batch(session, emulator, [make_event("e1", images=[image])]).status_code == 201
    stored = stored_event(emulator, "e1")
    assert (stored["images"], stored["warnings"]) == ([image], [])
