"""Ingest: one MQTT message (topic bytes, payload bytes) → buffered records, or a dead letter with its reason.

Owns: the order of checks on untrusted input (size cap before parsing, topic encoding, route, JSON, decoder, event
rules), the deterministic `eventId`, and how a decoded message becomes a Vision Event body (per-type `eventData`
defaults of design §7, route templates, confidence filter). Pure: no I/O, no threads, never raises on bad input.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson

from mqtt_bridge.decode import Decoded, get_decoder
from mqtt_bridge.errors import DecodeError
from mqtt_bridge.events import (
    MAX_METADATA_VALUE_CHARS,
    DeadLetter,
    JsonDict,
    JsonValue,
    Record,
    event_problems,
    format_timestamp,
)
from mqtt_bridge.images import sniff_image_type
from mqtt_bridge.routing import CompiledRoute, Router, ValueTemplate, lookup_path

__all__ = ["EVENT_ID_NAMESPACE", "IMAGE_LABEL", "IngestResult", "Ingestor"]

log = logging.getLogger(__name__)

EVENT_ID_NAMESPACE = uuid.UUID("6c1f3a4e-2b7d-5e8f-9a10-4b2c3d4e5f60")
IMAGE_LABEL = "mqtt-vision-bridge"
_DEFAULT_EVENT_TYPE = "quality_check"


@dataclass(slots=True)
class IngestResult:
    """What became of one message: records to buffer, or a dead letter, or nothing (a rule said no event)."""

    records: list[Record] = field(default_factory=list)
    dead_letter: DeadLetter | None = None
    route: str = ""
    dropped_boxes: int = 0


def _event_id(route: str, topic: str, payload: bytes) -> str:
    """UUIDv5 of route, topic and payload bytes: a redelivered message gets the same id, so the API overwrites."""
    digest = hashlib.sha1(EVENT_ID_NAMESPACE.bytes + route.encode() + b"\n" + topic.encode() + b"\n" + payload,
                          usedforsecurity=False).digest()
    return str(uuid.UUID(bytes=digest[:16], version=5))


def _render_fields(fields: dict[str, ValueTemplate | str | int | float | bool], captures: dict[str, str],
                   topic: str, document: JsonValue) -> JsonDict:
    out: JsonDict = {}
    for key, value in fields.items():
        out[key] = value.render(captures, topic, document) if isinstance(value, ValueTemplate) else value
    return out


def _default_event_data(event_type: str, decoded: Decoded) -> JsonDict | None:
    """Per-type `eventData` when neither route nor payload says otherwise; None means "no event" (design §7)."""
    classes = [str(d["class"]) for d in decoded.detections]
    if event_type == "quality_check":
        return {"result": "fail" if classes else "pass"}
    if event_type == "inventory_count":
        data: JsonDict = {"itemCount": len(classes)}
        if classes and len(set(classes)) == 1:
            data["itemType"] = classes[0]
        return data
    if event_type == "safety_alert":
        return {"alertType": classes[0]} if classes else None
    if event_type == "custom":
        return {"value": ",".join(dict.fromkeys(classes))[:MAX_METADATA_VALUE_CHARS] or "none"}
    return {}


class Ingestor:
    """Turns raw messages into records. One instance per service; safe to call from one thread at a time."""

    def __init__(self, router: Router, max_payload_bytes: int) -> None:
        self._router = router
        self._max_payload_bytes = max_payload_bytes

    def process(self, topic: bytes, payload: bytes, received_at_s: float) -> IngestResult:
        """Decode one message. Never raises: every failure becomes a dead letter with a reason."""
        topic_text = topic.decode("utf-8", errors="replace")
        route_label = ""
        try:
            try:
                topic_text = topic.decode("utf-8")
            except UnicodeDecodeError:
                raise DecodeError("topic_not_utf8", "the topic is not valid UTF-8") from None
            route, captures = self._router.match(topic_text)
            route_label = route.label
            if len(payload) > self._max_payload_bytes:
                raise DecodeError("payload_too_large",
                                  f"{len(payload)} bytes, the limit is {self._max_payload_bytes}")
            return self._build(route, captures, topic_text, payload, received_at_s)
        except DecodeError as exc:
            reason, detail = exc.reason, exc.detail
        except Exception as exc:
            log.exception("ingest failed topic=%s route=%s", topic_text[:200], route_label)
            reason, detail = "internal_error", f"{type(exc).__name__}: {exc}"[:500]
        return IngestResult(route=route_label, dead_letter=DeadLetter(
            reason=reason, detail=detail, topic=topic_text, route=route_label, payload=payload,
            received_at_s=received_at_s, dead_at_s=received_at_s))

    def _build(self, route: CompiledRoute, captures: dict[str, str], topic: str, payload: bytes,
               received_at_s: float) -> IngestResult:
        try:
            document: JsonValue = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise DecodeError("invalid_json", str(exc)[:300]) from None
        decoded = get_decoder(route.config.format)(document)
        result = IngestResult(route=route.label, dropped_boxes=decoded.dropped_boxes)
        event = self._event(route, captures, topic, payload, document, decoded, received_at_s)
        if event is None:
            return result
        image = decoded.image
        if image:
            image_type = sniff_image_type(image)
            if image_type is None:
                raise DecodeError("bad_image", "image bytes are not JPEG, PNG, WebP, GIF, TIFF, BMP, HEIC or AVIF")
        problems = event_problems(event, datetime.now(tz=UTC))
        if problems:
            raise DecodeError("invalid_event", "; ".join(problems)[:1000])
        result.records.append(Record(event=event, route=route.label, topic=topic, received_at_s=received_at_s,
                                     image=image, image_name=decoded.image_name))
        return result

    def _event(self, route: CompiledRoute, captures: dict[str, str], topic: str, payload: bytes,
               document: JsonValue, decoded: Decoded, received_at_s: float) -> JsonDict | None:
        config = route.config
        detections = [d for d in decoded.detections if float(d["confidence"] or 0) >= config.min_confidence]  # type: ignore[arg-type]
        if len(detections) > config.max_predictions:
            detections.sort(key=lambda d: float(d["confidence"] or 0), reverse=True)  # type: ignore[arg-type]
            detections = detections[:config.max_predictions]
        decoded.detections = detections
        event_type = decoded.event_type or config.event_type or _DEFAULT_EVENT_TYPE
        event_data = _default_event_data(event_type, decoded)
        route_data = _render_fields(route.event_data, captures, topic, document)
        if event_data is None and not route_data and not decoded.event_data:
            return None
        event_data = {**(event_data or {}), **route_data, **decoded.event_data}

        event_id = decoded.event_id
        if event_id is None and config.event_id_field:
            value = lookup_path(document, config.event_id_field)
            if not isinstance(value, str | int) or isinstance(value, bool) or not str(value):
                raise DecodeError("event_id_missing", f"payload field {config.event_id_field!r} holds no id")
            event_id = str(value)
        stamp = decoded.timestamp or datetime.fromtimestamp(received_at_s, tz=UTC)
        event: JsonDict = {
            "eventId": event_id or _event_id(route.label, topic, payload),
            "eventType": event_type,
            "useCaseId": route.use_case.render(captures, topic, document),
            "timestamp": format_timestamp(stamp),
            "eventData": event_data,
        }
        device = decoded.device_id or (route.device_id.render(captures, topic, document) if route.device_id else None)
        stream = decoded.stream_id or (route.stream_id.render(captures, topic, document) if route.stream_id else None)
        if device:
            event["deviceId"] = device
        if stream:
            event["streamId"] = stream
        metadata = {**_render_fields(route.metadata, captures, topic, document), **decoded.metadata}
        if decoded.image:
            image: JsonDict = {"label": IMAGE_LABEL}
            if detections:
                image["objectDetections"] = list(detections)
            if decoded.classifications:
                image["classifications"] = list(decoded.classifications)
            event["images"] = [image]
            event["displayImagePosition"] = 0
        elif detections or decoded.classifications:
            # The API attaches predictions to images only; without one, keep a summary (README "Events without images")
            labels = [str(d["class"]) for d in (detections or decoded.classifications)]
            metadata.setdefault("detections", len(detections))
            metadata.setdefault("classes", ",".join(dict.fromkeys(labels))[:MAX_METADATA_VALUE_CHARS])
        if metadata:
            event["customMetadata"] = metadata
        return event
