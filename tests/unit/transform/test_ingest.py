"""Ingest: messages to Vision Event records, or dead letters with reasons."""

from __future__ import annotations

import base64
import io
import logging
import time
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from PIL import Image

from mqtt_bridge.config.routes import RouteConfig
from mqtt_bridge.model.event import BRIDGE_METADATA_KEYS
from mqtt_bridge.model.record import Record
from mqtt_bridge.model.values import JsonDict, format_timestamp
from mqtt_bridge.routing.router import Router
from mqtt_bridge.transform.identity import namespaced_event_id
from mqtt_bridge.transform.ingest import SOURCE_TIMESTAMP_KEY, Ingestor

TOPIC = b"factory/L1/cam2/detections"
STAMP = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3600))


def _jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (120, 120, 120)).save(out, format="JPEG")
    return out.getvalue()


def _ingestor(**route: object) -> Ingestor:
    base: dict[str, object] = {"topic": "factory/{line}/{camera}/detections", "use_case": "uc-{line}",
                               "device_id": "{line}-{camera}", "stream_id": "{camera}",
                               "metadata": {"line": "{line}"}}
    base.update(route)
    return Ingestor(Router([RouteConfig.model_validate(base),
                            RouteConfig.model_validate({"topic": "rf/{cam}", "use_case": "uc",
                                                        "format": "roboflow", "event_type": "inventory_count"})]),
                    max_payload_bytes=64 * 1024)


def _one(ingestor: Ingestor, payload: JsonDict | bytes, topic: bytes = TOPIC) -> Record:
    raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    result = ingestor.process(topic, raw, time.time())
    assert result.dead_letter is None, result.dead_letter
    assert len(result.records) == 1
    return result.records[0]


DET: JsonDict = {"class": "Scratch", "confidence": 0.91, "x": 30, "y": 20, "width": 10, "height": 8}


def test_ingest_canonical_message_becomes_a_vision_event() -> None:
    """Route templates fill useCaseId, deviceId, streamId and metadata; the image carries the boxes."""
    image = _jpeg()
    record = _one(_ingestor(), {"detections": [DET], "metadata": {"shift": "B"},
                                "timestamp": STAMP,
                                "image": {"data": base64.b64encode(image).decode(), "name": "f.jpg"}})
    event = record.event
    assert event["useCaseId"] == "uc-L1"
    assert event["deviceId"] == "L1-cam2"
    assert event["streamId"] == "cam2"
    assert event["eventType"] == "quality_check"
    assert event["eventData"] == {"result": "fail"}
    assert event["customMetadata"] == {"line": "L1", "shift": "B"}
    assert event["timestamp"] == STAMP.replace("Z", ".000Z")
    assert event["images"] == [{"label": "mqtt-vision-bridge", "objectDetections": [
        {"class": "Scratch", "x": 30.0, "y": 20.0, "width": 10.0, "height": 8.0, "confidence": 0.91}]}]
    assert event["displayImagePosition"] == 0
    assert record.image == image


def test_ingest_event_id_is_deterministic_per_message() -> None:
    """The same message gets the same eventId (redelivery overwrites); another payload gets another."""
    ingestor = _ingestor()
    now = int(time.time()) - 60
    first = _one(ingestor, {"detections": [DET], "timestamp": now})
    again = _one(ingestor, {"detections": [DET], "timestamp": now})
    other = _one(ingestor, {"detections": [DET], "timestamp": now + 1})
    assert first.event_id == again.event_id != other.event_id


