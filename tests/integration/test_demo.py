"""`mqtt-bridge demo`: one command shows events arriving in the emulator page."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.helpers import demo_events

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def test_demo_shows_events_with_images_in_the_emulator_page(tmp_path: Path) -> None:
    """The demo starts broker, emulator, bridge and line; events with boxed images appear; Ctrl-C exits 0."""
    log_path = tmp_path / "demo.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "mqtt_bridge", "demo", "--mqtt-port", "0", "--api-port", "0",
             "--interval-s", "0.3"], stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO))
    try:
        url, events = demo_events(log_path, 8, url_timeout_s=30, events_timeout_s=30)
        with requests.Session() as http:
            page = http.get(f"{url}/", timeout=5)
            assert page.status_code == 200 and "Vision Events emulator" in page.text
            with_images = [e for e in events if e.get("images")]
            assert with_images, "the demo line publishes images"
            image_url = with_images[0]["images"][0]["url"]
            assert http.get(image_url, timeout=5).content[:3] == b"\xff\xd8\xff"
            assert {e["useCaseId"] for e in events} <= {"demo-inspection", "demo-safety"}
            assert {e["eventType"] for e in events} >= {"quality_check", "inventory_count"}
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0, log_path.read_text()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
