"""Payload decoders: one module per format, registered here by name.

Owns: the `Decoded` shape every decoder returns (detections as centre-x/y/width/height pixel boxes, classifications,
and what the message says about time, type, device, ids and image), and the name → decoder registry. A decoder
takes the parsed JSON document and raises `DecodeError` for anything it cannot use. Must not do I/O.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from mqtt_bridge.errors import DecodeError
from mqtt_bridge.events import JsonDict, JsonValue

__all__ = ["DECODERS", "Decoded", "Decoder", "box", "clamp_confidence", "get_decoder"]


@dataclass(slots=True)
class Decoded:
    """What one message says, in Vision Event terms, before the route's templates are applied."""

    detections: list[JsonDict] = field(default_factory=list)
    classifications: list[JsonDict] = field(default_factory=list)
    timestamp: datetime | None = None
    event_type: str | None = None
    event_data: JsonDict = field(default_factory=dict)
    metadata: JsonDict = field(default_factory=dict)
    device_id: str | None = None
    stream_id: str | None = None
    event_id: str | None = None
    image: bytes = b""
    image_name: str = ""
    dropped_boxes: int = 0


Decoder = Callable[[JsonValue], Decoded]


def clamp_confidence(value: float) -> float:
    """Clamp a confidence to [0, 1] (design §7: percentages need the route to say so, never guessed)."""
    return min(1.0, max(0.0, value))


def box(label: str, x: float, y: float, width: float, height: float, confidence: float) -> JsonDict | None:
    """Build one `objectDetections` item from a centre box in pixels.

    Returns None for a zero-area or inverted box (the caller counts it). Raises DecodeError for NaN or infinite
    coordinates (design §7: such a message is dead-lettered).
    """
    for name, value in (("x", x), ("y", y), ("width", width), ("height", height), ("confidence", confidence)):
        if not math.isfinite(value):
            raise DecodeError("bad_box", f"{name} of a {label!r} detection is not a finite number")
    if width <= 0 or height <= 0:
        return None
    return {"class": label, "x": x, "y": y, "width": width, "height": height,
            "confidence": clamp_confidence(confidence)}


def _registry() -> dict[str, Decoder]:
    from mqtt_bridge.decode import canonical, roboflow  # noqa: PLC0415 - the decoders import this module

    return {"canonical": canonical.decode, "roboflow": roboflow.decode}


DECODERS: tuple[str, ...] = ("canonical", "roboflow")
_CACHE: dict[str, Decoder] = {}


def get_decoder(name: str) -> Decoder:
    """Return the decoder registered under `name`. Raises KeyError for an unknown name."""
    if not _CACHE:
        _CACHE.update(_registry())
    return _CACHE[name]
