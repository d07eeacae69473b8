"""Attaching a route's image to what a decoder made of a message: choose it, check it, shrink it, fit the boxes.

Owns, per route (`routes[].image`), the step between decoding and building the event:

1. the image: the one the payload format itself carries (canonical `image.data`, a Workflows image output, ...),
   else the route's reference (`base64_path`, read here; `url`, `file` or `companion`, resolved before ingest);
2. the checks of `images.inspect_image` (type from the bytes, byte and pixel limits, no decompression bomb);
3. the optional downscale / JPEG re-encode (`resize`), with every box, polygon and keypoint scaled by the same
   factors, since the API wants boxes in pixels of the uploaded image (spec/vision-events-api.md §3.3).

A referenced image that is not the frame the boxes refer to (`boxes_fit: false`) goes without boxes. Pure: no I/O;
raises `DecodeError` (dead letter) for an image that must not be sent.
"""

from __future__ import annotations

from mqtt_bridge.config.routes import ImageOptions
from mqtt_bridge.decode.base import Decoded, Message
from mqtt_bridge.decode.fields import base64_image
from mqtt_bridge.errors import DeadLetterReason, DecodeError
from mqtt_bridge.images.checks import ImageLimits, inspect_image, shrink
from mqtt_bridge.model.attachment import Attachment, ReferenceKind
from mqtt_bridge.model.event import MAX_METADATA_KEYS
from mqtt_bridge.model.values import JsonDict, JsonValue, lookup_path

__all__ = ["ImageAttacher", "scale_predictions"]

_BOX_KEYS = ("x", "y", "width", "height")


def _scaled_box(item: JsonDict, sx: float, sy: float) -> JsonDict:
    out = dict(item)
    for key, factor in zip(_BOX_KEYS, (sx, sy, sx, sy), strict=True):
        value = out.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = value * factor
    points = out.get("points")
    if isinstance(points, list):
        moved_points: list[JsonValue] = []
        for point in points:
            if (isinstance(point, list) and len(point) == 2 and isinstance(point[0], int | float)
                    and isinstance(point[1], int | float)):
                moved_points.append([point[0] * sx, point[1] * sy])
            else:
                moved_points.append(point)
        out["points"] = moved_points
    keypoints = out.get("keypoints")
    if isinstance(keypoints, list):
        scaled: list[JsonValue] = []
        for point in keypoints:
            if not isinstance(point, dict):
                scaled.append(point)
                continue
            moved = dict(point)
            for key, factor in (("x", sx), ("y", sy)):
                value = moved.get(key)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    moved[key] = value * factor
            scaled.append(moved)
        out["keypoints"] = scaled
    return out


def scale_predictions(decoded: Decoded, sx: float, sy: float) -> None:
    """Scale every box, polygon and keypoint of `decoded` by `sx`, `sy` (an image resized by those factors)."""
    decoded.detections = [_scaled_box(d, sx, sy) for d in decoded.detections]
    decoded.instance_segmentations = [_scaled_box(d, sx, sy) for d in decoded.instance_segmentations]
    decoded.keypoints = [_scaled_box(d, sx, sy) for d in decoded.keypoints]


class ImageAttacher:
    """One route's image step. Built once per route by the `Ingestor`; called from the intake thread only."""

    def __init__(self, options: ImageOptions) -> None:
        self._options = options
        self._limits = ImageLimits(max_bytes=options.max_bytes, max_pixels=options.max_pixels)

    def referenced(self, message: Message, attachment: Attachment | None) -> Attachment | None:
        """The route's referenced image for `message`: resolved before ingest, or the inline `base64_path`.

        Raises DecodeError for a reference that was refused or failed, or an inline value that is not base64.
        """
        if attachment is not None:
            if attachment.problem is not None:
                raise DecodeError(*attachment.problem)
            return attachment
        path = self._options.base64_path
        if path is None:
            return None
        value = lookup_path(message.json(), path)
        if value is None:
            return None
        return Attachment(ReferenceKind.INLINE, base64_image(value, path))

    def finish(self, decoded: Decoded, referenced: Attachment | None) -> None:
        """Attach, check and shrink the image of one decoded event (in place). Raises DecodeError."""
        is_inline = bool(decoded.image) or (referenced is not None and referenced.kind == ReferenceKind.INLINE)
        if not decoded.image and referenced is not None:
            if referenced.image:
                decoded.image = referenced.image
                decoded.image_name = decoded.image_name or referenced.name
                decoded.boxes_fit_image = self._options.boxes_fit
            elif referenced.missing and len(decoded.metadata) + len(decoded.markers) < MAX_METADATA_KEYS - 2:
                decoded.markers["imageMissing"] = referenced.missing
        if not decoded.image:
            return
        unknown = DeadLetterReason.BAD_IMAGE if is_inline else DeadLetterReason.IMAGE_REJECTED
        info = inspect_image(decoded.image, self._limits, unknown)
        resize = self._options.resize
        if resize is None:
            return
        shrunk = shrink(decoded.image, info, self._limits, resize.max_width, resize.max_height,
                        resize.jpeg_quality, resize.reencode)
        if shrunk is None:
            return
        decoded.image, sx, sy = shrunk
        if decoded.image_name:
            decoded.image_name = decoded.image_name.rsplit(".", 1)[0] + ".jpg"
        if decoded.boxes_fit_image and (sx, sy) != (1.0, 1.0):
            scale_predictions(decoded, sx, sy)
