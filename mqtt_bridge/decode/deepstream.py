"""NVIDIA DeepStream nvmsgconv JSON: the full schema (payload-type 0) and the minimal schema (payload-type 1).

Owns: the translation of both schemas (spec/payload-formats.md §2) into `Decoded`. Full: one object per message,
its class is the one non-standard key of `object` (`vehicle`/`person`/`face` on the legacy path, the detector label
on the new API), the box is `bbox{topleftx..bottomrighty}` corners in pixels. Minimal: one frame per message with
`objects` as `trackingId|left|top|right|bottom|label[|#|attributes...|confidence]` strings. The sensor id becomes
the streamId. Boxes can be rescaled from the nvstreammux size to the sensor's size (`routes[].deepstream`), because
DeepStream 6.2's new API reports mux-resolution boxes. The protobuf payload (type 2) is not decoded.
"""

from __future__ import annotations

import re

from mqtt_bridge.config.format_options import DeepStreamOptions
from mqtt_bridge.config.routes import RouteConfig
from mqtt_bridge.decode.base import Decoded, Message, confidence_factor
from mqtt_bridge.decode.fields import add_box, center_box, number, optional_text, timestamp
from mqtt_bridge.errors import DeadLetterReason, DecodeError
from mqtt_bridge.model.values import JsonDict, JsonValue

__all__ = ["DeepStreamDecoder", "is_full", "is_minimal"]

_STANDARD_KEYS = frozenset({"id", "speed", "direction", "orientation", "bbox", "location", "coordinate",
                            "signature", "maskoutline", "embedding", "pose"})
_UNTRACKED = "18446744073709551615"  # max uint64: DeepStream's id of an untracked object
_METADATA_KEY_RE = re.compile(r"^[a-zA-Z0-9_ -]{1,100}$")
_MIN_FIELDS = 6
_MAX_METADATA_CHARS = 1000


def is_full(document: JsonValue) -> bool:
    """Fingerprint of the full schema: `mdsversion` and `object.bbox.topleftx` (spec §8)."""
    if not isinstance(document, dict) or "mdsversion" not in document:
        return False
    obj = document.get("object")
    bbox = obj.get("bbox") if isinstance(obj, dict) else None
    return isinstance(bbox, dict) and "topleftx" in bbox


def is_minimal(document: JsonValue) -> bool:
    """Fingerprint of the minimal schema: `version == "4.0"` and `objects` of pipe-delimited strings (spec §8)."""
    if not isinstance(document, dict) or document.get("version") != "4.0":
        return False
    objects = document.get("objects")
    return isinstance(objects, list) and all(isinstance(o, str) and "|" in o for o in objects)


