"""What every decoder shares: the `Message` it reads, the `Decoded` it returns, the `Decoder` contract, boxes.

A decoder turns one message into zero or more `Decoded` (Frigate: one per tracked object; Sparkplug: one per
mapped metric) and raises `DecodeError`, never anything else, for what it cannot use. Must not do I/O.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import orjson

from mqtt_bridge.config.routes import RouteConfig
from mqtt_bridge.errors import DeadLetterReason, DecodeError
from mqtt_bridge.model.values import JsonDict, JsonValue

__all__ = ["Decoded", "Decoder", "DecoderFactory", "Message", "box", "clamp_confidence", "confidence_factor"]


@dataclass(slots=True)
class Decoded:
    """What one message (or one object or metric of it) says, in Vision Event terms, before the route's templates.

    `key` is a stable id of the thing the event is about (a Frigate object id): the eventId is derived from it, so
    later messages about the same thing overwrite one event. `document` is what `{payload.…}` templates read when
    the payload is not JSON (Sparkplug). `boxes_fit_image` is False when the attached image is not the frame the
    boxes refer to (a cropped snapshot): the image is then sent without boxes. `metadata` and `event_data` are what
    the message says (the route's own keys win over them); `markers` are the bridge's own notes, which a payload
    cannot write.
    """

    detections: list[JsonDict] = field(default_factory=list)
    classifications: list[JsonDict] = field(default_factory=list)
    instance_segmentations: list[JsonDict] = field(default_factory=list)
    keypoints: list[JsonDict] = field(default_factory=list)
    timestamp: datetime | None = None
    event_type: str | None = None
    event_data: JsonDict = field(default_factory=dict)
    metadata: JsonDict = field(default_factory=dict)
    markers: JsonDict = field(default_factory=dict)  # customMetadata the bridge writes (BRIDGE_METADATA_KEYS)
    device_id: str | None = None
    stream_id: str | None = None
    event_id: str | None = None
    key: str | None = None
    document: JsonValue = None
    image: bytes = b""
    image_name: str = ""
    boxes_fit_image: bool = True
    dropped_boxes: int = 0


class Message:
    """One received message as a decoder sees it: the topic, the raw payload, and the payload parsed as JSON.

    `image` is the route's referenced image (`routes[].image`: a URL, file, companion topic or base64 path),
    when there is one: a decoder that needs the image size for normalized boxes may read it from there.
    """

    __slots__ = ("_document", "_is_parsed", "image", "payload", "received_at_s", "topic")

    def __init__(self, topic: str, payload: bytes, received_at_s: float = 0.0, image: bytes = b"") -> None:
        self.topic = topic
        self.payload = payload
        self.received_at_s = received_at_s
        self.image = image
        self._document: JsonValue = None
        self._is_parsed = False

    def json(self) -> JsonValue:
        """The payload parsed as JSON (once). Raises DecodeError `invalid_json`."""
        if not self._is_parsed:
            try:
                self._document = orjson.loads(self.payload)
            except orjson.JSONDecodeError as exc:
                raise DecodeError(DeadLetterReason.INVALID_JSON, str(exc)[:300]) from None
            self._is_parsed = True
        return self._document


class Decoder(Protocol):
    """Turns one message into zero or more `Decoded`; raises DecodeError (only) for what it cannot use."""

    def decode(self, message: Message) -> list[Decoded]:
        """Decode `message`."""
        ...


def clamp_confidence(value: float) -> float:
    """Clamp a confidence to [0, 1] (design §7: percentages need the route to say so, never guessed)."""
    return min(1.0, max(0.0, value))


def confidence_factor(route: RouteConfig) -> float:
    """What a source's confidences are multiplied by before clamping: 0.01 for `confidence_scale: percent`."""
    return 0.01 if route.confidence_scale == "percent" else 1.0


def box(label: str, x: float, y: float, width: float, height: float, confidence: float) -> JsonDict | None:
    """Build one `objectDetections` item from a centre box in pixels.

    Returns None for a zero-area or inverted box (the caller counts it). Raises DecodeError for NaN or infinite
    coordinates (design §7: such a message is dead-lettered).
    """
    if not math.isfinite(x + y + width + height + confidence):  # one check for the common box; then which one
        for name, value in (("x", x), ("y", y), ("width", width), ("height", height), ("confidence", confidence)):
            if not math.isfinite(value):
                raise DecodeError(DeadLetterReason.BAD_BOX, f"{name} of a {label!r} detection is not a finite number")
    if width <= 0 or height <= 0:
        return None
    return {"class": label, "x": x, "y": y, "width": width, "height": height,
            "confidence": clamp_confidence(confidence)}



DecoderFactory = Callable[[str, RouteConfig], Decoder]
"""Builds the decoder of a format name for a route: what the nesting decoders (`auto`, `sparkplug`) are handed."""
