"""Scale-out: three bridge processes share one Mosquitto through an MQTT 5 shared subscription, each with its own
client id and buffer; one is killed with SIGKILL mid-stream and restarted, and every event arrives exactly once."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest
import requests
import yaml

from mqtt_bridge.devtools.emulator.server import Emulator
from tests.helpers import (
    BridgeProcess,
    MosquittoBroker,
    PahoClient,
    bridge_config,
    detection_message,
    events_by_seq,
    free_port,
    wait_until,
)

pytestmark = pytest.mark.integration

TOTAL = 900


def _topic(seq: int) -> str:
    return f"t/factory/L{seq % 3}/cam{seq % 4}/detections"


def _delivered(port: int) -> float:
    try:
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except requests.RequestException:
        return -1.0
    match = re.search(r"^mqtt_bridge_events_delivered_total (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else -1.0


def test_three_bridges_share_the_load_and_survive_a_kill(mosquitto: MosquittoBroker, emulator: Emulator,
                                                         tmp_path: Path) -> None:
    """Every replica delivers a share; after kill -9 and restart of one, all events are delivered exactly once."""
    bridges: list[BridgeProcess] = []
    ports: list[int] = []
    for index in range(3):
        raw = bridge_config(mosquitto, emulator.url, tmp_path / f"buffer-{index}", "5")
        ports.append(free_port())
        raw["mqtt"] = {**raw["mqtt"], "client_id": f"replica-{index}", "shared_group": "vision"}  # type: ignore[dict-item]
        raw["health"] = {"enabled": True, "port": ports[-1]}
        config_path = tmp_path / f"replica-{index}.yaml"
        config_path.write_text(yaml.safe_dump(raw))
        bridges.append(BridgeProcess(config_path, tmp_path / f"replica-{index}.log").start())
    try:
        for bridge in bridges:
            wait_until(lambda b=bridge: "mqtt subscribed" in b.log_text(), timeout_s=20,  # type: ignore[misc]
                       message=f"subscribed ({bridge.log_path})")
        assert "$share/vision/t/factory/+/+/detections" in bridges[0].log_text()
        messages = [(_topic(seq), detection_message(seq, with_image=seq % 50 == 0)) for seq in range(TOTAL)]
        with PahoClient(mosquitto, client_id="scale-publisher").connect() as publisher:
            publisher.publish_many(messages[:TOTAL // 3], timeout_s=60)
            wait_until(lambda: all(_delivered(port) > 0 for port in ports), timeout_s=20,
                       message="every replica delivered a share")
            publisher.publish_many(messages[TOTAL // 3:2 * TOTAL // 3], timeout_s=60)
            assert bridges[1].signal(signal.SIGKILL) == -signal.SIGKILL
            publisher.publish_many(messages[2 * TOTAL // 3:], timeout_s=60)
        bridges[1].start()  # same client id and buffer: its session and its buffered events come back
        wait_until(lambda: len(events_by_seq(emulator.events())) == TOTAL, timeout_s=60,
                   message="every event delivered")
    finally:
        for bridge in bridges:
            bridge.stop()
    grouped = events_by_seq(emulator.events())
    assert sorted(grouped) == list(range(TOTAL))
    assert [seq for seq, events in grouped.items() if len(events) > 1] == []
