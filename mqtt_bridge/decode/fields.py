"""Reading untrusted JSON values for the decoders, and the box conventions.

Owns: typed access to fields of a parsed payload that raises `DecodeError("invalid_message")` naming the field
(dotted paths are read with `model.values.lookup_path`), the conversion of every box convention (centre-xywh,
corners, top-left-xywh; pixels or normalized) to the centre-x/y/width/height pixel boxes of the Vision Events API,
and inline base64 images. Must not do I/O.
"""

from __future__ import annotations

import base64
import binascii
import math
from datetime import datetime

from mqtt_bridge.decode.base import Decoded, box
from mqtt_bridge.errors import DeadLetterReason, DecodeError
from mqtt_bridge.model.values import JsonDict, JsonValue, parse_timestamp

__all__ = [
    "add_box",
    "base64_image",
    "center_box",
    "number",
    "optional_text",
    "size_from",
    "text",
    "timestamp",
]

_MAX_LABEL_CHARS = 256


def number(value: JsonValue, where: str) -> float:
    """A JSON number as a float. Raises DecodeError `invalid_message` for anything else (booleans too)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DecodeError(DeadLetterReason.INVALID_MESSAGE, f"{where} must be a number")
    result = float(value)
    if not math.isfinite(result):
        raise DecodeError(DeadLetterReason.BAD_BOX, f"{where} is not a finite number")
    return result


def text(value: JsonValue, where: str) -> str:
    """A class label or id: a string of 1..256 characters, or an integer (written as a string)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str) or not value or len(value) > _MAX_LABEL_CHARS:
        raise DecodeError(DeadLetterReason.INVALID_MESSAGE,
                          f"{where} must be a string of 1..{_MAX_LABEL_CHARS} characters")
    return value


def optional_text(value: JsonValue) -> str | None:
    """A string or integer id as a string of at most 256 characters, or None when it is anything else."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and 0 < len(value) <= _MAX_LABEL_CHARS:
        return value
    return None


def timestamp(value: JsonValue, where: str) -> datetime | None:
    """Parse an ISO 8601 / Unix time; None when absent. Raises DecodeError `bad_timestamp` when unusable."""
    if value is None:
        return None
    parsed = parse_timestamp(value)
    if parsed is None:
        raise DecodeError(DeadLetterReason.BAD_TIMESTAMP, f"{where} is neither ISO 8601 nor a Unix time")
    return parsed


def size_from(width: JsonValue, height: JsonValue) -> tuple[float, float] | None:
    """An image size from two JSON values, when both are positive numbers."""
    if isinstance(width, bool) or isinstance(height, bool):
        return None
    if (isinstance(width, int | float) and isinstance(height, int | float) and width > 0 and height > 0
            and math.isfinite(width) and math.isfinite(height)):
        return float(width), float(height)
    return None


def center_box(convention: str, values: tuple[float, float, float, float], *, is_normalized: bool = False,
               size: tuple[float, float] | None = None) -> tuple[float, float, float, float]:
    """Convert four numbers in `convention` to centre x, y, width, height in pixels.

    `center_xywh` passes through; `xyxy` is corners (w = x2 - x1, x = x1 + w/2); `tl_xywh` is the top-left corner
    plus size. Normalized values are multiplied by the image `size` (required then; DecodeError without it).
    """
    a, b, c, d = values
    if is_normalized:
        if size is None:
            raise DecodeError(DeadLetterReason.BAD_BOX,
                              "normalized boxes need the image size (payload, image_size or the image)")
        width_px, height_px = size
        a, b, c, d = a * width_px, b * height_px, c * width_px, d * height_px
    if convention == "xyxy":
        width, height = c - a, d - b
        return a + width / 2, b + height / 2, width, height
    if convention == "tl_xywh":
        return a + c / 2, b + d / 2, c, d
    return a, b, c, d


def add_box(out: Decoded, label: str, center: tuple[float, float, float, float], confidence: float,
            extra: JsonDict | None = None) -> JsonDict | None:
    """Append a detection (or count it as dropped when it has no area); returns the item appended."""
    item = box(label, *center, confidence)
    if item is None:
        out.dropped_boxes += 1
        return None
    if extra:
        item.update(extra)
    out.detections.append(item)
    return item


def base64_image(value: JsonValue, where: str) -> bytes:
    """Decode an inline base64 image (a `data:` URI prefix is accepted). Raises DecodeError `bad_image`."""
    if not isinstance(value, str) or not value:
        raise DecodeError(DeadLetterReason.BAD_IMAGE, f"{where} must be a base64 string")
    data = value.partition(",")[2] if value.startswith("data:") else value
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise DecodeError(DeadLetterReason.BAD_IMAGE, f"{where} is not valid base64") from exc
