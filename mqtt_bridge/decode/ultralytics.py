"""Ultralytics YOLO results JSON (`Results.to_json()` / `summary()`), bare or wrapped.

Owns: the translation of spec/payload-formats.md §4 into `Decoded`: a top-level list of `{name, class, confidence,
box{x1, y1, x2, y2}}` (OBB boxes `x1..x4, y1..y4` become their axis-aligned hull), optional `track_id`,
`segments{x[], y[]}` (→ instance segmentation) and `keypoints{x[], y[], visible[]}` (→ keypoints); classification
results without a box; wrappers `{"predictions"|"detections"|"results": [...], "image": <base64>}` and the HUB
shape `{"images": [{"results": [...], "shape": [h, w]}]}` (one event per image). `class` is an integer id, so the
label is `name`. Normalized output (`normalize=True`) is only assumed when the route says so.
"""

from __future__ import annotations

from mqtt_bridge.config.routes import RouteConfig
from mqtt_bridge.decode.base import Decoded, Message, box, clamp_confidence, confidence_factor
from mqtt_bridge.decode.fields import base64_image, number, optional_text, size_from, text
from mqtt_bridge.errors import DeadLetterReason, DecodeError
from mqtt_bridge.images.checks import image_size
from mqtt_bridge.model.values import JsonValue

__all__ = ["UltralyticsDecoder", "is_results"]

_WRAPPER_KEYS = ("predictions", "detections", "results")
_MIN_POLYGON_POINTS = 3


def is_results(document: JsonValue) -> bool:
    """Fingerprint: a list of dicts with `name` and `box.x1`, bare or under predictions/detections/results."""
    items = document
    if isinstance(document, dict):
        items = next((document[k] for k in _WRAPPER_KEYS if isinstance(document.get(k), list)), None)
    if not isinstance(items, list) or not items:
        return False
    first = items[0]
    return (isinstance(first, dict) and "name" in first and isinstance(first.get("box"), dict)
            and "x1" in first["box"])  # type: ignore[operator]


def _series(raw: JsonValue, axis: str, where: str) -> list[float]:
    values = raw.get(axis) if isinstance(raw, dict) else None
    if not isinstance(values, list):
        raise DecodeError(DeadLetterReason.INVALID_MESSAGE, f"{where}.{axis} must be a list of numbers")
    return [number(v, f"{where}.{axis}[{i}]") for i, v in enumerate(values)]


