"""A simulated production line for the demo: cameras that publish detections with small generated images.

Owns: making believable inspection frames (Pillow draws a part on a belt, sometimes with a defect, and the box of
each defect) and publishing them as canonical messages and as Roboflow Inference JSON on several topics.
"""

from __future__ import annotations

import io
import logging
import random
import threading

import orjson
from PIL import Image, ImageDraw

from mqtt_bridge.publish import Detection, Publisher, build_message

__all__ = ["SimulatedLine", "make_frame"]

log = logging.getLogger(__name__)

DEFECTS = ("scratch", "dent", "missing_screw")
CAMERA_TOPICS = ("factory/line1/cam1/detections", "factory/line1/cam2/detections", "factory/line2/cam1/detections")
INFERENCE_TOPIC = "inference/line2/cam3"
FRAME_SIZE = (320, 240)


def make_frame(rng: random.Random) -> tuple[bytes, list[Detection]]:
    """Draw one JPEG frame of a part and return it with the boxes of its defects (0 to 2)."""
    width, height = FRAME_SIZE
    image = Image.new("RGB", FRAME_SIZE, (58, 62, 70))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, height * 0.35, width, height * 0.8), fill=(35, 37, 40))
    left, top = rng.randint(40, 110), rng.randint(70, 95)
    draw.rectangle((left, top, left + 150, top + 80), fill=(170, 175, 182), outline=(220, 220, 225), width=2)
    detections = []
    for _ in range(rng.choice((0, 0, 1, 1, 2))):
        label = rng.choice(DEFECTS)
        w, h = rng.randint(14, 40), rng.randint(10, 26)
        cx, cy = rng.randint(left + w // 2 + 2, left + 148 - w // 2), rng.randint(top + h // 2 + 2, top + 78 - h // 2)
        color = {"scratch": (200, 60, 60), "dent": (90, 90, 200), "missing_screw": (20, 20, 20)}[label]
        draw.ellipse((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), outline=color, width=3)
        detections.append(Detection(label, round(rng.uniform(0.55, 0.99), 3), cx, cy, w, h))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=80)
    return out.getvalue(), detections


class SimulatedLine:
    """Publishes a frame per camera every `interval_s` until stopped. `run()` is the thread body."""

    def __init__(self, publisher: Publisher, stop: threading.Event, interval_s: float = 1.0,
                 seed: int | None = None) -> None:
        self._publisher = publisher
        self._stop = stop
        self._interval_s = interval_s
        self._rng = random.Random(seed)
        self.published = 0

    def publish_once(self) -> None:
        """One frame on every camera topic, plus one Roboflow Inference message without an image."""
        for serial, topic in enumerate(CAMERA_TOPICS):
            jpeg, detections = make_frame(self._rng)
            self._publisher.publish_raw(topic, build_message(
                detections=detections, image=jpeg, image_name=f"frame-{self.published + serial}.jpg",
                image_size=FRAME_SIZE, metadata={"serial": f"SN{self._rng.randint(100000, 999999)}"}))
        _, detections = make_frame(self._rng)
        self._publisher.publish_raw(INFERENCE_TOPIC, orjson.dumps({
            "image": {"width": FRAME_SIZE[0], "height": FRAME_SIZE[1]},
            "predictions": [{"x": d.x, "y": d.y, "width": d.width, "height": d.height, "class": d.label,
                             "confidence": d.confidence, "class_id": DEFECTS.index(d.label)} for d in detections],
        }))
        self.published += len(CAMERA_TOPICS) + 1

    def run(self) -> None:
        """Publish until the stop event is set; errors are logged and the line keeps going."""
        while not self._stop.is_set():
            try:
                self.publish_once()
            except Exception:
                log.exception("simulated line failed to publish; retrying")
            self._stop.wait(self._interval_s)
