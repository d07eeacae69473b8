"""Roboflow Inference JSON: `{"image": {width, height}, "predictions": [{x, y, width, height, class, confidence}]}`.

Owns: the translation of what Roboflow Inference publishes (spec/payload-formats.md §1) into `Decoded`:
HTTP responses and the MQTT Writer's `{image, predictions}` (object detection, instance segmentation with polygon
`points`, keypoints, single- and multi-label classification), InferencePipeline's `inference_metadata`, a list of
responses (one event each), and Workflows `{"outputs": [...]}` (one event per input image; every `predictions`
found in the outputs is merged, and a `{"type": "base64"}` image output is attached). Boxes are already centre-x/y
in pixels, so they pass through unchanged.
"""

from __future__ import annotations

from mqtt_bridge.config.routes import RouteConfig
from mqtt_bridge.decode.base import Decoded, Message, box, clamp_confidence, confidence_factor
from mqtt_bridge.decode.fields import base64_image, optional_text
from mqtt_bridge.errors import DeadLetterReason, DecodeError
from mqtt_bridge.model.values import JsonDict, JsonValue, parse_timestamp

__all__ = ["RoboflowDecoder", "decode", "decode_document"]

_MAX_SEARCH_DEPTH = 8
_MIN_POLYGON_POINTS = 3


def _number(item: JsonDict, key: str, where: str) -> float:
    value = item.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DecodeError(DeadLetterReason.INVALID_MESSAGE, f"{where}.{key} must be a number")
    return float(value)


def _label(item: JsonDict, where: str) -> str:
    label = item.get("class", item.get("class_name"))
    if not isinstance(label, str) or not label or len(label) > 256:
        raise DecodeError(DeadLetterReason.INVALID_MESSAGE, f"{where}.class must be a string of 1..256 characters")
    return label


def _points(raw: JsonValue, where: str) -> list[JsonValue] | None:
    """Polygon `points: [{x, y}]` as `[[x, y]]`, or None when there are fewer than three (then it is a box)."""
    if not isinstance(raw, list) or len(raw) < _MIN_POLYGON_POINTS:
        return None
    points: list[JsonValue] = []
    for index, point in enumerate(raw):
        if not isinstance(point, dict):
            raise DecodeError(DeadLetterReason.INVALID_MESSAGE, f"{where}.points[{index}] must be an object")
        at = f"{where}.points[{index}]"
        points.append([_number(point, "x", at), _number(point, "y", at)])
    return points


def _keypoints(raw: JsonValue, where: str) -> list[JsonValue] | None:
    """Keypoints `[{x, y, class_id, ...}]` as `[{id, x, y}]` (id: class_id, else the position)."""
    if not isinstance(raw, list) or not raw:
        return None
    out: list[JsonValue] = []
    for index, point in enumerate(raw):
        if not isinstance(point, dict):
            raise DecodeError(DeadLetterReason.INVALID_MESSAGE, f"{where}.keypoints[{index}] must be an object")
        class_id = point.get("class_id")
        point_id = class_id if isinstance(class_id, int) and not isinstance(class_id, bool) else index
        out.append({"id": point_id, "x": _number(point, "x", f"{where}.keypoints[{index}]"),
                    "y": _number(point, "y", f"{where}.keypoints[{index}]")})
    return out


def _prediction(out: Decoded, item: JsonValue, where: str, factor: float) -> None:
    if not isinstance(item, dict):
        raise DecodeError(DeadLetterReason.INVALID_MESSAGE, f"{where} must be an object")
    label = _label(item, where)
    confidence = _number(item, "confidence", where) * factor
    if "x" not in item:
        out.classifications.append({"class": label, "confidence": clamp_confidence(confidence)})
        return
    det = box(label, _number(item, "x", where), _number(item, "y", where), _number(item, "width", where),
              _number(item, "height", where), confidence)
    if det is None:
        out.dropped_boxes += 1
        return
    points = _points(item.get("points"), where)
    keypoints = _keypoints(item.get("keypoints"), where)
    if points is not None:
        out.instance_segmentations.append({**det, "points": points})
    elif keypoints is not None:
        out.keypoints.append({**det, "keypoints": keypoints})
    else:
        out.detections.append(det)


