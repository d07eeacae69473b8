"""Every payload format end to end: real-shaped messages through Mosquitto and the bridge into the emulator.

For each format the golden inputs (tests/payloads/<format>/) are published with fresh timestamps (the API accepts
one year back only) and the stored events must be exactly what `mqtt-bridge decode` (the dry run) predicts for the
same bytes: same eventIds, types, data, devices, metadata and boxes, with the images uploaded.
"""

from __future__ import annotations

import base64
import hashlib
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
import yaml

from mqtt_bridge.config.routes import RouteConfig
from mqtt_bridge.decode.sparkplug_schema import encode_payload
from mqtt_bridge.devtools.emulator.server import Emulator
from mqtt_bridge.model.values import JsonDict
from mqtt_bridge.transform.dryrun import DryRun
from tests.helpers import BridgeFactory, BrokerAddress, PahoClient, wait_until

pytestmark = pytest.mark.integration

PAYLOADS = Path(__file__).resolve().parents[1] / "payloads"
PREFIX = "e2e"
NOW_MS = int(time.time() * 1000) - 5000
NOW_ISO = datetime.fromtimestamp(NOW_MS / 1000, tz=UTC).isoformat().replace("+00:00", "Z")
COMPARED = ("eventId", "eventType", "useCaseId", "eventData", "deviceId", "streamId", "customMetadata")
PREDICTIONS = ("objectDetections", "instanceSegmentations", "keypoints", "classifications")


def _json(folder: str, name: str, **changes: object) -> bytes:
    document = orjson.loads((PAYLOADS / folder / f"{name}.json").read_bytes())
    for path, value in changes.items():
        node = document
        *parents, leaf = path.split("__")
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        node[leaf] = value
    return orjson.dumps(document)


def _sparkplug() -> list[tuple[str, bytes]]:
    columns = {"numOfColumns": 6, "columns": ["class", "x", "y", "width", "height", "confidence"],
               "types": [12, 10, 10, 10, 10, 10]}
    row = {"elements": [{"stringValue": "scratch"}, {"doubleValue": 812.0}, {"doubleValue": 440.0},
                        {"doubleValue": 96.0}, {"doubleValue": 60.0}, {"doubleValue": 0.87}]}
    jpeg = (PAYLOADS / "sparkplug" / "tiny.jpeg").read_bytes()
    return [
        ("spBv1.0/PlantA/NBIRTH/Line3-Edge", encode_payload({"timestamp": NOW_MS, "seq": 0, "metrics": [
            {"name": "bdSeq", "alias": 1, "datatype": 8, "longValue": "0"}]})),
        ("spBv1.0/PlantA/DBIRTH/Line3-Edge/Cam07", encode_payload({"timestamp": NOW_MS, "seq": 1, "metrics": [
            {"name": "Inspection/Boxes", "alias": 6, "datatype": 16, "datasetValue": columns},
            {"name": "Inspection/Image", "alias": 10, "datatype": 17, "bytesValue": ""}]})),
        ("spBv1.0/PlantA/DDATA/Line3-Edge/Cam07", encode_payload({"timestamp": NOW_MS, "seq": 2, "metrics": [
            {"alias": 6, "datasetValue": {**columns, "rows": [row]}},
            {"alias": 10, "bytesValue": base64.b64encode(jpeg).decode()}]})),
    ]