class DeepStreamDecoder:
    """DeepStream JSON (full or minimal schema, told apart per message) as a route decoder."""

    def __init__(self, route: RouteConfig) -> None:
        self._options: DeepStreamOptions = route.deepstream
        self._factor = confidence_factor(route)

    def decode(self, message: Message) -> list[Decoded]:
        """Decode one message: one event per full-schema object, or one per minimal-schema frame."""
        document = message.json()
        if not isinstance(document, dict):
            raise DecodeError(DeadLetterReason.INVALID_MESSAGE, "a DeepStream message must be a JSON object")
        if "objects" in document and "object" not in document:
            return [self._minimal(document)]
        return [self._full(document)]

    def _scale(self, sensor: str | None) -> tuple[float, float]:
        mux = self._options.mux_size
        size = self._options.sensor_sizes.get(sensor) if sensor is not None else None
        if mux is None or size is None:
            return 1.0, 1.0
        return size.width / mux.width, size.height / mux.height

    def _add(self, out: Decoded, label: str, corners: tuple[float, float, float, float], confidence: float) -> None:
        sx, sy = self._scale(out.stream_id)
        left, top, right, bottom = corners
        add_box(out, label, center_box("xyxy", (left * sx, top * sy, right * sx, bottom * sy)), confidence)

    def _full(self, document: JsonDict) -> Decoded:
        obj = document.get("object")
        if not isinstance(obj, dict):
            raise DecodeError(DeadLetterReason.INVALID_MESSAGE, "object must be an object (DeepStream full schema)")
        out = Decoded(timestamp=timestamp(document.get("@timestamp"), "@timestamp"))
        sensor = document.get("sensor")
        out.stream_id = optional_text(sensor.get("id")) if isinstance(sensor, dict) else None
        classes = [k for k, v in obj.items() if k not in _STANDARD_KEYS and isinstance(v, dict)]
        if not classes:
            raise DecodeError(DeadLetterReason.INVALID_MESSAGE,
                              "object has no class key (e.g. \"scratch\": {\"confidence\": ...})")
        label = next((k for k in classes if "confidence" in obj[k]), classes[0])  # type: ignore[operator]
        if len(label) > 256:
            raise DecodeError(DeadLetterReason.INVALID_MESSAGE, "object class key is longer than 256 characters")
        attributes = obj[label]
        assert isinstance(attributes, dict)
        raw_confidence = attributes.get("confidence")
        confidence = (self._options.default_confidence if raw_confidence is None
                      else number(raw_confidence, f"object.{label[:40]}.confidence") * self._factor)
        bbox = obj.get("bbox")
        if not isinstance(bbox, dict):
            raise DecodeError(DeadLetterReason.INVALID_MESSAGE, "object.bbox must be an object")
        corners = tuple(number(bbox.get(k), f"object.bbox.{k}")
                        for k in ("topleftx", "toplefty", "bottomrightx", "bottomrighty"))
        self._add(out, label, (corners[0], corners[1], corners[2], corners[3]), confidence)
        for key, value in attributes.items():
            if (key != "confidence" and _METADATA_KEY_RE.match(key) and value != ""
                    and isinstance(value, str | int | float)):
                out.metadata[key] = value[:_MAX_METADATA_CHARS] if isinstance(value, str) else value
        tracking = optional_text(obj.get("id"))
        if tracking is not None and tracking != _UNTRACKED:
            out.metadata["trackingId"] = tracking
        video = document.get("videoPath")
        if isinstance(video, str) and video:
            out.metadata["videoPath"] = video[:_MAX_METADATA_CHARS]
        return out

    def _minimal(self, document: JsonDict) -> Decoded:
        objects = document.get("objects")
        if not isinstance(objects, list):
            raise DecodeError(DeadLetterReason.INVALID_MESSAGE, "objects must be a list (DeepStream minimal schema)")
        out = Decoded(timestamp=timestamp(document.get("@timestamp"), "@timestamp"),
                      stream_id=optional_text(document.get("sensorId")))
        tracking_ids: list[str] = []
        for index, entry in enumerate(objects):
            where = f"objects[{index}]"
            if not isinstance(entry, str):
                raise DecodeError(DeadLetterReason.INVALID_MESSAGE, f"{where} must be a pipe-delimited string")
            parts = entry.split("|")
            if len(parts) < _MIN_FIELDS or not parts[5] or len(parts[5]) > 256:
                raise DecodeError(DeadLetterReason.INVALID_MESSAGE,
                                  f"{where} must be trackingId|left|top|right|bottom|label")
            try:
                corners = (float(parts[1]), float(parts[2]), float(parts[3]), float(parts[4]))
                confidence = (float(parts[-1]) * self._factor if len(parts) > _MIN_FIELDS + 1 and parts[6] == "#"
                              else self._options.default_confidence)
            except ValueError:
                raise DecodeError(DeadLetterReason.INVALID_MESSAGE,
                                  f"{where} has a coordinate or confidence that is not a number") from None
            self._add(out, parts[5], corners, confidence)
            if parts[0] and parts[0] != _UNTRACKED:
                tracking_ids.append(parts[0])
        frame = optional_text(document.get("id"))
        if frame is not None:
            out.metadata["frameId"] = frame
        if tracking_ids:
            out.metadata["trackingIds"] = ",".join(tracking_ids)[:_MAX_METADATA_CHARS]
        return out
