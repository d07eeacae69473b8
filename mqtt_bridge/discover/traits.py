"""What one heard message is: its payload format (the auto-detect of `decode/`) and where its image is.

Owns: classifying a single message for `discover`: raw image bytes (a companion image topic), the detection format
by `decode.auto.detect_format`, an image carried inline (the format's decoder finds one), as base64 in a JSON
field, as a URL or as a file path in a field; and the scalar fields of a JSON payload (by dotted path), from which
`survey` finds the field that pairs a detection with its companion image. Pure: decodes in memory, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache

import orjson

from mqtt_bridge.config.routes import RouteConfig
from mqtt_bridge.decode import frigate, sparkplug
from mqtt_bridge.decode.auto import detect_format
from mqtt_bridge.decode.base import Message
from mqtt_bridge.decode.registry import build_decoder
from mqtt_bridge.errors import DecodeError
from mqtt_bridge.images.checks import sniff_image_type
from mqtt_bridge.model.values import JsonValue

__all__ = ["RAW_IMAGE", "ImageKind", "Traits", "inspect_message", "scalar_fields"]

RAW_IMAGE = "image"  # the `format` of a message whose whole payload is an image
_MAX_FIELDS = 300
_MAX_DEPTH = 6
_IMAGE_PATH_RE = re.compile(r"^(/|[A-Za-z]:\\)[^\x00]*\.(jpe?g|png|bmp|webp|tiff?|gif)$", re.IGNORECASE)
_BASE64_IMAGE_PREFIXES = ("/9j/", "iVBORw0KGgo", "data:image/")
_MIN_BASE64_CHARS = 64


class ImageKind(StrEnum):
    """Where a message's image is (the `images` column of discover's table)."""

    NONE = "none"
    INLINE = "inline"  # the format's decoder takes it from the payload
    BASE64 = "base64"  # a base64 string in a JSON field: routes[].image.base64_path
    URL = "url"  # a field names an http(s) URL: routes[].image.url
    FILE = "file"  # a field names an image file path: routes[].image.file
    RAW = "raw"  # the payload is the image: a companion topic of some detection topic
    COMPANION = "companion"  # detections whose image comes on a companion topic (set by `survey`)


@dataclass(slots=True)
class Traits:
    """What discover learnt from one message."""

    format: str | None  # a format name of `decode.names`, RAW_IMAGE, or None when nothing fits
    image: ImageKind = ImageKind.NONE
    image_field: str | None = None  # the dotted path of a base64/url/file image
    image_reference: str | None = None  # the URL or file path it held
    fields: dict[str, str] = field(default_factory=dict)  # scalar JSON fields, for companion keys

    @property
    def kind(self) -> str:
        """What groups topics into one pattern: the format and where the image is."""
        return f"{self.format or 'unknown'}:{self.image.value}:{self.image_field or ''}"


@lru_cache(maxsize=16)
def _probe_route(format_name: str) -> RouteConfig:
    """A throwaway route for running a decoder on one message (formats that need a mapping are not probed)."""
    return RouteConfig.model_validate({"topic": "#", "use_case": "discover", "format": format_name})


def scalar_fields(document: JsonValue) -> dict[str, str]:
    """The scalar fields of a JSON object by dotted path (objects only, not lists), as text; bounded."""
    out: dict[str, str] = {}

    def walk(node: JsonValue, prefix: str, depth: int) -> None:
        if not isinstance(node, dict) or depth > _MAX_DEPTH:
            return
        for key, value in node.items():
            if len(out) >= _MAX_FIELDS:
                return
            path = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(value, dict):
                walk(value, path, depth + 1)
            elif isinstance(value, str | int) and not isinstance(value, bool):
                out[path] = str(value)

    walk(document, "", 0)
    return out


def _is_url(value: str) -> bool:
    return value.startswith(("http://", "https://")) and len(value) < 2048


def _is_image_path(value: str) -> bool:
    return len(value) < 1024 and _IMAGE_PATH_RE.match(value) is not None


def _is_base64_image(value: str) -> bool:
    return len(value) >= _MIN_BASE64_CHARS and value.startswith(_BASE64_IMAGE_PREFIXES)


_REFERENCE_TESTS: tuple[tuple[ImageKind, Callable[[str], bool]], ...] = (
    (ImageKind.URL, _is_url), (ImageKind.FILE, _is_image_path), (ImageKind.BASE64, _is_base64_image))


def _reference_in(fields: dict[str, str]) -> tuple[ImageKind, str, str] | None:
    """The first field that holds an image URL, file path or base64 image, in that order of preference."""
    for kind, test in _REFERENCE_TESTS:
        for path, value in fields.items():
            if test(value):
                return kind, path, value if kind != ImageKind.BASE64 else ""
    return None


def _has_inline_image(format_name: str, topic: str, payload: bytes) -> bool:
    """Whether the format's own decoder finds an image in the payload (canonical `image`, Frigate snapshots...)."""
    try:
        decoder = build_decoder(format_name, _probe_route(format_name))
        return any(decoded.image for decoded in decoder.decode(Message(topic, payload, 0.0)))
    except DecodeError:  # a probe only: a message the decoder refuses simply shows no inline image
        return False


def inspect_message(topic: str, payload: bytes) -> Traits:
    """Classify one message. Never raises."""
    if sparkplug.is_sparkplug_topic(topic):
        return Traits("sparkplug")
    if not frigate.is_snapshot(topic, payload) and sniff_image_type(payload) is not None:
        return Traits(RAW_IMAGE, ImageKind.RAW)
    document: JsonValue = None
    if not frigate.is_snapshot(topic, payload):
        try:
            document = orjson.loads(payload)
        except orjson.JSONDecodeError:
            document = None
    format_name = detect_format(topic, payload, document, False)
    fields = scalar_fields(document)
    traits = Traits(format_name, fields=fields)
    if format_name is not None and _has_inline_image(format_name, topic, payload):
        traits.image = ImageKind.INLINE
        return traits
    reference = _reference_in(fields)
    if reference is not None:
        traits.image, traits.image_field, reference_text = reference
        traits.image_reference = reference_text or None
    return traits
