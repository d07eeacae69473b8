"""The `routes[]` section: one route per topic template, with its use case, ids, format and images.

Owns: `RouteConfig`, `ImageOptions` and the cross-key checks of a route. Must not do I/O.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    Field,
    model_validator,
)

from mqtt_bridge.config.format_options import (
    DeepStreamOptions,
    FrigateOptions,
    GenericMapping,
    ImageSize,
    InventoryCountRule,
    QualityCheckRule,
    SafetyAlertRule,
    SparkplugOptions,
    UltralyticsOptions,
)
from mqtt_bridge.config.image_options import CompanionImages, FileReference, ResizeOptions, UrlReference
from mqtt_bridge.config.sections import ByteSize, _Model
from mqtt_bridge.decode.names import FORMATS
from mqtt_bridge.model.event import EVENT_TYPES, MAX_PREDICTIONS_PER_LIST

__all__ = ["ImageOptions", "OperatorFeedbackRule", "RouteConfig", "TimestampPolicy"]


class OperatorFeedbackRule(_Model):
    """What an `operator_feedback` event says: which event it is about, the verdict and a note (templates)."""

    related_event_id: str | None = Field(None, min_length=1, max_length=1024, description=(
        "eventData.relatedEventId: the eventId the feedback is about (template, e.g. '{payload.event}'); required "
        "for operator_feedback routes."))
    feedback: str | None = Field(None, min_length=1, max_length=1024, description=(
        "eventData.feedback: correct, incorrect or inconclusive (template; a rendered value outside these is "
        "dead-lettered as invalid_event)."))
    comment: str | None = Field(None, min_length=1, max_length=4096, description=(
        "The event's top-level comment, a free-text note (template)."))


class TimestampPolicy(_Model):
    """Which time an event carries, and what happens to a payload time outside the API's window (one year back to
    tomorrow): a camera or PLC without NTP drifts by days, and the API refuses such an event."""

    source: Literal["payload", "receive"] = Field("payload", description=(
        "payload: the message's own time (the receive time when it has none); receive: always the time the bridge "
        "received the message."))
    out_of_window: Literal["receive", "dead_letter"] = Field("receive", description=(
        "A payload time outside the window. receive: use the receive time instead, keep the original in "
        "customMetadata.sourceTimestamp, count it (mqtt_bridge_timestamps_replaced_total) and warn (rate-limited); "
        "dead_letter: dead-letter the message (invalid_event)."))


class ImageOptions(_Model):
    """Where a route's images come from, and the checks and changes every image of the route goes through.

    An image the payload format itself carries (canonical `image.data`, a Workflows image output, a Sparkplug
    Bytes metric, a Frigate snapshot) is used first; the reference below fills in when the message has none.
    """

    base64_path: Annotated[str, Field(max_length=256, pattern=r"^[^.\s]+(\.[^.\s]+)*$")] | None = Field(
        None, description="Payload path of an inline base64 image (a data: URI prefix is accepted), any format.")
    url: UrlReference | None = Field(None, description="Fetch the image from a URL the message names.")
    file: FileReference | None = Field(None, description="Read the image from a file under allowed roots.")
    companion: CompanionImages | None = Field(None, description="Raw image bytes on a topic of their own.")
    max_bytes: ByteSize = Field(20 * 2**20, description=(
        "Larger images are refused (image_rejected); a URL fetch stops reading there."))
    max_pixels: int = Field(40_000_000, gt=0, le=1_000_000_000, description=(
        "Images with more pixels (width x height, read from the header) are refused as image_rejected; "
        "decompression bombs never get decoded."))
    boxes_fit: bool = Field(True, description=(
        "The referenced image is the frame the boxes refer to. false: it is a crop or thumbnail, sent without "
        "boxes (they are summarised in customMetadata)."))
    resize: ResizeOptions | None = Field(None, description=(
        "Downscale (JPEG re-encode) before buffering; boxes are scaled to the new size. Default: sent as is."))
    on_buffer_full: Literal["stop_acking", "drop_images"] | None = Field(None, description=(
        "This route's choice over the buffer's high-water mark; default: buffer.on_full."))

    @model_validator(mode="after")
    def _one_reference(self) -> ImageOptions:
        given = [name for name in ("base64_path", "url", "file", "companion") if getattr(self, name) is not None]
        if len(given) > 1:
            raise ValueError(f"give one image reference, not {' and '.join(given)}")
        return self


class RouteConfig(_Model):
    """Maps a topic pattern to a use case, a device and a payload format."""

    topic: str = Field(..., min_length=1, max_length=1024, description=(
        "Topic template: {name} matches one level, {name*} (last) the rest; + and # are allowed unnamed."))
    name: str | None = Field(None, max_length=128, description="Route name in logs and metrics; the topic if unset.")
    format: Literal[FORMATS] = Field("canonical", description=(  # type: ignore[valid-type]
        "Payload format: canonical, roboflow, generic (needs `generic`), deepstream, frigate, ultralytics, "
        "sparkplug (needs `sparkplug`), dlstreamer, or auto (detected per message; unknown_format otherwise)."))
    use_case: str = Field(..., min_length=1, max_length=256, description="useCaseId (template).")
    device_id: str | None = Field(None, max_length=256, description="deviceId template, e.g. '{line}-{camera}'.")
    stream_id: str | None = Field(None, max_length=256, description="streamId template.")
    event_type: Literal[EVENT_TYPES] | None = Field(  # type: ignore[valid-type]
        None, description="eventType; the payload's event_type (canonical) or quality_check if unset.")
    event_data: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="eventData fields; string values are templates.")
    metadata: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="customMetadata fields; string values are templates.")
    event_id_field: str | None = Field(None, description=(
        "Payload field holding the event's id (dotted path). Sent as UUIDv5 of route name and value, so that two "
        "routes or devices numbering their messages alike do not overwrite each other (event_id_raw: as it is)."))
    event_id_raw: bool = Field(False, description=(
        "Send an id from the payload (event_id_field, or the canonical message's own event_id) as it is instead of "
        "namespaced by the route; it must then be unique across the workspace (the API overwrites repeats)."))
    timestamp: TimestampPolicy = Field(default_factory=TimestampPolicy, description=(
        "The event's time: the payload's or the receive time, and what to do with a payload time the API would "
        "refuse."))
    receipt_topic: str | None = Field(None, min_length=1, max_length=1024, pattern=r"^[^$+#\x00][^+#\x00]*$",
                                      description=(
        "Publish a delivery receipt {eventId, status, reason, sourceTopic} here (QoS 1) once the event is "
        "delivered or dead-lettered. Template of topic levels and {topic}, e.g. '{topic}/receipt'."))
    min_confidence: float = Field(0.0, ge=0, le=1, description=(
        "Drop predictions (boxes and classifications) below this confidence."))
    max_predictions: int = Field(MAX_PREDICTIONS_PER_LIST, ge=0, le=MAX_PREDICTIONS_PER_LIST,
                                 description="Keep at most this many detections per event (highest confidence).")
    classes: list[Annotated[str, Field(min_length=1, max_length=256)]] | None = Field(None, description=(
        "Keep only predictions of these classes (case-sensitive); all when unset."))
    confidence_scale: Literal["unit", "percent"] = Field("unit", description=(
        "percent: the source sends confidences as 0..100 (divided by 100 before clamping to 0..1). Never guessed."))
    debounce_s: float = Field(0.0, ge=0, le=86_400, description=(
        "Per device, stream and class, send at most one event in this many seconds (0: every message). "
        "Suppressed "
        "messages are counted, not dead-lettered."))
    image_size: ImageSize | None = Field(None, description=(
        "Size of the images the boxes refer to when the payload does not say (normalized boxes need it)."))
    generic: GenericMapping | None = Field(None, description="Field mapping of the generic format.")
    deepstream: DeepStreamOptions = Field(default_factory=DeepStreamOptions, description="DeepStream options.")
    frigate: FrigateOptions = Field(default_factory=FrigateOptions, description="Frigate options.")
    ultralytics: UltralyticsOptions = Field(default_factory=UltralyticsOptions, description="Ultralytics options.")
    sparkplug: SparkplugOptions | None = Field(None, description="Sparkplug B metric mapping.")
    quality_check: QualityCheckRule | None = Field(None, description=(
        "quality_check result rule; default: fail when there is any detection."))
    safety_alert: SafetyAlertRule | None = Field(None, description=(
        "safety_alert rule; default: the first detection's class is the alertType."))
    inventory_count: InventoryCountRule | None = Field(None, description=(
        "inventory_count rule; default: count every detection."))
    operator_feedback: OperatorFeedbackRule | None = Field(None, description=(
        "operator_feedback mapping (relatedEventId, feedback, comment); event_type operator_feedback needs it."))
    image: ImageOptions = Field(default_factory=ImageOptions, description=(
        "Image references (inline base64 path, URL, file, companion topic), checks and resizing."))

    @model_validator(mode="after")
    def _format_sections(self) -> RouteConfig:
        if self.format == "generic" and self.generic is None:
            raise ValueError("format generic needs a `generic` section (detections_path, class_path, box, ...)")
        if self.format == "sparkplug" and self.sparkplug is None:
            raise ValueError("format sparkplug needs a `sparkplug` section with the metrics to map")
        if self.sparkplug is not None and self.generic is None:
            unmapped = [m.name for m in self.sparkplug.metrics if m.format == "generic" and m.generic is None]
            if unmapped:
                raise ValueError(f"sparkplug metrics {unmapped} need a `generic` mapping (on the metric or the route)")
        return self

    @property
    def label(self) -> str:
        """Name used in logs, metrics and dead letters."""
        return self.name or self.topic

