"""Test data for the operator tools: a config on a buffer in tmp_path, dead letters and buffered records."""

from __future__ import annotations

from pathlib import Path

from mqtt_bridge.config.bridge import BridgeConfig
from mqtt_bridge.config.load import parse_config
from mqtt_bridge.model.record import DeadLetter, Record
from mqtt_bridge.model.values import JsonDict

TOPIC = "f/L1/cam1/detections"


def tool_config(tmp_path: Path, use_case: str = "uc-a") -> BridgeConfig:
    """A config whose buffer is in tmp_path, one route `inspection` on f/{line}/{camera}/detections."""
    return parse_config({"api": {"api_key": "k", "base_url": "http://127.0.0.1:9"},
                         "buffer": {"path": str(tmp_path / "buffer"), "min_free_bytes": 1},
                         "health": {"enabled": False},
                         "routes": [{"name": "inspection", "topic": "f/{line}/{camera}/detections",
                                     "use_case": use_case}]}, env={})


def dead_letter(reason: str, payload: bytes, dead_at_s: float, route: str = "inspection") -> DeadLetter:
    """A dead letter on TOPIC, received and dead-lettered at `dead_at_s`."""
    return DeadLetter(reason=reason, detail=f"because {reason}", topic=TOPIC, route=route, payload=payload,
                      received_at_s=dead_at_s, dead_at_s=dead_at_s)


def buffered_record(seq: int, image: bytes = b"") -> Record:
    """A buffered record with eventId e-<seq> (and an image when given)."""
    event: JsonDict = {"eventId": f"e-{seq}", "eventType": "quality_check", "useCaseId": "uc-a",
             "timestamp": "2024-01-15T10:30:00.000Z", "eventData": {"result": "fail"}}
    if image:
        event["images"] = [{"label": "mqtt-vision-bridge", "objectDetections": []}]
    return Record(event=event, route="inspection", topic=TOPIC, received_at_s=1_700_000_000.0 + seq, image=image)
