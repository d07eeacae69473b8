"""The bridge's own message format, published by `mqtt-bridge publish` and `mqtt_bridge.publish`.

Owns: the pydantic model of the canonical message (its JSON Schema is shipped as `config/message.schema.json` for
PLC-adjacent software) and its translation into `Decoded`. Boxes are centre-x/y/width/height in pixels of the image.

The model is the one judge of a message, but building it costs more than the rest of ingest (issue 14 item 4), so
the common message is read straight from the parsed dict (`_plain`): it takes only documents that plainly pass
the model's rules (exact JSON types, every limit checked) and hands everything else (a number as a string, an
unknown key, any doubt) to the model, which gives the same verdict, or the error, it always gave.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mqtt_bridge.config.routes import RouteConfig
from mqtt_bridge.decode.base import Decoded, Message, box, clamp_confidence, confidence_factor
from mqtt_bridge.errors import DeadLetterReason, DecodeError
from mqtt_bridge.model.event import EVENT_TYPES
from mqtt_bridge.model.values import JsonDict, JsonValue, parse_timestamp

__all__ = ["CanonicalDecoder", "CanonicalMessage", "decode"]

SCHEMA_ID = "mqtt-vision-bridge/message/v1"
_Str256 = Annotated[str, Field(min_length=1, max_length=256)]
_Finite = Annotated[float, Field(allow_inf_nan=False)]
_Scalar = str | int | float | bool


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Detection(_Strict):
    """One object detection: a box centred on (x, y), in pixels of the image."""

    class_: _Str256 = Field(..., alias="class", description="Class label (case is kept).")
    confidence: _Finite = Field(..., description="0..1; values outside are clamped.")
    x: _Finite = Field(..., description="Box centre x, pixels.")
    y: _Finite = Field(..., description="Box centre y, pixels.")
    width: _Finite = Field(..., description="Box width, pixels.")
    height: _Finite = Field(..., description="Box height, pixels.")


class Classification(_Strict):
    """One classification result for the whole image."""

    class_: _Str256 = Field(..., alias="class", description="Class label.")
    confidence: _Finite = Field(..., description="0..1; values outside are clamped.")


class Image(_Strict):
    """The picture the detections belong to, inline as base64."""

    data: str = Field(..., min_length=4, description="Base64 bytes of a JPEG/PNG/WebP/GIF/BMP/TIFF image.")
    name: str | None = Field(None, max_length=256, description="File name shown in Roboflow.")
    width: int | None = Field(None, gt=0, le=100_000, description="Image width, pixels.")
    height: int | None = Field(None, gt=0, le=100_000, description="Image height, pixels.")


class CanonicalMessage(_Strict):
    """A detection message in the bridge's own format (schema `mqtt-vision-bridge/message/v1`)."""

    schema_: Literal["mqtt-vision-bridge/message/v1"] | None = Field(None, alias="schema",
                                                                     description="Format marker.")
    event_id: _Str256 | None = Field(None, description="Your own unique id; re-sending it overwrites the event.")
    timestamp: str | float | None = Field(None, description="ISO 8601 or Unix seconds; receive time if absent.")
    event_type: Literal[EVENT_TYPES] | None = Field(None, description="Overrides the route's event_type.")  # type: ignore[valid-type]
    device_id: _Str256 | None = Field(None, description="Overrides the route's device_id.")
    stream_id: _Str256 | None = Field(None, description="Overrides the route's stream_id.")
    event_data: dict[str, _Scalar] = Field(default_factory=dict, description="eventData fields (camelCase).")
    metadata: dict[str, _Scalar] = Field(default_factory=dict, max_length=100, description="customMetadata.")
    detections: list[Detection] = Field(default_factory=list, max_length=10_000, description="Object detections.")
    classifications: list[Classification] = Field(default_factory=list, max_length=1000,
                                                  description="Image-level classes.")
    image: Image | None = Field(None, description="The picture, inline.")


def _image_bytes(image: Image) -> bytes:
    data = image.data
    if data.startswith("data:"):
        data = data.partition(",")[2]
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise DecodeError(DeadLetterReason.BAD_IMAGE, "image.data is not valid base64") from exc


_KEYS = frozenset(field.alias or name for name, field in CanonicalMessage.model_fields.items())
_DETECTION_KEYS = frozenset({"class", "confidence", "x", "y", "width", "height"})
_CLASSIFICATION_KEYS = frozenset({"class", "confidence"})
_EVENT_TYPE_SET = frozenset(EVENT_TYPES)
_SCALARS = (str, int, float, bool)
_NUMBERS = (float, int)  # exact types: a bool is not a coordinate here (the model decides about it)


def _is_label(value: object) -> bool:
    return type(value) is str and 0 < len(value) <= 256


def _is_optional_label(document: dict[str, JsonValue], key: str) -> bool:
    value = document.get(key)
    return value is None or _is_label(value)


def _is_finite(value: object) -> bool:
    return (type(value) is float and math.isfinite(value)) or type(value) is int


def _is_scalar_map(value: object, max_keys: int) -> bool:
    return (type(value) is dict and len(value) <= max_keys
            and all(type(k) is str and type(v) in _SCALARS for k, v in value.items()))


