"""Images end to end (issue 4): every reference kind through a real Mosquitto and the bridge into the emulator,
each event's sourceId resolving to the exact bytes sent, hostile references dead-lettered, and kill -9 of the
bridge while a detection waits for its companion image, or between an upload and its event, losing nothing."""

from __future__ import annotations

import base64
import io
import signal
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests
import yaml
from PIL import Image

from mqtt_bridge.devtools.emulator.server import Emulator
from mqtt_bridge.sdk.publisher import Detection, build_message
from tests.helpers import (
    BridgeFactory,
    BridgeProcess,
    MosquittoBroker,
    PahoClient,
    bridge_config,
    free_port,
    wait_until,
)

pytestmark = pytest.mark.integration


def _jpeg(seed: int, size: tuple[int, int] = (64, 48)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (seed * 37 % 256, seed * 91 % 256, 120)).save(out, format="JPEG")
    return out.getvalue()


def _box(seed: int) -> dict[str, Any]:
    return {"class": "dent", "x": 10.0 + seed, "y": 20.0, "width": 8.0, "height": 6.0, "confidence": 0.75}


def _roboflow(box_seed: int, **extra: object) -> bytes:
    return orjson.dumps({"image": {"width": 64, "height": 48}, "predictions": [_box(box_seed)], **extra})


def _detection(seed: int, frame: int) -> bytes:
    box = _box(seed)
    return build_message(detections=[Detection("dent", box["confidence"], box["x"], box["y"], box["width"],
                                               box["height"])], metadata={"frame": frame, "seed": seed})


def _events(emulator: Emulator) -> list[dict[str, Any]]:
    """The emulator's events, typed loosely for reading nested fields."""
    events: list[Any] = emulator.events()
    return events


def _seed(event: dict[str, Any]) -> int:
    """Which message an event came from: the canonical metadata's seed, else its box (x = 10 + seed)."""
    metadata = event.get("customMetadata") or {}
    if "seed" in metadata:
        return int(metadata["seed"])
    return int(event["images"][0]["objectDetections"][0]["x"]) - 10


class _Snapshots(ThreadingHTTPServer):
    """A camera's snapshot endpoint on 127.0.0.1."""

    daemon_threads = True
    frames: dict[str, bytes]