def test_ingest_event_id_from_payload_field() -> None:
    """event_id_field takes the id from the payload, namespaced by the route (UUIDv5 of route name and value, raw
    with event_id_raw); a message without it is dead-lettered."""
    ingestor = Ingestor(Router([RouteConfig.model_validate({"topic": "rf/{cam}", "use_case": "uc",
                                                            "format": "roboflow", "event_id_field": "inference_id"})]),
                        max_payload_bytes=4096)
    record = _one(ingestor, {"inference_id": "inf-42", "predictions": []}, topic=b"rf/c1")
    assert record.event_id == namespaced_event_id("rf/{cam}", "inf-42")
    raw_ingestor = Ingestor(Router([RouteConfig.model_validate({
        "topic": "rf/{cam}", "use_case": "uc", "format": "roboflow", "event_id_field": "inference_id",
        "event_id_raw": True})]), max_payload_bytes=4096)
    assert _one(raw_ingestor, {"inference_id": "inf-42", "predictions": []}, topic=b"rf/c1").event_id == "inf-42"
    result = ingestor.process(b"rf/c1", b'{"predictions": []}', time.time())
    assert result.dead_letter is not None and result.dead_letter.reason == "event_id_missing"


def test_ingest_empty_quality_check_passes_and_safety_alert_is_skipped() -> None:
    """No detections: quality_check says pass; safety_alert produces no event (design §7)."""
    assert _one(_ingestor(), {"detections": []}).event["eventData"] == {"result": "pass"}
    result = _ingestor(event_type="safety_alert").process(TOPIC, b'{"detections": []}', time.time())
    assert result.records == [] and result.dead_letter is None


def test_ingest_roboflow_inference_json() -> None:
    """Roboflow predictions keep their centre boxes; without an image the event carries a summary."""
    payload: JsonDict = {"image": {"width": 640, "height": 480}, "inference_id": "abc",
               "predictions": [{"x": 10, "y": 10, "width": 4, "height": 4, "class": "bolt", "confidence": 0.8},
                               {"x": 20, "y": 10, "width": 4, "height": 4, "class": "bolt", "confidence": 1.7}]}
    event = _one(_ingestor(), payload, topic=b"rf/cam9").event
    assert event["eventType"] == "inventory_count"
    assert event["eventData"] == {"itemCount": 2, "itemType": "bolt"}
    assert event["customMetadata"] == {"inferenceId": "abc", "detections": 2, "classes": "bolt"}
    assert "images" not in event


def test_ingest_drops_degenerate_boxes_and_filters_confidence() -> None:
    """Zero-area boxes are dropped and counted; min_confidence filters detections."""
    ingestor = _ingestor(min_confidence=0.5)
    raw = orjson.dumps({"detections": [DET, DET | {"width": 0}, DET | {"confidence": 0.2}]})
    result = ingestor.process(TOPIC, raw, time.time())
    assert result.dropped_boxes == 1
    metadata = result.records[0].event["customMetadata"]
    assert isinstance(metadata, dict)
    assert metadata["detections"] == 1


@pytest.mark.parametrize(("topic", "payload", "reason"), [
    (TOPIC, b"{not json", "invalid_json"),
    (TOPIC, b"\xff\xfe\x00garbage", "invalid_json"),
    (TOPIC, b"[" * 100_000 + b"]" * 100_000, "payload_too_large"),
    (TOPIC, b"[" * 5000 + b"]" * 5000, "invalid_json"),
    (TOPIC, b"x" * 70_000, "payload_too_large"),
    (TOPIC, b'{"detections": "many"}', "invalid_message"),
    (TOPIC, b'{"detections": [{"class": "a", "confidence": "high", "x": 1, "y": 1, "width": 1, "height": 1}]}',
     "invalid_message"),
    (TOPIC, b'{"detections": [], "metadata": {"bad/key": 1}}', "invalid_event"),
    (TOPIC, b'{"detections": [], "image": {"data": "bm90IGFuIGltYWdl"}}', "bad_image"),
    (TOPIC, b'{"detections": [], "bogus": 1}', "invalid_message"),
    (TOPIC, b"1" * 400 + b"e999", "invalid_json"),
    (b"factory/\xff\xfe/cam/detections", b"{}", "topic_not_utf8"),
    (b"unknown/topic", b"{}", "no_route"),
    (b"rf/cam", b'{"predictions": [{"class": "a", "confidence": 1, "x": 1, "y": "NaN"}]}', "invalid_message"),
])
def test_ingest_hostile_input_is_dead_lettered_with_reason(topic: bytes, payload: bytes, reason: str) -> None:
    """Bad input never raises: it becomes a dead letter with the reason and the raw bytes."""
    result = _ingestor().process(topic, payload, time.time())
    assert result.records == []
    assert result.dead_letter is not None
    assert result.dead_letter.reason == reason, result.dead_letter
    assert result.dead_letter.payload == payload


