"""Per-route configuration of payload decoders and event typing rules (the `routes[]` sub-sections).

Owns: the pydantic models behind `routes[].generic`, `deepstream`, `frigate`, `ultralytics`, `sparkplug`,
`image_size`, `quality_check`, `safety_alert` and `inventory_count`, and the image references of `routes[].image`
(`url`, `file`, `companion`, `resize`), with their validation and descriptions (they end up in
`config/schema.json`). `config.RouteConfig` composes them. Must not read files or the environment.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, IPvAnyNetwork, model_validator

__all__ = [
    "BOX_CONVENTIONS",
    "JSON_FORMATS",
    "BoxMapping",
    "CompanionImages",
    "DeepStreamOptions",
    "FileReference",
    "FrigateOptions",
    "GenericMapping",
    "ImageSize",
    "InventoryCountRule",
    "QualityCheckRule",
    "ResizeOptions",
    "SafetyAlertRule",
    "SparkplugMetric",
    "SparkplugOptions",
    "UltralyticsOptions",
    "UrlReference",
]

BOX_CONVENTIONS = ("center_xywh", "xyxy", "tl_xywh")
# formats whose messages are JSON documents (a Sparkplug String metric can hold any of them)
JSON_FORMATS = ("canonical", "roboflow", "generic", "deepstream", "ultralytics", "dlstreamer")
_Path = Annotated[str, Field(max_length=256, pattern=r"^[^.\s]*(\.[^.\s]+)*$")]
_Label = Annotated[str, Field(min_length=1, max_length=256)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ImageSize(_Model):
    """The size in pixels of the image the boxes refer to."""

    width: int = Field(..., gt=0, le=100_000, description="Image width, pixels.")
    height: int = Field(..., gt=0, le=100_000, description="Image height, pixels.")


class BoxMapping(_Model):
    """Where a detection's box is and how to read it (spec/payload-formats.md, box conventions)."""

    convention: Literal["center_xywh", "xyxy", "tl_xywh"] = Field(
        "center_xywh", description="center_xywh: centre x/y + width/height; xyxy: corners x1,y1,x2,y2; "
                                   "tl_xywh: top-left x/y + width/height.")
    normalized: bool = Field(False, description=(
        "Coordinates are fractions 0..1 of the image size (then an image size is required: from "
        "image_width_path/image_height_path, routes[].image_size, or the attached image). Never guessed."))
    path: _Path | None = Field(None, description=(
        "Path (in the detection) of a list of four numbers in the order of the convention, e.g. `box` for "
        "[x1, y1, x2, y2]. Use this or `fields`."))
    fields: tuple[_Path, _Path, _Path, _Path] = Field(("x", "y", "width", "height"), description=(
        "Paths (in the detection) of the four numbers, in the order of the convention: x, y, width, height "
        "(center_xywh, tl_xywh) or x1, y1, x2, y2 (xyxy)."))


class GenericMapping(_Model):
    """Field mapping for any JSON: where the detections are and how to read each one. Paths are dotted."""

    detections_path: _Path = Field("detections", description=(
        "Path of the detection list; '' means the document itself. An object there counts as one detection."))
    class_path: _Path = Field("class", description="Path (in a detection) of the class label.")
    confidence_path: _Path | None = Field("confidence", description=(
        "Path (in a detection) of the confidence; null or missing uses default_confidence."))
    default_confidence: float = Field(1.0, ge=0, le=1, description="Confidence when the detection has none.")
    box: BoxMapping | None = Field(default_factory=BoxMapping, description=(
        "The box; null makes every detection a classification of the whole image."))
    image_width_path: _Path | None = Field(None, description="Path (in the document) of the image width.")
    image_height_path: _Path | None = Field(None, description="Path (in the document) of the image height.")
    image_path: _Path | None = Field(None, description=(
        "Path (in the document) of the image as base64 (a data: URI prefix is accepted)."))
    timestamp_path: _Path | None = Field(None, description=(
        "Path (in the document) of the capture time: ISO 8601, Unix seconds or milliseconds."))
    result_path: _Path | None = Field(None, description=(
        "Path (in the document) of a pass/fail verdict (pass, ok, good, true / fail, nok, ng, bad, reject, "
        "false; any case) that becomes eventData.result."))
    metadata_paths: dict[Annotated[str, Field(max_length=100, pattern=r"^[a-zA-Z0-9_ -]+$")], _Path] = Field(
        default_factory=dict, description="customMetadata key → path (in the document) of a scalar value.")