def _plain_boxes(items: list[JsonValue], factor: float, out: Decoded) -> bool:
    """The detections of a plainly valid message as `objectDetections` items; False when any needs the model."""
    detections = out.detections
    numbers = _NUMBERS
    for item in items:
        if type(item) is not dict or item.keys() != _DETECTION_KEYS or not _is_label(item["class"]):
            return False
        det: dict[str, Any] = item  # the types are checked right here, one by one
        x, y, width, height, confidence = det["x"], det["y"], det["width"], det["height"], det["confidence"]
        # one isfinite for five numbers: a non-finite one, or a sum too large, goes to the model
        if (type(x) not in numbers or type(y) not in numbers or type(width) not in numbers
                or type(height) not in numbers or type(confidence) not in numbers
                or not math.isfinite(x + y + width + height + confidence)):
            return False
        if width <= 0 or height <= 0:  # what `box` drops, counted
            out.dropped_boxes += 1
            continue
        score = float(confidence) * factor  # finite (checked above): `clamp_confidence`, inlined (once per box)
        detections.append({"class": det["class"], "x": float(x), "y": float(y), "width": float(width),
                           "height": float(height), "confidence": 1.0 if score > 1.0 else score if score > 0.0
                           else 0.0})
    return True


def _plain(document: JsonValue, factor: float) -> Decoded | None:
    """`decode` for a message that plainly passes the model, without building it; None: let the model judge."""
    if type(document) is not dict or "image" in document or not _KEYS.issuperset(document):
        return None
    schema, stamp, event_type = document.get("schema"), document.get("timestamp"), document.get("event_type")
    detections = document.get("detections", [])
    classifications = document.get("classifications", [])
    metadata, event_data = document.get("metadata", {}), document.get("event_data", {})
    is_known_type = event_type is None or (type(event_type) is str and event_type in _EVENT_TYPE_SET)
    if not ((schema is None or schema == SCHEMA_ID) and is_known_type
            and (stamp is None or type(stamp) is str or (type(stamp) is float and math.isfinite(stamp)))
            and _is_optional_label(document, "event_id") and _is_optional_label(document, "device_id")
            and _is_optional_label(document, "stream_id") and _is_scalar_map(metadata, 100)
            and _is_scalar_map(event_data, 2**31) and type(detections) is list and len(detections) <= 10_000
            and type(classifications) is list and len(classifications) <= 1000):
        return None
    out = Decoded(event_type=event_type, device_id=document.get("device_id"),  # type: ignore[arg-type]
                  stream_id=document.get("stream_id"), event_id=document.get("event_id"))  # type: ignore[arg-type]
    if not _plain_boxes(detections, factor, out):
        return None
    for item in classifications:
        if (type(item) is not dict or item.keys() != _CLASSIFICATION_KEYS or not _is_label(item["class"])
                or not _is_finite(item["confidence"])):
            return None
        confidence: Any = item["confidence"]  # a finite float or an int, checked above
        out.classifications.append({"class": item["class"], "confidence": clamp_confidence(float(confidence) * factor)})
    if stamp is not None:
        out.timestamp = parse_timestamp(stamp)
        if out.timestamp is None:
            raise DecodeError(DeadLetterReason.BAD_TIMESTAMP, "timestamp is neither ISO 8601 nor a Unix time")
    out.event_data = dict(event_data)  # type: ignore[arg-type]
    out.metadata = dict(metadata)  # type: ignore[arg-type]
    return out


def decode(document: JsonValue, factor: float = 1.0) -> Decoded:
    """Translate a parsed canonical message. Raises DecodeError naming the first invalid field.

    `factor` scales confidences before clamping (0.01 for a route with `confidence_scale: percent`).
    """
    try:
        plain = _plain(document, factor)
    except OverflowError:  # an integer beyond a float: the model says what it makes of it
        plain = None
    if plain is not None:
        return plain
    return _judged(document, factor)


def _judged(document: JsonValue, factor: float) -> Decoded:
    """`decode` by the model: any message `_plain` is not sure of."""
    try:
        message = CanonicalMessage.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(message)"
        raise DecodeError(DeadLetterReason.INVALID_MESSAGE,
                          f"{where}: {first['msg']} ({exc.error_count()} problem(s))") from None
    out = Decoded(event_type=message.event_type, device_id=message.device_id, stream_id=message.stream_id,
                  event_id=message.event_id)
    if message.timestamp is not None:
        out.timestamp = parse_timestamp(message.timestamp)
        if out.timestamp is None:
            raise DecodeError(DeadLetterReason.BAD_TIMESTAMP, "timestamp is neither ISO 8601 nor a Unix time")
    for det in message.detections:
        item = box(det.class_, det.x, det.y, det.width, det.height, det.confidence * factor)
        if item is None:
            out.dropped_boxes += 1
        else:
            out.detections.append(item)
    out.classifications = [{"class": c.class_, "confidence": clamp_confidence(c.confidence * factor)}
                           for c in message.classifications]
    event_data: JsonDict = dict(message.event_data)
    out.event_data = event_data
    metadata: JsonDict = dict(message.metadata)
    out.metadata = metadata
    if message.image is not None:
        out.image = _image_bytes(message.image)
        out.image_name = message.image.name or ""
    return out


class CanonicalDecoder:
    """The canonical format as a route decoder: one message, one event."""

    def __init__(self, route: RouteConfig) -> None:
        self._factor = confidence_factor(route)

    def decode(self, message: Message) -> list[Decoded]:
        """Decode one canonical message."""
        return [decode(message.json(), self._factor)]
