"""Roboflow Inference JSON: `{"image": {width, height}, "predictions": [{x, y, width, height, class, confidence}]}`.

Owns: the translation of an inference response (object detection or single-label classification, as the HTTP API,
InferencePipeline sinks and the MQTT Writer block publish it; spec/payload-formats.md §1) into `Decoded`. Boxes
are already centre-x/y in pixels, so they pass through unchanged.
"""

from __future__ import annotations

from mqtt_bridge.decode import Decoded, box, clamp_confidence
from mqtt_bridge.errors import DecodeError
from mqtt_bridge.events import JsonDict, JsonValue, parse_timestamp

__all__ = ["decode"]


def _number(item: JsonDict, key: str, index: int) -> float:
    value = item.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DecodeError("invalid_message", f"predictions[{index}].{key} must be a number")
    return float(value)


def _label(item: JsonDict, index: int) -> str:
    label = item.get("class", item.get("class_name"))
    if not isinstance(label, str) or not label or len(label) > 256:
        raise DecodeError("invalid_message", f"predictions[{index}].class must be a string of 1..256 characters")
    return label


def decode(document: JsonValue) -> Decoded:
    """Translate a parsed Roboflow Inference response. Raises DecodeError naming the offending field."""
    if not isinstance(document, dict):
        raise DecodeError("invalid_message", "a Roboflow inference message must be a JSON object")
    predictions = document.get("predictions")
    if not isinstance(predictions, list):
        raise DecodeError("invalid_message", "predictions must be a list")
    out = Decoded()
    for index, item in enumerate(predictions):
        if not isinstance(item, dict):
            raise DecodeError("invalid_message", f"predictions[{index}] must be an object")
        label = _label(item, index)
        confidence = _number(item, "confidence", index)
        if "x" in item:
            det = box(label, _number(item, "x", index), _number(item, "y", index), _number(item, "width", index),
                      _number(item, "height", index), confidence)
            if det is None:
                out.dropped_boxes += 1
            else:
                out.detections.append(det)
        else:
            out.classifications.append({"class": label, "confidence": clamp_confidence(confidence)})
    meta = document.get("inference_metadata")
    if isinstance(meta, dict):
        out.timestamp = parse_timestamp(meta.get("frame_decoding_time")) or parse_timestamp(meta.get("emission_time"))
        source = meta.get("source_id")
        if isinstance(source, int | str) and not isinstance(source, bool):
            out.stream_id = str(source)
    inference_id = document.get("inference_id")
    if isinstance(inference_id, str) and 0 < len(inference_id) <= 256:
        out.metadata["inferenceId"] = inference_id
    return out
