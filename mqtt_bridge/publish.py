"""The publisher helper for PLC-adjacent software: build canonical detection messages and publish them with QoS 1.

Owns: the Python API that producers use (`build_message`, `Publisher`) so that their messages always match
`config/message.schema.json`. Publishing goes through `subscriber.MqttPublisher` (paho stays behind one module).

    from mqtt_bridge.publish import Detection, Publisher
    with Publisher(host="broker.plant.local") as pub:
        pub.publish("factory/line1/cam2/detections",
                    detections=[Detection("scratch", 0.91, x=320, y=240, width=40, height=22)],
                    image=jpeg_bytes, metadata={"shift": "B"})
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType

import orjson

from mqtt_bridge.config import MqttConfig
from mqtt_bridge.events import JsonDict, format_timestamp
from mqtt_bridge.subscriber import MqttPublisher

__all__ = ["Detection", "Publisher", "build_message"]

SCHEMA = "mqtt-vision-bridge/message/v1"


@dataclass(frozen=True, slots=True)
class Detection:
    """One detected object: class, confidence and a centre box in pixels."""

    label: str
    confidence: float
    x: float
    y: float
    width: float
    height: float

    def to_json(self) -> JsonDict:
        """The message's `detections[]` item."""
        return {"class": self.label, "confidence": self.confidence, "x": self.x, "y": self.y,
                "width": self.width, "height": self.height}


def build_message(*, detections: list[Detection] | None = None, image: bytes | None = None,
                  image_name: str | None = None, image_size: tuple[int, int] | None = None,
                  event_type: str | None = None, event_id: str | None = None,
                  timestamp: datetime | None = None, device_id: str | None = None, stream_id: str | None = None,
                  event_data: JsonDict | None = None, metadata: JsonDict | None = None) -> bytes:
    """Serialise a canonical message (UTF-8 JSON). The timestamp defaults to now."""
    message: JsonDict = {"schema": SCHEMA, "timestamp": format_timestamp(timestamp or datetime.now(tz=UTC)),
                         "detections": [d.to_json() for d in detections or []]}
    optional: JsonDict = {"event_type": event_type, "event_id": event_id, "device_id": device_id,
                          "stream_id": stream_id, "event_data": event_data, "metadata": metadata}
    message.update({k: v for k, v in optional.items() if v is not None})
    if image is not None:
        picture: JsonDict = {"data": base64.b64encode(image).decode("ascii")}
        if image_name:
            picture["name"] = image_name
        if image_size:
            picture["width"], picture["height"] = image_size
        message["image"] = picture
    return orjson.dumps(message)


class Publisher:
    """A connected QoS 1 publisher; `publish` returns once the broker has acknowledged the message."""

    def __init__(self, host: str = "localhost", port: int = 1883, client_id: str = "mqtt-bridge-publisher",
                 username: str | None = None, password: str | None = None, protocol: str = "3.1.1") -> None:
        config = MqttConfig.model_validate({"host": host, "port": port, "username": username,
                                            "password": password, "protocol": protocol})
        self._publisher = MqttPublisher(config, client_id)

    def __enter__(self) -> Publisher:
        self._publisher.connect()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._publisher.close()

    def publish_raw(self, topic: str, payload: bytes, *, wait: bool = True) -> None:
        """Publish bytes as they are (QoS 1)."""
        self._publisher.publish(topic, payload, wait=wait)

    def publish(self, topic: str, *, wait: bool = True, detections: list[Detection] | None = None,
                image: bytes | None = None, image_name: str | None = None,
                image_size: tuple[int, int] | None = None, event_type: str | None = None,
                event_id: str | None = None, timestamp: datetime | None = None, device_id: str | None = None,
                stream_id: str | None = None, event_data: JsonDict | None = None,
                metadata: JsonDict | None = None) -> None:
        """Build a canonical message and publish it (QoS 1)."""
        self._publisher.publish(topic, build_message(
            detections=detections, image=image, image_name=image_name, image_size=image_size,
            event_type=event_type, event_id=event_id, timestamp=timestamp, device_id=device_id,
            stream_id=stream_id, event_data=event_data, metadata=metadata), wait=wait)