def test_ingest_replaces_a_payload_time_outside_the_window_by_the_receive_time_keeping_the_original(
        caplog: pytest.LogCaptureFixture) -> None:
    """Default policy (payload + receive): a camera 3 days ahead still delivers, at the receive time, with its own
    time in customMetadata.sourceTimestamp, counted, and warned about once a minute per route."""
    ingestor = _ingestor()
    received = time.time()
    ahead = format_timestamp(datetime.fromtimestamp(received, tz=UTC) + timedelta(days=3))
    caplog.set_level(logging.WARNING, logger="mqtt_bridge.transform.ingest")
    results = [ingestor.process(TOPIC, orjson.dumps({"detections": [], "timestamp": ahead, "metadata": {"n": n}}),
                                received + n) for n in range(3)]
    assert [r.timestamps_replaced for r in results] == [1, 1, 1]
    event = results[0].records[0].event
    assert event["timestamp"] == format_timestamp(datetime.fromtimestamp(received, tz=UTC))
    assert event["customMetadata"] == {"line": "L1", "n": 0, SOURCE_TIMESTAMP_KEY: ahead}
    assert len([r for r in caplog.records if "outside the API's window" in r.getMessage()]) == 1
    later = ingestor.process(TOPIC, orjson.dumps({"detections": [], "timestamp": ahead}), received + 61)
    warnings = [r.getMessage() for r in caplog.records if "outside the API's window" in r.getMessage()]
    assert later.timestamps_replaced == 1 and len(warnings) == 2 and "count=3" in warnings[1]
    inside = ingestor.process(TOPIC, b'{"detections": [], "timestamp": "' + format_timestamp(
        datetime.fromtimestamp(received, tz=UTC) - timedelta(days=3)).encode() + b'"}', received)
    assert inside.timestamps_replaced == 0
    metadata = inside.records[0].event["customMetadata"]
    assert isinstance(metadata, dict) and SOURCE_TIMESTAMP_KEY not in metadata


def test_ingest_strict_timestamp_policy_dead_letters_a_payload_time_outside_the_window() -> None:
    """timestamp.out_of_window: dead_letter keeps the strict behaviour: the message is dead-lettered."""
    result = _ingestor(timestamp={"out_of_window": "dead_letter"}).process(
        TOPIC, b'{"detections": [], "timestamp": "2001-01-01T00:00:00Z"}', time.time())
    assert result.dead_letter is not None and result.dead_letter.reason == "invalid_event"
    assert "timestamp must lie between one year ago and tomorrow" in result.dead_letter.detail


def test_ingest_receive_timestamp_source_ignores_the_payload_time() -> None:
    """timestamp.source: receive always stamps the receive time (nothing replaced, nothing kept)."""
    received = time.time()
    result = _ingestor(timestamp={"source": "receive"}).process(
        TOPIC, b'{"detections": [], "timestamp": "2026-01-01T00:00:00Z"}', received)
    assert result.timestamps_replaced == 0
    assert result.records[0].event["timestamp"] == format_timestamp(datetime.fromtimestamp(received, tz=UTC))


def _feedback_ingestor() -> Ingestor:
    return Ingestor(Router([RouteConfig.model_validate({
        "name": "review", "topic": "review/{station}", "use_case": "uc", "event_type": "operator_feedback",
        "operator_feedback": {"related_event_id": "{payload.metadata.ref}", "feedback": "{payload.metadata.verdict}",
                              "comment": "{payload.metadata.note}"}})]), max_payload_bytes=4096)


