"""End to end: real broker (Mosquitto or amqtt) → bridge → emulator over HTTP, every event exactly once."""

from __future__ import annotations

import time

import orjson
import pytest

from mqtt_bridge.devtools.emulator.server import Emulator
from tests.helpers import (
    BridgeFactory,
    BrokerAddress,
    PahoClient,
    detection_message,
    events_by_seq,
    wait_until,
)

pytestmark = pytest.mark.integration

CAMERAS = [("L1", "cam1"), ("L1", "cam2"), ("L2", "cam1")]


def test_end_to_end_every_message_arrives_exactly_once(mqtt_broker: BrokerAddress, emulator: Emulator,
                                                       bridge_factory: BridgeFactory) -> None:
    """Thousands of messages on several routed topics each become exactly one event with the right fields."""
    protocol = "5" if "mosquitto" in type(mqtt_broker).__name__.lower() else "3.1.1"
    service = bridge_factory(mqtt_broker, emulator, protocol=protocol)
    wait_until(lambda: service.state().mqtt_connected, timeout_s=10, message="bridge connected")
    total = 2400
    with PahoClient(mqtt_broker, client_id="e2e-publisher").connect() as publisher:
        publisher.publish_many([
            (f"t/factory/{CAMERAS[seq % 3][0]}/{CAMERAS[seq % 3][1]}/detections",
             detection_message(seq, with_image=seq % 40 == 0))
            for seq in range(total)
        ])
    wait_until(lambda: len(emulator.events()) >= total, timeout_s=90,
               message=f"{total} events in the emulator")
    time.sleep(0.3)  # let any straggling duplicate show up before counting
    events = emulator.events()
    grouped = events_by_seq(events)
    assert sorted(grouped) == list(range(total)), "some messages are missing"
    assert all(len(v) == 1 for v in grouped.values()), "some messages became two events"
    assert len(events) == total
    for seq, [event] in grouped.items():
        line, camera = CAMERAS[seq % 3]
        assert event["useCaseId"] == "uc-a"
        assert event["deviceId"] == f"{line}-{camera}"
        assert event["streamId"] == camera
        assert event["eventType"] == "quality_check"
        assert event["eventData"] == {"result": "fail"}
        assert event["customMetadata"]["line"] == line
        assert event["warnings"] == []
        if seq % 40 == 0:
            [image] = event["images"]
            assert image["sourceId"] in emulator.uploads()
            [box] = image["objectDetections"]
            assert box == {"class": "scratch" if seq % 2 else "Dent", "x": float(10 + seq % 7), "y": 12.0,
                           "width": 6.0, "height": 4.0, "confidence": 0.5 + (seq % 50) / 100}
        else:
            assert "images" not in event or event["images"] == []
            assert event["customMetadata"]["detections"] == 1
    assert service.buffer.depth == 0
    assert service.buffer.dead_letter_count == 0


def test_end_to_end_roboflow_inference_route(mosquitto: BrokerAddress, emulator: Emulator,
                                             bridge_factory: BridgeFactory) -> None:
    """Roboflow Inference JSON on its route becomes an inventory_count event for its use case."""
    service = bridge_factory(mosquitto, emulator)
    wait_until(lambda: service.state().mqtt_connected, timeout_s=10, message="bridge connected")
    payload = {"inference_id": "inf-1", "image": {"width": 640, "height": 480},
               "predictions": [{"x": 50, "y": 60, "width": 10, "height": 12, "class": "bolt", "confidence": 0.9,
                                "class_id": 0}]}
    with PahoClient(mosquitto, client_id="rf-publisher").connect() as publisher:
        publisher.publish("t/inference/cam7", orjson.dumps(payload))
    [event] = wait_until(emulator.events, timeout_s=15, message="one event")
    assert event["useCaseId"] == "uc-b"
    assert event["deviceId"] == "rf-cam7"
    assert event["eventType"] == "inventory_count"
    assert event["eventData"] == {"itemCount": 1, "itemType": "bolt"}
    assert event["customMetadata"] == {"inferenceId": "inf-1", "detections": 1, "classes": "bolt"}
