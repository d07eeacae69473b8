"""A simulated production line for the demo: cameras that publish detections with small generated images.

Owns: making believable frames with Pillow (a plate on a conveyor belt, sometimes scratched, dented or missing a
screw; a warehouse aisle with a worker in a hi-vis vest and a forklift for the safety route), each returned with
the boxes of what it drew so that the boxes land on the objects, and publishing them the ways plants do
(spec/payload-formats.md §9): canonical messages with the image inline, Roboflow Inference JSON without one, a
detection whose raw JPEG follows (or precedes) it on a companion topic, and Roboflow JSON naming a snapshot URL
that `FrameServer`, the camera's tiny HTTP snapshot endpoint in the demo process, serves.
"""

from __future__ import annotations

import io
import logging
import random
import threading
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from PIL import Image, ImageDraw

from mqtt_bridge.model.values import JsonDict
from mqtt_bridge.sdk.publisher import Detection, Publisher, build_message

__all__ = ["COMPANION_TOPIC", "SAFETY_TOPIC", "SNAPSHOT_TOPIC", "FrameServer", "SimulatedLine", "make_frame",
           "make_safety_frame"]

log = logging.getLogger(__name__)

DEFECTS = ("scratch", "dent", "missing_screw")
SAFETY_CLASSES = ("person", "forklift")
CAMERA_TOPICS = ("factory/line1/cam1/detections", "factory/line1/cam2/detections", "factory/line2/cam1/detections")
INFERENCE_TOPIC = "inference/line2/cam3"
COMPANION_TOPIC = "station/line3/cam1"  # .../detections, and the JPEG on .../image/<frame>
SNAPSHOT_TOPIC = "snapshot/line3/cam2"  # Roboflow JSON with a snapshot_url served by FrameServer
SAFETY_TOPIC = "safety/dock1/cam1/detections"  # a warehouse camera: people and forklifts
FRAME_SIZE = (320, 240)
_KEPT_FRAMES = 500
_BELT = (92, 204)  # the conveyor belt's top and bottom edge in the inspection frame
_PART = (150, 72)  # the inspected plate's width and height

Box = tuple[float, float, float, float]  # left, top, right, bottom


def _jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=85)
    return out.getvalue()


def _detection(label: str, confidence: float, box: Box) -> Detection:
    """A centre-box detection around `box`, clipped to the frame."""
    left, top = max(box[0], 0), max(box[1], 0)
    right, bottom = min(box[2], FRAME_SIZE[0]), min(box[3], FRAME_SIZE[1])
    return Detection(label, round(confidence, 3), round((left + right) / 2, 1), round((top + bottom) / 2, 1),
                     round(right - left, 1), round(bottom - top, 1))


def _conveyor(draw: ImageDraw.ImageDraw, rng: random.Random) -> None:
    """Wall panels, a lamp, the belt with its slats, the rails (hazard-striped at the front) and the rollers."""
    width, _ = FRAME_SIZE
    top, bottom = _BELT
    for x in range(0, width, 64):  # wall panels
        draw.rectangle((x, 0, x + 62, top - 14), fill=(66, 74, 86), outline=(54, 60, 70))
    draw.rectangle((0, 0, width, 8), fill=(40, 44, 50))
    draw.polygon(((130, 8), (190, 8), (200, 18), (120, 18)), fill=(236, 232, 200))  # the lamp over the belt
    draw.rectangle((0, top - 14, width, top), fill=(118, 124, 132))  # back rail
    draw.rectangle((0, top, width, bottom), fill=(36, 38, 42))  # belt
    offset = rng.randrange(22)
    for x in range(offset - 22, width, 22):
        draw.line((x, top, x + 6, bottom), fill=(48, 50, 56), width=3)
    draw.rectangle((0, bottom, width, bottom + 12), fill=(30, 30, 30))  # front rail, hazard stripes
    for x in range(-12, width, 24):
        draw.polygon(((x, bottom + 12), (x + 12, bottom), (x + 24, bottom), (x + 12, bottom + 12)),
                     fill=(232, 186, 32))
    for x in range(16, width, 48):  # rollers under the belt
        draw.ellipse((x - 9, bottom + 14, x + 9, bottom + 32), fill=(84, 88, 96), outline=(140, 146, 154))
        draw.ellipse((x - 2, bottom + 21, x + 2, bottom + 25), fill=(30, 30, 30))