class DeepStreamOptions(_Model):
    """NVIDIA DeepStream nvmsgconv JSON (full and minimal schemas)."""

    default_confidence: float = Field(1.0, ge=0, le=1, description=(
        "Confidence of minimal-schema objects that carry none (no `#` section)."))
    mux_size: ImageSize | None = Field(None, description=(
        "nvstreammux output size. With sensor_sizes, boxes are rescaled from it to each sensor's size "
        "(DeepStream 6.2's new API reports boxes at mux resolution)."))
    sensor_sizes: dict[Annotated[str, Field(min_length=1, max_length=256)], ImageSize] = Field(
        default_factory=dict, description="sensor id → source image size.")


class FrigateOptions(_Model):
    """Frigate NVR `frigate/events` (one event per tracked object)."""

    send_on: Literal["end", "new"] = Field("end", description=(
        "end: one event when the object's track ends, with its final box and score (design §7); new: as soon "
        "as the object is first seen; later messages about it are not sent again."))
    snapshot: bool = Field(True, description=(
        "Attach the latest `<prefix>/<camera>/<label>/snapshot` JPEG (route the snapshot topics here too) as a "
        "display image without boxes: Frigate crops and resizes it, so the boxes do not fit it."))
    snapshot_max_age_s: float = Field(120.0, gt=0, le=86_400, description=(
        "Only attach a snapshot received at most this long before the event message."))


class UltralyticsOptions(_Model):
    """Ultralytics YOLO results JSON (`Results.to_json()`)."""

    normalized: bool = Field(False, description=(
        "Boxes were written with normalize=True (fractions of the image); needs routes[].image_size."))


class SparkplugMetric(_Model):
    """One metric (or metric folder) that becomes an event when a DATA message carries it."""

    name: _Label = Field(..., description=(
        "Metric name as announced in NBIRTH/DBIRTH, or a folder prefix: `Inspection` gathers `Inspection/Class`, "
        "`Inspection/BBox/X`, ... into {Class, BBox: {X}}."))
    format: Literal["generic", "canonical", "roboflow", "deepstream", "ultralytics", "dlstreamer"] = Field(
        "generic", description=(
            "generic: map the metric's value (a DataSet is a list of row objects, a folder or Template an "
            "object) with `generic` below; any other format: the metric is a String holding JSON of that format."))
    generic: GenericMapping | None = Field(None, description=(
        "Mapping of the value (paths relative to it); default: the route's `generic` section."))


class SparkplugOptions(_Model):
    """Sparkplug B (spBv1.0) edge nodes: which metrics are vision results."""

    metrics: list[SparkplugMetric] = Field(..., min_length=1, max_length=100, description=(
        "Metrics that become events, one event per metric present in an NDATA/DDATA message."))
    image_metric: _Label | None = Field(None, description=(
        "Bytes/File metric holding the JPEG/PNG of the inspection (a String metric is kept as imageUrl "
        "metadata; it is not fetched)."))
    metadata_metrics: list[_Label] = Field(default_factory=list, max_length=50, description=(
        "Scalar metrics copied into customMetadata (key: the metric name with / replaced by _)."))


class QualityCheckRule(_Model):
    """How a quality_check result is decided."""

    fail_classes: list[_Label] = Field(..., min_length=1, description=(
        "The result is fail when a detection or classification of one of these classes has at least "
        "min_confidence; else pass."))
    min_confidence: float = Field(0.0, ge=0, le=1, description="Threshold for fail_classes.")


class SafetyAlertRule(_Model):
    """Which classes raise a safety_alert, and how."""

    alert_types: dict[_Label, _Label] = Field(default_factory=dict, description=(
        "class → alertType. The most confident matching detection gives the alert; no match, no event. "
        "Empty: any detection raises an alert named after its class."))
    severity: Literal["low", "medium", "high"] | None = Field(None, description="eventData.severity.")


class InventoryCountRule(_Model):
    """What an inventory_count counts."""

    count_class: _Label = Field(..., description="itemCount is the number of detections of this class (itemType).")



# --- image references (routes[].image; issue 4) ---------------------------------------------------------------

_HOST_PATTERN = r"^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*$|^[0-9A-Fa-f:.]+$"
_TEMPLATE_RE = re.compile(r"\{([^{}]*)\}")


def _one_source(field: str | None, template: str | None, what: str) -> None:
    if (field is None) == (template is None):
        raise ValueError(f"give the {what} as `field` (a payload path) or `template`, exactly one of them")
    if template is not None and not _TEMPLATE_RE.search(template):
        raise ValueError("template has no {placeholder}: every message would name the same image")


