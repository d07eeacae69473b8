"""`mqtt-bridge discover` and `capture` against the demo's line on the embedded broker, with the real bridge.

discover → starter config → use case filled in → the bridge delivers the demo's events (issue 13 item 5), and a
capture of the demo's traffic replays through `decode --capture` to the events the live bridge delivered (item 6).
Real parts only: the amqtt broker, the simulated line and its snapshot server, the emulator over HTTP, the CLI in a
subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import orjson
import pytest

from mqtt_bridge.config.load import load_config
from mqtt_bridge.devtools.broker import EmbeddedBroker
from mqtt_bridge.devtools.emulator.server import Emulator
from mqtt_bridge.devtools.simulator import FrameServer, SimulatedLine
from mqtt_bridge.model.capture import CapturedMessage
from mqtt_bridge.sdk.publisher import Publisher
from mqtt_bridge.service import Service
from tests.helpers import wait_until

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
# every camera of the demo line: inline images (factory, safety), no image (inference), a companion image topic
# (line3-cam1) and a snapshot URL (line3-cam2)
DEMO_DEVICES = {"line1-cam1", "line1-cam2", "line2-cam1", "line2-cam3", "dock1-cam1", "line3-cam1", "line3-cam2"}


@dataclass
class DemoLine:
    broker: EmbeddedBroker
    frames: FrameServer
    stop: threading.Event


@pytest.fixture
def demo_line(amqtt_broker: EmbeddedBroker) -> Iterator[DemoLine]:
    """The demo's simulated line publishing to the embedded broker every 0.3 s, with its snapshot server."""
    frames = FrameServer("127.0.0.1", 0)
    frames.start()
    stop = threading.Event()
    publisher = Publisher("127.0.0.1", amqtt_broker.port, client_id=f"demo-line-{uuid.uuid4().hex[:8]}")
    publisher.__enter__()
    line = SimulatedLine(publisher, stop, interval_s=0.3, seed=13, frame_server=frames)
    thread = threading.Thread(target=line.run, name="test-demo-line")
    thread.start()
    try:
        yield DemoLine(amqtt_broker, frames, stop)
    finally:
        stop.set()
        thread.join(10)
        publisher.__exit__(None, None, None)
        frames.stop()


def _cli(*args: str, env: dict[str, str] | None = None, timeout_s: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mqtt_bridge", *args], capture_output=True, text=True,
                          cwd=str(REPO), timeout=timeout_s, env={**os.environ, **(env or {})}, check=False)


def _started(service: Service) -> Service:
    service.start()
    wait_until(lambda: service.state().mqtt_subscribed, timeout_s=20, message="bridge subscribed")
    return service