def make_frame(rng: random.Random) -> tuple[bytes, list[Detection]]:
    """Draw one JPEG frame of a plate on a conveyor and return it with the boxes of its defects (0 to 2).

    Each box encloses what is drawn for it: a bright scratch, a dent (a shaded hollow), an empty screw hole.
    """
    image = Image.new("RGB", FRAME_SIZE, (52, 58, 68))
    draw = ImageDraw.Draw(image)
    _conveyor(draw, rng)
    part_w, part_h = _PART
    left, top = rng.randint(30, 140), rng.randint(_BELT[0] + 14, _BELT[1] - part_h - 14)
    right, bottom = left + part_w, top + part_h
    draw.rectangle((left + 5, top + 6, right + 5, bottom + 6), fill=(22, 22, 24))  # shadow on the belt
    draw.rectangle((left, top, right, bottom), fill=(172, 178, 186), outline=(226, 228, 232), width=2)
    draw.line((left + 2, bottom - 1, right - 1, bottom - 1), fill=(120, 124, 132), width=2)
    draw.rectangle((left + 60, top + 26, left + 92, top + 46), fill=(40, 90, 170))  # the part's label
    for row in range(3):
        draw.line((left + 64, top + 31 + row * 5, left + 88, top + 31 + row * 5), fill=(230, 236, 244))
    screws = [(left + 12, top + 12), (right - 12, top + 12), (left + 12, bottom - 12), (right - 12, bottom - 12)]
    labels = [rng.choice(DEFECTS) for _ in range(rng.choice((0, 0, 1, 1, 2)))]
    missing = rng.sample(range(len(screws)), labels.count("missing_screw"))
    detections = []
    for index, (sx, sy) in enumerate(screws):
        if index in missing:
            draw.ellipse((sx - 5, sy - 5, sx + 5, sy + 5), fill=(14, 14, 16), outline=(96, 98, 104))
            detections.append(_detection("missing_screw", rng.uniform(0.7, 0.98), (sx - 8, sy - 8, sx + 8, sy + 8)))
        else:
            draw.ellipse((sx - 5, sy - 5, sx + 5, sy + 5), fill=(110, 114, 122), outline=(64, 66, 72))
            draw.line((sx - 3, sy, sx + 3, sy), fill=(40, 40, 44))
            draw.line((sx, sy - 3, sx, sy + 3), fill=(40, 40, 44))
    for label in (name for name in labels if name != "missing_screw"):
        w, h = (rng.randint(26, 46), rng.randint(8, 18)) if label == "scratch" else (rng.randint(16, 28),
                                                                                    rng.randint(12, 20))
        x0, y0 = rng.randint(left + 22, right - 22 - w), rng.randint(top + 8, bottom - 8 - h)
        if label == "scratch":
            points = [(x0 + w * i / 4, y0 + (h if i % 2 else 0) * rng.uniform(0.4, 1.0)) for i in range(5)]
            draw.line([(x + 1, y + 1) for x, y in points], fill=(92, 94, 100), width=2)
            draw.line(points, fill=(250, 250, 252), width=2)
        else:
            draw.ellipse((x0, y0, x0 + w, y0 + h), fill=(128, 132, 140))
            draw.arc((x0, y0, x0 + w, y0 + h), 200, 340, fill=(70, 72, 78), width=3)
            draw.arc((x0, y0, x0 + w, y0 + h), 20, 160, fill=(222, 224, 230), width=2)
        detections.append(_detection(label, rng.uniform(0.55, 0.97), (x0 - 3, y0 - 3, x0 + w + 3, y0 + h + 3)))
    return _jpeg(image), detections


def _warehouse(draw: ImageDraw.ImageDraw) -> None:
    """A wall with pallet racks full of boxes, a concrete floor with a yellow walkway."""
    width, height = FRAME_SIZE
    draw.rectangle((0, 0, width, 110), fill=(104, 110, 118))
    for x in range(10, width, 100):  # racks: orange uprights, blue beams, brown boxes
        for shelf in (30, 70):
            draw.rectangle((x, shelf, x + 90, shelf + 4), fill=(40, 80, 160))
            for bx in range(x + 6, x + 84, 28):
                draw.rectangle((bx, shelf - 22, bx + 22, shelf), fill=(168, 126, 74), outline=(120, 88, 50))
        draw.rectangle((x, 4, x + 4, 110), fill=(220, 110, 34))
        draw.rectangle((x + 86, 4, x + 90, 110), fill=(220, 110, 34))
    draw.rectangle((0, 110, width, height), fill=(134, 134, 128))
    draw.polygon(((0, 150), (width, 138), (width, 146), (0, 160)), fill=(226, 190, 40))
    draw.polygon(((0, 214), (width, 196), (width, 204), (0, 224)), fill=(226, 190, 40))