class UltralyticsDecoder:
    """Ultralytics results JSON as a route decoder."""

    def __init__(self, route: RouteConfig) -> None:
        self._factor = confidence_factor(route)
        self._is_normalized = route.ultralytics.normalized
        self._size = (float(route.image_size.width), float(route.image_size.height)) if route.image_size else None

    def decode(self, message: Message) -> list[Decoded]:
        """Decode one message: one event per image (usually one)."""
        document = message.json()
        if isinstance(document, dict) and isinstance(document.get("images"), list):
            results = []
            for index, entry in enumerate(document["images"]):  # type: ignore[arg-type]
                if not isinstance(entry, dict):
                    raise DecodeError(DeadLetterReason.INVALID_MESSAGE, f"images[{index}] must be an object")
                shape = entry.get("shape")
                size = size_from(shape[1], shape[0]) if isinstance(shape, list) and len(shape) >= 2 else None
                results.append(self._results(entry.get("results"), f"images[{index}].results", b"", size,
                                             message.image))
            return results
        if isinstance(document, list):
            return [self._results(document, "(list)", b"", None, message.image)]
        if not isinstance(document, dict):
            raise DecodeError(DeadLetterReason.INVALID_MESSAGE,
                              "an Ultralytics message must be a list of results or an object")
        key = next((k for k in _WRAPPER_KEYS if k in document), None)
        if key is None:
            raise DecodeError(DeadLetterReason.INVALID_MESSAGE,
                              "no results list (a top-level list, or predictions/detections/results)")
        raw_image = document.get("image")
        image = base64_image(raw_image, "image") if isinstance(raw_image, str) else b""
        return [self._results(document[key], key, image, None, message.image)]

    def _results(self, items: JsonValue, where: str, image: bytes, size: tuple[float, float] | None,
                 referenced_image: bytes = b"") -> Decoded:
        if not isinstance(items, list):
            raise DecodeError(DeadLetterReason.INVALID_MESSAGE, f"{where} must be a list")
        out = Decoded(image=image)
        if self._is_normalized:
            read = image_size(image or referenced_image) if image or referenced_image else None
            size = self._size or size or ((float(read[0]), float(read[1])) if read else None)
            if size is None:
                raise DecodeError(DeadLetterReason.BAD_BOX,
                                  "normalized results need routes[].image_size (or an attached image)")
        track_ids: list[str] = []
        for index, item in enumerate(items):
            self._item(out, item, f"{where}[{index}]", size if self._is_normalized else None, track_ids)
        if track_ids:
            out.metadata["trackIds"] = ",".join(track_ids)[:1000]
        return out

    def _item(self, out: Decoded, item: JsonValue, where: str, size: tuple[float, float] | None,
              track_ids: list[str]) -> None:
        if not isinstance(item, dict):
            raise DecodeError(DeadLetterReason.INVALID_MESSAGE, f"{where} must be an object")
        label = text(item.get("name", item.get("class")), f"{where}.name")
        confidence = number(item.get("confidence"), f"{where}.confidence") * self._factor
        raw_box = item.get("box")
        if raw_box is None:
            out.classifications.append({"class": label, "confidence": clamp_confidence(confidence)})
            return
        if not isinstance(raw_box, dict):
            raise DecodeError(DeadLetterReason.INVALID_MESSAGE, f"{where}.box must be an object")
        sx, sy = size if size is not None else (1.0, 1.0)
        xs = [number(raw_box.get(k), f"{where}.box.{k}") * sx for k in ("x1", "x2", "x3", "x4") if k in raw_box]
        ys = [number(raw_box.get(k), f"{where}.box.{k}") * sy for k in ("y1", "y2", "y3", "y4") if k in raw_box]
        if len(xs) < 2 or len(ys) < 2:
            raise DecodeError(DeadLetterReason.INVALID_MESSAGE, f"{where}.box must have x1, y1, x2, y2")
        if len(xs) == 2:
            x1, x2, y1, y2 = xs[0], xs[1], ys[0], ys[1]
        else:  # oriented box: its axis-aligned hull
            x1, x2, y1, y2 = min(xs), max(xs), min(ys), max(ys)
        width, height = x2 - x1, y2 - y1
        det = box(label, x1 + width / 2, y1 + height / 2, width, height, confidence)
        if det is None:
            out.dropped_boxes += 1
            return
        track = optional_text(item.get("track_id"))
        if track is not None:
            track_ids.append(track)
        segments = item.get("segments")
        keypoints = item.get("keypoints")
        if isinstance(segments, dict):
            points = list(zip(_series(segments, "x", f"{where}.segments"),
                              _series(segments, "y", f"{where}.segments"), strict=False))
            if len(points) >= _MIN_POLYGON_POINTS:
                out.instance_segmentations.append({**det, "points": [[x * sx, y * sy] for x, y in points]})
                return
        if isinstance(keypoints, dict):
            xs_k = _series(keypoints, "x", f"{where}.keypoints")
            ys_k = _series(keypoints, "y", f"{where}.keypoints")
            raw_visible = keypoints.get("visible")
            visible = ([number(v, f"{where}.keypoints.visible[{i}]") for i, v in enumerate(raw_visible)]
                       if isinstance(raw_visible, list) else [])
            points_k: list[JsonValue] = [  # a keypoint the model marks invisible (visible < 0.5) is left out
                {"id": i, "x": x * sx, "y": y * sy} for i, (x, y) in enumerate(zip(xs_k, ys_k, strict=False))
                if i >= len(visible) or visible[i] >= 0.5]
            if points_k:
                out.keypoints.append({**det, "keypoints": points_k})
                return
        out.detections.append(det)