def test_ingest_operator_feedback_maps_related_event_feedback_and_a_top_level_comment() -> None:
    """The route's templates fill eventData.relatedEventId and feedback; the comment goes top-level."""
    record = _one(_feedback_ingestor(), {"detections": [], "metadata": {
        "ref": "evt-1", "verdict": "incorrect", "note": "not a scratch"}}, topic=b"review/s1")
    assert record.event["eventType"] == "operator_feedback"
    assert record.event["eventData"] == {"relatedEventId": "evt-1", "feedback": "incorrect"}
    assert record.event["comment"] == "not a scratch"


def test_ingest_operator_feedback_outside_the_documented_values_is_dead_lettered() -> None:
    """A rendered feedback other than correct / incorrect / inconclusive is invalid_event, for that message alone."""
    result = _feedback_ingestor().process(
        b"review/s1", b'{"detections": [], "metadata": {"ref": "evt-1", "verdict": "meh", "note": "x"}}', time.time())
    assert result.dead_letter is not None and result.dead_letter.reason == "invalid_event"
    assert "eventData.feedback must be one of correct, incorrect, inconclusive" in result.dead_letter.detail


def test_ingest_event_data_fields_that_must_be_strings_are_dead_lettered_before_buffering() -> None:
    """A payload's eventData number where the API wants a string (custom value, operator_feedback without its
    relatedEventId) is dead-lettered alone, so it never gets a whole batch refused."""
    result = _ingestor().process(TOPIC, b'{"detections": [], "event_type": "custom", "event_data": {"value": 42}}',
                                 time.time())
    assert result.dead_letter is not None and result.dead_letter.reason == "invalid_event"
    assert "eventData.value must be a string for custom" in result.dead_letter.detail
    feedback = _ingestor().process(TOPIC, b'{"detections": [], "event_type": "operator_feedback", '
                                          b'"event_data": {"feedback": "correct"}}', time.time())
    assert feedback.dead_letter is not None and "relatedEventId" in feedback.dead_letter.detail


def test_ingest_route_metadata_and_event_data_win_over_the_payload() -> None:
    """A payload cannot replace a route's metadata key, a topic capture or a route eventData field; it may add keys."""
    ingestor = _ingestor(metadata={"line": "{line}", "plant": "Berlin"}, event_data={"location": "{line}"})
    record = _one(ingestor, {"detections": [DET], "timestamp": STAMP,
                             "metadata": {"plant": "Elsewhere", "line": "L9", "shift": "B"},
                             "event_data": {"location": "forged", "itemType": "part"}})
    assert record.event["customMetadata"] == {"line": "L1", "plant": "Berlin", "shift": "B", "detections": 1,
                                              "classes": "Scratch"}
    assert record.event["eventData"] == {"result": "fail", "location": "L1", "itemType": "part"}


@pytest.mark.parametrize("marker", sorted(BRIDGE_METADATA_KEYS))
def test_ingest_payload_cannot_write_a_bridge_marker(marker: str) -> None:
    """A payload metadata key named like one of the bridge's markers is dropped, counted and noted."""
    result = _ingestor().process(TOPIC, orjson.dumps({"detections": [], "timestamp": STAMP,
                                                      "metadata": {marker: "forged", "shift": "B"}}), time.time())
    [record] = result.records
    assert record.event["customMetadata"] == {"line": "L1", "shift": "B", "droppedKeys": marker}
    assert result.keys_dropped == 1


def test_ingest_markers_are_the_bridges_own_over_a_payload_claim() -> None:
    """Where the bridge writes a marker (the box summary), a payload value of the same name never shows."""
    record = _one(_ingestor(), {"detections": [DET], "timestamp": STAMP,
                                "metadata": {"detections": 99, "classes": "none", "imageMissing": "no"}})
    metadata = record.event["customMetadata"]
    assert isinstance(metadata, dict)
    assert (metadata["detections"], metadata["classes"]) == (1, "Scratch")
    assert "imageMissing" not in metadata and metadata["droppedKeys"] == "classes,detections,imageMissing"