def _messages(folder: str) -> list[tuple[str, bytes]]:
    """Real-shaped messages of one format, on the topics its routes expect, stamped a few seconds ago."""
    settings = yaml.safe_load((PAYLOADS / folder / "routes.yaml").read_text())
    topic = str(settings["topic"])
    if folder == "roboflow":
        stamped = _json(folder, "workflow_outputs", outputs__0__annotated__video_metadata__frame_timestamp=NOW_ISO)
        return [(topic, stamped), (topic, _json(folder, "box_outside_image"))]
    if folder == "generic":
        return [(topic, _json(folder, "defects", inspection__time=NOW_ISO)),
                ("vision/cam2/objects", _json(folder, "normalized_with_image", ts=NOW_MS))]
    if folder == "deepstream":
        return [(topic, _json(folder, "minimal", **{"@timestamp": NOW_ISO})),
                (topic, _json(folder, "full_new_api", **{"@timestamp": NOW_ISO}))]
    if folder == "frigate":
        return [("frigate/dock_door/forklift/snapshot", (PAYLOADS / folder / "snapshot.jpg").read_bytes()),
                (topic, _json(folder, "end", after__frame_time=NOW_MS / 1000))]
    if folder == "ultralytics":
        return [(topic, _json(folder, "wrapped_with_image")), (topic, _json(folder, "segment"))]
    if folder == "dlstreamer":
        return [(topic, _json(folder, "frame")), (topic, _json(folder, "system_timestamp_credentials",
                                                              system_timestamp=NOW_ISO))]
    return _sparkplug()


def _dicts(value: object) -> list[JsonDict]:
    """The objects of a JSON list (none when it is not a list)."""
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


FOLDERS = ("roboflow", "generic", "deepstream", "frigate", "ultralytics", "sparkplug", "dlstreamer")


def test_formats_end_to_end_events_match_the_dry_run(mosquitto: BrokerAddress, emulator: Emulator,
                                                     bridge_factory: BridgeFactory) -> None:
    """Messages of every format arrive in the emulator exactly as the dry run predicts, with their images."""
    routes: list[dict[str, object]] = []
    messages: list[tuple[str, bytes]] = []
    for folder in FOLDERS:
        settings = yaml.safe_load((PAYLOADS / folder / "routes.yaml").read_text())
        routes += [{**route, "use_case": "uc-a"} for route in settings["routes"]]
        messages += _messages(folder)
    dry_run = DryRun([RouteConfig.model_validate(r) for r in routes], 4 * 2**20)
    predicted: list[JsonDict] = []
    images: dict[str, str] = {}
    for topic, payload in messages:
        outcome = dry_run.run(topic, payload)
        assert "dead_letter" not in outcome, outcome
        predicted.extend(_dicts(outcome["events"]))
        images.update({str(i["eventId"]): str(i["sha256"]) for i in _dicts(outcome.get("images"))})
    assert {str(e["eventId"]) for e in predicted} >= set(images)
    assert len(images) >= 5, "roboflow, generic, frigate, ultralytics and sparkplug events carry images"
    service = bridge_factory(mosquitto, emulator, routes=routes)
    with PahoClient(mosquitto, client_id="e2e-formats").connect() as publisher:
        for topic, payload in messages:
            publisher.publish(topic, payload)
    wait_until(lambda: len(emulator.events()) >= len(predicted), timeout_s=20, message=f"{len(predicted)} events")
    time.sleep(0.3)  # let a stray extra event show up before comparing
    stored = emulator.events()
    by_id = {str(e["eventId"]): e for e in stored}
    assert sorted(by_id) == sorted(str(e["eventId"]) for e in predicted)
    uploads = emulator.uploads()
    for expected in predicted:
        actual = by_id[str(expected["eventId"])]
        assert {k: actual.get(k) for k in COMPARED} == {k: expected.get(k) for k in COMPARED}
        assert actual["warnings"] == []
        expected_images = _dicts(expected.get("images"))
        assert len(_dicts(actual.get("images"))) == len(expected_images)
        for got, want in zip(_dicts(actual.get("images")), expected_images, strict=True):
            assert {k: got.get(k) for k in PREDICTIONS} == {k: want.get(k) for k in PREDICTIONS}
            assert hashlib.sha256(uploads[str(got["sourceId"])]).hexdigest() == images[str(expected["eventId"])]
    assert len(predicted) >= 12
    streams = {str(e.get("streamId")) for e in stored}
    assert {"cam2", "line3-cam07", "dock_door", "Cam07", "rtsp://10.0.0.7/line3"} <= streams
    assert service.buffer.dead_letter_count == 0