def _multi_label(out: Decoded, document: JsonDict, predictions: JsonDict, factor: float) -> None:
    """Multi-label classification `{class: {confidence}}`: the `predicted_classes` (all classes without it)."""
    chosen = document.get("predicted_classes")
    names = [n for n in chosen if isinstance(n, str)] if isinstance(chosen, list) else list(predictions)
    for name in names:
        detail = predictions.get(name)
        if not name or len(name) > 256:
            raise DecodeError(DeadLetterReason.INVALID_MESSAGE, "multi-label class names must have 1..256 characters")
        raw = detail.get("confidence") if isinstance(detail, dict) else detail
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise DecodeError(DeadLetterReason.INVALID_MESSAGE, f"predictions.{name[:40]}.confidence must be a number")
        out.classifications.append({"class": name, "confidence": clamp_confidence(float(raw) * factor)})


def _response(out: Decoded, document: JsonDict, where: str, factor: float) -> None:
    """Merge one inference response (`predictions` plus its metadata) into `out`."""
    predictions = document.get("predictions")
    if isinstance(predictions, dict):
        _multi_label(out, document, predictions, factor)
    elif isinstance(predictions, list):
        for index, item in enumerate(predictions):
            _prediction(out, item, f"{where}predictions[{index}]", factor)
    else:
        raise DecodeError(DeadLetterReason.INVALID_MESSAGE, f"{where}predictions must be a list")
    meta = document.get("inference_metadata")
    if isinstance(meta, dict):
        out.timestamp = (out.timestamp or parse_timestamp(meta.get("frame_decoding_time"))
                         or parse_timestamp(meta.get("emission_time")))
        source = optional_text(meta.get("source_id"))
        if source is not None:
            out.stream_id = source
    inference_id = optional_text(document.get("inference_id"))
    if inference_id is not None and "inferenceId" not in out.metadata:
        out.metadata["inferenceId"] = inference_id


def _image_output(out: Decoded, value: JsonDict, where: str) -> None:
    """A Workflows image output `{"type": "base64", "value": ..., "video_metadata": {...}}`."""
    if not out.image:
        out.image = base64_image(value.get("value"), f"{where}.value")
    video = value.get("video_metadata")
    if isinstance(video, dict):
        out.timestamp = out.timestamp or parse_timestamp(video.get("frame_timestamp"))
        source = optional_text(video.get("video_identifier"))
        if source is not None and out.stream_id is None:
            out.stream_id = source


def _search(out: Decoded, node: JsonValue, where: str, depth: int, factor: float) -> None:
    """Walk a Workflows output for prediction responses and image outputs."""
    if depth > _MAX_SEARCH_DEPTH:
        return
    if isinstance(node, dict):
        if node.get("type") == "base64" and isinstance(node.get("value"), str):
            _image_output(out, node, where)
            return
        if isinstance(node.get("predictions"), list | dict):
            _response(out, node, f"{where}.", factor)
            return
        for key, value in node.items():
            _search(out, value, f"{where}.{key[:40]}", depth + 1, factor)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            _search(out, value, f"{where}[{index}]", depth + 1, factor)


def decode_document(document: JsonValue, factor: float = 1.0) -> list[Decoded]:
    """Translate a parsed Roboflow document into one `Decoded` per image. Raises DecodeError naming the field."""
    if isinstance(document, list):
        results = []
        for index, item in enumerate(document):
            if not isinstance(item, dict):
                raise DecodeError(DeadLetterReason.INVALID_MESSAGE, f"[{index}] must be an inference response object")
            out = Decoded()
            _response(out, item, f"[{index}].", factor)
            results.append(out)
        return results
    if not isinstance(document, dict):
        raise DecodeError(DeadLetterReason.INVALID_MESSAGE, "a Roboflow inference message must be a JSON object")
    outputs = document.get("outputs")
    if "predictions" not in document and isinstance(outputs, list):
        results = []
        for index, entry in enumerate(outputs):
            out = Decoded()
            _search(out, entry, f"outputs[{index}]", 0, factor)
            results.append(out)
        return results
    out = Decoded()
    _response(out, document, "", factor)
    return [out]


def decode(document: JsonValue, factor: float = 1.0) -> Decoded:
    """Translate a single inference response (the shape before Workflows support); DecodeError otherwise."""
    results = decode_document(document, factor)
    if len(results) != 1:
        raise DecodeError(DeadLetterReason.INVALID_MESSAGE, "expected a single inference response")
    return results[0]


class RoboflowDecoder:
    """Roboflow Inference JSON as a route decoder."""

    def __init__(self, route: RouteConfig) -> None:
        self._factor = confidence_factor(route)

    def decode(self, message: Message) -> list[Decoded]:
        """Decode one message: one event per image it describes."""
        return decode_document(message.json(), self._factor)
