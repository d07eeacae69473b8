"""Route images at ingest: base64 paths in any format, referenced images, checks, resizing with boxes scaled."""

from __future__ import annotations

import base64
import io
import time
from typing import Any

import orjson
import pytest
from PIL import Image

from mqtt_bridge.config.routes import RouteConfig
from mqtt_bridge.errors import DeadLetterReason
from mqtt_bridge.images.checks import image_size, sniff_image_type
from mqtt_bridge.model.attachment import Attachment, ReferenceKind
from mqtt_bridge.routing.router import Router
from mqtt_bridge.transform.ingest import Ingestor, IngestResult

TOPIC = b"cell/7/result"


def _picture(size: tuple[int, int] = (200, 100), fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (30, 60, 90)).save(out, format=fmt)
    return out.getvalue()


def _run(route: dict[str, Any], payload: dict[str, Any], attachment: Attachment | None = None) -> IngestResult:
    config = RouteConfig.model_validate({"topic": "cell/{cell}/result", "use_case": "uc", **route})
    return Ingestor(Router([config]), 4 * 2**20).process(TOPIC, orjson.dumps(payload), time.time(), attachment)


def _image_entry(result: IngestResult) -> dict[str, Any]:
    assert result.dead_letter is None, result.dead_letter
    [record] = result.records
    images: Any = record.event["images"]
    assert isinstance(images, list) and isinstance(images[0], dict)
    entry: dict[str, Any] = images[0]
    return entry


ROBOFLOW: dict[str, Any] = {"image": {"width": 200, "height": 100},
            "predictions": [{"x": 50, "y": 40, "width": 20, "height": 10, "class": "dent", "confidence": 0.9}]}


@pytest.mark.parametrize("prefix", ["", "data:image/png;base64,"])
def test_attach_base64_path_works_for_any_format(prefix: str) -> None:
    """A Roboflow payload with its picture in an extra field gets it attached, with or without a data: prefix."""
    picture = _picture()
    payload = {**ROBOFLOW, "extra": {"snapshot": prefix + base64.b64encode(picture).decode()}}
    result = _run({"format": "roboflow", "image": {"base64_path": "extra.snapshot"}}, payload)
    assert _image_entry(result)["objectDetections"] == ROBOFLOW["predictions"]
    assert result.records[0].image == picture


def test_attach_bad_inline_image_is_bad_image() -> None:
    """Inline bytes that are not base64, or not a picture, are dead-lettered as bad_image."""
    not_base64 = _run({"format": "roboflow", "image": {"base64_path": "snap"}}, {**ROBOFLOW, "snap": "!!"})
    not_picture = _run({"format": "roboflow", "image": {"base64_path": "snap"}},
                       {**ROBOFLOW, "snap": base64.b64encode(b"<html>").decode()})
    assert not_base64.dead_letter is not None and not_base64.dead_letter.reason == "bad_image"
    assert not_picture.dead_letter is not None and not_picture.dead_letter.reason == "bad_image"


def test_attach_referenced_image_sizes_normalized_boxes() -> None:
    """Normalized boxes take the size of the referenced image when the payload and route give none."""
    route = {"format": "generic", "generic": {"box": {"normalized": True}},
             "image": {"url": {"field": "snapshot", "allow_hosts": ["cam1.plant.example"]}}}
    payload = {"snapshot": "http://cam1.plant.example/1.jpg",
               "detections": [{"class": "dent", "confidence": 0.8, "x": 0.5, "y": 0.5, "width": 0.1, "height": 0.2}]}
    result = _run(route, payload, Attachment(ReferenceKind.URL, _picture((400, 300)), "1.png"))
    [box] = _image_entry(result)["objectDetections"]
    assert (box["x"], box["y"], box["width"], box["height"]) == (200.0, 150.0, 40.0, 60.0)
    assert result.records[0].image_name == "1.png"