def _forklift(draw: ImageDraw.ImageDraw, x: float, ground: float, facing: int) -> Box:
    """A yellow forklift with its mast, forks, guard and wheels; `facing` -1 left, 1 right. Returns its box."""
    body_left, body_right = x, x + 84
    draw.rectangle((body_left, ground - 46, body_right, ground - 10), fill=(236, 176, 20), outline=(120, 90, 10))
    cw = (body_left, ground - 58, body_left + 22, ground - 10) if facing > 0 else (
        body_right - 22, ground - 58, body_right, ground - 10)
    draw.rectangle(cw, fill=(60, 60, 64))  # counterweight at the back
    guard_left, guard_right = body_left + 18, body_right - 18
    for gx in (guard_left, guard_right):
        draw.line((gx, ground - 46, gx, ground - 94), fill=(30, 30, 30), width=3)
    draw.line((guard_left, ground - 94, guard_right, ground - 94), fill=(30, 30, 30), width=4)
    draw.rectangle((guard_left + 14, ground - 62, guard_left + 32, ground - 46), fill=(30, 30, 34))  # seat
    mast_x = body_right + 4 if facing > 0 else body_left - 10
    draw.rectangle((mast_x, ground - 104, mast_x + 6, ground - 6), fill=(48, 48, 52))
    fork_end = mast_x + 6 + 40 if facing > 0 else mast_x - 40
    draw.rectangle((min(mast_x, fork_end), ground - 12, max(mast_x + 6, fork_end), ground - 7), fill=(70, 70, 74))
    for wx in (body_left + 18, body_right - 18):
        draw.ellipse((wx - 13, ground - 26, wx + 13, ground), fill=(24, 24, 24), outline=(90, 90, 90), width=2)
        draw.ellipse((wx - 4, ground - 17, wx + 4, ground - 9), fill=(180, 180, 180))
    return (min(body_left, mast_x, fork_end) - 2, ground - 106, max(body_right, mast_x + 6, fork_end) + 2, ground + 2)


def _person(draw: ImageDraw.ImageDraw, x: float, ground: float, tall: float) -> Box:
    """A worker in a hard hat and a hi-vis vest, feet at `ground`, `tall` pixels high. Returns the box."""
    head = tall * 0.16
    hips, shoulders = ground - tall * 0.48, ground - tall * 0.8
    draw.line((x - 5, hips, x - 8, ground), fill=(40, 44, 70), width=6)  # legs
    draw.line((x + 5, hips, x + 8, ground), fill=(40, 44, 70), width=6)
    draw.line((x - 12, shoulders + 4, x - 18, hips + 6), fill=(230, 120, 30), width=5)  # arms
    draw.line((x + 12, shoulders + 4, x + 18, hips + 6), fill=(230, 120, 30), width=5)
    draw.rectangle((x - 12, shoulders, x + 12, hips), fill=(250, 130, 20))  # vest and its stripes
    for stripe in (0.35, 0.7):
        y = shoulders + (hips - shoulders) * stripe
        draw.line((x - 12, y, x + 12, y), fill=(230, 232, 220), width=3)
    draw.ellipse((x - head / 2, shoulders - head - 1, x + head / 2, shoulders - 1), fill=(214, 170, 130))
    draw.chord((x - head / 2 - 2, shoulders - head - 4, x + head / 2 + 2, shoulders - head / 2), 180, 360,
               fill=(250, 250, 250))
    return (x - 21, shoulders - head - 5, x + 21, ground + 3)


