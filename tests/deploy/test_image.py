"""The container image for real (`make image-test`): on the host network it bridges a real Mosquitto to the
emulator, answers its HEALTHCHECK as a non-root user, stops cleanly on SIGTERM, and its buffer volume keeps the
undelivered events across a restart."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

from mqtt_bridge.devtools.emulator.server import ALL_SCOPES, Emulator
from tests.deploy.containers import IMAGE, Engine
from tests.helpers import MosquittoBroker, PahoClient, detection_message, events_by_seq, free_port, wait_until

pytestmark = [pytest.mark.image, pytest.mark.integration]

TOPIC = "plant/factory/L1/cam1/detections"
API_KEY = "image-test-key"


@pytest.fixture
def api() -> Iterator[Emulator]:
    """The emulator on the host's loopback (the container shares the host network)."""
    emulator = Emulator("127.0.0.1", free_port(), api_keys={API_KEY: ALL_SCOPES},
                        use_cases=[{"name": "Line 1", "id": "line-1"}])
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()


def test_image_bridges_mosquitto_to_the_api_and_keeps_its_buffer_across_restarts(
        engine: Engine, mosquitto: MosquittoBroker, api: Emulator, tmp_path: Path) -> None:
    """Delivered end to end; HEALTHCHECK passes as uid 10001; SIGTERM exits 0; the volume keeps what was buffered."""
    health_port = free_port()
    config = yaml.safe_load((Path(__file__).resolve().parents[2] / "deploy" / "config.yaml").read_text())
    config["routes"][0]["topic"] = "plant/factory/{line}/{camera}/detections"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "api_key").write_text(API_KEY)
    os.chmod(tmp_path / "api_key", 0o644)
    os.chmod(tmp_path / "config.yaml", 0o644)
    name = f"bridge-test-{uuid.uuid4().hex[:8]}"
    volume = f"{name}-buffer"
    run = ["run", "-d", "--name", name, "--network", "host", "--read-only", "--cap-drop", "ALL",
           "--security-opt", "no-new-privileges",
           "-e", "MQTT_HOST=127.0.0.1", "-e", f"MQTT_PORT={mosquitto.port}", "-e", f"MQTT_CLIENT_ID={name}",
           "-e", f"ROBOFLOW_API_URL={api.url}", "-e", f"HEALTH_PORT={health_port}", "-e", "LOG_FORMAT=text",
           "-v", f"{volume}:/var/lib/mqtt-bridge", "-v", f"{tmp_path / 'config.yaml'}:/etc/mqtt-bridge/config.yaml:ro",
           "-v", f"{tmp_path / 'api_key'}:/run/secrets/roboflow_api_key:ro", IMAGE]
    engine(*run)

    def depth() -> int:
        try:
            answer = requests.get(f"http://127.0.0.1:{health_port}/readyz", timeout=2).json()
        except (requests.RequestException, ValueError):
            return -1
        return int(answer.get("buffer_depth", -1))

    try:
        wait_until(lambda: "mqtt subscribed" in engine.logs(name), timeout_s=60,
                   interval_s=0.5, message="container subscribed")
        assert engine("exec", name, "id", "-u") == "10001"
        with PahoClient(mosquitto, client_id="image-publisher").connect() as publisher:
            publisher.publish_many([(TOPIC, detection_message(seq, with_image=seq % 10 == 0)) for seq in range(30)])
        wait_until(lambda: len(events_by_seq(api.events())) == 30, timeout_s=30, message="delivered by container")
        if engine.is_podman:
            engine("healthcheck", "run", name)  # the image's HEALTHCHECK, run now (exit 0 = healthy)

        api.set_faults(status_always=503)  # the API is down: the next events wait in the buffer volume
        with PahoClient(mosquitto, client_id="image-publisher").connect() as publisher:
            publisher.publish_many([(TOPIC, detection_message(seq)) for seq in range(30, 50)])
        wait_until(lambda: depth() == 20, timeout_s=20, message="20 events buffered in the volume")
        engine("stop", "-t", "30", name, timeout_s=60)  # SIGTERM (the image's STOPSIGNAL)
        assert engine("inspect", "-f", "{{.State.ExitCode}}", name) == "0"
        logs = engine.logs(name)
        assert "shutdown complete depth=20" in logs, logs[-2000:]
        engine("rm", name)  # a new container on the same volume: the buffer lives in the volume, not the container
        api.clear_faults()
        engine(*run)
        wait_until(lambda: len(events_by_seq(api.events())) == 50, timeout_s=60, message="delivered after restart")
    finally:
        engine("rm", "-f", name, check=False)
        engine("volume", "rm", "-f", volume, check=False)
    grouped = events_by_seq(api.events())
    assert sorted(grouped) == list(range(50))
    assert all(len(events) == 1 for events in grouped.values())


def test_image_is_slim_without_build_tools_pip_or_the_demo_broker(engine: Engine) -> None:
    """No compiler, no make, no pip or setuptools, no amqtt in the runtime image; its size is printed and stays
    far below a full Debian with build tools (a generous bound: a regression guard, not a measurement)."""
    size_mb = engine.image_size_bytes(IMAGE) / 1e6
    print(f"image {IMAGE}: {size_mb:.0f} MB uncompressed")
    probe = ("import importlib.util, shutil, sys; "
             "tools = [t for t in ('gcc', 'cc', 'make', 'pip', 'pip3') if shutil.which(t)]; "
             "mods = [m for m in ('amqtt', 'pip', 'setuptools') if importlib.util.find_spec(m)]; "
             "print(tools, mods); sys.exit(1 if tools or mods else 0)")
    result = engine.run("run", "--rm", "--network", "none", "--entrypoint", "/opt/mqtt-bridge/bin/python", IMAGE,
                        "-c", probe)
    assert result.returncode == 0, result.stdout + result.stderr
    assert size_mb < 250