class UrlReference(_Model):
    """Fetch the image over HTTP(S) from a URL the message names (a camera snapshot endpoint, an NVR API).

    Only http and https; no user:password@ in the URL. The host must be in `allow_hosts`, and every address it
    resolves to must be public unless it lies in `allow_private_networks` (loopback, private, link-local, CGNAT,
    multicast, reserved and IPv4-mapped addresses are refused otherwise). Every redirect is checked the same way.
    """

    field: _Path | None = Field(None, description="Payload path of the URL (the whole URL), e.g. `snapshot_url`.")
    template: str | None = Field(None, min_length=8, max_length=2048, description=(
        "URL template with {level}, {topic} or {payload.path} placeholders, e.g. "
        "'http://nvr1:5000/api/events/{payload.after.id}/snapshot.jpg'; inserted values are percent-encoded."))
    allow_hosts: list[Annotated[str, Field(max_length=253, pattern=_HOST_PATTERN)]] = Field(
        ..., min_length=1, max_length=1000, description=(
            "Hosts the bridge may fetch from: names (cam1.plant.local), *.suffix wildcards (*.cams.plant.local) "
            "or IP addresses. Anything else is refused (image_url_refused)."))
    allow_private_networks: list[IPvAnyNetwork] = Field(default_factory=list, max_length=1000, description=(
        "Networks (CIDR) whose non-public addresses may be fetched from, e.g. [10.20.0.0/16] for the camera "
        "VLAN or [127.0.0.1/32] for a local test server. Default none: only public addresses."))
    timeout_s: float = Field(5.0, gt=0, le=60, description=(
        "Connect and read timeout, and the longest a whole fetch (with redirects) may take."))
    max_redirects: int = Field(3, ge=0, le=10, description="Redirects followed (each one checked like the URL).")
    ca_file: Path | None = Field(None, description=(
        "CA bundle that signed the cameras' HTTPS certificates; the system store if unset. Never unverified."))

    @model_validator(mode="after")
    def _source(self) -> UrlReference:
        _one_source(self.field, self.template, "URL")
        return self


class FileReference(_Model):
    """Read the image from a file on a shared volume whose path the message names; only under `roots`."""

    field: _Path | None = Field(None, description="Payload path of the file path, e.g. `image_path`.")
    template: str | None = Field(None, min_length=2, max_length=1024, description=(
        "Path template with {level}, {topic} or {payload.path} placeholders, e.g. "
        "'{camera}/{payload.frame_id}.jpg'; an inserted value must be a plain name ([A-Za-z0-9._-], not . or ..)."))
    roots: list[Path] = Field(..., min_length=1, max_length=100, description=(
        "Absolute directories the files must lie under (after resolving symlinks). A relative path in a "
        "message is taken relative to the first one."))

    @model_validator(mode="after")
    def _source(self) -> FileReference:
        _one_source(self.field, self.template, "file path")
        if not all(root.is_absolute() for root in self.roots):
            raise ValueError("roots must be absolute directories")
        return self


class CompanionImages(_Model):
    """Raw image bytes published on a topic of their own, joined to their detection message.

    The detection is held un-acked (the broker keeps it) until its image arrives or `window_s` passes; then it is
    buffered, with the image or without it (counted). An image that finds no detection within the window is
    dropped (counted). Images and detections are paired by key, oldest first.
    """

    topic: str = Field(..., min_length=1, max_length=1024, description=(
        "Topic template of the image messages, e.g. factory/{line}/{camera}/image; subscribed by the bridge. Its "
        "messages are taken before any route sees them."))
    key: str | None = Field(None, max_length=1024, description=(
        "Correlation key of a detection: a template of the route's topic levels, {topic} and {payload.path}, "
        "e.g. '{line}/{camera}/{payload.frame_id}'. Default: the named levels of `topic`, joined by /."))
    image_key: str | None = Field(None, max_length=1024, description=(
        "Correlation key of an image: a template of the levels of `topic` (and {topic}), e.g. "
        "'{line}/{camera}/{frame}'. Default: the same text as `key`."))
    window_s: float = Field(5.0, gt=0, le=600, description=(
        "How long a detection waits for its image (and an image for its detection)."))
    max_parked: int = Field(100, ge=1, le=10_000, description=(
        "Messages of this route held un-acked at most (detections and images); past it the oldest is released: "
        "a detection without its image, an image dropped. Keep the sum over routes below mqtt.receive_maximum."))


class ResizeOptions(_Model):
    """Downscale (and re-encode as JPEG) images before they are buffered; boxes are scaled with them."""

    max_width: int | None = Field(None, gt=0, le=100_000, description="Widest image kept, pixels.")
    max_height: int | None = Field(None, gt=0, le=100_000, description="Tallest image kept, pixels.")
    jpeg_quality: int = Field(85, ge=1, le=95, description="JPEG quality of a downscaled or re-encoded image.")
    reencode: bool = Field(False, description=(
        "Also re-encode images that already fit as JPEG (a PNG/BMP/TIFF always, a JPEG only when smaller)."))

    @model_validator(mode="after")
    def _some_limit(self) -> ResizeOptions:
        if self.max_width is None and self.max_height is None and not self.reencode:
            raise ValueError("give max_width, max_height or reencode: true")
        return self
