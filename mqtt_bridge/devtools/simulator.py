"""A simulated production line for the demo: cameras that publish detections with small generated images.

Owns: making believable inspection frames (Pillow draws a part on a belt, sometimes with a defect, and the box of
each defect) and publishing them the ways plants do (spec/payload-formats.md §9): canonical messages with the image
inline, Roboflow Inference JSON without one, a detection whose raw JPEG follows (or precedes) it on a companion
topic, and Roboflow JSON naming a snapshot URL that `FrameServer`, the camera's tiny HTTP snapshot endpoint in
the demo process, serves.
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

from mqtt_bridge.sdk.publisher import Detection, Publisher, build_message

__all__ = ["COMPANION_TOPIC", "SNAPSHOT_TOPIC", "FrameServer", "SimulatedLine", "make_frame"]

log = logging.getLogger(__name__)

DEFECTS = ("scratch", "dent", "missing_screw")
CAMERA_TOPICS = ("factory/line1/cam1/detections", "factory/line1/cam2/detections", "factory/line2/cam1/detections")
INFERENCE_TOPIC = "inference/line2/cam3"
COMPANION_TOPIC = "station/line3/cam1"  # .../detections, and the JPEG on .../image/<frame>
SNAPSHOT_TOPIC = "snapshot/line3/cam2"  # Roboflow JSON with a snapshot_url served by FrameServer
FRAME_SIZE = (320, 240)
_KEPT_FRAMES = 500


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
        if self._frame_server is not None:
            self._publish_line3(self._frame_server)

    def _publish_line3(self, frame_server: FrameServer) -> None:
        """A detection with its image on a companion topic, and one with its image behind a URL."""
        frame = self.published
        jpeg, detections = make_frame(self._rng)
        detection = build_message(detections=detections, metadata={"frame": frame})
        image = (f"{COMPANION_TOPIC}/image/{frame}", jpeg)
        # either may come first: the bridge holds the one that waits (un-acked) until the other arrives
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
