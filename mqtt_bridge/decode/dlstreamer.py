"""Intel DL Streamer `gvametaconvert` JSON, as `gvametapublish method=mqtt` sends it (one frame per message).

Owns: the translation of spec/payload-formats.md §6 into `Decoded`. The box comes from the normalized
`detection.bounding_box{x_min, x_max, y_min, y_max}` scaled by `resolution` (else `routes[].image_size`), or from the
pixel ROI `x, y, w, h` (top-left) when there is no size; the class is `detection.label` (else `roi_type`).
Full-frame classification objects (no `detection`) become classifications; attribute results of detected objects
become metadata. streamId is the `source` URI without credentials; the timestamp is `system_timestamp` (the
`timestamp` field is stream time in ns, kept as metadata).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

from mqtt_bridge.config.routes import RouteConfig
from mqtt_bridge.decode.base import Decoded, Message, clamp_confidence, confidence_factor
from mqtt_bridge.decode.fields import add_box, center_box, number, size_from, text, timestamp
from mqtt_bridge.errors import DeadLetterReason, DecodeError
from mqtt_bridge.model.values import JsonValue

__all__ = ["DlStreamerDecoder", "is_frame", "stream_from_source"]

_ROI_KEYS = frozenset({"x", "y", "w", "h", "region_id", "id", "roi_type", "detection", "extra_params", "tensors"})
_METADATA_KEY_RE = re.compile(r"^[a-zA-Z0-9_ -]{1,100}$")


def is_frame(document: JsonValue) -> bool:
    """Fingerprint: `objects[].detection.bounding_box.x_min`, or `resolution` with `objects` (spec §8)."""
    if not isinstance(document, dict) or not isinstance(document.get("objects"), list):
        return False
    if isinstance(document.get("resolution"), dict):
        return True
    for item in document["objects"]:  # type: ignore[union-attr]
        detection = item.get("detection") if isinstance(item, dict) else None
        bbox = detection.get("bounding_box") if isinstance(detection, dict) else None
        if isinstance(bbox, dict) and "x_min" in bbox:
            return True
    return False


def stream_from_source(source: JsonValue) -> str | None:
    """The `source` URI as a streamId, without user name and password (RTSP URIs often carry them)."""
    if not isinstance(source, str) or not source:
        return None
    try:
        parts = urlsplit(source)
        if parts.username is not None or parts.password is not None:
            host = parts.hostname or ""
            source = urlunsplit(parts._replace(netloc=f"{host}:{parts.port}" if parts.port else host))
    except ValueError:
        return None
    return source[:256]


class DlStreamerDecoder:
    """DL Streamer frame JSON as a route decoder (one event per frame)."""

    def __init__(self, route: RouteConfig) -> None:
        self._factor = confidence_factor(route)
        self._default_size = (float(route.image_size.width), float(route.image_size.height)) \
            if route.image_size else None

    def decode(self, message: Message) -> list[Decoded]:
        """Decode one frame."""
        document = message.json()
        if not isinstance(document, dict):
            raise DecodeError(DeadLetterReason.INVALID_MESSAGE, "a DL Streamer frame must be a JSON object")
        objects = document.get("objects", [])
        if not isinstance(objects, list):
            raise DecodeError(DeadLetterReason.INVALID_MESSAGE, "objects must be a list")
        resolution = document.get("resolution")
        size = size_from(resolution.get("width"), resolution.get("height")) if isinstance(resolution, dict) else None
        out = Decoded(timestamp=timestamp(document.get("system_timestamp"), "system_timestamp"),
                      stream_id=stream_from_source(document.get("source")))
        attributes: dict[str, list[str]] = {}
        for index, item in enumerate(objects):
            self._object(out, item, f"objects[{index}]", size or self._default_size, attributes)
        for name, labels in attributes.items():
            out.metadata[name] = ",".join(labels)[:1000]
        pts = document.get("timestamp")
        if isinstance(pts, int) and not isinstance(pts, bool):
            out.metadata["ptsNs"] = pts
        tags = document.get("tags")
        if isinstance(tags, dict):
            for key, value in tags.items():
                if _METADATA_KEY_RE.match(key) and isinstance(value, str | int | float) and key not in out.metadata:
                    out.metadata[key] = value[:1000] if isinstance(value, str) else value
        return [out]

    def _object(self, out: Decoded, item: JsonValue, where: str, size: tuple[float, float] | None,
                attributes: dict[str, list[str]]) -> None:
        if not isinstance(item, dict):
            raise DecodeError(DeadLetterReason.INVALID_MESSAGE, f"{where} must be an object")
        results = {k: v for k, v in item.items()
                   if k not in _ROI_KEYS and isinstance(v, dict) and isinstance(v.get("label"), str)}
        detection = item.get("detection")
        if not isinstance(detection, dict):
            for name, result in results.items():  # full-frame classification
                label = text(result.get("label"), f"{where}.{name[:40]}.label")
                confidence = result.get("confidence")
                value = 1.0 if confidence is None else number(confidence, f"{where}.{name[:40]}.confidence")
                out.classifications.append({"class": label, "confidence": clamp_confidence(value * self._factor)})
            return
        label = text(detection.get("label", item.get("roi_type")), f"{where}.detection.label")
        raw_confidence = detection.get("confidence")
        confidence = 1.0 if raw_confidence is None else number(raw_confidence, f"{where}.detection.confidence")
        bbox = detection.get("bounding_box")
        if isinstance(bbox, dict) and size is not None:
            values = tuple(number(bbox.get(k), f"{where}.detection.bounding_box.{k}")
                           for k in ("x_min", "y_min", "x_max", "y_max"))
            center = center_box("xyxy", (values[0], values[1], values[2], values[3]), is_normalized=True, size=size)
        elif all(k in item for k in ("x", "y", "w", "h")):
            values = tuple(number(item.get(k), f"{where}.{k}") for k in ("x", "y", "w", "h"))
            center = center_box("tl_xywh", (values[0], values[1], values[2], values[3]))
        else:
            raise DecodeError(DeadLetterReason.BAD_BOX,
                              f"{where} has neither a pixel ROI (x, y, w, h) nor a resolution for "
                              "its normalized bounding_box")
        add_box(out, label, center, confidence * self._factor)
        for name, result in results.items():
            if _METADATA_KEY_RE.match(name):
                attributes.setdefault(name, []).append(str(result["label"]))

