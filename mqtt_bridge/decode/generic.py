"""Any JSON, read through the route's field mapping (`routes[].generic`).

Owns: turning a document into `Decoded` by configured dotted paths: the detection list, class, confidence and box
of each detection (any convention of spec/payload-formats.md, pixels or normalized), the image size (from the
payload, `routes[].image_size` or the attached image), an inline base64 image, the timestamp, a pass/fail verdict
and metadata fields. This is how factory payloads (Cognex, Keyence, MERLIC, Basler, Node-RED, ...) are covered
without a decoder of their own (spec §7-§8). Must not do I/O.
"""

from __future__ import annotations

from mqtt_bridge.config.format_options import GenericMapping, ImageSize
from mqtt_bridge.config.routes import RouteConfig
from mqtt_bridge.decode.base import Decoded, Message, clamp_confidence, confidence_factor
from mqtt_bridge.decode.fields import add_box, base64_image, center_box, number, size_from, text, timestamp
from mqtt_bridge.errors import DeadLetterReason, DecodeError
from mqtt_bridge.images.checks import image_size
from mqtt_bridge.model.values import JsonValue, lookup_path

__all__ = ["GenericDecoder", "decode_mapped"]

_PASS = frozenset({"pass", "passed", "ok", "good", "true", "1", "accept", "accepted"})
_FAIL = frozenset({"fail", "failed", "nok", "ng", "bad", "false", "0", "reject", "rejected", "defect"})
_MAX_METADATA_CHARS = 1000


def _verdict(value: JsonValue, where: str) -> str:
    word = str(value).lower() if isinstance(value, bool | int | str) else ""
    if word in _PASS:
        return "pass"
    if word in _FAIL:
        return "fail"
    raise DecodeError(DeadLetterReason.INVALID_MESSAGE,
                      f"{where} must be a pass/fail verdict (pass, ok, fail, nok, ...)")


def _items(document: JsonValue, path: str) -> list[JsonValue]:
    found = lookup_path(document, path)
    if found is None:
        return []
    if isinstance(found, dict):
        return [found]
    if isinstance(found, list):
        return found
    raise DecodeError(DeadLetterReason.INVALID_MESSAGE, f"{path or '(document)'} must be a list of detections")


def _size(document: JsonValue, mapping: GenericMapping, default: ImageSize | None,
          image: bytes) -> tuple[float, float] | None:
    if mapping.image_width_path and mapping.image_height_path:
        found = size_from(lookup_path(document, mapping.image_width_path),
                          lookup_path(document, mapping.image_height_path))
        if found is not None:
            return found
    if default is not None:
        return float(default.width), float(default.height)
    if image:
        read = image_size(image)
        if read is not None:
            return float(read[0]), float(read[1])
    return None


def decode_mapped(document: JsonValue, mapping: GenericMapping, factor: float = 1.0,
                  default_size: ImageSize | None = None, referenced_image: bytes = b"") -> Decoded:
    """Translate `document` by `mapping`. Raises DecodeError naming the field that does not fit.

    `referenced_image` (the route's `image` reference) gives the size of normalized boxes when nothing else does.
    """
    out = Decoded()
    if mapping.image_path:
        raw_image = lookup_path(document, mapping.image_path)
        if raw_image is not None:
            out.image = base64_image(raw_image, mapping.image_path)
    if mapping.timestamp_path:
        out.timestamp = timestamp(lookup_path(document, mapping.timestamp_path), mapping.timestamp_path)
    if mapping.result_path:
        verdict = lookup_path(document, mapping.result_path)
        if verdict is not None:
            out.event_data["result"] = _verdict(verdict, mapping.result_path)
    for key, path in mapping.metadata_paths.items():
        value = lookup_path(document, path)
        if isinstance(value, str):
            out.metadata[key] = value[:_MAX_METADATA_CHARS]
        elif isinstance(value, bool | int | float):
            out.metadata[key] = value
    box_mapping = mapping.box
    size: tuple[float, float] | None = None
    if box_mapping is not None and box_mapping.normalized:
        size = _size(document, mapping, default_size, out.image or referenced_image)
    for index, item in enumerate(_items(document, mapping.detections_path)):
        where = f"{mapping.detections_path or '(document)'}[{index}]"
        label = text(lookup_path(item, mapping.class_path), f"{where}.{mapping.class_path}")
        raw_confidence = lookup_path(item, mapping.confidence_path) if mapping.confidence_path else None
        confidence = (mapping.default_confidence if raw_confidence is None
                      else number(raw_confidence, f"{where}.{mapping.confidence_path}") * factor)
        if box_mapping is None:
            out.classifications.append({"class": label, "confidence": clamp_confidence(confidence)})
            continue
        if box_mapping.path is not None:
            raw = lookup_path(item, box_mapping.path)
            if not isinstance(raw, list) or len(raw) != 4:
                raise DecodeError(DeadLetterReason.INVALID_MESSAGE,
                                  f"{where}.{box_mapping.path} must be a list of four numbers")
            values = tuple(number(v, f"{where}.{box_mapping.path}[{i}]") for i, v in enumerate(raw))
        else:
            values = tuple(number(lookup_path(item, p), f"{where}.{p}") for p in box_mapping.fields)
        a, b, c, d = values
        center = center_box(box_mapping.convention, (a, b, c, d), is_normalized=box_mapping.normalized, size=size)
        add_box(out, label, center, confidence)
    return out


class GenericDecoder:
    """The generic field-mapping format as a route decoder (one event per message)."""

    def __init__(self, route: RouteConfig) -> None:
        self._factor = confidence_factor(route)
        self._size = route.image_size
        self._mapping = route.generic

    def decode(self, message: Message) -> list[Decoded]:
        """Decode one message with the route's `generic` mapping."""
        if self._mapping is None:
            raise DecodeError(DeadLetterReason.UNKNOWN_FORMAT, "the route has no `generic` mapping for this payload")
        return [decode_mapped(message.json(), self._mapping, self._factor, self._size, message.image)]