def make_safety_frame(rng: random.Random) -> tuple[bytes, list[Detection], JsonDict]:
    """Draw a warehouse aisle with a person, a forklift or both; returns the JPEG, the boxes and the eventData."""
    image = Image.new("RGB", FRAME_SIZE, (104, 110, 118))
    draw = ImageDraw.Draw(image)
    _warehouse(draw)
    scene = rng.choice(("both", "both", "person", "forklift"))
    forklift_left = rng.random() < 0.5
    detections, boxes = [], []
    if scene != "person":
        x = rng.randint(20, 70) if forklift_left else rng.randint(150, 190)
        box = _forklift(draw, x, rng.randint(200, 228), -1 if not forklift_left else 1)
        boxes.append(box)
        detections.append(_detection("forklift", rng.uniform(0.8, 0.98), box))
    if scene != "forklift":
        x = rng.randint(200, 290) if forklift_left else rng.randint(30, 120)
        box = _person(draw, x, rng.randint(196, 230), rng.randint(78, 100))
        boxes.append(box)
        detections.append(_detection("person", rng.uniform(0.6, 0.97), box))
    if len(boxes) == 2:
        gap = max(boxes[1][0] - boxes[0][2], boxes[0][0] - boxes[1][2], 0)
        severity = "high" if gap < 30 else "medium" if gap < 80 else "low"
        description = f"person {gap:.0f} px from a forklift" if gap else "person next to a forklift"
        event_data: JsonDict = {"alertType": "person_near_forklift", "severity": severity, "description": description}
    else:
        event_data = {"alertType": f"{scene}_in_aisle", "severity": "low", "description": f"{scene} in the aisle"}
    return _jpeg(image), detections, event_data


class FrameServer:
    """A camera's snapshot endpoint: serves the last frames as `GET /frames/<n>.jpg` on 127.0.0.1."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._frames: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()
        frames, lock = self._frames, self._lock

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return  # the demo's console stays readable

            def do_GET(self) -> None:
                with lock:
                    body = frames.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "image/jpeg" if body is not None else "text/plain")
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:41234."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def add(self, name: str, jpeg: bytes) -> str:
        """Serve `jpeg` as /frames/<name>.jpg (the oldest frames are forgotten); returns its URL."""
        path = f"/frames/{name}.jpg"
        with self._lock:
            self._frames[path] = jpeg
            while len(self._frames) > _KEPT_FRAMES:
                self._frames.popitem(last=False)
        return self.url + path

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.2,), name="demo-frames",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(5)
        self._server.server_close()


class SimulatedLine:
    """Publishes a frame per camera every `interval_s` until stopped. `run()` is the thread body.

    With a `frame_server`, line 3 publishes too: cam1 its detections with the JPEG on a companion topic, cam2
    Roboflow JSON whose image is a snapshot URL on the frame server.
    """

    def __init__(self, publisher: Publisher, stop: threading.Event, interval_s: float = 1.0,
                 seed: int | None = None, frame_server: FrameServer | None = None) -> None:
        self._publisher = publisher
        self._stop = stop
        self._interval_s = interval_s
        self._rng = random.Random(seed)
        self._frame_server = frame_server
        self.published = 0

    def publish_once(self) -> None:
        """One frame on every camera topic, one Roboflow Inference message without an image, one safety frame."""
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
        jpeg, detections, event_data = make_safety_frame(self._rng)
        self._publisher.publish_raw(SAFETY_TOPIC, build_message(
            detections=detections, image=jpeg, image_name=f"dock-{self.published}.jpg", image_size=FRAME_SIZE,
            event_type="safety_alert", event_data=event_data))
        self.published += len(CAMERA_TOPICS) + 2
        if self._frame_server is not None:
            self._publish_line3(self._frame_server)

    def _publish_line3(self, frame_server: FrameServer) -> None:
        """A detection with its image on a companion topic, and one with its image behind a URL."""
        frame = self.published
        jpeg, detections = make_frame(self._rng)
        detection = build_message(detections=detections, metadata={"frame": frame})
        image = (f"{COMPANION_TOPIC}/image/{frame}", jpeg)
        # either may come first: the bridge keeps the one that waits (in its raw log) until the other arrives
        for topic, payload in ((image, (f"{COMPANION_TOPIC}/detections", detection)) if frame % 2
                               else ((f"{COMPANION_TOPIC}/detections", detection), image)):
            self._publisher.publish_raw(topic, payload)
        jpeg, detections = make_frame(self._rng)
        self._publisher.publish_raw(SNAPSHOT_TOPIC, orjson.dumps({
            "image": {"width": FRAME_SIZE[0], "height": FRAME_SIZE[1]},
            "snapshot_url": frame_server.add(f"cam2-{frame}", jpeg),
            "predictions": [{"x": d.x, "y": d.y, "width": d.width, "height": d.height, "class": d.label,
                             "confidence": d.confidence} for d in detections],
        }))
        self.published += 3

    def run(self) -> None:
        """Publish until the stop event is set; errors are logged and the line keeps going."""
        while not self._stop.is_set():
            try:
                self.publish_once()
            except Exception:
                log.exception("simulated line failed to publish; retrying")
            self._stop.wait(self._interval_s)
