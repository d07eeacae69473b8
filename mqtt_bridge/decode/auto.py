"""`format: auto`: pick the decoder per message by the fingerprints of spec/payload-formats.md §8.

Owns: the order of the fingerprints and the `unknown_format` dead letter. Tried in order: Sparkplug B (topic
`spBv1.0/...`), Frigate (a `/snapshot` image, or `/events` with type/before/after), DeepStream full (`mdsversion`
and `object.bbox.topleftx`), DeepStream minimal (`version` "4.0" and pipe-delimited `objects`), DL Streamer
(`objects[].detection.bounding_box` or `resolution` + `objects`), the canonical message (its `schema` marker, or
`detections` of centre boxes), Roboflow (`predictions` with x/y/width/height/class, classification predictions, or
Workflows `outputs`), Ultralytics (a list of `{name, box{x1..}}`), then `generic` when the route has a mapping. The
decoder that ran is recorded as `customMetadata.decoder`. One decoder instance per format keeps its state.
"""

from __future__ import annotations

from mqtt_bridge.config.routes import RouteConfig
from mqtt_bridge.decode import deepstream, dlstreamer, frigate, sparkplug, ultralytics
from mqtt_bridge.decode.base import Decoded, Decoder, DecoderFactory, Message
from mqtt_bridge.decode.canonical import SCHEMA_ID, CanonicalMessage
from mqtt_bridge.errors import DeadLetterReason, DecodeError
from mqtt_bridge.model.values import JsonValue

__all__ = ["AutoDecoder", "detect_format"]

_BOX_KEYS = ("x", "y", "width", "height")
_CANONICAL_KEYS = frozenset(field.alias or name for name, field in CanonicalMessage.model_fields.items())


def _is_canonical(document: JsonValue) -> bool:
    if not isinstance(document, dict):
        return False
    if document.get("schema") == SCHEMA_ID:
        return True
    detections = document.get("detections")
    return (isinstance(detections, list) and document.keys() <= _CANONICAL_KEYS
            and all(isinstance(d, dict) and "class" in d and all(k in d for k in _BOX_KEYS) for d in detections))


def _is_roboflow(document: JsonValue) -> bool:
    if isinstance(document, list):
        return bool(document) and all(isinstance(d, dict) and _is_roboflow(d) for d in document)
    if not isinstance(document, dict):
        return False
    predictions = document.get("predictions")
    if isinstance(predictions, dict):
        return "predicted_classes" in document
    if isinstance(predictions, list):
        return all(isinstance(p, dict) and ("class" in p or "class_name" in p)
                   and ("x" not in p or all(k in p for k in _BOX_KEYS)) and "x_min" not in p for p in predictions)
    return isinstance(document.get("outputs"), list)


def detect_format(topic: str, payload: bytes, document: JsonValue, has_generic: bool) -> str | None:
    """The format name whose fingerprint fits, or None. `document` is None for a payload that is not JSON."""
    if sparkplug.is_sparkplug_topic(topic):
        return "sparkplug"
    if frigate.is_snapshot(topic, payload) or frigate.is_event(topic, document):
        return "frigate"
    if deepstream.is_full(document) or deepstream.is_minimal(document):
        return "deepstream"
    if dlstreamer.is_frame(document):
        return "dlstreamer"
    if _is_canonical(document):
        return "canonical"
    if _is_roboflow(document):
        return "roboflow"
    if ultralytics.is_results(document):
        return "ultralytics"
    if has_generic and document is not None:
        return "generic"
    return None


class AutoDecoder:
    """Detects the format of each message and hands it to that format's decoder."""

    def __init__(self, route: RouteConfig, build_decoder: DecoderFactory) -> None:
        self._route = route
        self._build = build_decoder
        self._decoders: dict[str, Decoder] = {}

    def decode(self, message: Message) -> list[Decoded]:
        """Decode one message with the decoder its fingerprint names; `unknown_format` when none fits."""
        document: JsonValue = None
        is_binary = sparkplug.is_sparkplug_topic(message.topic) or frigate.is_snapshot(message.topic, message.payload)
        if not is_binary:
            document = message.json()
        name = detect_format(message.topic, message.payload, document, self._route.generic is not None)
        if name is None:
            raise DecodeError(DeadLetterReason.UNKNOWN_FORMAT,
                              "no known payload format fits (see spec §8; or give the route a "
                              "`generic` mapping)")
        if name == "sparkplug" and self._route.sparkplug is None:
            raise DecodeError(DeadLetterReason.UNKNOWN_FORMAT,
                              "a Sparkplug B message, but the route has no `sparkplug` mapping")
        decoder = self._decoders.get(name)
        if decoder is None:
            decoder = self._decoders[name] = self._build(name, self._route)
        results = decoder.decode(message)
        for decoded in results:
            decoded.markers["decoder"] = name
        return results
