"""Ingest: one MQTT message (topic bytes, payload bytes) → buffered records, or a dead letter with its reason.

Owns: the order of checks on untrusted input (size cap before parsing, topic encoding, route, decoder, event
rules), one decoder instance per route (some keep state: Sparkplug aliases, Frigate snapshots), the debounce state,
and how a decoded message becomes a Vision Event body (route templates, the typing rules and filters of `rules`, the
eventId of `identity`, the route's timestamp policy: a payload time outside the API's window becomes the receive
time, the original kept in `customMetadata.sourceTimestamp`, unless the route says `dead_letter`; the route's
metadata and eventData win over the payload's, and the bridge's markers over both: issue 16 item 5). Pure: no I/O,
no threads, never raises on bad input.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from mqtt_bridge.decode.base import Decoded, Decoder, Message
from mqtt_bridge.decode.registry import build_decoder
from mqtt_bridge.errors import DeadLetterReason, DecodeError
from mqtt_bridge.images.attach import ImageAttacher
from mqtt_bridge.model.attachment import Attachment
from mqtt_bridge.model.event import (
    BRIDGE_METADATA_KEYS,
    MAX_METADATA_KEYS,
    MAX_METADATA_VALUE_CHARS,
    event_problems,
    timestamp_in_window,
)
from mqtt_bridge.model.record import DeadLetter, Record
from mqtt_bridge.model.values import JsonDict, JsonValue, format_timestamp
from mqtt_bridge.routing.router import CompiledRoute, Router
from mqtt_bridge.routing.templates import ValueTemplate
from mqtt_bridge.transform.identity import event_id_for
from mqtt_bridge.transform.rules import Debouncer, event_classes, event_data_for, filter_predictions, located

__all__ = ["IMAGE_LABEL", "SOURCE_TIMESTAMP_KEY", "IngestResult", "Ingestor"]

log = logging.getLogger(__name__)

IMAGE_LABEL = "mqtt-vision-bridge"
SOURCE_TIMESTAMP_KEY = "sourceTimestamp"  # customMetadata key of a payload time the receive time replaced
_DEFAULT_EVENT_TYPE = "quality_check"
_REPLACED_WARNING_EVERY_S = 60.0  # per route, at most one warning about replaced timestamps in this time


@dataclass(slots=True)
class IngestResult:
    """What became of one message: records to buffer, or a dead letter, or nothing (a rule said no event)."""

    records: list[Record] = field(default_factory=list)
    dead_letter: DeadLetter | None = None
    route: str = ""
    dropped_boxes: int = 0
    suppressed: int = 0  # events held back by the route's debounce (counted, never dead-lettered)
    keys_dropped: int = 0  # payload customMetadata keys dropped for a marker's name (BRIDGE_METADATA_KEYS)
    timestamps_replaced: int = 0  # payload times outside the API's window replaced by the receive time
    # per record without an image for its boxes: the predictions the API cannot take (shown by dry runs only)
    unattached: list[JsonDict] = field(default_factory=list)


def _render_fields(fields: dict[str, ValueTemplate | str | int | float | bool], captures: dict[str, str],
                   topic: str, document: JsonValue) -> JsonDict:
    out: JsonDict = {}
    for key, value in fields.items():
        out[key] = value.render(captures, topic, document) if isinstance(value, ValueTemplate) else value
    return out


def _merged_metadata(route_metadata: JsonDict, decoded: Decoded) -> tuple[JsonDict, list[str]]:
    """customMetadata of an event: the payload's keys, the route's over them, the bridge's markers over both.

    A payload key named like a marker (`BRIDGE_METADATA_KEYS`) is dropped and returned, so a message can neither
    replace what the route set (a plant, a topic-captured line) nor forge the bridge's notes (issue 16 item 5).
    """
    if BRIDGE_METADATA_KEYS.isdisjoint(decoded.metadata):  # nearly every message: nothing to drop, no copy
        return {**decoded.metadata, **route_metadata, **decoded.markers}, []
    forged = sorted(key for key in decoded.metadata if key in BRIDGE_METADATA_KEYS)
    payload = {key: value for key, value in decoded.metadata.items() if key not in BRIDGE_METADATA_KEYS}
    return {**payload, **route_metadata, **decoded.markers}, forged


def _prediction_lists(decoded: Decoded, *, with_classifications: bool = True) -> JsonDict:
    """The non-empty prediction lists of an `images[]` entry, by their API names."""
    lists: JsonDict = {}
    for key, items in (("objectDetections", decoded.detections),
                       ("instanceSegmentations", decoded.instance_segmentations),
                       ("keypoints", decoded.keypoints),
                       ("classifications", decoded.classifications if with_classifications else [])):
        if items:
            lists[key] = list(items)
    return lists


class Ingestor:
    """Turns raw messages into records. One instance per service; safe to call from one thread at a time."""

    def __init__(self, router: Router, max_payload_bytes: int,
                 clock: Callable[[], datetime] | None = None, *, collect_unattached: bool = False) -> None:
        """`clock` gives "now" for the API's timestamp window (tests and dry runs pin it). With
        `collect_unattached`, results also list the predictions that had no image to go on (for dry runs; the
        bridge itself does not need them, so it does not build them)."""
        self._collect_unattached = collect_unattached
        self._router = router
        self._max_payload_bytes = max_payload_bytes
        self._clock = clock or (lambda: datetime.now(tz=UTC))
        self._decoders: dict[int, Decoder] = {r.index: build_decoder(r.config.format, r.config) for r in router.routes}
        self._attachers = {r.index: ImageAttacher(r.config.image) for r in router.routes}
        self._debouncer = Debouncer()
        self._replaced_warned: dict[str, tuple[float, int]] = {}  # route -> (last warning at, replaced since)

    def process(self, topic: bytes, payload: bytes, received_at_s: float,
                attachment: Attachment | None = None) -> IngestResult:
        """Decode one message. Never raises: every failure becomes a dead letter with a reason.

        `attachment` is the image the message refers to, resolved before ingest (`references`: URL, file or
        companion topic), or the reason it could not be.
        """
        topic_text = topic.decode("utf-8", errors="replace")
        route_label = ""
        try:
            try:
                topic_text = topic.decode("utf-8")
            except UnicodeDecodeError:
                raise DecodeError(DeadLetterReason.TOPIC_NOT_UTF8, "the topic is not valid UTF-8") from None
            route, captures = self._router.match(topic_text)
            route_label = route.label
            if len(payload) > self._max_payload_bytes:
                raise DecodeError(DeadLetterReason.PAYLOAD_TOO_LARGE,
                                  f"{len(payload)} bytes, the limit is {self._max_payload_bytes}")
            return self._build(route, captures, topic_text, payload, received_at_s, attachment)
        except DecodeError as exc:
            reason, detail = exc.reason, exc.detail
        except Exception as exc:
            log.exception("ingest failed topic=%s route=%s", topic_text[:200], route_label)
            reason, detail = DeadLetterReason.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}"[:500]
        return IngestResult(route=route_label, dead_letter=DeadLetter(
            reason=reason, detail=detail, topic=topic_text, route=route_label, payload=payload,
            received_at_s=received_at_s, dead_at_s=received_at_s))

    def _build(self, route: CompiledRoute, captures: dict[str, str], topic: str, payload: bytes,
               received_at_s: float, attachment: Attachment | None = None) -> IngestResult:
        message = Message(topic, payload, received_at_s)
        attacher = self._attachers[route.index]
        referenced = attacher.referenced(message, attachment)  # routes[].image (issue 4); None for most routes
        if referenced is not None:
            message.image = referenced.image
        results = self._decoders[route.index].decode(message)
        outcome = IngestResult(route=route.label, dropped_boxes=sum(d.dropped_boxes for d in results))
        now = self._clock()
        for index, decoded in enumerate(results):
            if decoded.image or referenced is not None:
                attacher.finish(decoded, referenced)  # checks (type, size, bombs), resize + box scaling
            document = decoded.document if decoded.document is not None else message.json()
            stamp, original = self._timestamp(route, decoded, received_at_s, now)
            event = self._event(route, captures, message, document, decoded, index, len(results), stamp)
            if event is None:
                continue
            if not BRIDGE_METADATA_KEYS.isdisjoint(decoded.metadata):
                outcome.keys_dropped += sum(1 for key in decoded.metadata if key in BRIDGE_METADATA_KEYS)
            if original is not None:
                metadata = event.setdefault("customMetadata", {})
                assert isinstance(metadata, dict)
                metadata[SOURCE_TIMESTAMP_KEY] = original
                outcome.timestamps_replaced += 1
            if route.config.debounce_s > 0 and self._debouncer.is_suppressed(
                    route.label, str(event.get("deviceId", "")), str(event.get("streamId", "")),
                    event_classes(decoded), received_at_s, route.config.debounce_s):
                outcome.suppressed += 1
                continue
            problems = event_problems(event, now, stamp=stamp)  # the time it holds is `stamp`, formatted
            if problems:
                raise DecodeError(DeadLetterReason.INVALID_EVENT, "; ".join(problems)[:1000])
            outcome.records.append(Record(event=event, route=route.label, topic=topic, received_at_s=received_at_s,
                                          image=decoded.image, image_name=decoded.image_name))
            if self._collect_unattached and not (decoded.image and decoded.boxes_fit_image):
                lists = _prediction_lists(decoded, with_classifications=not decoded.image)
                if lists:
                    outcome.unattached.append({"eventId": event["eventId"], **lists})
        if outcome.timestamps_replaced:
            self._warn_replaced(route.label, outcome.timestamps_replaced, received_at_s, now)
        return outcome

    @staticmethod
    def _timestamp(route: CompiledRoute, decoded: Decoded, received_at_s: float,
                   now: datetime) -> tuple[datetime, str | None]:
        """The event's time by the route's policy, and the payload time it replaced (None when not replaced)."""
        received = datetime.fromtimestamp(received_at_s, tz=UTC)
        policy = route.config.timestamp
        stamp = decoded.timestamp
        if policy.source == "receive" or stamp is None:
            return received, None
        if policy.out_of_window == "receive" and not timestamp_in_window(stamp, now):
            return received, format_timestamp(stamp)
        return stamp, None  # in the window, or `dead_letter`: the event rules refuse it

    def _warn_replaced(self, route: str, count: int, received_at_s: float, now: datetime) -> None:
        """Warn about replaced payload times, at most once a minute per route (with the count since the last)."""
        last_s, pending = self._replaced_warned.get(route, (float("-inf"), 0))
        pending += count
        if received_at_s - last_s < _REPLACED_WARNING_EVERY_S:
            self._replaced_warned[route] = (last_s, pending)
            return
        self._replaced_warned[route] = (received_at_s, 0)
        log.warning("payload timestamps outside the API's window (one year back to tomorrow, now=%s) replaced by "
                    "the receive time route=%s count=%d; the original is in customMetadata.%s (set the route's "
                    "timestamp.out_of_window: dead_letter to refuse them instead)", format_timestamp(now), route,
                    pending, SOURCE_TIMESTAMP_KEY)

    def _event(self, route: CompiledRoute, captures: dict[str, str], message: Message, document: JsonValue,
               decoded: Decoded, index: int, count: int, stamp: datetime) -> JsonDict | None:
        config = route.config
        topic = message.topic
        filter_predictions(decoded, config)
        event_type = decoded.event_type or config.event_type or _DEFAULT_EVENT_TYPE
        event_data = event_data_for(event_type, decoded, config)
        route_data = _render_fields(route.event_data, captures, topic, document)
        if event_data is None and not route_data and not decoded.event_data:
            return None
        # The route wins over the payload (issue 16 item 5): a message may add fields, not replace the route's.
        event_data = {**(event_data or {}), **decoded.event_data, **route_data}
        comment = None
        if event_type == "operator_feedback" and route.feedback:
            mapped = {key: template.render(captures, topic, document) for key, template in route.feedback.items()}
            comment = mapped.pop("comment", None)
            event_data.update(mapped)
        event: JsonDict = {
            "eventId": event_id_for(route.label, topic, message.payload, document, own_id=decoded.event_id,
                                    id_field=config.event_id_field, key=decoded.key, index=index, count=count,
                                    raw_ids=config.event_id_raw),
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
        metadata, forged = _merged_metadata(_render_fields(route.metadata, captures, topic, document), decoded)
        boxes = located(decoded)
        if decoded.image:
            image: JsonDict = {"label": IMAGE_LABEL}
            if decoded.boxes_fit_image:
                image.update(_prediction_lists(decoded))
            elif decoded.classifications:
                image["classifications"] = list(decoded.classifications)
            event["images"] = [image]
            event["displayImagePosition"] = 0
        if (boxes and not (decoded.image and decoded.boxes_fit_image)) or (
                decoded.classifications and not decoded.image):
            # The API attaches predictions to images only; without one, keep a summary
            # (config/README.md "Events without images")
            labels = [str(d["class"]) for d in (boxes or decoded.classifications)]
            metadata.setdefault("detections", len(boxes))
            metadata.setdefault("classes", ",".join(dict.fromkeys(labels))[:MAX_METADATA_VALUE_CHARS])
        if forged and len(metadata) < MAX_METADATA_KEYS:
            metadata["droppedKeys"] = ",".join(forged)[:MAX_METADATA_VALUE_CHARS]
        if metadata:
            event["customMetadata"] = metadata
        if comment:
            event["comment"] = comment
        return event