def test_attach_resize_scales_boxes_polygons_and_keypoints() -> None:
    """A downscaled image carries boxes, polygon points and keypoints in its own (new) pixels."""
    payload = {"image": {"width": 800, "height": 400}, "predictions": [
        {"x": 400, "y": 200, "width": 80, "height": 40, "class": "dent", "confidence": 0.9},
        {"x": 100, "y": 100, "width": 40, "height": 40, "class": "hole", "confidence": 0.8,
         "points": [{"x": 80, "y": 80}, {"x": 120, "y": 80}, {"x": 100, "y": 120}]},
        {"x": 600, "y": 300, "width": 40, "height": 40, "class": "pin", "confidence": 0.7,
         "keypoints": [{"x": 600, "y": 280, "class_id": 0, "confidence": 0.9}]}]}
    route = {"format": "roboflow", "image": {"base64_path": "jpeg", "resize": {"max_width": 200, "jpeg_quality": 70}}}
    result = _run(route, {**payload, "jpeg": base64.b64encode(_picture((800, 400))).decode()})
    entry = _image_entry(result)
    assert image_size(result.records[0].image) == (200, 100)
    assert sniff_image_type(result.records[0].image) == "jpeg"
    assert entry["objectDetections"] == [{"class": "dent", "x": 100.0, "y": 50.0, "width": 20.0, "height": 10.0,
                                          "confidence": 0.9}]
    [polygon] = entry["instanceSegmentations"]
    assert polygon["points"] == [[20.0, 20.0], [30.0, 20.0], [25.0, 30.0]]
    [pin] = entry["keypoints"]
    assert (pin["x"], pin["y"], pin["keypoints"][0]["x"], pin["keypoints"][0]["y"]) == (150.0, 75.0, 150.0, 70.0)


def test_attach_boxes_fit_false_sends_image_without_boxes() -> None:
    """A referenced crop goes without boxes; the boxes are summarised in customMetadata."""
    route = {"format": "roboflow", "image": {"file": {"field": "crop", "roots": ["/srv/crops"]}, "boxes_fit": False}}
    result = _run(route, {**ROBOFLOW, "crop": "a.jpg"}, Attachment(ReferenceKind.FILE, _picture(), "a.jpg"))
    entry = _image_entry(result)
    assert "objectDetections" not in entry
    assert result.records[0].event["customMetadata"] == {"detections": 1, "classes": "dent"}


def test_attach_refused_reference_is_dead_lettered_with_its_reason() -> None:
    """A reference refused before ingest becomes a dead letter with that reason and the raw message."""
    route = {"format": "roboflow", "image": {"url": {"field": "u", "allow_hosts": ["cam1.plant.example"]}}}
    refused = (DeadLetterReason.IMAGE_URL_REFUSED, "host not allowed")
    result = _run(route, ROBOFLOW, Attachment(ReferenceKind.URL, problem=refused))
    assert result.dead_letter is not None
    assert (result.dead_letter.reason, result.dead_letter.detail) == ("image_url_refused", "host not allowed")
    assert orjson.loads(result.dead_letter.payload) == ROBOFLOW


def test_attach_bomb_or_non_image_reference_is_image_rejected() -> None:
    """A referenced file that is no picture, or too many pixels, is image_rejected."""
    route = {"format": "roboflow", "image": {"url": {"field": "u", "allow_hosts": ["a.example"]}, "max_pixels": 1000}}
    html = _run(route, ROBOFLOW, Attachment(ReferenceKind.URL, b"<html>", "x.jpg"))
    big = _run(route, ROBOFLOW, Attachment(ReferenceKind.URL, _picture((100, 100)), "x.jpg"))
    assert html.dead_letter is not None and html.dead_letter.reason == "image_rejected"
    assert big.dead_letter is not None and big.dead_letter.reason == "image_rejected"


def test_attach_missing_companion_image_is_noted() -> None:
    """A detection whose companion image never came is sent without it, and says why."""
    route = {"format": "roboflow", "image": {"companion": {"topic": "cell/{cell}/image"}}}
    result = _run(route, ROBOFLOW, Attachment(ReferenceKind.COMPANION, missing="window_expired"))
    [record] = result.records
    assert "images" not in record.event
    assert record.event["customMetadata"] == {"imageMissing": "window_expired", "detections": 1, "classes": "dent"}
