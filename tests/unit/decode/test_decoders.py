"""Decoders: per-format behaviour the golden files do not show, event ids of multi-event messages, and properties.

The property tests (hypothesis) feed every decoder arbitrary JSON and arbitrary bytes: a decoder may only raise
DecodeError. Random valid messages of each format must become Vision Events the API accepts.
"""

from __future__ import annotations

import contextlib
import io
import time
from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from mqtt_bridge.config.routes import RouteConfig
from mqtt_bridge.decode.base import Message
from mqtt_bridge.decode.names import FORMATS
from mqtt_bridge.decode.registry import DECODERS, build_decoder
from mqtt_bridge.errors import DecodeError
from mqtt_bridge.model.event import event_problems
from mqtt_bridge.model.values import JsonValue
from mqtt_bridge.routing.router import Router
from mqtt_bridge.transform.ingest import Ingestor

NOW = datetime(2025, 3, 4, 10, 22, tzinfo=UTC)
RECEIVED_S = NOW.timestamp()
PROPERTY = settings(max_examples=50, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])
GENERIC: dict[str, object] = {"detections_path": "items", "class_path": "label", "confidence_path": "score",
                              "box": {"convention": "xyxy", "fields": ["b.0", "b.1", "b.2", "b.3"]}}
SPARKPLUG: dict[str, object] = {"metrics": [{"name": "Vision/Detections", "format": "roboflow"}]}


def _route(name: str, **extra: object) -> RouteConfig:
    base: dict[str, object] = {"topic": "t/#", "use_case": "uc", "format": name, "generic": GENERIC,
                               "sparkplug": SPARKPLUG, "image_size": {"width": 640, "height": 480}}
    return RouteConfig.model_validate(base | extra)


def _frigate(kind: str, object_id: str, score: float = 0.8) -> bytes:
    after = {"id": object_id, "camera": "dock", "label": "forklift", "frame_time": RECEIVED_S - 5, "score": score,
             "box": [10, 20, 110, 220], "false_positive": False}
    return orjson.dumps({"type": kind, "before": after, "after": after})


def test_decoders_registry_matches_config_formats() -> None:
    """Every format the config accepts has a decoder, and every decoder is a config format."""
    assert set(DECODERS) == set(FORMATS)
    for name in DECODERS:
        assert hasattr(build_decoder(name, _route(name)), "decode")


def test_decoders_frigate_send_on_new_sends_each_object_once() -> None:
    """send_on new: the first message of an object is sent, later ones not; the id derives from Frigate's id."""
    route = _route("frigate", topic="frigate/#", frigate={"send_on": "new"})
    ingestor = Ingestor(Router([route]), 65536, clock=lambda: NOW)
    first = ingestor.process(b"frigate/events", _frigate("new", "obj-1"), RECEIVED_S)
    later = [ingestor.process(b"frigate/events", _frigate(kind, "obj-1", 0.9), RECEIVED_S) for kind in
             ("update", "end")]
    other = ingestor.process(b"frigate/events", _frigate("update", "obj-2"), RECEIVED_S)
    assert len(first.records) == 1 and all(not r.records and r.dead_letter is None for r in later)
    assert len(other.records) == 1
    restarted = Ingestor(Router([route]), 65536, clock=lambda: NOW)
    again = restarted.process(b"frigate/events", _frigate("end", "obj-1", 0.95), RECEIVED_S)
    assert again.records[0].event_id == first.records[0].event_id  # a restart overwrites, never duplicates


def test_decoders_frigate_stale_snapshot_is_not_attached() -> None:
    """A snapshot older than snapshot_max_age_s is not attached to a later event."""
    jpeg = io.BytesIO()
    Image.new("RGB", (8, 8)).save(jpeg, format="JPEG")
    decoder = build_decoder("frigate", _route("frigate", frigate={"snapshot_max_age_s": 10}))
    decoder.decode(Message("frigate/dock/forklift/snapshot", jpeg.getvalue(), RECEIVED_S - 60))
    [stale] = decoder.decode(Message("frigate/events", _frigate("end", "obj-3"), RECEIVED_S))
    decoder.decode(Message("frigate/dock/forklift/snapshot", jpeg.getvalue(), RECEIVED_S - 5))
    [fresh] = decoder.decode(Message("frigate/events", _frigate("end", "obj-4"), RECEIVED_S))
    assert stale.image == b"" and fresh.image == jpeg.getvalue() and not fresh.boxes_fit_image


def test_decoders_several_events_of_one_message_have_distinct_stable_ids() -> None:
    """A message that yields several events gives each its own eventId, the same on every redelivery."""
    payload = orjson.dumps({"outputs": [{"p": {"predictions": []}}, {"p": {"predictions": []}},
                                        {"p": {"predictions": []}}]})
    ingestor = Ingestor(Router([_route("roboflow")]), 65536)
    ids = [r.event_id for r in ingestor.process(b"t/x", payload, time.time()).records]
    again = [r.event_id for r in ingestor.process(b"t/x", payload, time.time()).records]
    assert len(set(ids)) == 3 and ids == again