@pytest.fixture
def snapshots() -> Iterator[_Snapshots]:
    class Handler(BaseHTTPRequestHandler):
        server: _Snapshots

        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_GET(self) -> None:
            body = self.server.frames.get(self.path, b"")
            self.send_response(200 if body else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = _Snapshots(("127.0.0.1", 0), Handler)
    server.frames = {}
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="test-snapshots", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


COMPANION_ROUTE: dict[str, Any] = {
    "name": "companion", "topic": "t/cam/{line}/{camera}/detections", "format": "canonical", "use_case": "uc-a",
    "device_id": "{line}-{camera}",
    "image": {"companion": {"topic": "t/cam/{line}/{camera}/image/{frame}",
                            "key": "{line}/{camera}/{payload.metadata.frame}",
                            "image_key": "{line}/{camera}/{frame}", "window_s": 1.0}}}


def _routes(image_root: Path) -> list[dict[str, Any]]:
    return [
        COMPANION_ROUTE,
        {"name": "url", "topic": "t/url/{camera}", "format": "roboflow", "use_case": "uc-a",
         "image": {"url": {"field": "snapshot_url", "allow_hosts": ["127.0.0.1:*"],
                           "allow_private_networks": ["127.0.0.1/32"], "timeout_s": 2}}},
        {"name": "file", "topic": "t/file/{camera}", "format": "roboflow", "use_case": "uc-a",
         "image": {"file": {"field": "path", "roots": [str(image_root)]}}},
        {"name": "inline", "topic": "t/b64/{camera}", "format": "roboflow", "use_case": "uc-a",
         "image": {"base64_path": "frame.jpeg"}},
    ]


def test_images_every_reference_kind_arrives_with_its_exact_bytes(mosquitto: MosquittoBroker, emulator: Emulator,
                                                                  bridge_factory: BridgeFactory,
                                                                  snapshots: _Snapshots, tmp_path: Path) -> None:
    """Companion topic (either order), URL, file and inline base64: each event's image is the bytes sent, with
    its box; a detection whose image never comes is sent without it; hostile references are dead-lettered."""
    root = tmp_path / "images"
    root.mkdir()
    (root / "f1.jpg").write_bytes(_jpeg(31))
    (tmp_path / "secret.jpg").write_bytes(_jpeg(99))
    port = snapshots.server_address[1]
    snapshots.frames = {"/s/21.jpg": _jpeg(21), "/s/22.jpg": _jpeg(22)}
    service = bridge_factory(mosquitto, emulator, routes=_routes(root))
    expected: dict[int, bytes] = {}  # seed -> image bytes
    messages: list[tuple[str, bytes]] = []
    for seed, frame in ((11, 1), (12, 2), (13, 3), (14, 4)):
        detection = ("t/cam/L1/cam1/detections", _detection(seed, frame))
        image = (f"t/cam/L1/cam1/image/{frame}", _jpeg(seed))
        messages += [detection, image] if seed % 2 else [image, detection]
        expected[seed] = _jpeg(seed)
    messages.append(("t/cam/L1/cam1/detections", _detection(15, 99)))  # its image never comes
    for seed in (21, 22):
        messages.append(("t/url/cam2", _roboflow(seed, snapshot_url=f"http://127.0.0.1:{port}/s/{seed}.jpg")))
        expected[seed] = _jpeg(seed)
    messages.append(("t/file/cam3", _roboflow(31, path="f1.jpg")))
    expected[31] = _jpeg(31)
    messages.append(("t/b64/cam4", _roboflow(41, frame={"jpeg": base64.b64encode(_jpeg(41)).decode()})))
    expected[41] = _jpeg(41)
    hostile = [("t/url/cam2", _roboflow(90, snapshot_url="http://169.254.169.254/latest/meta-data/")),
               ("t/url/cam2", _roboflow(91, snapshot_url=f"http://127.0.0.1:{port}@10.0.0.1/x.jpg")),
               ("t/file/cam3", _roboflow(92, path="../secret.jpg")),
               ("t/file/cam3", _roboflow(93, path=str(tmp_path / "secret.jpg")))]
    with PahoClient(mosquitto, client_id="images-publisher").connect() as publisher:
        publisher.publish_many(messages + hostile)
    wait_until(lambda: len(emulator.events()) >= len(expected) + 1, timeout_s=15, message="all events")
    wait_until(lambda: service.buffer.dead_letter_count >= len(hostile), timeout_s=5, message="dead letters")
    uploads = emulator.uploads()
    by_seed = {_seed(event): event for event in _events(emulator)}
    assert sorted(by_seed) == sorted([*expected, 15])
    for seed, picture in expected.items():
        [image] = by_seed[seed]["images"]
        assert uploads[image["sourceId"]] == picture, f"seed {seed}: the uploaded bytes differ"
        assert image["objectDetections"] == [_box(seed)]
    missing = by_seed[15]
    assert "images" not in missing and missing["customMetadata"]["imageMissing"] == "window_expired"
    reasons = sorted(letter.reason for _, letter in service.buffer.dead_letters())
    assert reasons == ["image_path_refused", "image_path_refused", "image_url_refused", "image_url_refused"]
    assert service.stats.count("companion_images_paired") == 4
    assert service.stats.count("companion_images_missing") == 1


def _write_config(tmp_path: Path, broker: MosquittoBroker, emulator: Emulator, health_port: int,
                  window_s: float = 30.0) -> Path:
    raw = bridge_config(broker, emulator.url, tmp_path / "buffer", "5")
    raw["mqtt"] = {**raw["mqtt"], "client_id": "images-under-test"}  # type: ignore[dict-item]
    raw["health"] = {"enabled": True, "port": health_port}
    raw["routes"] = [{**COMPANION_ROUTE, "image": {"companion": {**COMPANION_ROUTE["image"]["companion"],
                                                                 "window_s": window_s}}}]
    path = tmp_path / "bridge.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _metric(port: int, name: str) -> float | None:
    try:
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except requests.RequestException:
        return None
    for line in text.splitlines():
        if line.startswith(f"mqtt_bridge_{name} "):
            return float(line.split()[1])
    return None


def test_images_kill_while_waiting_for_the_companion_image_loses_nothing(mosquitto: MosquittoBroker,
                                                                        emulator: Emulator, tmp_path: Path) -> None:
    """kill -9 while a detection waits for its image (acked, in the raw log): after a restart the processor reads it
    from the raw log again, the image published meanwhile joins it, and exactly one event arrives, with the image."""
    health_port = free_port()
    bridge = BridgeProcess(_write_config(tmp_path, mosquitto, emulator, health_port), tmp_path / "bridge.log")
    bridge.start()
    try:
        wait_until(lambda: "bridge started" in bridge.log_text(), timeout_s=20, message="bridge started")
        bridge.wait_subscribed()
        with PahoClient(mosquitto, client_id="images-publisher").connect() as publisher:
            publisher.publish("t/cam/L2/cam5/detections", _detection(5, frame=77))
            wait_until(lambda: _metric(health_port, "images_parked") == 1.0, timeout_s=10, message="parked")
            wait_until(lambda: _metric(health_port, "raw_log_depth") == 1.0, timeout_s=5, message="in the raw log")
            assert bridge.signal(signal.SIGKILL) == -signal.SIGKILL
            assert emulator.events() == []
            publisher.publish("t/cam/L2/cam5/image/77", _jpeg(5))  # the broker queues it for the bridge's session
        bridge.start()
        [event] = wait_until(lambda: _events(emulator), timeout_s=20, message="the event after the restart")
        [image] = event["images"]
        assert emulator.uploads()[image["sourceId"]] == _jpeg(5)
        assert image["objectDetections"] == [_box(5)]
        wait_until(lambda: _metric(health_port, "images_parked") == 0.0, timeout_s=5, message="nothing parked")
        wait_until(lambda: _metric(health_port, "raw_log_depth") == 0.0, timeout_s=5, message="raw log empty")
        assert len(emulator.events()) == 1
        assert bridge.signal(signal.SIGTERM) == 0, bridge.log_text()[-3000:]
    finally:
        bridge.stop()


def test_images_kill_between_upload_and_create_uploads_once(mosquitto: MosquittoBroker, emulator: Emulator,
                                                            tmp_path: Path) -> None:
    """kill -9 after the image is uploaded but before its event is created: the restarted bridge reuses the
    remembered sourceId; the emulator shows one upload and one event."""
    health_port = free_port()
    bridge = BridgeProcess(_write_config(tmp_path, mosquitto, emulator, health_port, window_s=1.0),
                           tmp_path / "bridge.log")
    bridge.start()
    try:
        wait_until(lambda: "bridge started" in bridge.log_text(), timeout_s=20, message="bridge started")
        bridge.wait_subscribed()
        emulator.set_faults(delay_s=2.0)  # every reply waits: the batch is still pending when we kill
        with PahoClient(mosquitto, client_id="images-publisher").connect() as publisher:
            publisher.publish_many([("t/cam/L3/cam6/detections", _detection(6, frame=5)),
                                    ("t/cam/L3/cam6/image/5", _jpeg(6))])
        wait_until(lambda: _metric(health_port, "images_uploaded_total") == 1.0, timeout_s=15,
                   message="the upload done (sourceId remembered), the batch waiting")
        assert bridge.signal(signal.SIGKILL) == -signal.SIGKILL
        emulator.clear_faults()
        assert len(emulator.uploads()) == 1
        bridge.start()
        # the killed run's batch may still land at the API (the emulator answers late): wait for this run to start
        wait_until(lambda: bridge.log_text().count("bridge started") == 2, timeout_s=20, message="restarted")
        [event] = wait_until(lambda: _events(emulator), timeout_s=20, message="the event after the restart")
        assert len(emulator.uploads()) == 1
        assert emulator.uploads()[event["images"][0]["sourceId"]] == _jpeg(6)
        assert bridge.signal(signal.SIGTERM) == 0, bridge.log_text()[-3000:]
    finally:
        bridge.stop()
