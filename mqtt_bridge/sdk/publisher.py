"""The publisher helper for PLC-adjacent software: build canonical detection messages and publish them with QoS 1.

Owns: the Python API that producers use (`build_message`, `Publisher`) so that their messages always match
`config/message.schema.json`. Publishing goes through `mqtt.publisher.MqttPublisher` (paho stays behind `mqtt/`);
the eventId a receipt is matched by follows `transform.identity`, the bridge's own rule. Imports only `model/`,
`mqtt/` and `transform.identity` (no decoders, no Pillow).

    from mqtt_bridge.sdk.publisher import Detection, Publisher
    with Publisher(host="broker.plant.local") as pub:
        pub.publish("factory/line1/cam2/detections",
                    detections=[Detection("scratch", 0.91, x=320, y=240, width=40, height=22)],
                    image=jpeg_bytes, metadata={"shift": "B"})
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType

import orjson

from mqtt_bridge.model.receipt import Receipt, parse_receipt
from mqtt_bridge.model.values import JsonDict, JsonValue, format_timestamp
from mqtt_bridge.mqtt.publisher import MqttPublisher
from mqtt_bridge.transform.identity import derive_event_id, message_event_id, namespaced_event_id, own_event_id

__all__ = ["Detection", "Publisher", "Receipt", "build_message"]

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
        self._publisher = MqttPublisher.to_broker(client_id, host=host, port=port, username=username,
                                                  password=password, protocol=protocol)
        self._lock = threading.Lock()
        self._receipt_filters: set[str] = set()
        self._receipts: dict[str, Receipt] = {}
        self._arrived = threading.Condition(self._lock)

    def __enter__(self) -> Publisher:
        self._publisher.connect()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._publisher.close()

    def publish_raw(self, topic: str, payload: bytes, *, wait: bool = True, wait_receipt_s: float | None = None,
                    event_id: str | None = None, route: str | None = None, event_id_field: str | None = None,
                    receipt_topic: str | None = None) -> Receipt | None:
        """Publish bytes as they are (QoS 1).

        With `wait_receipt_s`, wait that long for the bridge's delivery receipt and return it (None on timeout).
        The receipt is matched by eventId, the one the bridge gives the message (`transform.identity`): `event_id`
        (the id the message carries), else the message's own `event_id` field, else the route's `event_id_field`
        (give it when the route has one), else the id derived from the message, which needs the bridge's `route`
        name. An id from the message matches as the route namespaces it (UUIDv5 of the receipt's route and the id)
        or as it is (`event_id_raw` routes). `receipt_topic` defaults to `<topic>/receipt`.
        """
        if wait_receipt_s is None:
            self._publisher.publish(topic, payload, wait=wait)
            return None
        exact: str | None = None
        if event_id is None:
            document = _document(payload)
            event_id = own_event_id(document)
            if event_id is None:
                if route is None:
                    raise ValueError(
                        "waiting for a receipt needs the event_id, an event_id in the message, or the route")
                exact = message_event_id(route, topic, payload, document, id_field=event_id_field)
                if event_id_field:  # the field's value: namespaced (matched below) or raw
                    event_id = message_event_id(route, topic, payload, document, id_field=event_id_field,
                                                raw_ids=True)
        self._listen(receipt_topic or f"{topic}/receipt")
        self._publisher.publish(topic, payload, wait=True)
        return self._await_receipt(_matcher(exact, event_id), wait_receipt_s)

    def _listen(self, receipt_topic: str) -> None:
        with self._lock:
            if receipt_topic in self._receipt_filters:
                return
            self._receipt_filters.add(receipt_topic)
        self._publisher.subscribe(receipt_topic, self._on_receipt)

    def _on_receipt(self, topic: str, payload: bytes) -> None:
        receipt = parse_receipt(payload)
        if receipt is None:
            return
        with self._arrived:
            self._receipts[receipt.event_id] = receipt
            while len(self._receipts) > 10_000:  # receipts nobody waits for
                self._receipts.pop(next(iter(self._receipts)))
            self._arrived.notify_all()

    def _await_receipt(self, match: Callable[[Receipt], bool], timeout_s: float) -> Receipt | None:
        def found() -> str | None:
            return next((key for key, receipt in self._receipts.items() if match(receipt)), None)

        with self._arrived:
            key = self._arrived.wait_for(found, timeout_s)
            return self._receipts.pop(key, None) if key is not None else None

    def publish(self, topic: str, *, wait: bool = True, detections: list[Detection] | None = None,
                image: bytes | None = None, image_name: str | None = None,
                image_size: tuple[int, int] | None = None, event_type: str | None = None,
                event_id: str | None = None, timestamp: datetime | None = None, device_id: str | None = None,
                stream_id: str | None = None, event_data: JsonDict | None = None,
                metadata: JsonDict | None = None, wait_receipt_s: float | None = None,
                receipt_topic: str | None = None) -> Receipt | None:
        """Build a canonical message and publish it (QoS 1).

        With `wait_receipt_s`, wait for the bridge's delivery receipt on `receipt_topic` (default
        `<topic>/receipt`, the route's `receipt_topic` must say the same) and return it, or None on timeout. The
        message then always carries an `event_id` (derived from its content when none is given) to match it.
        """
        stamp = timestamp or datetime.now(tz=UTC)

        def build(with_id: str | None) -> bytes:
            return build_message(detections=detections, image=image, image_name=image_name, image_size=image_size,
                                 event_type=event_type, event_id=with_id, timestamp=stamp, device_id=device_id,
                                 stream_id=stream_id, event_data=event_data, metadata=metadata)

        if wait_receipt_s is None:
            self._publisher.publish(topic, build(event_id), wait=wait)
            return None
        if event_id is None:
            event_id = derive_event_id("publisher", topic, build(None))
        return self.publish_raw(topic, build(event_id), wait_receipt_s=wait_receipt_s, event_id=event_id,
                                receipt_topic=receipt_topic)


def _matcher(exact: str | None, payload_id: str | None) -> Callable[[Receipt], bool]:
    """Whether a receipt is the one for a message: its eventId is `exact`, or `payload_id` as it is or as the
    receipt's route namespaces it."""

    def match(receipt: Receipt) -> bool:
        if receipt.event_id == exact:
            return True
        return payload_id is not None and receipt.event_id in (
            payload_id, namespaced_event_id(receipt.route, payload_id))

    return match


def _document(payload: bytes) -> JsonValue:
    """The parsed payload; None when it is not JSON."""
    try:
        document: JsonValue = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    return document