def test_discover_writes_a_starter_config_that_delivers_the_demo_events(demo_line: DemoLine, tmp_path: Path) -> None:
    """discover the demo broker, fill in the use case, run the bridge on the config as written: every camera's
    events arrive in the emulator, with their images from inline payloads, the companion topic and the URL."""
    out = tmp_path / "starter.yaml"
    done = _cli("discover", "--host", "127.0.0.1", "--port", str(demo_line.broker.port), "--seconds", "4",
                "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    for pattern in ("factory/{line}/{cam}/detections", "station/line3/cam1/image/{id}", "snapshot/line3/cam2"):
        assert pattern in done.stdout, done.stdout
    text = out.read_text()
    assert "use_case: CHANGE_ME" in text
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    out.write_text(text.replace("CHANGE_ME", "uc-demo"))
    emulator = Emulator(use_cases=[{"name": "Discovered", "id": "uc-demo"}]).start()
    service: Service | None = None
    try:
        config = load_config(out, env={"ROBOFLOW_API_KEY": "demo-key", "ROBOFLOW_API_URL": emulator.url,
                                       "MQTT_BRIDGE_BUFFER": str(tmp_path / "buffer"), "MQTT_BRIDGE_HEALTH_PORT": "0"})
        service = _started(Service(config))

        def every_camera_with_images() -> bool:
            events = emulator.events()
            devices = {str(e.get("deviceId")) for e in events}
            with_images = {str(e.get("deviceId")) for e in events if e.get("images")}
            return devices >= DEMO_DEVICES and with_images >= DEMO_DEVICES - {"line2-cam3"}

        wait_until(every_camera_with_images, timeout_s=40,
                   message=f"events of every demo camera ({sorted(DEMO_DEVICES)}) in the emulator")
        assert {e["useCaseId"] for e in emulator.events()} == {"uc-demo"}
    finally:
        if service is not None:
            service.shutdown()
        emulator.stop()


def _compared(event: dict[str, Any]) -> dict[str, Any]:
    """What a replayed event must share with the delivered one (the receive time differs by the capture's)."""
    metadata = dict(event.get("customMetadata") or {})
    return {"eventId": event["eventId"], "eventType": event["eventType"], "useCaseId": event["useCaseId"],
            "deviceId": event.get("deviceId"), "streamId": event.get("streamId"),
            "eventData": event.get("eventData"), "customMetadata": metadata,
            "detections": [sorted((d["class"], d["confidence"]) for d in image.get("objectDetections", []))
                           for image in event.get("images") or []]}


def test_capture_of_the_demo_replays_to_the_events_the_live_bridge_delivered(demo_line: DemoLine,
                                                                             tmp_path: Path) -> None:
    """While the live bridge delivers the demo, `capture` records the traffic; `decode --capture` of that file
    gives the same eventIds and events (companion pairs, URL images, inline images) that the emulator received."""
    demo_config = Path(str(files("mqtt_bridge.devtools").joinpath("demo.yaml")))
    emulator = Emulator(use_cases=[{"name": "Inspection", "id": "demo-inspection"},
                                   {"name": "Safety", "id": "demo-safety"}]).start()
    env = {"DEMO_MQTT_PORT": str(demo_line.broker.port), "DEMO_API_PORT": str(emulator.port),
           "DEMO_BUFFER": str(tmp_path / "buffer"), "DEMO_HEALTH_PORT": "0"}
    service: Service | None = None
    try:
        service = _started(Service(load_config(demo_config, env=env)))
        capture = tmp_path / "night.jsonl"
        done = _cli("capture", "--host", "127.0.0.1", "--port", str(demo_line.broker.port), "--seconds", "4",
                    "--out", str(capture))
        assert done.returncode == 0, done.stderr[-3000:]
        lines = [CapturedMessage.from_line(line) for line in capture.read_bytes().splitlines()]
        assert len(lines) > 20 and all(m is not None and m.qos == 0 for m in lines)
        replayed = _cli("decode", "--config", str(demo_config), "--capture", str(capture), "--fetch-images",
                        env=env)
        assert replayed.returncode == 0, replayed.stderr[-3000:]
        outcomes = [orjson.loads(line) for line in replayed.stdout.splitlines()]
        events = [event for outcome in outcomes for event in outcome["events"]]
        assert not [o for o in outcomes if "dead_letter" in o]
        assert {e.get("deviceId") for e in events} >= DEMO_DEVICES
        assert "paired" in replayed.stderr
        ids = {event["eventId"] for event in events}  # identical payloads share an id (the API overwrites)
        wait_until(lambda: all(emulator.event(event_id) is not None for event_id in ids), timeout_s=30,
                   message="the live bridge delivered every replayed eventId")
        edge = 0
        for event in events:
            delivered = emulator.event(event["eventId"])
            assert delivered is not None
            if "imageMissing" in (event.get("customMetadata") or {}):
                edge += 1  # its image came after the capture ended (or before it began): only the ids compare
                continue
            assert _compared(event) == _compared(delivered)
            assert bool(event.get("images")) == bool(delivered.get("images")), event["eventId"]
        assert edge <= 2  # at most the pair cut by each end of the capture
    finally:
        if service is not None:
            service.shutdown()
        emulator.stop()
