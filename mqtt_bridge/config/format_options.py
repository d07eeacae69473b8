"""Per-route options of the payload decoders and the event typing rules (`routes[].generic`, `.frigate`, ...).

Owns: their pydantic models and the box conventions. Must not do I/O.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from mqtt_bridge.decode.names import JSON_FORMATS

__all__ = [
    "BOX_CONVENTIONS",
    "BoxMapping",
    "DeepStreamOptions",
    "FrigateOptions",
    "GenericMapping",
    "ImageSize",
    "InventoryCountRule",
    "QualityCheckRule",
    "SafetyAlertRule",
    "SparkplugMetric",
    "SparkplugOptions",
    "UltralyticsOptions",
]


BOX_CONVENTIONS = ("center_xywh", "xyxy", "tl_xywh")




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
    format: Literal[JSON_FORMATS] = Field(  # type: ignore[valid-type]
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

