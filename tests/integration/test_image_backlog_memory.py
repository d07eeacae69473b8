"""Memory stays flat while the bridge buffers a backlog of large images during an API outage (issue 4)."""

from __future__ import annotations

import io
import random
import re
import time
from pathlib import Path

import pytest
import requests
import yaml
from PIL import Image

from mqtt_bridge.devtools.emulator.server import Emulator
from mqtt_bridge.sdk.publisher import Detection, build_message
from tests.helpers import (
    BridgeProcess,
    MosquittoBroker,
    PahoClient,
    bridge_config,
    free_port,
    tree_memory_kb,
    wait_until,
)

pytestmark = pytest.mark.integration


def _noisy_jpeg(seed: int) -> bytes:
    """A 1024x768 JPEG of noise (~600 KB: noise does not compress)."""
    rng = random.Random(seed)
    image = Image.frombytes("RGB", (1024, 768), rng.randbytes(1024 * 768 * 3))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return out.getvalue()


def _rss_mb(pid: int) -> float:
    """RSS of the bridge: its supervisor and child processes together."""
    kib = tree_memory_kb(pid, "VmRSS")
    assert kib > 0, "no VmRSS"
    return kib / 1024


def test_image_backlog_keeps_memory_flat_during_an_api_outage(mosquitto: MosquittoBroker, emulator: Emulator,
                                                              tmp_path: Path) -> None:
    """With the API down, ~100 MB of images go to the disk buffer while the bridge's RSS grows far less.

    Bounds that make it so: intake holds at most 32 MiB of messages (paho then stops reading and the broker keeps
    the rest), a group commit at most 8 MiB, the flusher decodes only the records it sends."""
    emulator.set_faults(status_always=503)
    health_port = free_port()
    raw = bridge_config(mosquitto, emulator.url, tmp_path / "buffer", "5")
    raw["health"] = {"enabled": True, "port": health_port}
    raw["mqtt"] = {**raw["mqtt"], "max_payload_bytes": "4MiB"}  # type: ignore[dict-item]
    config_path = tmp_path / "bridge.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    bridge = BridgeProcess(config_path, tmp_path / "bridge.log").start()
    jpeg = _noisy_jpeg(1)
    topic = "t/factory/L1/cam1/detections"

    def depth() -> int:
        try:
            text = requests.get(f"http://127.0.0.1:{health_port}/metrics", timeout=2).text
        except requests.RequestException:
            return -1
        match = re.search(r"^mqtt_bridge_buffer_depth(?:\{[^}]*\})? ([0-9.e+]+)$", text, re.MULTILINE)
        return int(float(match.group(1))) if match else -1

    def publish(first: int, count: int) -> None:
        with PahoClient(mosquitto, client_id="image-backlog-publisher").connect() as publisher:
            publisher.publish_many([(topic, build_message(
                detections=[Detection("scratch", 0.9, x=100, y=100, width=20, height=20)], image=jpeg,
                metadata={"seq": seq})) for seq in range(first, first + count)], timeout_s=120)

    try:
        wait_until(lambda: depth() == 0, timeout_s=30, message="bridge up with an empty buffer")
        bridge.wait_subscribed()
        assert bridge.process is not None
        readings = []
        for first, count in ((0, 60), (60, 70), (130, 70)):
            publish(first, count)
            wait_until(lambda n=first + count: depth() == n, timeout_s=120,  # type: ignore[misc]
                       message=f"{first + count} buffered")
            time.sleep(1.0)  # let the last group's transient copies go before reading RSS
            readings.append(_rss_mb(bridge.process.pid))
        per_phase_mb = 70 * len(jpeg) / 2**20
        assert per_phase_mb > 35, "the test must buffer a real backlog"
        # flat: after the first phase (imports, caches, SQLite), buffering 2 x 40 MB more adds little
        growth = readings[2] - readings[0]
        assert growth < per_phase_mb, (readings, per_phase_mb)
        assert readings[2] < 200, readings
        assert emulator.events() == []
    finally:
        bridge.stop()
