"""Event identity: the eventId precedence that ingest, receipts and the publisher SDK share, and its pinned values."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
import uuid

import orjson
import pytest

from mqtt_bridge.config.routes import RouteConfig
from mqtt_bridge.errors import DecodeError
from mqtt_bridge.model.values import JsonValue
from mqtt_bridge.routing.router import Router
from mqtt_bridge.transform.identity import (
    EVENT_ID_NAMESPACE,
    derive_event_id,
    event_id_for,
    format_reads_own_id,
    message_event_id,
    namespaced_event_id,
    own_event_id,
)
from mqtt_bridge.transform.ingest import Ingestor

TOPIC = "f/L1/cam2/detections"


def test_identity_derived_ids_are_pinned() -> None:
    """The UUIDv5 ids of a message, an object key and a further part never change (the API overwrites by them)."""
    assert derive_event_id("inspection", TOPIC, b"{}") == "f67e9f68-c89d-5c12-9ec7-581c0ec9e849"
    assert event_id_for("r", "t", b"p", None, own_id=None, id_field=None, key="k") == (
        "938e1ed8-ebe5-50b9-a6d7-85ef3801e22a")
    assert event_id_for("r", "t", b"p", None, own_id=None, id_field=None, index=1, count=2) == (
        "7555c261-979b-59f7-b65a-84c2e5c44060")


def test_identity_derived_id_depends_on_route_topic_and_payload() -> None:
    """A redelivered message gets the same id; another route, topic or payload gets another."""
    base = derive_event_id("r", "a/b", b"x")
    assert base == derive_event_id("r", "a/b", b"x")
    assert len({base, derive_event_id("s", "a/b", b"x"), derive_event_id("r", "a/c", b"x"),
                derive_event_id("r", "a/b", b"y")}) == 4


def test_identity_precedence_own_id_then_field_then_key_then_derived() -> None:
    """The message's own id beats the route's event_id_field, which beats an object key, which beats the hash."""
    document: JsonValue = {"serial": "s-9", "event_id": "mine"}
    assert event_id_for("r", "t", b"p", document, own_id="mine", id_field="serial", key="k") == (
        namespaced_event_id("r", "mine"))
    assert event_id_for("r", "t", b"p", document, own_id=None, id_field="serial", key="k") == (
        namespaced_event_id("r", "s-9"))
    keyed = event_id_for("r", "t", b"p", document, own_id=None, id_field=None, key="k")
    assert keyed == event_id_for("r", "other", b"other", None, own_id=None, id_field=None, key="k")
    assert event_id_for("r", "t", b"p", document, own_id=None, id_field=None) == derive_event_id("r", "t", b"p")


def test_identity_field_ids_of_multi_event_messages_get_the_index() -> None:
    """With event_id_field, the events after the first of a message get `-<index>` (before namespacing, and as
    they are with raw ids); integers are ids too."""
    document: JsonValue = {"batch": {"id": 17}}
    ids = [event_id_for("r", "t", b"p", document, own_id=None, id_field="batch.id", index=i, count=3, raw_ids=True)
           for i in range(3)]
    assert ids == ["17", "17-1", "17-2"]
    assert event_id_for("r", "t", b"p", document, own_id=None, id_field="batch.id", index=0, count=1) == (
        namespaced_event_id("r", "17"))
    assert [event_id_for("r", "t", b"p", document, own_id=None, id_field="batch.id", index=i, count=3)
            for i in range(3)] == [namespaced_event_id("r", value) for value in ids]


def test_identity_payload_ids_are_namespaced_by_the_route_unless_raw() -> None:
    """The same payload id on two routes gives two eventIds (the API overwrites repeats); raw passes it as it is.
    The namespaced value is pinned: changing it would re-send every event under a new id."""
    assert namespaced_event_id("line-1", "42") == "5665f846-ff49-50e9-b3f6-4627a665f288"
    assert namespaced_event_id("line-1", "42") != namespaced_event_id("line-2", "42")
    assert event_id_for("r", "t", b"p", None, own_id="mine", id_field=None, raw_ids=True) == "mine"
    assert event_id_for("r", "t", b"p", {"n": 7}, own_id=None, id_field="n", raw_ids=True) == "7"
    assert event_id_for("r", "t", b"p", {"n": 7}, own_id=None, id_field="n") == namespaced_event_id("r", "7")


def test_identity_further_parts_of_a_message_get_ids_of_their_own() -> None:
    """Without an own id, field or key, each event of a message gets a distinct deterministic id."""
    ids = [event_id_for("r", "t", b"p", None, own_id=None, id_field=None, index=i, count=3) for i in range(3)]
    assert ids[0] == derive_event_id("r", "t", b"p")
    assert len(set(ids)) == 3
    assert ids == [event_id_for("r", "t", b"p", None, own_id=None, id_field=None, index=i, count=3)
                   for i in range(3)]


@pytest.mark.parametrize("value", [None, "", True, 1.5, {"a": 1}, [1]])
def test_identity_a_field_without_an_id_is_event_id_missing(value: JsonValue) -> None:
    """event_id_field must hold a non-empty string or an integer; anything else is `event_id_missing`."""
    with pytest.raises(DecodeError) as info:
        event_id_for("r", "t", b"p", {"id": value}, own_id=None, id_field="id")
    assert info.value.reason == "event_id_missing"


@pytest.mark.parametrize(("document", "expected"), [
    ({"event_id": "mine-7"}, "mine-7"), ({"event_id": ""}, None), ({"event_id": 7}, None), ({}, None),
    ([{"event_id": "x"}], None), (None, None)])
def test_identity_own_id_is_the_top_level_event_id_string(document: JsonValue, expected: str | None) -> None:
    """The message's own id is a non-empty top-level `event_id` string, as the canonical decoder reads it."""
    assert own_event_id(document) == expected