def test_decoders_event_id_field_suffixes_further_events() -> None:
    """With event_id_field, the first event keeps the payload's id and further ones get -1, -2 (sent as they are
    with event_id_raw; namespaced by the route otherwise)."""
    payload = orjson.dumps({"run": "r-7", "outputs": [{"predictions": []}, {"predictions": []}]})
    ingestor = Ingestor(Router([_route("roboflow", event_id_field="run", event_id_raw=True)]), 65536)
    assert [r.event_id for r in ingestor.process(b"t/x", payload, time.time()).records] == ["r-7", "r-7-1"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(
        st.sampled_from(["predictions", "x", "y", "width", "height", "class", "confidence", "objects", "object",
                         "bbox", "box", "name", "type", "before", "after", "outputs", "detections", "items",
                         "label", "score", "b", "resolution", "detection", "bounding_box", "x_min", "mdsversion",
                         "version", "points", "keypoints", "segments", "x1", "y1", "x2", "y2", "image", "value",
                         "topleftx", "sensor", "id", "@timestamp", "predicted_classes", "images", "results"])
        | st.text(max_size=6), children, max_size=6),
    max_leaves=30)


@pytest.mark.parametrize("name", DECODERS)
@PROPERTY
@given(document=json_values)
def test_decoders_raise_only_decode_error_on_any_json(name: str, document: JsonValue) -> None:
    """Arbitrary JSON never makes a decoder raise anything but DecodeError."""
    decoder = build_decoder(name, _route(name))
    topic = {"frigate": "frigate/events", "sparkplug": "spBv1.0/G/DDATA/E/D"}.get(name, "t/x")
    with contextlib.suppress(DecodeError):
        decoder.decode(Message(topic, orjson.dumps(document), RECEIVED_S))


@pytest.mark.parametrize("name", ["sparkplug", "frigate", "auto"])
@PROPERTY
@given(payload=st.binary(max_size=200))
def test_decoders_raise_only_decode_error_on_any_bytes(name: str, payload: bytes) -> None:
    """Arbitrary bytes on the binary topics never make a decoder raise anything but DecodeError."""
    decoder = build_decoder(name, _route(name))
    for topic in ("spBv1.0/G/NBIRTH/E", "spBv1.0/G/DDATA/E/D", "frigate/cam/label/snapshot", "frigate/events"):
        with contextlib.suppress(DecodeError):
            decoder.decode(Message(topic, payload, RECEIVED_S))


coordinate = st.floats(min_value=0, max_value=4000, allow_nan=False)
size = st.floats(min_value=0.5, max_value=500, allow_nan=False)
label = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=30)
confidence = st.floats(min_value=-1, max_value=2, allow_nan=False)
roboflow_message = st.builds(lambda preds: {"predictions": preds}, st.lists(st.builds(
    lambda x, y, w, h, c, n: {"x": x, "y": y, "width": w, "height": h, "confidence": c, "class": n},
    coordinate, coordinate, size, size, confidence, label), max_size=20))
ultralytics_message = st.lists(st.builds(
    lambda x, y, w, h, c, n: {"name": n, "class": 1, "confidence": c, "box": {"x1": x, "y1": y, "x2": x + w,
                                                                              "y2": y + h}},
    coordinate, coordinate, size, size, confidence, label), max_size=20)
deepstream_message = st.builds(lambda objs: {"version": "4.0", "id": "1", "@timestamp": "2025-03-04T10:21:00Z",
                                             "sensorId": "s", "objects": objs}, st.lists(st.builds(
    lambda x, y, w, h, c: f"1|{x}|{y}|{x + w}|{y + h}|obj|#|{c}", coordinate, coordinate, size, size,
    st.floats(0, 1)), max_size=20))
generic_message = st.builds(lambda items: {"items": items}, st.lists(st.builds(
    lambda x, y, w, h, c, n: {"label": n, "score": c, "b": [x, y, x + w, y + h]},
    coordinate, coordinate, size, size, confidence, label), max_size=20))


@pytest.mark.parametrize(("name", "strategy", "key"), [
    ("roboflow", roboflow_message, "predictions"), ("ultralytics", ultralytics_message, ""),
    ("deepstream", deepstream_message, "objects"), ("generic", generic_message, "items"),
    ("auto", roboflow_message, "predictions")])
@PROPERTY
@given(data=st.data())
def test_decoders_valid_messages_become_valid_events(name: str, strategy: st.SearchStrategy[JsonValue], key: str,
                                                     data: st.DataObject) -> None:
    """Random valid messages of a format become Vision Events the API accepts, with every box kept."""
    document = data.draw(strategy)
    items = document[key] if isinstance(document, dict) else document
    assert isinstance(items, list)
    ingestor = Ingestor(Router([_route(name)]), 4 * 2**20, clock=lambda: NOW, collect_unattached=True)
    result = ingestor.process(b"t/x", orjson.dumps(document), RECEIVED_S)
    assert result.dead_letter is None, result.dead_letter
    [record] = result.records
    assert event_problems(record.event, NOW) == []
    kept = [box for extra in result.unattached for box in extra.get("objectDetections", [])  # type: ignore[union-attr]
            if isinstance(box, dict)]
    assert len(kept) == len(items) and result.dropped_boxes == 0
    assert all(isinstance(box["confidence"], float) and 0.0 <= box["confidence"] <= 1.0 for box in kept)
