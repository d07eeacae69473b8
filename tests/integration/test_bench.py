"""`mqtt-bridge bench`: a small run measures the bridge and both baselines and writes the report."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import orjson
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from mqtt_bridge.cli.main import EXIT_CONFIG, EXIT_OK, EXIT_UNAVAILABLE, main
from mqtt_bridge.devtools.bench import load
from tests.helpers import MosquittoBroker

pytestmark = pytest.mark.integration


def test_bench_small_run_reports_every_system_with_ratios_and_the_rig_capacity(
        mosquitto_binary: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A tiny run of every mode writes JSON and PNG, prints ratios and the capacity line, loses nothing.

    A run this small (and on a shared machine) may well find the sink or publisher below 3x the fastest system:
    then it still writes and prints everything, and exits 3 saying which one (the rule: tests/unit/devtools/bench).
    """
    systems = ("bridge", "naive", "receive-only-mqtt5")  # one of each kind and protocol: the test stays < 60 s
    code = main(["bench", "--out", str(tmp_path), "--count", "300", "--rate", "100", "--rate-seconds", "1",
                 "--repetitions", "1", "--systems", ",".join(systems)])
    assert code in (EXIT_OK, EXIT_UNAVAILABLE)
    [report_path] = tmp_path.glob("bench-*.json")
    assert list(tmp_path.glob("bench-*.png"))
    report = json.loads(report_path.read_text())
    summary = report["summary"]
    assert set(summary) == {"drain", "max", "rate"}
    for mode, figures_by_system in summary.items():
        # the receive-only ceilings run in drain only: in max mode the publisher would be what they measure
        expected = set(systems) if mode == "drain" else {s for s in systems if not s.startswith("receive-only")}
        assert set(figures_by_system) == expected, mode
        for system, figures in figures_by_system.items():
            assert figures["lost"] == 0 and figures["duplicates"] == 0, (mode, system)
    assert summary["drain"]["bridge"]["events_per_s"] > 0
    assert summary["rate"]["bridge"]["p99_ms"] is not None
    capacity = report["capacity"]
    assert capacity["sink_events_per_s"] > 0 and capacity["publisher_messages_per_s"] > 0
    assert (code == EXIT_OK) == (capacity["shortfalls"] == [])
    captured = capsys.readouterr()
    assert "x naive" in captured.out and "drain  bridge" in captured.out and "drain  receive-only-mqtt5" in captured.out
    assert "max    receive-only" not in captured.out
    assert "capacity: sink " in captured.out and "publisher " in captured.out
    if code == EXIT_UNAVAILABLE:
        assert "bench failed: the rig may have limited the figures" in captured.err


def test_bench_rejects_unknown_modes(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A typo in --modes is a usage error, not a silently empty run."""
    assert main(["bench", "--out", str(tmp_path), "--modes", "drian"]) == EXIT_CONFIG
    assert "drian" in capsys.readouterr().err


def test_bench_publisher_delivers_every_message_once_with_its_seq_through_mosquitto(
        mosquitto: MosquittoBroker, capsys: pytest.CaptureFixture[str]) -> None:
    """The raw-socket publisher's QoS 1 messages all reach a subscriber, each seq once, and it reports them acked."""
    count, first = 3000, 500
    seqs: list[int] = []
    done = threading.Event()

    def on_message(client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        seqs.append(orjson.loads(msg.payload)["metadata"]["seq"])
        if len(seqs) >= count:
            done.set()

    subscribed = threading.Event()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-load-test")
    client.on_message = on_message
    client.on_subscribe = lambda *args: subscribed.set()
    client.connect("127.0.0.1", mosquitto.port)
    client.subscribe("bench/+/+/detections", qos=1)
    client.loop_start()
    try:
        assert subscribed.wait(10)
        load.main(["--port", str(mosquitto.port), "--count", str(count), "--first", str(first), "--window", "200"])
        assert done.wait(60), f"received {len(seqs)} of {count}"
    finally:
        client.disconnect()
        client.loop_stop()
    assert sorted(seqs) == list(range(first, first + count))
    report = json.loads(capsys.readouterr().out)
    assert report["published"] == count and report["acked"] == count