def test_identity_message_ids_follow_ingest_precedence_and_never_raise() -> None:
    """For a message that has no decoded event: own id, then event_id_field, then the derived id (also when the
    field holds no id, the message ingest dead-letters as event_id_missing)."""
    payload = b'{"event_id": "mine", "serial": "s-1"}'
    document: JsonValue = orjson.loads(payload)
    assert message_event_id("r", "t", payload, document, id_field="serial") == namespaced_event_id("r", "mine")
    assert message_event_id("r", "t", payload, document, id_field="serial", raw_ids=True) == "mine"
    assert message_event_id("r", "t", payload, document, id_field="serial", reads_own_id=False) == (
        namespaced_event_id("r", "s-1"))
    assert message_event_id("r", "t", payload, document, id_field="nope", reads_own_id=False) == (
        derive_event_id("r", "t", payload))
    assert message_event_id("r", "t", b"not json", None, id_field="serial") == derive_event_id("r", "t", b"not json")


def test_identity_only_canonical_and_auto_routes_read_the_own_id() -> None:
    """Only the canonical decoder (also reached through auto) takes a message's own event_id."""
    assert format_reads_own_id("canonical") and format_reads_own_id("auto")
    assert not any(format_reads_own_id(name) for name in ("roboflow", "generic", "frigate", "sparkplug"))


@pytest.mark.parametrize(("route", "payload"), [
    ({}, {"detections": []}),
    ({}, {"event_id": "mine", "detections": []}),
    ({"event_id_field": "metadata.serial"}, {"event_id": "mine", "detections": [], "metadata": {"serial": "s"}}),
    ({"event_id_field": "metadata.serial"}, {"detections": [], "metadata": {"serial": "s-2"}}),
    ({"event_id_field": "metadata.serial", "event_id_raw": True}, {"detections": [], "metadata": {"serial": "s-3"}}),
    ({"event_id_raw": True}, {"event_id": "mine", "detections": []}),
    ({"format": "roboflow"}, {"event_id": "ignored", "predictions": []}),
])
def test_identity_message_id_is_the_id_ingest_delivers(route: dict[str, object], payload: JsonValue) -> None:
    """What receipts and the SDK compute from the message alone equals the eventId ingest puts on the event."""
    config = RouteConfig.model_validate({"name": "inspection", "topic": "f/{line}/{camera}/detections",
                                         "use_case": "uc", **route})
    raw = orjson.dumps(payload)
    result = Ingestor(Router([config]), max_payload_bytes=4096).process(TOPIC.encode(), raw, time.time())
    assert result.dead_letter is None, result.dead_letter
    assert [record.event_id for record in result.records] == [
        message_event_id("inspection", TOPIC, raw, payload, id_field=config.event_id_field,
                         reads_own_id=format_reads_own_id(config.format), raw_ids=config.event_id_raw)]


def test_identity_and_the_sdk_load_no_pillow_and_no_decoders() -> None:
    """Importing the publisher SDK (and so identity) pulls in neither Pillow nor ingest nor a decoder."""
    code = ("import sys, mqtt_bridge.sdk.publisher; "
            "heavy = [m for m in sys.modules if m == 'PIL' or m.startswith(('mqtt_bridge.decode', "
            "'mqtt_bridge.transform.ingest', 'mqtt_bridge.images'))]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_identity_ids_are_the_uuid5_text_of_the_sha1_digest() -> None:
    """The hand-formatted ids equal `str(uuid.UUID(bytes=digest[:16], version=5))` for any digest."""
    for n in range(2000):
        payload = n.to_bytes(4, "big") * (n % 7)
        digest = hashlib.sha1(EVENT_ID_NAMESPACE.bytes + b"r\nt\n" + payload, usedforsecurity=False).digest()
        assert derive_event_id("r", "t", payload) == str(uuid.UUID(bytes=digest[:16], version=5))
