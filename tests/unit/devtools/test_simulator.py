"""The demo's simulated frames: not flat, and every box lies inside the image on what was drawn for it."""

from __future__ import annotations

import io
import random

import pytest
from PIL import Image

from mqtt_bridge.devtools.simulator import FRAME_SIZE, SAFETY_TOPIC, SimulatedLine, make_frame, make_safety_frame
from mqtt_bridge.sdk.publisher import Detection

# a colour only the drawing of that class uses, and how far a JPEG pixel may be from it
MARKS = {"scratch": (250, 250, 252), "missing_screw": (14, 14, 16), "dent": (70, 72, 78),
         "person": (250, 130, 20), "forklift": (236, 176, 20)}


def _has_colour(image: Image.Image, box: Detection, colour: tuple[int, int, int], tolerance: int = 40) -> bool:
    crop = image.crop((int(box.x - box.width / 2), int(box.y - box.height / 2),
                       int(box.x + box.width / 2), int(box.y + box.height / 2)))
    pixels = crop.tobytes()
    return any(sum(abs(pixels[i + k] - colour[k]) for k in range(3)) <= tolerance for i in range(0, len(pixels), 3))


def _check(jpeg: bytes, detections: list[Detection]) -> None:
    image = Image.open(io.BytesIO(jpeg)).convert("RGB")
    assert image.size == FRAME_SIZE
    assert len(image.getcolors(maxcolors=1 << 16) or []) > 200  # a scene, not a flat rectangle
    for box in detections:
        assert box.x - box.width / 2 >= 0 and box.x + box.width / 2 <= FRAME_SIZE[0], box
        assert box.y - box.height / 2 >= 0 and box.y + box.height / 2 <= FRAME_SIZE[1], box
        assert 0.5 <= box.confidence <= 1
        assert _has_colour(image, box, MARKS[box.label]), box


@pytest.mark.parametrize("seed", range(12))
def test_inspection_frames_have_boxes_on_their_defects(seed: int) -> None:
    """A plate on a conveyor; each defect box holds the defect's own colour."""
    jpeg, detections = make_frame(random.Random(seed))
    _check(jpeg, detections)
    assert {d.label for d in detections} <= {"scratch", "dent", "missing_screw"}


@pytest.mark.parametrize("seed", range(12))
def test_safety_frames_show_a_person_or_a_forklift_in_their_boxes(seed: int) -> None:
    """A warehouse aisle; the person box holds the hi-vis vest, the forklift box the yellow body."""
    jpeg, detections, event_data = make_safety_frame(random.Random(seed))
    _check(jpeg, detections)
    assert detections and {d.label for d in detections} <= {"person", "forklift"}
    assert event_data["severity"] in {"low", "medium", "high"}
    assert event_data["alertType"] == ("person_near_forklift" if len(detections) == 2 else
                                       f"{detections[0].label}_in_aisle")


class _Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    def publish_raw(self, topic: str, payload: bytes) -> None:
        self.sent.append((topic, payload))


def test_the_line_publishes_a_safety_alert_with_its_image_every_round() -> None:
    """publish_once sends the safety camera's canonical message: event type, eventData and the JPEG inline."""
    import threading

    import orjson

    recorder = _Recorder()
    line = SimulatedLine(recorder, threading.Event(), seed=1)  # type: ignore[arg-type]
    line.publish_once()
    safety = [orjson.loads(p) for t, p in recorder.sent if t == SAFETY_TOPIC]
    assert len(safety) == 1 and line.published == len(recorder.sent) == 5
    message = safety[0]
    assert message["event_type"] == "safety_alert" and message["event_data"]["alertType"]
    assert message["image"]["data"] and message["detections"]
